"""A stepping animation for the harness-carried reference controller.

The harness target integrates the commanded base velocity. Feet stay planted in the world while
in stance; one foot at a time swings to a landing spot under where the body will be half a step
after touchdown, on an arc that first rises above both its lift-off and landing heights (so it
can step onto a platform). The pelvis height follows the lowest supporting foot.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from robot_io.math3d import wrap_angle

TerrainFn = Callable[[Tensor], Tensor]  # (B, P, 2) world xy -> (B, P) ground height


@dataclass(frozen=True)
class GaitConfig:
    """Stepping parameters (documented defaults)."""

    swing_time_s: float = 0.35
    clearance_m: float = 0.07
    start_threshold_m: float = 0.04  # a foot this far from its nominal spot triggers a step
    start_threshold_rad: float = 0.12
    moving_threshold: float = 0.02  # |command| above which the robot keeps stepping
    height_time_const_s: float = 0.2
    # The harness target never runs further than this ahead of the trunk, which bounds how
    # hard the harness shoves a blocked robot (against a latched door, say).
    leash_m: float = 0.06
    foot_length_m: tuple[float, float] = (0.1, -0.09)  # toe and heel along the foot
    # The pelvis rides this much below the default-pose height: the default leg is nearly
    # straight, and a bent knee leaves reach for feet that trail or lead the body.
    crouch_m: float = 0.035


def _smooth(s: Tensor) -> Tensor:
    s = s.clamp(0.0, 1.0)
    return s * s * (3 - 2 * s)


def _rot2(yaw: Tensor, v: Tensor) -> Tensor:
    """Rotate (B, ..., 2) planar vectors by yaw (B,)."""
    c, s = torch.cos(yaw), torch.sin(yaw)
    while c.dim() < v.dim() - 1:
        c, s = c.unsqueeze(-1), s.unsqueeze(-1)
    return torch.stack([c * v[..., 0] - s * v[..., 1], s * v[..., 0] + c * v[..., 1]], -1)


class Gait:
    """Per-world harness target and foot targets, advanced one control tick at a time.

    Args:
        nominal_feet: (2, 3) foot positions in the heading frame when standing in the default
            pose (z is minus the standing height).
        dt_s: control period.
        terrain: ground height function of the task.
        cfg: stepping parameters.
    """

    def __init__(self, nominal_feet: Tensor, dt_s: float, terrain: TerrainFn,
                 cfg: GaitConfig = GaitConfig()) -> None:
        self.nominal = nominal_feet
        self.stand_height = float(-nominal_feet[:, 2].mean())
        self.dt, self.terrain, self.cfg = dt_s, terrain, cfg
        self.num_worlds = 0

    def reset(self, root_pos: Tensor, root_yaw: Tensor, foot_pos: Tensor, foot_yaw: Tensor,
              ids: Tensor) -> None:
        """(Re)start worlds `ids` from their measured trunk and foot poses (world frame)."""
        n = int(ids.max()) + 1 if len(ids) else 0
        if self.num_worlds < n or not hasattr(self, "pos"):
            self._allocate(max(n, self.num_worlds))
        self.pos[ids] = root_pos
        self.yaw[ids] = root_yaw
        self.feet[ids] = foot_pos
        self.feet_yaw[ids] = foot_yaw
        self.support[ids] = foot_pos[:, :, 2].min(dim=1).values
        self.swing_leg[ids] = -1
        self.next_leg[ids] = 0
        self.phase[ids] = 0.0

    def _allocate(self, n: int) -> None:
        f64 = torch.float64
        self.num_worlds = n
        self.pos = torch.zeros(n, 3, dtype=f64)
        self.yaw = torch.zeros(n, dtype=f64)
        self.feet = torch.zeros(n, 2, 3, dtype=f64)
        self.feet_yaw = torch.zeros(n, 2, dtype=f64)
        self.lift = torch.zeros(n, 3, dtype=f64)
        self.lift_yaw = torch.zeros(n, dtype=f64)
        self.support = torch.zeros(n, dtype=f64)
        self.swing_leg = -torch.ones(n, dtype=torch.long)
        self.next_leg = torch.zeros(n, dtype=torch.long)
        self.phase = torch.zeros(n, dtype=f64)

    def step(self, base_vel: Tensor, root_pos: Tensor) -> None:
        """Advance by one tick under base velocity commands (B, 3) in the heading frame."""
        cfg, dt = self.cfg, self.dt
        # Harness target: integrate the command, kept on a leash near the measured trunk.
        self.yaw = wrap_angle(self.yaw + base_vel[:, 2] * dt)
        self.pos[:, :2] += _rot2(self.yaw, base_vel[:, :2]) * dt
        lead = self.pos[:, :2] - root_pos[:, :2]
        dist = lead.norm(dim=-1, keepdim=True)
        self.pos[:, :2] = root_pos[:, :2] + lead * torch.clamp(cfg.leash_m / dist.clamp_min(1e-9),
                                                               max=1.0)
        moving = base_vel.abs().max(dim=1).values > cfg.moving_threshold
        self._start_steps(moving, base_vel)
        self._advance_swing(base_vel)
        alpha = min(1.0, dt / cfg.height_time_const_s)
        self.support += alpha * (self._support_target() - self.support)
        self.pos[:, 2] = self.support + self.stand_height - cfg.crouch_m

    def _landing(self, base_vel: Tensor, leg: Tensor, remaining_s: Tensor) -> tuple[Tensor, Tensor]:
        """Landing position (B, 3) and yaw (B,) of `leg` if it touched down `remaining_s` from now."""
        ahead = remaining_s + 0.5 * self.cfg.swing_time_s
        yaw = wrap_angle(self.yaw + base_vel[:, 2] * ahead)
        xy = self.pos[:, :2] + _rot2(self.yaw, base_vel[:, :2]) * ahead.unsqueeze(-1)
        xy = xy + _rot2(yaw, self.nominal[leg, :2])
        along = torch.stack([torch.cos(yaw), torch.sin(yaw)], -1)
        probes = torch.stack([xy + t * along for t in (0.0, *self.cfg.foot_length_m)], 1)
        z = self.terrain(probes).max(dim=1).values
        return torch.cat([xy, z.unsqueeze(-1)], -1), yaw

    def _start_steps(self, moving: Tensor, base_vel: Tensor) -> None:
        idle = self.swing_leg < 0
        if not bool(idle.any()):
            return
        b = torch.arange(self.num_worlds)
        errors = []
        for leg in (0, 1):
            legs = torch.full((self.num_worlds,), leg, dtype=torch.long)
            target, yaw = self._landing(torch.zeros_like(base_vel), legs,
                                        torch.zeros(self.num_worlds, dtype=torch.float64))
            errors.append(((self.feet[:, leg] - target).norm(dim=-1),
                           wrap_angle(self.feet_yaw[:, leg] - yaw).abs()))
        pos_err = torch.stack([e[0] for e in errors], 1)
        yaw_err = torch.stack([e[1] for e in errors], 1)
        off = (pos_err > self.cfg.start_threshold_m) | (yaw_err > self.cfg.start_threshold_rad)
        start = idle & (moving | off.any(dim=1))
        # From rest, step first with the foot that is furthest off; else alternate.
        worst = (pos_err + 0.3 * yaw_err).argmax(dim=1)
        leg = torch.where(moving, self.next_leg, worst)
        self.swing_leg = torch.where(start, leg, self.swing_leg)
        self.phase = torch.where(start, torch.zeros_like(self.phase), self.phase)
        sel = torch.where(start)[0]
        self.lift[sel] = self.feet[sel, leg[sel]]
        self.lift_yaw[sel] = self.feet_yaw[sel, leg[sel]]
        del b

    def _advance_swing(self, base_vel: Tensor) -> None:
        swinging = torch.where(self.swing_leg >= 0)[0]
        if len(swinging) == 0:
            return
        cfg = self.cfg
        leg = self.swing_leg[swinging]
        self.phase[swinging] += self.dt / cfg.swing_time_s
        s = self.phase[swinging].clamp(max=1.0)
        remaining = (1.0 - s) * cfg.swing_time_s
        full_leg = torch.zeros(self.num_worlds, dtype=torch.long)
        full_leg[swinging] = leg
        full_rem = torch.zeros(self.num_worlds, dtype=torch.float64)
        full_rem[swinging] = remaining
        land, land_yaw = self._landing(base_vel, full_leg, full_rem)
        land, land_yaw = land[swinging], land_yaw[swinging]
        lift, lift_yaw = self.lift[swinging], self.lift_yaw[swinging]
        h = _smooth((s - 0.15) / 0.7).unsqueeze(-1)
        xy = lift[:, :2] + (land[:, :2] - lift[:, :2]) * h
        peak = torch.maximum(lift[:, 2], land[:, 2]) + cfg.clearance_m
        rise = lift[:, 2] + (peak - lift[:, 2]) * _smooth(2 * s)
        fall = peak + (land[:, 2] - peak) * _smooth(2 * s - 1)
        z = torch.where(s < 0.5, rise, fall)
        self.feet[swinging, leg] = torch.cat([xy, z.unsqueeze(-1)], -1)
        self.feet_yaw[swinging, leg] = lift_yaw + wrap_angle(land_yaw - lift_yaw) * h.squeeze(-1)
        done = swinging[s >= 1.0]
        if len(done):
            self.next_leg[done] = 1 - self.swing_leg[done]
            self.swing_leg[done] = -1
        self._land = (swinging, land)

    def _support_target(self) -> Tensor:
        """Lowest supporting height: stance feet and the swing foot's landing spot."""
        z = self.feet[:, :, 2].clone()
        if hasattr(self, "_land"):
            swinging, land = self._land
            still = self.swing_leg[swinging] >= 0
            rows = swinging[still]
            z[rows, self.swing_leg[rows]] = land[still, 2]
            del self._land
        return z.min(dim=1).values
