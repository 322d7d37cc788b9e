"""A batched velocity-to-footstep planner: base-velocity commands in, discrete footholds out.

The lower-body locomotion policy does not track a velocity directly; it tracks footholds that
this planner derives from the velocity command (paper: "a velocity-to-footstep planner"). The
planner is pure bookkeeping on small tensors (torch, no simulator, no Qt), deterministic, and
shared by training (`learning.controller.lower_env`), the runtime and evaluation, which compare
the achieved footholds against `planned_footholds`.

Gait: one foot swings at a time for a fixed `step_period_s` (default 0.4 s, the air time the
policy's air-time reward asks for); there is no planned double-support phase. Steps alternate
left / right. At each lift-off the planner re-anchors on the *measured* stance foot (so a slip
does not accumulate into the plan) and places the swing foot's target relative to it:

    yaw_target = yaw_stance + clamp(yaw_rate * T)
    (x, y)_target = (x, y)_stance + R(yaw_mid) @ (clamp(vx * T), side * W + clamp(vy * T))

with T the step period, W the nominal stance width, side +1 for the left foot and -1 for the
right one, and yaw_mid halfway between the stance and target yaws. So at a constant forward
command successive footholds are vx * T apart (the step length), and the body has to move at
vx to stay over them. Lateral steps never bring the feet closer than `min_width_m`.

Standing: while the command is below `moving_threshold` in every component, no step is started
and the footholds stay where they are (they do not follow the measured feet: standing still
means keeping the feet where they were planned). When the command drops to zero mid-walk, the
current step finishes, and at most one more "square-up" step is taken if the next foot is more
than `settle_m` / `settle_rad` off its side-by-side foothold; then the robot stands.

Frames: footholds live in the world frame as planar poses (x, y, yaw). `relative_footholds`
expresses them in the heading frame of the robot's root (the root position on the ground plane
and the root's yaw), which is how the policy observes them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from robot_io.math3d import quat_mul, quat_rotate, wrap_angle, yaw_of
from robot_io.types import Observation

NO_SWING = -1  # `swing_leg` value while both feet are planted


@dataclass(frozen=True)
class FootstepConfig:
    """Footstep planner parameters (documented defaults for the Booster T1).

    Attributes:
        step_period_s: duration of one step (one swing); one foothold per period.
        stance_width_m: nominal lateral distance between the feet (T1 default pose: 0.213 m).
        min_width_m: lateral steps never place the feet closer than this.
        max_step_x_m, max_step_y_m, max_step_yaw_rad: per-step clamps of the displacement a
            command asks for (forward, lateral beyond the stance width, yaw).
        moving_threshold: a command component above this (m/s or rad/s) means walk.
        settle_m, settle_rad: after stopping, a foot this far off its side-by-side foothold
            takes one more step.
        clearance_m: apex height of the swing foot's reference arc above its sole height.
    """

    step_period_s: float = 0.4
    stance_width_m: float = 0.213
    min_width_m: float = 0.16
    max_step_x_m: float = 0.3
    max_step_y_m: float = 0.15
    max_step_yaw_rad: float = 0.4
    moving_threshold: float = 0.05
    settle_m: float = 0.03
    settle_rad: float = 0.1
    clearance_m: float = 0.08

    def __post_init__(self) -> None:
        for name in ("step_period_s", "stance_width_m", "min_width_m", "max_step_x_m",
                     "max_step_y_m", "max_step_yaw_rad", "moving_threshold", "settle_m",
                     "settle_rad"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"FootstepConfig.{name} must be a positive number, got {value}")
        if self.min_width_m > self.stance_width_m:
            raise ValueError(f"FootstepConfig.min_width_m ({self.min_width_m}) exceeds "
                             f"stance_width_m ({self.stance_width_m})")


def _rot2(yaw: Tensor, xy: Tensor) -> Tensor:
    """Rotate planar vectors xy (..., 2) by yaw (...,)."""
    c, s = torch.cos(yaw), torch.sin(yaw)
    return torch.stack([c * xy[..., 0] - s * xy[..., 1], s * xy[..., 0] + c * xy[..., 1]], -1)


def _smooth(s: Tensor) -> Tensor:
    s = s.clamp(0.0, 1.0)
    return s * s * (3 - 2 * s)


def feet_from_observation(obs: Observation) -> Tensor:
    """(B, 2, 3) planar world poses (x, y, yaw) of the left and right sole sites.

    The T1's sole sites have the trunk's yaw in the default pose, so no offset is needed.
    """
    quat = obs.root_quat.unsqueeze(1).expand(-1, 2, -1)
    pos = obs.root_pos.unsqueeze(1) + quat_rotate(quat, obs.foot_pos)
    yaw = yaw_of(quat_mul(quat, obs.foot_quat))
    return torch.cat([pos[..., :2], yaw.unsqueeze(-1)], -1)


class FootstepPlanner:
    """Per-world footstep plans, advanced one control tick at a time.

    Args:
        num_worlds: B.
        dt_s: control period [s].
        cfg: planner parameters.

    State (read-only views; float64 unless noted):
        swing_leg: (B,) long, 0 left, 1 right, `NO_SWING` (-1) while standing.
        phase_s: (B,) time since the current swing started (0 while standing).
        planned_footholds: (B, 2, 3) world planar poses (x, y, yaw) of the left and right
            feet: the swing foot's target, and the foothold the stance foot was anchored at.
        lift: (B, 3) the swing foot's measured pose at lift-off.
    """

    def __init__(self, num_worlds: int, dt_s: float, cfg: FootstepConfig | None = None) -> None:
        if num_worlds < 1:
            raise ValueError(f"num_worlds must be at least 1, got {num_worlds}")
        if not dt_s > 0:
            raise ValueError(f"dt_s must be positive, got {dt_s}")
        self.cfg = cfg or FootstepConfig()
        if dt_s > self.cfg.step_period_s:
            raise ValueError(f"the control period {dt_s} s is longer than a step "
                             f"({self.cfg.step_period_s} s)")
        self.num_worlds, self.dt = num_worlds, dt_s
        f64 = torch.float64
        self.swing_leg = torch.full((num_worlds,), NO_SWING, dtype=torch.long)
        self.next_leg = torch.zeros(num_worlds, dtype=torch.long)
        self.phase_s = torch.zeros(num_worlds, dtype=f64)
        self.planned_footholds = torch.zeros(num_worlds, 2, 3, dtype=f64)
        self.lift = torch.zeros(num_worlds, 3, dtype=f64)
        self._touchdown = torch.zeros(num_worlds, 2, dtype=torch.bool)
        self._touchdown_footholds = torch.zeros(num_worlds, 2, 3, dtype=f64)
        self._rows = torch.arange(num_worlds)
        self._side = torch.tensor([1.0, -1.0], dtype=f64)

    # -- life cycle ---------------------------------------------------------------------------
    def reset(self, feet: Tensor, ids: Tensor | None = None) -> None:
        """Stand worlds `ids` (all when None) on their measured feet (n, 2, 3) (x, y, yaw)."""
        ids = self._rows if ids is None else torch.as_tensor(ids, dtype=torch.long)
        if feet.shape != (len(ids), 2, 3):
            raise ValueError(f"feet must have shape ({len(ids)}, 2, 3), got {tuple(feet.shape)}")
        self.planned_footholds[ids] = feet.to(torch.float64)
        self.swing_leg[ids] = NO_SWING
        self.next_leg[ids] = 0
        self.phase_s[ids] = 0.0
        self.lift[ids] = feet[:, 0].to(torch.float64)
        self._touchdown[ids] = False

    def step(self, base_vel: Tensor, feet: Tensor) -> None:
        """Advance every world by one control tick.

        Args:
            base_vel: (B, 3) command vx, vy [m/s], yaw rate [rad/s] in the heading frame.
            feet: (B, 2, 3) measured planar poses of the feet (`feet_from_observation`), used
                when a step starts (anchor on the stance foot, lift-off pose of the swing foot).
        """
        b, cfg = self.num_worlds, self.cfg
        if base_vel.shape != (b, 3) or feet.shape != (b, 2, 3):
            raise ValueError(f"base_vel must be ({b}, 3) and feet ({b}, 2, 3), got "
                             f"{tuple(base_vel.shape)} and {tuple(feet.shape)}")
        vel, feet = base_vel.to(torch.float64), feet.to(torch.float64)
        # 1. Swings in progress advance; those that reach the period touch down.
        swinging = self.swing_leg != NO_SWING
        self.phase_s = torch.where(swinging, self.phase_s + self.dt, self.phase_s)
        landed = swinging & (self.phase_s >= cfg.step_period_s - 1e-9)
        self._touchdown = torch.zeros_like(self._touchdown)
        self._touchdown[self._rows[landed], self.swing_leg[landed]] = True
        self._touchdown_footholds = self.planned_footholds.clone()  # before any re-anchoring
        self.next_leg = torch.where(landed, 1 - self.swing_leg, self.next_leg)
        self.swing_leg = torch.where(landed, torch.full_like(self.swing_leg, NO_SWING),
                                     self.swing_leg)
        self.phase_s = torch.where(landed, torch.zeros_like(self.phase_s), self.phase_s)
        # 2. Idle worlds start a step when commanded to move or when a foot needs squaring up.
        idle = self.swing_leg == NO_SWING
        if not bool(idle.any()):
            return
        moving = (vel.abs() > cfg.moving_threshold).any(-1)
        # From standing (not right after a touchdown), lead with the foot on the side the
        # command moves to, so that a sideways step never starts by crossing the feet.
        standing = idle & ~landed
        lead = torch.where(vel[:, 1].abs() > cfg.moving_threshold, vel[:, 1], vel[:, 2])
        first = torch.where(lead > cfg.moving_threshold, 0,
                            torch.where(lead < -cfg.moving_threshold, 1, self.next_leg))
        leg = torch.where(standing & moving, first, self.next_leg)
        stance = 1 - leg
        anchor = torch.where(moving.unsqueeze(-1), feet[self._rows, stance],
                             self.planned_footholds[self._rows, stance])
        target = self._target(anchor, leg, torch.where(moving.unsqueeze(-1), vel,
                                                       torch.zeros_like(vel)))
        current = self.planned_footholds[self._rows, leg]
        off = ((target[:, :2] - current[:, :2]).norm(dim=-1) > cfg.settle_m) | (
            wrap_angle(target[:, 2] - current[:, 2]).abs() > cfg.settle_rad)
        start = idle & (moving | off)
        rows = self._rows[start]
        self.swing_leg[rows] = leg[start]
        self.phase_s[rows] = 0.0
        self.planned_footholds[rows, stance[start]] = anchor[start]
        self.planned_footholds[rows, leg[start]] = target[start]
        self.lift[rows] = feet[rows, leg[start]]

    def _target(self, anchor: Tensor, leg: Tensor, vel: Tensor) -> Tensor:
        """(B, 3) foothold of `leg` (B,) placed from the stance foot pose `anchor` (B, 3)."""
        cfg, period = self.cfg, self.cfg.step_period_s
        dyaw = (vel[:, 2] * period).clamp(-cfg.max_step_yaw_rad, cfg.max_step_yaw_rad)
        dx = (vel[:, 0] * period).clamp(-cfg.max_step_x_m, cfg.max_step_x_m)
        dy = (vel[:, 1] * period).clamp(-cfg.max_step_y_m, cfg.max_step_y_m)
        side = self._side[leg]
        lateral = side * (side * (side * cfg.stance_width_m + dy)).clamp(min=cfg.min_width_m)
        xy = anchor[:, :2] + _rot2(anchor[:, 2] + 0.5 * dyaw, torch.stack([dx, lateral], -1))
        return torch.cat([xy, wrap_angle(anchor[:, 2] + dyaw).unsqueeze(-1)], -1)

    # -- what the policy and the rewards see --------------------------------------------------
    @property
    def countdown_s(self) -> Tensor:
        """(B,) time left until the swing foot touches down; 0 while standing."""
        left = self.cfg.step_period_s - self.phase_s
        return torch.where(self.swing_leg == NO_SWING, torch.zeros_like(left), left)

    def swing_indicator(self) -> Tensor:
        """(B, 2) one-hot of the swing foot (left, right); zeros while standing."""
        out = torch.zeros(self.num_worlds, 2, dtype=torch.float64)
        swinging = self.swing_leg != NO_SWING
        out[self._rows[swinging], self.swing_leg[swinging]] = 1.0
        return out

    def planned_touchdowns(self) -> tuple[Tensor, Tensor]:
        """After the latest `step`: (B, 2) bool, the feet whose planned swing ended at that
        tick, and (B, 2, 3) their planned footholds (world x, y, sole yaw); the
        `PlansFootholds` protocol of `learning.controller.eval_metrics`."""
        return self._touchdown.clone(), self._touchdown_footholds.clone()

    def relative_footholds(self, root_pos: Tensor, root_yaw: Tensor) -> Tensor:
        """(B, 2, 3) planned footholds (x, y, yaw) in the root's heading frame."""
        d = self.planned_footholds[..., :2] - root_pos[:, None, :2].to(torch.float64)
        yaw = root_yaw.to(torch.float64)
        xy = _rot2(-yaw[:, None].expand(-1, 2), d)
        return torch.cat([xy, wrap_angle(self.planned_footholds[..., 2] - yaw[:, None])
                          .unsqueeze(-1)], -1)

    def reference_feet(self, sole_height_m: float = 0.0) -> tuple[Tensor, Tensor]:
        """Where the feet should be now: (B, 2, 3) world positions and (B, 2) yaws.

        The stance foot stays on its foothold at `sole_height_m`; the swing foot moves from its
        lift-off pose to its target (smoothstep in x, y and yaw) on a sine arc of height
        `clearance_m`. While standing both feet are at their footholds.
        """
        cfg = self.cfg
        pos = torch.cat([self.planned_footholds[..., :2],
                         torch.full((self.num_worlds, 2, 1), sole_height_m,
                                    dtype=torch.float64)], -1)
        yaw = self.planned_footholds[..., 2].clone()
        swinging = self.swing_leg != NO_SWING
        if bool(swinging.any()):
            rows, leg = self._rows[swinging], self.swing_leg[swinging]
            s = self.phase_s[swinging] / cfg.step_period_s
            h = _smooth(s)
            lift, target = self.lift[swinging], self.planned_footholds[rows, leg]
            xy = lift[:, :2] + (target[:, :2] - lift[:, :2]) * h.unsqueeze(-1)
            z = sole_height_m + cfg.clearance_m * torch.sin(torch.pi * s.clamp(0.0, 1.0))
            pos[rows, leg] = torch.cat([xy, z.unsqueeze(-1)], -1)
            yaw[rows, leg] = wrap_angle(lift[:, 2] + wrap_angle(target[:, 2] - lift[:, 2]) * h)
        return pos, yaw
