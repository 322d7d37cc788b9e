"""What every heuristic planner shares: per-world stage bookkeeping, per-world random parameters,
motion smoothing, a walking controller and the assembly of the `Command`.

Every tick a planner turns the observation into *targets* for all worlds at once (a base
velocity, a right-hand position and yaw, a gripper value; see `Tick`), stage by stage: a stage
is an integer in a (B,) tensor, named by an `IntEnum` in the task module, and each stage writes
its targets into the worlds it holds through boolean masks, so no Python loop runs over worlds.
`PlannerCore.command` then smooths the targets into the command: base velocities change with a
bounded acceleration, the hand moves toward its target at a bounded speed, the gripper closes at
a bounded rate.

Per-world randomness (speeds, stand-off offsets, dwell times) comes from the `Range` fields of
the planners' config dataclasses, sampled at every episode start from the planner's own seeded
generator: the same seed gives the same demonstrations, and worlds differ from each other.

Frames: positions and yaws are in the root frame (x forward, y left, z up), base velocities in
the heading frame, as in `robot_io.types`. Planners compute on the CPU in float64; observations
of another dtype or device are converted, and commands go back to the observation's device.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor

from robot_io.math3d import quat_from_axis_angle, wrap_angle, yaw_of
from robot_io.tasks.base import Range
from robot_io.types import Command, Observation

F64 = torch.float64
LEFT_REST_M = (0.12, 0.24, -0.13)  # where the idle left hand rests, root frame (reachable
# with the fingers forward: lower rests leave the arm short of its target)
RIGHT_REST_M = (0.12, -0.24, -0.13)
RIGHT = 1  # side index of the right hand / gripper


@dataclass(frozen=True)
class MotionConfig:
    """How fast a planner moves (sampled per world at each episode start).

    Base speeds stay well below `CommandLimits` (0.6 m/s, 0.4 m/s, 1 rad/s), hand speeds below
    its 0.8 m/s.
    """

    walk_mps: Range = Range(0.22, 0.34)  # forward speed cap
    side_mps: Range = Range(0.12, 0.18)  # sideways speed cap
    back_mps: Range = Range(0.12, 0.18)  # backward speed cap
    yaw_rate_rps: Range = Range(0.35, 0.55)
    accel_mps2: Range = Range(0.4, 0.8)  # bound on the change of vx, vy per second
    yaw_accel_rps2: Range = Range(0.8, 1.5)
    hand_mps: Range = Range(0.18, 0.3)  # hand speed toward its target
    hand_yaw_rps: Range = Range(0.8, 1.2)
    grip_rate_ps: Range = Range(2.5, 5.0)  # gripper command change per second (0..1 scale)
    dwell_s: Range = Range(0.1, 0.45)  # pause before a stage that needs the robot settled
    start_delay_s: Range = Range(0.0, 0.6)  # the base stands still this long into an episode


@dataclass
class Tick:
    """One tick of a planner: the inputs its stage functions share and the targets they write.

    Attributes:
        obs: the observation (float64, CPU).
        stage: (B,) every world's stage at the start of the tick. Stage functions read their
            masks from it (not from the live `PlannerCore.stage`), so a world makes at most one
            transition per tick and this tick's targets are those of the stage it was in.
        elapsed_s: (B,) time since each world entered that stage.
        out: the targets, (B, ...) tensors by name: "base_vel" (B, 3) vx, vy [m/s] and yaw rate
            [rad/s]; "hand_pos" (B, 3) right-hand position [m]; "hand_yaw" (B,) right-hand yaw
            about the root z axis [rad] (0: fingers forward); "grip" (B,) right gripper, 0 open
            .. 1 closed; "hand_speed" (B,) multiplier on the world's hand speed. By default the
            robot stands and the hand and gripper stay as commanded.
    """

    obs: Observation
    stage: Tensor
    elapsed_s: Tensor
    out: dict[str, Tensor]

    def put(self, mask: Tensor, **values: Tensor | float) -> None:
        """Overwrite targets in worlds `mask` (B,); scalars broadcast."""
        if not bool(mask.any()):
            return
        for name, value in values.items():
            current = self.out[name]
            value = torch.as_tensor(value, dtype=current.dtype).expand_as(current)
            self.out[name] = select(mask, value, current)


def select(mask: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """`a` where mask (B,) is True, else `b`; broadcasts the mask over trailing dimensions."""
    return torch.where(mask.reshape(-1, *([1] * (a.dim() - 1))), a, b)


def quarter_turn_residual(yaw: Tensor) -> Tensor:
    """Yaw of a square object folded into [-pi/4, pi/4): the smallest turn that aligns with one
    of its faces."""
    return torch.remainder(yaw + torch.pi / 4, torch.pi / 2) - torch.pi / 4


def rate_limit(current: Tensor, target: Tensor, max_step: Tensor) -> Tensor:
    """Move `current` (B, D) toward `target` by at most `max_step` (B,) in Euclidean norm."""
    step = target - current
    norm = step.norm(dim=-1, keepdim=True)
    scale = torch.clamp(max_step.unsqueeze(-1) / norm.clamp_min(1e-12), max=1.0)
    return current + step * scale


def hand_quat_from_yaw(yaw: Tensor) -> Tensor:
    """(B,) yaw about the root z axis -> (B, 4) hand orientation (identity: fingers forward)."""
    z_axis = torch.tensor([0.0, 0.0, 1.0], dtype=F64).expand(yaw.shape[0], 3)
    return quat_from_axis_angle(z_axis, yaw)


def planar_rotate(vec_xy: Tensor, yaw: Tensor) -> Tensor:
    """Rotate planar vectors (B, 2) by yaw (B,)."""
    c, s = torch.cos(yaw), torch.sin(yaw)
    x, y = vec_xy[:, 0], vec_xy[:, 1]
    return torch.stack([c * x - s * y, s * x + c * y], -1)


def world_to_heading(vec_xy: Tensor, root_quat: Tensor) -> Tensor:
    """(B, 2) world-frame planar vectors expressed in the heading frame of roots (B, 4)."""
    return planar_rotate(vec_xy, -yaw_of(root_quat))


def walk_to_pose(goal_xy: Tensor, goal_yaw: Tensor, walk_mps: Tensor, side_mps: Tensor,
                 back_mps: Tensor, yaw_rate_rps: Tensor, far_m: float = 0.6,
                 near_m: float = 0.25, gain_ps: float = 1.2, yaw_gain_ps: float = 1.5,
                 pos_tol_m: float = 0.0, yaw_tol_rad: float = 0.0,
                 turn_first_rad: float = 0.6) -> Tensor:
    """Base velocity that brings the root to a goal pose given in the current root frame.

    Far from the goal (beyond `far_m`) the robot faces the goal point and walks forward; closer
    than `near_m` it turns to the goal's heading and moves holonomically; in between it blends.
    Far away, forward speed drops while the heading error is large, so it turns before it walks.

    Args:
        goal_xy: (B, 2) goal position in the root frame [m].
        goal_yaw: (B,) goal heading relative to the current one [rad].
        walk_mps, side_mps, back_mps, yaw_rate_rps: (B,) speed caps.
        far_m, near_m: distances between which the heading target blends from the bearing of
            the goal point to the goal heading (far_m > near_m).
        gain_ps, yaw_gain_ps: proportional gains [1/s].
        pos_tol_m, yaw_tol_rad: dead bands: no motion inside them.
        turn_first_rad: far from the goal, forward speed falls to zero as the heading error
            grows to this angle (larger: walk along wider arcs).

    Returns:
        (B, 3) vx, vy, yaw rate.
    """
    dist = goal_xy.norm(dim=-1)
    bearing = torch.atan2(goal_xy[:, 1], goal_xy[:, 0])
    far = ((dist - near_m) / (far_m - near_m)).clamp(0.0, 1.0)
    heading_err = wrap_angle(goal_yaw + far * wrap_angle(bearing - goal_yaw))
    yaw_rate = (yaw_gain_ps * heading_err).clamp(-1.0, 1.0) * yaw_rate_rps
    yaw_rate = torch.where(heading_err.abs() < yaw_tol_rad, torch.zeros_like(yaw_rate), yaw_rate)
    facing = (1.0 - heading_err.abs() / turn_first_rad).clamp(0.0, 1.0)
    vel = gain_ps * goal_xy * (1.0 - far * (1.0 - facing)).unsqueeze(-1)
    vx_max = torch.where(vel[:, 0] >= 0, walk_mps, back_mps)
    # Keep the direction of travel: scale the vector into the box of the speed caps.
    over = torch.maximum((vel[:, 0] / vx_max).abs(), (vel[:, 1] / side_mps).abs())
    vel = vel / over.clamp_min(1.0).unsqueeze(-1)
    vel = torch.where((dist < pos_tol_m).unsqueeze(-1), torch.zeros_like(vel), vel)
    return torch.cat([vel, yaw_rate.unsqueeze(-1)], -1)


def as_cpu_f64(obs: Observation) -> Observation:
    """The observation in float64 on the CPU (itself when it already is)."""
    if obs.time_s.dtype == F64 and obs.time_s.device.type == "cpu":
        return obs
    def convert(x: Tensor) -> Tensor:
        return x.detach().to("cpu", F64)

    fields = {f.name: getattr(obs, f.name) for f in dataclasses.fields(obs)}
    fields = {k: ({n: convert(t) for n, t in v.items()} if k == "task" else convert(v))
              for k, v in fields.items()}
    return Observation(**fields)


class PlannerCore:
    """Per-world state of a heuristic planner: stage, stage start time, random parameters and
    the smoothed command.

    Args:
        num_worlds: B.
        seed: seed of the planner's own generator (per-world random parameters).
        configs: config dataclasses whose `Range` fields are sampled per world at each episode
            start into `self.p[name]` ((B,) tensors); names must not repeat across configs.

    Raises:
        ValueError: num_worlds < 1, or a parameter name defined twice.
    """

    def __init__(self, num_worlds: int, seed: int, configs: tuple[object, ...]) -> None:
        if num_worlds < 1:
            raise ValueError(f"num_worlds must be at least 1, got {num_worlds}")
        self.num_worlds = num_worlds
        self.gen = torch.Generator().manual_seed(int(seed))
        self.ranges: dict[str, Range] = {}
        for cfg in configs:
            for f in dataclasses.fields(cfg):
                value = getattr(cfg, f.name)
                if isinstance(value, Range):
                    if f.name in self.ranges:
                        raise ValueError(f"planner parameter {f.name!r} is defined twice")
                    self.ranges[f.name] = value
        b = num_worlds
        self.p = {name: torch.zeros(b, dtype=F64) for name in self.ranges}
        self.stage = torch.zeros(b, dtype=torch.long)
        self.stage_start_s = torch.zeros(b, dtype=F64)
        self.last_time_s = torch.zeros(b, dtype=F64)
        self.dt_s = torch.zeros(b, dtype=F64)
        self.base_vel = torch.zeros(b, 3, dtype=F64)
        self.hand_pos = torch.tensor(RIGHT_REST_M, dtype=F64).repeat(b, 1)
        self.hand_yaw = torch.zeros(b, dtype=F64)
        self.grip = torch.zeros(b, dtype=F64)
        self.anchor = torch.zeros(b, 3, dtype=F64)  # a point a stage freezes (grasp, release)
        self._device = torch.device("cpu")

    def reset(self, obs: Observation, ids: Tensor | None = None) -> None:
        """Start new episodes in worlds `ids` (all when None): stage 0, fresh parameters.

        Raises:
            ValueError: the observation has another number of worlds than the planner.
        """
        if obs.num_worlds != self.num_worlds:
            raise ValueError(f"observation has {obs.num_worlds} worlds, the planner was made "
                             f"for {self.num_worlds}")
        obs = as_cpu_f64(obs)
        ids = torch.arange(self.num_worlds) if ids is None else (
            torch.as_tensor(ids, dtype=torch.long).reshape(-1).cpu())
        if len(ids) == 0:
            return
        for name, rng in self.ranges.items():
            self.p[name][ids] = rng.sample(len(ids), self.gen)
        self.stage[ids] = 0
        self.stage_start_s[ids] = obs.time_s[ids]
        self.last_time_s[ids] = obs.time_s[ids]
        self.base_vel[ids] = 0.0
        # Start from where the hand and gripper are, so the first commands do not jump.
        self.hand_pos[ids] = obs.hand_pos[ids, RIGHT]
        self.hand_yaw[ids] = 0.0
        self.grip[ids] = obs.gripper_pos[ids, RIGHT].clamp(0.0, 1.0)
        self.anchor[ids] = 0.0

    def begin_tick(self, obs: Observation) -> Tick:
        """Start a tick: time steps, stage snapshot, default targets.

        A world whose clock went back started a new episode that nobody announced with
        `reset`: it is reset here.

        Raises:
            ValueError: the observation has another number of worlds than the planner.
        """
        if obs.num_worlds != self.num_worlds:
            raise ValueError(f"observation has {obs.num_worlds} worlds, the planner was made "
                             f"for {self.num_worlds}")
        self._device = obs.time_s.device
        obs = as_cpu_f64(obs)
        restarted = obs.time_s < self.last_time_s - 1e-9
        if bool(restarted.any()):
            self.reset(obs, torch.nonzero(restarted).squeeze(1))
        self.dt_s = (obs.time_s - self.last_time_s).clamp(0.0, 0.1)
        self.last_time_s = obs.time_s.clone()
        b = self.num_worlds
        out = {"base_vel": torch.zeros(b, 3, dtype=F64), "hand_pos": self.hand_pos.clone(),
               "hand_yaw": self.hand_yaw.clone(), "grip": self.grip.clone(),
               "hand_speed": torch.ones(b, dtype=F64)}
        return Tick(obs=obs, stage=self.stage.clone(),
                    elapsed_s=obs.time_s - self.stage_start_s, out=out)

    def enter(self, mask: Tensor, stage: int, tick: Tick) -> None:
        """Worlds in `mask` (B,) enter `stage` now."""
        self.stage = torch.where(mask, torch.full_like(self.stage, int(stage)), self.stage)
        self.stage_start_s = torch.where(mask, tick.obs.time_s, self.stage_start_s)

    def command(self, tick: Tick) -> Command:
        """Smooth this tick's targets into the command (and remember it)."""
        p, dt, out = self.p, self.dt_s, tick.out
        waiting = tick.obs.time_s < p["start_delay_s"]
        out["base_vel"] = torch.where(waiting.unsqueeze(-1), 0.0, out["base_vel"])
        accel = torch.stack([p["accel_mps2"], p["accel_mps2"], p["yaw_accel_rps2"]], -1)
        step = accel * dt.unsqueeze(-1)
        self.base_vel = self.base_vel + (out["base_vel"] - self.base_vel).clamp(-step, step)
        self.hand_pos = rate_limit(self.hand_pos, out["hand_pos"],
                                   p["hand_mps"] * out["hand_speed"] * dt)
        yaw_step = p["hand_yaw_rps"] * dt
        self.hand_yaw = self.hand_yaw + (out["hand_yaw"] - self.hand_yaw).clamp(-yaw_step,
                                                                                 yaw_step)
        grip_step = p["grip_rate_ps"] * dt
        self.grip = self.grip + (out["grip"] - self.grip).clamp(-grip_step, grip_step)
        cmd = assemble_command(self.base_vel, self.hand_pos, hand_quat_from_yaw(self.hand_yaw),
                               self.grip)
        if self._device.type != "cpu":
            cmd = Command(*(getattr(cmd, n).to(self._device) for n in Command.field_names()))
        return cmd


def assemble_command(base_vel: Tensor, right_pos: Tensor, right_quat: Tensor,
                     right_grip: Tensor) -> Command:
    """A `Command` with the right hand as given and the left hand resting, open."""
    b = base_vel.shape[0]
    left = torch.tensor(LEFT_REST_M, dtype=F64).expand(b, 3)
    identity = torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=F64).expand(b, 4)
    return Command(base_vel=base_vel.clone(),
                   hand_pos=torch.stack([left, right_pos], 1),
                   hand_quat=torch.stack([identity, right_quat], 1),
                   gripper=torch.stack([torch.zeros(b, dtype=F64), right_grip], 1))


class CorePlannerSource:
    """The `CommandSource` plumbing every heuristic planner shares: the per-world stages and
    episode resets live in its `core` (a `PlannerCore`); subclasses add `next_command`."""

    core: PlannerCore

    @property
    def stage(self) -> Tensor:
        """(B,) every world's current stage, an index into `stage_names`."""
        return self.core.stage.clone()

    def reset(self, obs: Observation, ids: Tensor | None = None) -> None:
        """Start new episodes in worlds `ids` (all when None)."""
        self.core.reset(obs, ids)
