"""Heuristic planner for pick-and-place: pick the box from table A, carry it to table B, put it
down on the place spot and let go.

Stages: the pick skill's (`PickStage`, on `object_pos` / `object_quat`), then (`PlaceStage`)
    BACK_OFF     step back from table A, holding the box;
    TO_WAYPOINT  turn toward a waypoint in front of table B's open (+x) side and walk there,
                 turning to face the table on the last metre;
    TO_TABLE     walk up to table B until the place spot (`target_pos`) is at the hand;
    OVER_SPOT    move the hand so that the box hangs over the spot;
    LOWER        lower it until it rests on the table;
    RELEASE      open the gripper;
    RETRACT      withdraw the hand out of the fingers' way and rest.
A box that slips out of the hand before it is put down sends the world back to the pick skill's
RECOVER stage (and so to picking it up again wherever it lies).

Table B's place spot lies near its +x edge, the side facing the room, so the planner faces world
-x to place; that heading and the waypoint come from the observed root orientation
(`root_quat`), the spot itself from `target_pos` (root frame).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import IntEnum

import torch
from torch import Tensor

from planners.heuristic.common import (F64, RIGHT, CorePlannerSource, MotionConfig,
                                       PlannerCore, Tick, walk_to_pose, world_to_heading)
from planners.heuristic.pick import PickConfig, PickSkill, PickStage
from robot_io.math3d import wrap_angle, yaw_of
from robot_io.tasks.base import Range
from robot_io.types import Command, Observation


class PlaceStage(IntEnum):
    BACK_OFF = len(PickStage)
    TO_WAYPOINT = len(PickStage) + 1
    TO_TABLE = len(PickStage) + 2
    OVER_SPOT = len(PickStage) + 3
    LOWER = len(PickStage) + 4
    RELEASE = len(PickStage) + 5
    RETRACT = len(PickStage) + 6


@dataclass(frozen=True)
class PlaceConfig:
    """Carry and place parameters (Ranges sampled per world)."""

    back_off_m: Range = Range(0.2, 0.35)
    # The box creeps down the gripper's fingers while it is held (a few mm/s under 2 kg with
    # the simulator's soft contacts), so the carry is brisk: faster walking, turning on the way.
    carry_walk_mps: Range = Range(0.32, 0.42)
    carry_yaw_rps: Range = Range(0.5, 0.7)
    waypoint_dx_m: Range = Range(0.8, 1.0)  # waypoint from the spot along world x (open side)
    waypoint_dy_m: Range = Range(-0.1, 0.1)
    place_x_m: Range = Range(0.38, 0.43)  # spot position in the root frame when placing
    place_y_m: Range = Range(-0.17, -0.13)
    hover_m: Range = Range(0.04, 0.07)  # box above the spot before lowering
    release_s: Range = Range(0.4, 0.7)
    place_heading_rad: float = math.pi  # world heading that faces table B's open side
    hold_s: float = 0.3  # hold the lifted box this long before walking
    rest_hand_m: tuple[float, float, float] = (0.15, -0.25, -0.1)


def place_pick_config() -> PickConfig:
    """The pick skill for a box that is carried far: grasped low, so that it can creep further
    down the fingers before it slips out."""
    return PickConfig(grasp_dz_m=Range(-0.02, -0.008))


class PickPlacePlanner(CorePlannerSource):
    """A `CommandSource` for `pick_place`, batched over `num_worlds` worlds.

    Args:
        num_worlds: B.
        seed: seed of the per-world random parameters.
        motion: speed ranges.
        pick: stand-off and grasp ranges (default: `place_pick_config()`).
        place: carry and place ranges.
    """

    stage_names = PickSkill.stage_names + tuple(s.name.lower() for s in PlaceStage)

    def __init__(self, num_worlds: int, seed: int = 0, motion: MotionConfig | None = None,
                 pick: PickConfig | None = None, place: PlaceConfig | None = None) -> None:
        pick, place = pick or place_pick_config(), place or PlaceConfig()
        self.core = PlannerCore(num_worlds, seed, (motion or MotionConfig(), pick, place))
        self.pick = PickSkill(self.core, pick)
        self.cfg = place
        self.back_off_goal = torch.zeros(num_worlds, 2, dtype=F64)  # world xy

    def next_command(self, obs: Observation) -> Command:
        """The command of every world for this tick, (B, ...)."""
        tick = self.core.begin_tick(obs)
        task = tick.obs.task
        obj_pos = task["object_pos"]
        self.pick.step(tick, obj_pos, task["object_quat"])
        self._carry(tick)
        self._place(tick, obj_pos, task["target_pos"])
        # A box that slipped before it was put down: pick it up again.
        S = PlaceStage
        carrying = (tick.stage >= S.BACK_OFF) & (tick.stage <= S.LOWER)
        slipped = carrying & ~self.pick.holding(tick.obs, obj_pos)
        self.core.enter(slipped, PickStage.RECOVER, tick)
        return self.core.command(tick)

    def _carry_pose(self) -> Tensor:
        p = self.core.p
        return torch.stack([p["carry_x_m"], p["carry_y_m"], p["carry_z_m"]], -1)

    def _carry(self, tick: Tick) -> None:
        """HOLD -> BACK_OFF, TO_WAYPOINT, TO_TABLE."""
        core, cfg, p, S = self.core, self.cfg, self.core.p, PlaceStage
        obs, carry = tick.obs, self._carry_pose()
        yaw = yaw_of(obs.root_quat)
        go = (tick.stage == PickStage.HOLD) & (tick.elapsed_s > cfg.hold_s)
        heading = torch.stack([torch.cos(yaw), torch.sin(yaw)], -1)
        behind = obs.root_pos[:, :2] - heading * p["back_off_m"].unsqueeze(-1)
        self.back_off_goal = torch.where(go.unsqueeze(-1), behind, self.back_off_goal)
        core.enter(go, S.BACK_OFF, tick)

        m = tick.stage == S.BACK_OFF
        goal = world_to_heading(self.back_off_goal - obs.root_pos[:, :2], obs.root_quat)
        vel = walk_to_pose(goal, torch.zeros_like(yaw), p["walk_mps"], p["side_mps"],
                           p["back_mps"], p["yaw_rate_rps"], far_m=10.0, near_m=9.0)
        tick.put(m, base_vel=vel, hand_pos=carry, grip=1.0)
        core.enter(m & (goal.norm(dim=-1) < 0.05), S.TO_WAYPOINT, tick)

        target = obs.task["target_pos"]
        face_table = wrap_angle(cfg.place_heading_rad - yaw)
        m = tick.stage == S.TO_WAYPOINT
        offset = torch.stack([p["waypoint_dx_m"], p["waypoint_dy_m"]], -1)
        goal = target[:, :2] + world_to_heading(offset, obs.root_quat)
        vel = walk_to_pose(goal, face_table, p["carry_walk_mps"], p["side_mps"], p["back_mps"],
                           p["carry_yaw_rps"], far_m=1.0, near_m=0.4, turn_first_rad=1.0)
        tick.put(m, base_vel=vel, hand_pos=carry, grip=1.0)
        core.enter(m & (goal.norm(dim=-1) < 0.1) & (face_table.abs() < 0.15), S.TO_TABLE, tick)

        m = tick.stage == S.TO_TABLE
        goal = target[:, :2] - torch.stack([p["place_x_m"], p["place_y_m"]], -1)
        vel = walk_to_pose(goal, face_table, p["walk_mps"], p["side_mps"], p["back_mps"],
                           p["yaw_rate_rps"], far_m=10.0, near_m=9.0, pos_tol_m=0.008,
                           yaw_tol_rad=0.015)
        tick.put(m, base_vel=vel, hand_pos=carry, grip=1.0)
        still = obs.root_lin_vel[:, :2].norm(dim=-1) < 0.05
        arrived = (goal.norm(dim=-1) < 0.03) & (face_table.abs() < 0.06) & still
        core.enter(m & arrived, S.OVER_SPOT, tick)

    def _place(self, tick: Tick, obj_pos: Tensor, target: Tensor) -> None:
        """OVER_SPOT, LOWER, RELEASE, RETRACT. The hand keeps its observed offset from the box,
        so the box's centre is what goes over the spot and down onto it."""
        core, p, S = self.core, self.core.p, PlaceStage
        elapsed = tick.elapsed_s
        grip_offset = tick.obs.hand_pos[:, RIGHT] - obj_pos
        over = target + grip_offset
        over[:, 2] = over[:, 2] + p["hover_m"]
        m = tick.stage == S.OVER_SPOT
        tick.put(m, hand_pos=over, grip=1.0, hand_speed=0.6)
        centred = (obj_pos[:, :2] - target[:, :2]).norm(dim=-1) < 0.03
        core.enter(m & ((centred & (elapsed > 0.5)) | (elapsed > 3.0)), S.LOWER, tick)

        m = tick.stage == S.LOWER
        down = target + grip_offset
        down[:, 2] = down[:, 2] - 0.01  # a little into the table: it surely rests on it
        tick.put(m, hand_pos=down, grip=1.0, hand_speed=0.4)
        landed = (obj_pos[:, 2] - target[:, 2]) < 0.01
        go = m & ((landed & (elapsed > 0.3)) | (elapsed > 3.0))
        core.anchor = torch.where(go.unsqueeze(-1), core.hand_pos, core.anchor)
        core.enter(go, S.RELEASE, tick)

        m = tick.stage == S.RELEASE
        tick.put(m, hand_pos=core.anchor, grip=0.0)
        core.enter(m & (elapsed > p["release_s"]), S.RETRACT, tick)

        # RETRACT: back out of the open fingers and a little up, then to rest.
        m = tick.stage == S.RETRACT
        tick.put(m, hand_pos=core.anchor + torch.tensor([-0.14, 0.0, 0.03], dtype=F64),
                 grip=0.0)
        tick.put(m & (elapsed > 1.0), hand_pos=torch.tensor(self.cfg.rest_hand_m, dtype=F64))
