"""The pick skill the box pickup, pick-and-place and stair planners share: walk to a stand-off
pose in front of an object, reach it with the right hand, grasp, lift and hold it.

Stages (per world, `PickStage`):
    APPROACH  walk to the stand-off pose: the object ends at about (0.44, -0.15) in the root
              frame, the robot turned toward one of the object's faces; the hand waits low and
              to the right;
    SETTLE    stand still for a short, random dwell (back to APPROACH if the robot drifted);
    PREGRASP  hand behind the object at grasp height, fingers along one of its faces;
    REACH     hand forward around the object, the fingers open on both sides of it;
    GRASP     close the gripper where the reach ended;
    LIFT      raise the object to the carrying pose;
    HOLD      keep it there (the last stage of a pickup; pick-and-place goes on from here);
    RECOVER   the object slipped or the gripper closed on nothing: open, withdraw the hand and
              start again from APPROACH.

Targets are recomputed from the observed object pose every tick (closed loop) until the gripper
closes.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import torch
from torch import Tensor

from planners.heuristic.common import (RIGHT, PlannerCore, Tick, planar_rotate,
                                       quarter_turn_residual, walk_to_pose)
from robot_io.math3d import yaw_of
from robot_io.tasks.base import Range
from robot_io.types import Observation


class PickStage(IntEnum):
    APPROACH = 0
    SETTLE = 1
    PREGRASP = 2
    REACH = 3
    GRASP = 4
    LIFT = 5
    HOLD = 6
    RECOVER = 7


@dataclass(frozen=True)
class PickConfig:
    """Where the pick skill puts the robot and its hand (Ranges are sampled per world).

    The defaults suit the 7 cm box on a 0.6 m table. The right arm reaches best around
    y = -0.15 m in the root frame, and high poses close to the trunk are out of its reach.
    """

    standoff_x_m: Range = Range(0.42, 0.46)  # object x in the root frame after the approach
    standoff_y_m: Range = Range(-0.17, -0.13)
    align_frac: Range = Range(0.75, 1.0)  # part of the object's yaw the body turns to match
    wait_x_m: Range = Range(0.22, 0.28)  # where the hand waits during the approach
    wait_y_m: Range = Range(-0.28, -0.22)
    wait_z_m: Range = Range(0.0, 0.04)  # (the task's nominal object height is about 0)
    pregrasp_back_m: Range = Range(0.12, 0.15)  # hand behind the object's centre
    pregrasp_up_m: Range = Range(0.015, 0.03)
    grasp_dx_m: Range = Range(-0.005, 0.01)  # grasp point relative to the object's centre
    grasp_dz_m: Range = Range(-0.01, 0.005)
    grip_close_s: Range = Range(0.4, 0.7)
    # Hand pose while holding the object: under a 2 kg load the arm tracks poses well forward
    # and high better than poses close to the trunk.
    carry_x_m: Range = Range(0.40, 0.45)
    carry_y_m: Range = Range(-0.17, -0.12)
    carry_z_m: Range = Range(0.17, 0.21)
    max_hand_yaw_rad: float = 0.35
    arrive_tol_m: float = 0.025
    arrive_tol_rad: float = 0.05
    slip_m: float = 0.1  # object this far from the hand while held: it slipped
    empty_grip: float = 0.85  # a gripper closed further than this holds nothing


class PickSkill:
    """Runs the `PickStage` stages on a planner's `PlannerCore`.

    Args:
        core: the planner's state; the `PickConfig` must be among its configs (so `core.p`
            holds its sampled Range fields).
        cfg: the config (its fixed fields are read here).
    """

    stage_names = tuple(s.name.lower() for s in PickStage)

    def __init__(self, core: PlannerCore, cfg: PickConfig) -> None:
        self.core, self.cfg = core, cfg

    def step(self, tick: Tick, obj_pos: Tensor, obj_quat: Tensor,
             walk_cap_mps: Tensor | None = None) -> None:
        """Advance the pick stages and write their targets into `tick.out`.

        Args:
            tick: this tick (its targets are overwritten in the worlds in a pick stage).
            obj_pos, obj_quat: (B, 3), (B, 4) the object's pose in the root frame.
            walk_cap_mps: (B,) an extra cap on the approach's forward speed, or None.
        """
        obj_yaw = yaw_of(obj_quat)
        hand_yaw = quarter_turn_residual(obj_yaw).clamp(-self.cfg.max_hand_yaw_rad,
                                                        self.cfg.max_hand_yaw_rad)
        self._approach(tick, obj_pos, obj_yaw, walk_cap_mps)
        self._reach(tick, obj_pos, hand_yaw)
        self._grasp_and_lift(tick, obj_pos)

    def standoff_goal(self, obj_pos: Tensor, obj_yaw: Tensor) -> tuple[Tensor, Tensor]:
        """(B, 2) root position and (B,) heading, in the current root frame, from which the
        object sits at the world's stand-off point."""
        p = self.core.p
        heading = p["align_frac"] * quarter_turn_residual(obj_yaw)
        standoff = torch.stack([p["standoff_x_m"], p["standoff_y_m"]], -1)
        return obj_pos[:, :2] - planar_rotate(standoff, heading), heading

    def holding(self, obs: Observation, obj_pos: Tensor) -> Tensor:
        """(B,) the object is in the closed right hand."""
        close = (obs.hand_pos[:, RIGHT] - obj_pos).norm(dim=-1) < self.cfg.slip_m
        return close & (obs.gripper_pos[:, RIGHT] < self.cfg.empty_grip)

    def _wait_pose(self) -> Tensor:
        p = self.core.p
        return torch.stack([p["wait_x_m"], p["wait_y_m"], p["wait_z_m"]], -1)

    def _approach(self, tick: Tick, obj_pos: Tensor, obj_yaw: Tensor,
                  walk_cap_mps: Tensor | None) -> None:
        """APPROACH and SETTLE."""
        core, cfg, p, S = self.core, self.cfg, self.core.p, PickStage
        goal_xy, goal_yaw = self.standoff_goal(obj_pos, obj_yaw)
        err = goal_xy.norm(dim=-1)
        walk = p["walk_mps"] if walk_cap_mps is None else torch.minimum(p["walk_mps"],
                                                                        walk_cap_mps)
        vel = walk_to_pose(goal_xy, goal_yaw, walk, p["side_mps"], p["back_mps"],
                           p["yaw_rate_rps"], pos_tol_m=0.008, yaw_tol_rad=0.015)
        m = tick.stage == S.APPROACH
        tick.put(m, base_vel=vel, hand_pos=self._wait_pose(), hand_yaw=0.0, grip=0.0)
        arrived = (err < cfg.arrive_tol_m) & (goal_yaw.abs() < cfg.arrive_tol_rad)
        still = tick.obs.root_lin_vel[:, :2].norm(dim=-1) < 0.05
        core.enter(m & arrived & still, S.SETTLE, tick)

        m = tick.stage == S.SETTLE
        tick.put(m, hand_pos=self._wait_pose(), hand_yaw=0.0, grip=0.0)
        drifted = (err > 2 * cfg.arrive_tol_m) | (goal_yaw.abs() > 2 * cfg.arrive_tol_rad)
        core.enter(m & drifted, S.APPROACH, tick)
        core.enter(m & ~drifted & (tick.elapsed_s > p["dwell_s"]), S.PREGRASP, tick)

    def _reach(self, tick: Tick, obj_pos: Tensor, hand_yaw: Tensor) -> None:
        """PREGRASP and REACH: behind the object, then around it along its face."""
        core, p, S = self.core, self.core.p, PickStage
        hand_obs, elapsed = tick.obs.hand_pos[:, RIGHT], tick.elapsed_s
        zero = torch.zeros_like(hand_yaw)
        back = planar_rotate(torch.stack([-p["pregrasp_back_m"], zero], -1), hand_yaw)
        pre = obj_pos + torch.cat([back, p["pregrasp_up_m"].unsqueeze(-1)], -1)
        m = tick.stage == S.PREGRASP
        tick.put(m, hand_pos=pre, hand_yaw=hand_yaw, grip=0.0)
        near = (hand_obs - pre).norm(dim=-1) < 0.03
        core.enter(m & ((near & (elapsed > p["dwell_s"])) | (elapsed > 3.0)), S.REACH, tick)

        ahead = planar_rotate(torch.stack([p["grasp_dx_m"], zero], -1), hand_yaw)
        at = obj_pos + torch.cat([ahead, p["grasp_dz_m"].unsqueeze(-1)], -1)
        m = tick.stage == S.REACH
        tick.put(m, hand_pos=at, hand_yaw=hand_yaw, grip=0.0, hand_speed=0.6)
        there = (hand_obs - at).norm(dim=-1) < 0.02
        go = m & ((there & (elapsed > 0.3)) | (elapsed > 3.0))
        core.anchor = torch.where(go.unsqueeze(-1), at, core.anchor)
        core.enter(go, S.GRASP, tick)

    def _grasp_and_lift(self, tick: Tick, obj_pos: Tensor) -> None:
        """GRASP, LIFT, HOLD and RECOVER."""
        core, cfg, p, S = self.core, self.cfg, self.core.p, PickStage
        obs, elapsed = tick.obs, tick.elapsed_s
        m = tick.stage == S.GRASP
        tick.put(m, hand_pos=core.anchor, grip=1.0)
        grip_pos = obs.gripper_pos[:, RIGHT]
        empty = grip_pos > cfg.empty_grip
        core.enter(m & ~empty & (elapsed > p["grip_close_s"]) & (grip_pos > 0.2), S.LIFT, tick)
        core.enter(m & empty, S.RECOVER, tick)

        carry = torch.stack([p["carry_x_m"], p["carry_y_m"], p["carry_z_m"]], -1)
        m = (tick.stage == S.LIFT) | (tick.stage == S.HOLD)
        tick.put(m, hand_pos=carry, grip=1.0, hand_speed=0.8)
        lifted = (obs.hand_pos[:, RIGHT] - carry).norm(dim=-1) < 0.04
        core.enter((tick.stage == S.LIFT) & ((lifted & (elapsed > 0.5)) | (elapsed > 3.0)),
                   S.HOLD, tick)
        core.enter(m & ~self.holding(obs, obj_pos) & (elapsed > 0.3), S.RECOVER, tick)

        # RECOVER: open, withdraw the hand (above the object), start over.
        m = tick.stage == S.RECOVER
        withdraw = self._wait_pose()
        withdraw[:, 2] = torch.maximum(withdraw[:, 2], obj_pos[:, 2] + 0.08)
        tick.put(m, hand_pos=withdraw, hand_yaw=0.0, grip=0.0)
        core.enter(m & (elapsed > 1.5), S.APPROACH, tick)
