"""Names and layouts shared by the robomimic and LeRobot converters.

Our episode keys are paths (`obs/joint_pos`, `obs/task/object_pos`, `command/hand_pos`); other
formats want flat observation names and one action vector per step. The action vector is the
command in `robot_io.types.Command.to_vector` order, so a policy trained on an export sees the
same action layout as one trained here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np

# (field, per-step shape) in `Command.to_vector` order: base_vel, hand_pos (L, R),
# hand_quat (L, R), gripper (L, R); 19 numbers in all.
COMMAND_LAYOUT: tuple[tuple[str, tuple[int, ...]], ...] = (
    ("base_vel", (3,)), ("hand_pos", (2, 3)), ("hand_quat", (2, 4)), ("gripper", (2,)))
ACTION_DIM = sum(int(np.prod(shape)) for _, shape in COMMAND_LAYOUT)

# Observation fields in `robot_io.types.Observation` order (task entries follow, sorted).
OBS_FIELDS: tuple[str, ...] = (
    "joint_pos", "joint_vel", "gripper_pos", "root_pos", "root_quat", "root_lin_vel",
    "root_ang_vel", "projected_gravity", "hand_pos", "hand_quat", "foot_pos", "foot_quat")
TASK_PREFIX = "task_"


def action_names() -> list[str]:
    """One name per action entry, e.g. `hand_pos.left.x`."""
    sides = ("left", "right")
    names = ["base_vel.vx", "base_vel.vy", "base_vel.yaw_rate"]
    names += [f"hand_pos.{s}.{a}" for s in sides for a in "xyz"]
    names += [f"hand_quat.{s}.{a}" for s in sides for a in "wxyz"]
    names += [f"gripper.{s}" for s in sides]
    return names


def command_matrix(arrays: Mapping[str, np.ndarray]) -> np.ndarray:
    """(T, 19) actions from an episode's `command/<field>` arrays.

    Raises:
        KeyError: a command field is missing (names it).
    """
    parts = []
    for name, _ in COMMAND_LAYOUT:
        key = f"command/{name}"
        if key not in arrays:
            raise KeyError(f"episode has no {key}")
        value = np.asarray(arrays[key])
        parts.append(value.reshape(value.shape[0], -1))
    return np.concatenate(parts, axis=1)


def command_arrays(actions: np.ndarray) -> dict[str, np.ndarray]:
    """Inverse of `command_matrix`: `command/<field>` arrays from (T, 19) actions.

    Raises:
        ValueError: `actions` is not (T, 19).
    """
    if actions.ndim != 2 or actions.shape[1] != ACTION_DIM:
        raise ValueError(f"actions must have shape (T, {ACTION_DIM}) in Command.to_vector "
                         f"order, got {actions.shape}")
    out, start = {}, 0
    for name, shape in COMMAND_LAYOUT:
        size = int(np.prod(shape))
        out[f"command/{name}"] = actions[:, start:start + size].reshape(-1, *shape)
        start += size
    return out


def obs_keys(arrays: Mapping[str, np.ndarray]) -> list[str]:
    """The episode's `obs/...` keys: Observation fields in their order, then task entries sorted."""
    keys = [f"obs/{name}" for name in OBS_FIELDS if f"obs/{name}" in arrays]
    return keys + sorted(k for k in arrays if k.startswith("obs/task/"))


def flat_obs_name(key: str) -> str:
    """`obs/joint_pos` -> `joint_pos`, `obs/task/object_pos` -> `task_object_pos`."""
    if not key.startswith("obs/"):
        raise ValueError(f"{key!r} is not an observation key (obs/...)")
    rest = key[len("obs/"):]
    if rest.startswith("task/"):
        return TASK_PREFIX + rest[len("task/"):]
    return rest


def obs_key(flat_name: str) -> str:
    """Inverse of `flat_obs_name`; names of other origins become `obs/<name>`."""
    if flat_name.startswith(TASK_PREFIX) and flat_name not in OBS_FIELDS:
        return "obs/task/" + flat_name[len(TASK_PREFIX):]
    return "obs/" + flat_name


def attrs_dict(attrs: object) -> dict:
    """Episode attributes from the reader (a dataclass or a mapping) as a plain dict."""
    if isinstance(attrs, Mapping):
        return dict(attrs)
    if dataclasses.is_dataclass(attrs):
        return dataclasses.asdict(attrs)
    return dict(vars(attrs))
