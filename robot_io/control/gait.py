"""A stepping animation for the harness-carried reference controller.

The harness target integrates the commanded base velocity. Feet stay planted in the world while
in stance; one foot at a time swings to a landing spot under where the body will be half a step
after touchdown, on an arc that first rises above both its lift-off and landing heights (so it
can step onto a platform). The pelvis height follows the lowest supporting foot.

The bookkeeping is per world and elementwise on small arrays, so it runs in NumPy (several
times cheaper per operation than torch at this size); its results are exposed as torch tensors
that share the NumPy memory.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

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


def _smooth(s: np.ndarray) -> np.ndarray:
    s = np.clip(s, 0.0, 1.0)
    return s * s * (3 - 2 * s)


def _wrap(a: np.ndarray) -> np.ndarray:
    return np.remainder(a + np.pi, 2 * np.pi) - np.pi


def _rot2(yaw: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Rotate planar vectors v (..., 2) by yaw (broadcast against v[..., 0])."""
    c, s = np.cos(yaw), np.sin(yaw)
    x, y = v[..., 0], v[..., 1]
    return np.stack([c * x - s * y, s * x + c * y], -1)


class Gait:
    """Per-world harness target and foot targets, advanced one control tick at a time.

    Args:
        num_worlds: B.
        nominal_feet: (2, 3) foot positions in the heading frame when standing in the default
            pose (z is minus the standing height).
        dt_s: control period.
        terrain: ground height function of the task, or None for flat ground.
        cfg: stepping parameters.

    Attributes (torch views of the state): pos (B, 3) and yaw (B,) of the harness target;
    feet (B, 2, 3) and feet_yaw (B, 2), the foot targets in the world.
    """

    def __init__(self, num_worlds: int, nominal_feet: Tensor, dt_s: float,
                 terrain: TerrainFn | None, cfg: GaitConfig = GaitConfig()) -> None:
        self.nominal = nominal_feet.detach().cpu().numpy().astype(np.float64)
        self.stand_height = float(-self.nominal[:, 2].mean())
        self.dt, self.terrain, self.cfg = dt_s, terrain, cfg
        n = self.num_worlds = num_worlds
        self._pos, self._yaw = np.zeros((n, 3)), np.zeros(n)
        self._feet, self._feet_yaw = np.zeros((n, 2, 3)), np.zeros((n, 2))
        self._lift, self._lift_yaw = np.zeros((n, 3)), np.zeros(n)
        self._support, self._phase = np.zeros(n), np.zeros(n)
        self._swing_leg = -np.ones(n, dtype=np.int64)  # -1: both feet planted
        self._next_leg = np.zeros(n, dtype=np.int64)
        self._rows = np.arange(n)
        self.pos, self.yaw = torch.from_numpy(self._pos), torch.from_numpy(self._yaw)
        self.feet, self.feet_yaw = torch.from_numpy(self._feet), torch.from_numpy(self._feet_yaw)

    def reset(self, root_pos: Tensor, root_yaw: Tensor, foot_pos: Tensor, foot_yaw: Tensor,
              ids: Tensor) -> None:
        """(Re)start worlds `ids` from their measured trunk and foot poses (world frame)."""
        ids = ids.cpu().numpy()
        feet = foot_pos.detach().cpu().numpy()
        self._pos[ids] = root_pos.detach().cpu().numpy()
        self._yaw[ids] = root_yaw.detach().cpu().numpy()
        self._feet[ids] = feet
        self._feet_yaw[ids] = foot_yaw.detach().cpu().numpy()
        self._support[ids] = feet[:, :, 2].min(axis=1)
        self._swing_leg[ids] = -1
        self._next_leg[ids] = 0
        self._phase[ids] = 0.0

    def step(self, base_vel: Tensor, root_pos: Tensor) -> None:
        """Advance by one tick under base velocity commands (B, 3) in the heading frame."""
        cfg, dt = self.cfg, self.dt
        vel = base_vel.detach().cpu().numpy()
        root = root_pos.detach().cpu().numpy()
        # Harness target: integrate the command, kept on a leash near the measured trunk.
        self._yaw[:] = _wrap(self._yaw + vel[:, 2] * dt)
        self._pos[:, :2] += _rot2(self._yaw, vel[:, :2]) * dt
        lead = self._pos[:, :2] - root[:, :2]
        dist = np.linalg.norm(lead, axis=-1, keepdims=True)
        leash = cfg.leash_m + cfg.leash_lag_s * np.linalg.norm(vel[:, :2], axis=-1, keepdims=True)
        self._pos[:, :2] = root[:, :2] + lead * np.minimum(leash / np.maximum(dist, 1e-9), 1.0)
        moving = np.abs(vel).max(axis=1) > cfg.moving_threshold
        self._start_steps(moving)
        land_z = self._advance_swing(vel)
        # Support: the lowest of the stance feet and the swing foot's landing spot.
        z = self._feet[:, :, 2].copy()
        swinging = self._swing_leg >= 0
        leg = np.maximum(self._swing_leg, 0)
        z[self._rows, leg] = np.where(swinging, land_z, z[self._rows, leg])
        alpha = min(1.0, dt / cfg.height_time_const_s)
        self._support += alpha * (z.min(axis=1) - self._support)
        self._pos[:, 2] = self._support + self.stand_height - cfg.crouch_m

    def _landing(self, vel: np.ndarray, legs: np.ndarray,
                 remaining_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Landing positions (B, K, 3) and yaws (B, K) of `legs` (B, K) touching down
        `remaining_s` (B,) from now: under the body half a swing after touchdown."""
        ahead = remaining_s + 0.5 * self.cfg.swing_time_s
        yaw = _wrap(self._yaw + vel[:, 2] * ahead)
        xy = self._pos[:, :2] + _rot2(self._yaw, vel[:, :2]) * ahead[:, None]
        xy = xy[:, None] + _rot2(yaw[:, None], self.nominal[legs, :2])
        b, k = legs.shape
        if self.terrain is None:
            z = np.zeros((b, k))
        else:  # the highest ground under toe, centre and heel
            along = np.stack([np.cos(yaw), np.sin(yaw)], -1)[:, None, None]
            offsets = np.array((0.0, *self.cfg.foot_length_m))[None, None, :, None]
            probes = (xy[:, :, None] + offsets * along).reshape(b, k * 3, 2)
            height = self.terrain(torch.from_numpy(probes)).detach().cpu().numpy()
            z = height.reshape(b, k, 3).max(axis=2)
        return np.concatenate([xy, z[..., None]], -1), np.broadcast_to(yaw[:, None], (b, k))

    def _start_steps(self, moving: np.ndarray) -> None:
        """Start a swing in idle worlds that move or whose feet are off their nominal spots."""
        idle = self._swing_leg < 0
        if not idle.any():
            return
        b = self.num_worlds
        legs = np.broadcast_to(np.array([[0, 1]]), (b, 2))
        target, yaw = self._landing(np.zeros((b, 3)), legs, np.zeros(b))
        pos_err = np.linalg.norm(self._feet - target, axis=-1)
        yaw_err = np.abs(_wrap(self._feet_yaw - yaw))
        off = (pos_err > self.cfg.start_threshold_m) | (yaw_err > self.cfg.start_threshold_rad)
        start = idle & (moving | off.any(axis=1))
        # From rest, step first with the foot that is furthest off; else alternate.
        leg = np.where(moving, self._next_leg, (pos_err + 0.3 * yaw_err).argmax(axis=1))
        self._swing_leg[:] = np.where(start, leg, self._swing_leg)
        self._phase[:] = np.where(start, 0.0, self._phase)
        self._lift[:] = np.where(start[:, None], self._feet[self._rows, leg], self._lift)
        self._lift_yaw[:] = np.where(start, self._feet_yaw[self._rows, leg], self._lift_yaw)

    def _advance_swing(self, vel: np.ndarray) -> np.ndarray:
        """Move swing feet along their arcs; returns (B,) landing heights of the swing feet."""
        cfg = self.cfg
        swinging = self._swing_leg >= 0
        leg = np.maximum(self._swing_leg, 0)
        self._phase += np.where(swinging, self.dt / cfg.swing_time_s, 0.0)
        s = np.minimum(self._phase, 1.0)
        land, land_yaw = self._landing(vel, leg[:, None], (1.0 - s) * cfg.swing_time_s)
        land, land_yaw = land[:, 0], land_yaw[:, 0]
        lift = self._lift
        h = _smooth((s - 0.15) / 0.7)
        xy = lift[:, :2] + (land[:, :2] - lift[:, :2]) * h[:, None]
        peak = np.maximum(lift[:, 2], land[:, 2]) + cfg.clearance_m
        rise = lift[:, 2] + (peak - lift[:, 2]) * _smooth(2 * s)
        fall = peak + (land[:, 2] - peak) * _smooth(2 * s - 1)
        foot = np.concatenate([xy, np.where(s < 0.5, rise, fall)[:, None]], -1)
        rows = self._rows
        self._feet[rows, leg] = np.where(swinging[:, None], foot, self._feet[rows, leg])
        foot_yaw = self._lift_yaw + _wrap(land_yaw - self._lift_yaw) * h
        self._feet_yaw[rows, leg] = np.where(swinging, foot_yaw, self._feet_yaw[rows, leg])
        done = swinging & (s >= 1.0)
        self._next_leg[:] = np.where(done, 1 - leg, self._next_leg)
        self._swing_leg[:] = np.where(done, -1, self._swing_leg)
        return land[:, 2]
