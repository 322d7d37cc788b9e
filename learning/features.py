"""What the learned planner sees and emits, as flat float32 vectors.

Observation: the DP observation of `robot_io.dp_observation` (hands, feet, grippers, task
entries), with every quaternion entry replaced by the continuous 6-D rotation representation
(the first two columns of the rotation matrix), so that q and -q give the same features.

Action: one planner command as 23 numbers: base velocity (3), hand positions (L, R: 6), hand
rotations in 6-D (L, R: 12), grippers (L, R: 2). Storage keeps quaternions (DESIGN.md); the
conversion is exact up to the Gram-Schmidt projection on the way back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from robot_io.dp_observation import dp_observation, dp_observation_spec
from robot_io.errors import SchemaMismatchError
from robot_io.math3d import mat_to_quat, quat_to_mat
from robot_io.types import Command, Observation

ACTION_FIELDS = (("base_vel", 3), ("hand_pos", 6), ("hand_rot6d", 12), ("gripper", 2))
ACTION_DIM = sum(width for _, width in ACTION_FIELDS)
COMMAND_KEYS = ("command/base_vel", "command/hand_pos", "command/hand_quat", "command/gripper")


def quat_to_rot6d(q: Tensor) -> Tensor:
    """(..., 4) wxyz -> (..., 6): the rotation matrix's first two columns, column after column."""
    m = quat_to_mat(q)
    return torch.cat([m[..., :, 0], m[..., :, 1]], dim=-1)


def rot6d_to_quat(r: Tensor) -> Tensor:
    """(..., 6) -> (..., 4) unit wxyz quaternions (Gram-Schmidt on the two columns first)."""
    a, b = r[..., :3], r[..., 3:]
    x = a / a.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    b = b - (x * b).sum(-1, keepdim=True) * x
    y = b / b.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    z = torch.cross(x, y, dim=-1)
    return mat_to_quat(torch.stack([x, y, z], dim=-1))


def _is_quat(name: str, width: int) -> bool:
    return name.endswith("quat") and width % 4 == 0


@dataclass(frozen=True)
class ObsSpec:
    """The DP observation's raw entries [(name, width)] as `dp_observation_spec` gives them."""

    fields: tuple[tuple[str, int], ...]

    @classmethod
    def of(cls, obs: Observation) -> ObsSpec:
        return cls(tuple((name, int(width)) for name, width in dp_observation_spec(obs)))

    @property
    def raw_dim(self) -> int:
        return sum(width for _, width in self.fields)

    @property
    def dim(self) -> int:
        """Do: feature width (quaternions become 6-D)."""
        return sum(width // 4 * 6 if _is_quat(n, width) else width for n, width in self.fields)

    def dataset_keys(self) -> list[str]:
        """The dataset arrays holding the entries: "hand_pos" -> "obs/hand_pos",
        "task.object_pos" -> "obs/task/object_pos"."""
        return ["obs/" + name.replace("task.", "task/", 1) for name, _ in self.fields]

    def features(self, raw: Tensor) -> Tensor:
        """(..., raw_dim) DP observation vectors -> (..., Do) float32 features."""
        if raw.shape[-1] != self.raw_dim:
            raise SchemaMismatchError(f"observation has {raw.shape[-1]} entries, the policy's spec "
                                      f"has {self.raw_dim} ({self.describe()})")
        parts, start = [], 0
        for name, width in self.fields:
            part = raw[..., start:start + width]
            start += width
            if _is_quat(name, width):
                quats = part.reshape(*part.shape[:-1], width // 4, 4)
                part = quat_to_rot6d(quats).reshape(*part.shape[:-1], width // 4 * 6)
            parts.append(part)
        return torch.cat(parts, dim=-1).to(torch.float32)

    def observe(self, obs: Observation) -> Tensor:
        """(B, Do) features of a live observation."""
        return self.features(dp_observation(obs))

    def from_arrays(self, arrays: Mapping[str, np.ndarray]) -> Tensor:
        """(T, Do) features of one recorded episode's arrays (keyed as in `dataset_keys`)."""
        keys = self.dataset_keys()
        length = len(arrays[keys[0]])
        raw = np.concatenate([np.asarray(arrays[k], dtype=np.float64).reshape(length, -1)
                              for k in keys], axis=1)
        return self.features(torch.from_numpy(raw))

    def check_matches(self, other: ObsSpec, where: str) -> None:
        """Raise SchemaMismatchError naming the first difference between two specs."""
        if self.fields == other.fields:
            return
        mine, theirs = dict(self.fields), dict(other.fields)
        missing = [n for n in mine if n not in theirs]
        extra = [n for n in theirs if n not in mine]
        widths = [f"{n}: {mine[n]} vs {theirs[n]}" for n in mine
                  if n in theirs and mine[n] != theirs[n]]
        detail = "; ".join(filter(None, [
            f"missing {missing}" if missing else "", f"unexpected {extra}" if extra else "",
            f"widths differ ({', '.join(widths)})" if widths else "",
            "order differs" if not (missing or extra or widths) else ""]))
        raise SchemaMismatchError(f"{where}: the observation does not match the policy's "
                                  f"({detail}); use a policy trained for this task and robot")

    def describe(self) -> str:
        return ", ".join(f"{n}[{w}]" for n, w in self.fields)

    def to_list(self) -> list[list]:
        return [[name, width] for name, width in self.fields]

    @classmethod
    def from_list(cls, data: Sequence[Sequence]) -> ObsSpec:
        try:
            return cls(tuple((str(name), int(width)) for name, width in data))
        except (TypeError, ValueError) as e:
            raise SchemaMismatchError(f"observation spec {data!r} is malformed ({e})") from e


def command_to_action(cmd: Command) -> Tensor:
    """(B, 23) float32 action vectors of a command."""
    b = cmd.num_worlds
    return torch.cat([cmd.base_vel, cmd.hand_pos.reshape(b, 6),
                      quat_to_rot6d(cmd.hand_quat).reshape(b, 12), cmd.gripper],
                     dim=-1).to(torch.float32)


def action_to_command(action: Tensor) -> Command:
    """(B, 23) action vectors -> a float64 `Command` (grippers clipped to [0, 1])."""
    if action.shape[-1] != ACTION_DIM:
        raise ValueError(f"an action vector has {ACTION_DIM} entries, got {action.shape[-1]}")
    a = action.to(torch.float64)
    b = a.shape[0]
    return Command(base_vel=a[:, 0:3].contiguous(), hand_pos=a[:, 3:9].reshape(b, 2, 3),
                   hand_quat=rot6d_to_quat(a[:, 9:21].reshape(b, 2, 6)),
                   gripper=a[:, 21:23].clamp(0.0, 1.0))


def actions_from_arrays(arrays: Mapping[str, np.ndarray]) -> Tensor:
    """(T, 23) actions of one recorded episode (the applied commands)."""
    t = len(arrays["command/base_vel"])
    cmd = Command(*(torch.from_numpy(np.asarray(arrays[k], dtype=np.float64)).reshape(
        (t, 3) if k.endswith("base_vel") else (t, 2, 3) if k.endswith("hand_pos") else
        (t, 2, 4) if k.endswith("hand_quat") else (t, 2)) for k in COMMAND_KEYS))
    return command_to_action(cmd)
