"""The diffusion policy's observation: one flat vector per world, with named slices.

DESIGN: robot hand poses and foot poses in the body (root) frame, gripper states, and the task's
object / handle / target information relative to the root. State only, no images. The order
is fixed: hands, feet, grippers, then the task entries sorted by name, so that a checkpoint's
stored spec can be compared with the running task's.
"""

from __future__ import annotations

import torch
from torch import Tensor

from robot_io.types import Observation

ROBOT_FIELDS = ("hand_pos", "hand_quat", "foot_pos", "foot_quat", "gripper_pos")


def dp_observation_spec(obs: Observation) -> list[tuple[str, int]]:
    """[(name, width)] of the entries of `dp_observation(obs)`, in order."""
    spec = [(name, int(getattr(obs, name)[0].numel())) for name in ROBOT_FIELDS]
    spec += [(f"task.{name}", int(obs.task[name][0].numel())) for name in sorted(obs.task)]
    return spec


def dp_observation(obs: Observation) -> Tensor:
    """(B, Do) the DP observation vector of every world."""
    b = obs.num_worlds
    parts = [getattr(obs, name).reshape(b, -1) for name in ROBOT_FIELDS]
    parts += [obs.task[name].reshape(b, -1) for name in sorted(obs.task)]
    return torch.cat(parts, dim=-1)
