"""Messages at the command interface: `Command`, `Observation`, `JointTargets` (all batched).

Conventions (see README "Frames and units"):
- world frame: z up; quaternions are (w, x, y, z) unit quaternions.
- root frame: the trunk body's frame (position and full orientation).
- heading frame: the root position with only the root's yaw; base velocity commands are given in
  it, so that vx is "forward" whatever the trunk's pitch and roll.
- index 0 of a hand/foot/gripper axis is the left side, 1 the right side.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import torch
from torch import Tensor

from robot_io.errors import SafetyLimitError

SIDES = ("left", "right")
COMMAND_DIM = 3 + 2 * 3 + 2 * 4 + 2  # base vel, hand pos, hand quat, grippers


@dataclass(frozen=True)
class Command:
    """A batched planner command.

    Attributes:
        base_vel: (B, 3) vx, vy [m/s] and yaw rate [rad/s] in the heading frame.
        hand_pos: (B, 2, 3) left/right hand position in the root frame [m].
        hand_quat: (B, 2, 4) left/right hand orientation in the root frame (wxyz).
        gripper: (B, 2) left/right gripper, 0 open .. 1 closed.
    """

    base_vel: Tensor
    hand_pos: Tensor
    hand_quat: Tensor
    gripper: Tensor

    @property
    def num_worlds(self) -> int:
        return int(self.base_vel.shape[0])

    def to_vector(self) -> Tensor:
        """(B, 19): base_vel, hand_pos (L, R), hand_quat (L, R), gripper (L, R)."""
        b = self.num_worlds
        return torch.cat([self.base_vel, self.hand_pos.reshape(b, 6), self.hand_quat.reshape(b, 8),
                          self.gripper], dim=-1)

    @classmethod
    def from_vector(cls, vec: Tensor) -> Command:
        """Inverse of `to_vector`."""
        if vec.shape[-1] != COMMAND_DIM:
            raise ValueError(f"a command vector has {COMMAND_DIM} entries, got {vec.shape[-1]}")
        b = vec.shape[0]
        return cls(base_vel=vec[:, 0:3], hand_pos=vec[:, 3:9].reshape(b, 2, 3),
                   hand_quat=vec[:, 9:17].reshape(b, 2, 4), gripper=vec[:, 17:19])

    @staticmethod
    def field_names() -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(Command))


@dataclass(frozen=True)
class CommandLimits:
    """Limits the command boundary enforces (clamps), in the units of `Command`.

    Defaults suit simulation; `CommandLimits.hardware()` gives the slow limits used on the robot.
    The hand box is in the root frame and bounds where a hand may be commanded.
    """

    max_vx_mps: float = 0.6
    max_vy_mps: float = 0.4
    max_yaw_rate_rps: float = 1.0
    max_hand_speed_mps: float = 0.8
    hand_box_min_m: tuple[float, float, float] = (-0.15, -0.65, -0.45)
    hand_box_max_m: tuple[float, float, float] = (0.75, 0.65, 0.65)

    @classmethod
    def hardware(cls) -> CommandLimits:
        """Conservative limits for the real robot (paper: about 0.2 m/s walking, 0.05 m/s hands)."""
        return cls(max_vx_mps=0.2, max_vy_mps=0.15, max_yaw_rate_rps=0.4, max_hand_speed_mps=0.05)


def check_finite(cmd: Command) -> None:
    """Raise `SafetyLimitError` naming the first world and field that hold NaN or inf."""
    if bool(torch.isfinite(cmd.to_vector()).all()):
        return  # the common case, in one pass
    for name in Command.field_names():
        value = getattr(cmd, name)
        bad = ~torch.isfinite(value.reshape(value.shape[0], -1)).all(dim=1)
        if bool(bad.any()):
            world = int(torch.nonzero(bad)[0, 0])
            raise SafetyLimitError(
                f"command field '{name}' of world {world} is not finite "
                f"({value[world].flatten().tolist()}); commands must hold finite numbers")


def check_shapes(cmd: Command, num_worlds: int) -> None:
    """Raise ValueError when a field does not have its documented shape."""
    expected = {"base_vel": (num_worlds, 3), "hand_pos": (num_worlds, 2, 3),
                "hand_quat": (num_worlds, 2, 4), "gripper": (num_worlds, 2)}
    for name, shape in expected.items():
        got = tuple(getattr(cmd, name).shape)
        if got != shape:
            raise ValueError(f"command field '{name}' has shape {got}, expected {shape}")


@functools.lru_cache(maxsize=16)
def _limit_tensors(limits: CommandLimits) -> tuple[Tensor, Tensor, Tensor]:
    """Velocity bounds and the hand box as float64 tensors, made once per limits."""
    f64 = torch.float64
    return (torch.tensor([limits.max_vx_mps, limits.max_vy_mps, limits.max_yaw_rate_rps],
                         dtype=f64),
            torch.tensor(limits.hand_box_min_m, dtype=f64),
            torch.tensor(limits.hand_box_max_m, dtype=f64))


def clamp_command(cmd: Command, limits: CommandLimits, prev_hand_pos: Tensor | None,
                  dt_s: float) -> Command:
    """Validate and clamp a command; returns the command that will be applied.

    Args:
        cmd: the requested command, (B, ...) fields.
        limits: the limits to enforce.
        prev_hand_pos: (B, 2, 3) the last applied hand positions, for the hand speed limit, or
            None to skip it (first tick after a reset).
        dt_s: time since the last applied command.

    Raises:
        SafetyLimitError: a field holds NaN or inf, or a hand quaternion has zero norm.
    """
    check_finite(cmd)
    vel_max, lo, hi = _limit_tensors(limits)
    base_vel = torch.maximum(torch.minimum(cmd.base_vel, vel_max), -vel_max)
    hand_pos = torch.maximum(torch.minimum(cmd.hand_pos, hi), lo)
    if prev_hand_pos is not None:
        step = hand_pos - prev_hand_pos
        max_step = limits.max_hand_speed_mps * dt_s
        norm = step.norm(dim=-1, keepdim=True)
        hand_pos = prev_hand_pos + step * torch.clamp(max_step / norm.clamp_min(1e-12), max=1.0)
        hand_pos = torch.maximum(torch.minimum(hand_pos, hi), lo)
    norm = cmd.hand_quat.norm(dim=-1, keepdim=True)
    if bool((norm < 1e-6).any()):
        world = int(torch.nonzero((norm < 1e-6).reshape(norm.shape[0], -1).any(dim=1))[0, 0])
        raise SafetyLimitError(f"command field 'hand_quat' of world {world} has zero norm; "
                               f"send a unit quaternion (w, x, y, z)")
    hand_quat = cmd.hand_quat / norm
    # One hemisphere (w >= 0) so that equal rotations compare equal.
    hand_quat = torch.where(hand_quat[..., :1] < 0, -hand_quat, hand_quat)
    gripper = cmd.gripper.clamp(0.0, 1.0)
    return Command(base_vel=base_vel, hand_pos=hand_pos, hand_quat=hand_quat, gripper=gripper)


@dataclass(frozen=True)
class Observation:
    """What the robot (or the simulator) reports each control tick, batched.

    Attributes:
        time_s: (B,) episode time.
        joint_pos, joint_vel: (B, 29) in `RobotSpec.joint_names` order.
        gripper_pos: (B, 2) 0 open .. 1 closed (measured finger travel).
        root_pos, root_quat: (B, 3), (B, 4) trunk pose in the world (sim: exact; robot: estimate).
        root_lin_vel, root_ang_vel: (B, 3) in the root frame.
        projected_gravity: (B, 3) unit gravity direction in the root frame.
        hand_pos, hand_quat: (B, 2, 3), (B, 2, 4) grasp-site poses in the root frame.
        foot_pos, foot_quat: (B, 2, 3), (B, 2, 4) sole poses in the root frame.
        task: named task tensors (object / handle / target poses relative to the root), (B, ...).
    """

    time_s: Tensor
    joint_pos: Tensor
    joint_vel: Tensor
    gripper_pos: Tensor
    root_pos: Tensor
    root_quat: Tensor
    root_lin_vel: Tensor
    root_ang_vel: Tensor
    projected_gravity: Tensor
    hand_pos: Tensor
    hand_quat: Tensor
    foot_pos: Tensor
    foot_quat: Tensor
    task: dict[str, Tensor]

    @property
    def num_worlds(self) -> int:
        return int(self.time_s.shape[0])


@dataclass(frozen=True)
class HarnessTarget:
    """Pose the simulator's virtual harness pulls the trunk to (reference controller only)."""

    pos: Tensor  # (B, 3) world
    quat: Tensor  # (B, 4) world, wxyz


@dataclass(frozen=True)
class JointTargets:
    """What a controller asks of the robot each control tick.

    Attributes:
        joint_pos: (B, 29) PD position targets in `RobotSpec.joint_names` order [rad].
        gripper: (B, 2) gripper targets, 0 open .. 1 closed.
        harness: a harness pose for simulated worlds, or None (no harness: the robot stands on
            its own). A real robot refuses targets with a harness.
    """

    joint_pos: Tensor
    gripper: Tensor
    harness: HarnessTarget | None = None
