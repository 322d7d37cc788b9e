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
# None as the terrain function means flat ground at height zero.


@dataclass(frozen=True)
class GaitConfig:
    """Stepping parameters (documented defaults)."""

    swing_time_s: float = 0.35
    clearance_m: float = 0.07
    start_threshold_m: float = 0.04  # a foot this far from its nominal spot triggers a step
    start_threshold_rad: float = 0.12
    moving_threshold: float = 0.02  # |command| above which the robot keeps stepping
    height_time_const_s: float = 0.2
    # The harness target never runs further than leash_m + leash_lag_s * speed ahead of the
    # trunk: room for the weld's steady lag when walking, while bounding how hard the harness
    # shoves a blocked robot (against a latched door or a table, say).
    leash_m: float = 0.03
    leash_lag_s: float = 0.1
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

    def __init__(self, nominal_feet: Tensor, dt_s: float, terrain: TerrainFn | None,
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
        leash = cfg.leash_m + cfg.leash_lag_s * base_vel[:, :2].norm(dim=-1, keepdim=True)
        self.pos[:, :2] = root_pos[:, :2] + lead * torch.clamp(leash / dist.clamp_min(1e-9),
                                                               max=1.0)
        moving = base_vel.abs().max(dim=1).values > cfg.moving_threshold
        self._start_steps(moving)
        land_z = self._advance_swing(base_vel)
        # Support: the lowest of the stance feet and the swing foot's landing spot.
        z = self.feet[:, :, 2].clone()
        rows = torch.arange(self.num_worlds)
        leg = self.swing_leg.clamp(min=0)
        z[rows, leg] = torch.where(self.swing_leg >= 0, land_z, z[rows, leg])
        alpha = min(1.0, dt / cfg.height_time_const_s)
        self.support += alpha * (z.min(dim=1).values - self.support)
        self.pos[:, 2] = self.support + self.stand_height - cfg.crouch_m

    def _landing(self, base_vel: Tensor, legs: Tensor,
                 remaining_s: Tensor) -> tuple[Tensor, Tensor]:
        """Landing positions (B, K, 3) and yaws (B, K) of `legs` (B, K) touching down
        `remaining_s` (B,) from now: under the body half a swing after touchdown."""
        ahead = remaining_s + 0.5 * self.cfg.swing_time_s
        yaw = wrap_angle(self.yaw + base_vel[:, 2] * ahead)
        xy = self.pos[:, :2] + _rot2(self.yaw, base_vel[:, :2]) * ahead.unsqueeze(-1)
        xy = xy.unsqueeze(1) + _rot2(yaw, self.nominal[legs, :2])
        b, k = legs.shape
        if self.terrain is None:
            z = torch.zeros(b, k, dtype=xy.dtype)
        else:  # the highest ground under toe, centre and heel
            along = torch.stack([torch.cos(yaw), torch.sin(yaw)], -1).unsqueeze(1)
            probes = torch.stack([xy + t * along for t in (0.0, *self.cfg.foot_length_m)], 2)
            z = self.terrain(probes.reshape(b, k * 3, 2)).reshape(b, k, 3).max(dim=2).values
        return torch.cat([xy, z.unsqueeze(-1)], -1), yaw.unsqueeze(1).expand(b, k)

    def _start_steps(self, moving: Tensor) -> None:
        """Start a swing in idle worlds that move or whose feet are off their nominal spots."""
        idle = self.swing_leg < 0
        if not bool(idle.any()):
            return
        b = self.num_worlds
        legs = torch.tensor([[0, 1]]).expand(b, 2)
        zero = torch.zeros(b, dtype=torch.float64)
        target, yaw = self._landing(torch.zeros(b, 3, dtype=torch.float64), legs, zero)
        pos_err = (self.feet - target).norm(dim=-1)
        yaw_err = wrap_angle(self.feet_yaw - yaw).abs()
        off = (pos_err > self.cfg.start_threshold_m) | (yaw_err > self.cfg.start_threshold_rad)
        start = idle & (moving | off.any(dim=1))
        # From rest, step first with the foot that is furthest off; else alternate.
        leg = torch.where(moving, self.next_leg, (pos_err + 0.3 * yaw_err).argmax(dim=1))
        rows = torch.arange(b)
        self.swing_leg = torch.where(start, leg, self.swing_leg)
        self.phase = torch.where(start, zero, self.phase)
        self.lift = torch.where(start.unsqueeze(-1), self.feet[rows, leg], self.lift)
        self.lift_yaw = torch.where(start, self.feet_yaw[rows, leg], self.lift_yaw)

    def _advance_swing(self, base_vel: Tensor) -> Tensor:
        """Move swing feet along their arcs; returns (B,) landing heights of the swing feet."""
        cfg = self.cfg
        swinging = self.swing_leg >= 0
        leg = self.swing_leg.clamp(min=0)
        self.phase = torch.where(swinging, self.phase + self.dt / cfg.swing_time_s, self.phase)
        s = self.phase.clamp(max=1.0)
        land, land_yaw = self._landing(base_vel, leg.unsqueeze(1), (1.0 - s) * cfg.swing_time_s)
        land, land_yaw = land[:, 0], land_yaw[:, 0]
        lift = self.lift
        h = _smooth((s - 0.15) / 0.7)
        xy = lift[:, :2] + (land[:, :2] - lift[:, :2]) * h.unsqueeze(-1)
        peak = torch.maximum(lift[:, 2], land[:, 2]) + cfg.clearance_m
        rise = lift[:, 2] + (peak - lift[:, 2]) * _smooth(2 * s)
        fall = peak + (land[:, 2] - peak) * _smooth(2 * s - 1)
        foot = torch.cat([xy, torch.where(s < 0.5, rise, fall).unsqueeze(-1)], -1)
        rows = torch.arange(self.num_worlds)
        self.feet[rows, leg] = torch.where(swinging.unsqueeze(-1), foot, self.feet[rows, leg])
        foot_yaw = self.lift_yaw + wrap_angle(land_yaw - self.lift_yaw) * h
        self.feet_yaw[rows, leg] = torch.where(swinging, foot_yaw, self.feet_yaw[rows, leg])
        done = swinging & (s >= 1.0)
        self.next_leg = torch.where(done, 1 - leg, self.next_leg)
        self.swing_leg = torch.where(done, torch.full_like(leg, -1), self.swing_leg)
        return land[:, 2]
