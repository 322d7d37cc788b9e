"""Heuristic planner for the door: press the lever handle down past the latch, push the door
ajar, let go, step onto the doorway's centre line and walk through, the hand pushing the door.

Stages (per world, `DoorStage`):
    APPROACH  walk to a stand-off pose facing the wall, the handle ahead and right of the trunk;
              the closed gripper (a paddle, yawed inward) waits low and back;
    SETTLE    stand still for a short, random dwell (back to APPROACH if the robot drifted);
    RAISE     hand up over the lever's shaft (high poses close to the trunk are out of the
              arm's reach, so the hand rises only once the robot stands at the door);
    ABOVE     paddle over the lever, near its free end;
    PRESS     press the lever down along its arc until it has turned past the latch;
    PUSH      keep it pressed and push the door open;
    RELEASE   lift the paddle off the lever;
    SIDESTEP  step sideways onto the doorway's centre line;
    THROUGH   walk through, the hand held ahead to push the door further open.
A lever that will not turn far enough, or a door that stays shut, sends the world back to ABOVE.

Everything comes from the task observation (root frame): the door's yaw is the handle's
(`handle_quat`; the handle turns with the door about the vertical hinge), the wall's normal is
that yaw minus `door_angle`, the lever's angle is `handle_angle`, the doorway's centre line goes
through `goal_pos`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import torch
from torch import Tensor

from planners.heuristic.common import (F64, RIGHT, CorePlannerSource, MotionConfig,
                                       PlannerCore, Tick, planar_rotate, walk_to_pose)
from robot_io.math3d import wrap_angle, yaw_of
from robot_io.tasks.base import Range
from robot_io.tasks.door import LATCH_ANGLE_RAD
from robot_io.types import Command, Observation


class DoorStage(IntEnum):
    APPROACH = 0
    SETTLE = 1
    RAISE = 2
    ABOVE = 3
    PRESS = 4
    PUSH = 5
    RELEASE = 6
    SIDESTEP = 7
    THROUGH = 8


@dataclass(frozen=True)
class DoorConfig:
    """Door planner parameters (Ranges sampled per world). Lever offsets are in the door's
    frame (x: the door's normal, away from the robot; y: along the door, toward the hinge),
    from the handle's shaft (`handle_pos`)."""

    standoff_x_m: Range = Range(0.43, 0.47)  # handle x in the root frame at the stand-off
    standoff_y_m: Range = Range(-0.26, -0.22)
    press_dx_m: Range = Range(-0.08, -0.072)  # over the lever (6.5 cm before the door)
    # Where the paddle presses along the lever (12 cm long): far enough out that the palm
    # behind the yawed paddle clears the handle's rose.
    press_along_m: Range = Range(0.1, 0.11)
    above_m: Range = Range(0.05, 0.08)  # paddle above the lever before pressing
    press_extra_m: Range = Range(0.015, 0.03)  # target this far below the lever's surface
    press_lead_rad: Range = Range(0.3, 0.4)  # pressing target ahead of the lever's angle
    push_m: Range = Range(0.1, 0.14)  # how far ahead of the lever the pressed hand pushes
    open_rad: Range = Range(0.22, 0.3)  # door angle at which the hand lets go
    side_y_m: Range = Range(-0.06, 0.06)  # walking line relative to the doorway's centre
    lead_x_m: Range = Range(0.46, 0.52)  # hand ahead of the trunk while walking through
    hand_yaw_rad: Range = Range(0.3, 0.42)  # inward yaw of the paddle: the arm reaches higher
    through_mps: Range = Range(0.22, 0.32)
    wait_hand_m: tuple[float, float, float] = (0.28, -0.24, 0.05)
    lead_hand_yz_m: tuple[float, float] = (-0.125, 0.05)
    contact_z_m: float = 0.032  # paddle centre above the lever's axis when touching it
    max_press_rad: float = 1.2  # the lever stops at 1.25 rad
    latch_margin_rad: float = 0.06  # turn the lever this far past the latch


class DoorPlanner(CorePlannerSource):
    """A `CommandSource` for `door`, batched over `num_worlds` worlds.

    Args:
        num_worlds: B.
        seed: seed of the per-world random parameters.
        motion: speed ranges.
        door: stand-off, pressing and walking ranges.
    """

    stage_names = tuple(s.name.lower() for s in DoorStage)

    def __init__(self, num_worlds: int, seed: int = 0, motion: MotionConfig | None = None,
                 door: DoorConfig | None = None) -> None:
        door = door or DoorConfig()
        self.core = PlannerCore(num_worlds, seed, (motion or MotionConfig(), door))
        self.cfg = door

    def next_command(self, obs: Observation) -> Command:
        """The command of every world for this tick, (B, ...)."""
        tick = self.core.begin_tick(obs)
        task = tick.obs.task
        door_yaw = yaw_of(task["handle_quat"])
        wall_yaw = wrap_angle(door_yaw - task["door_angle"][:, 0])
        self._approach(tick, wall_yaw)
        self._press(tick, door_yaw)
        self._walk_through(tick, wall_yaw)
        return self.core.command(tick)

    def _lever_point(self, tick: Tick, door_yaw: Tensor, dx: Tensor, angle: Tensor,
                     dz: Tensor) -> Tensor:
        """(B, 3) root-frame point `dx` before the door and `press_along_m` out along the lever
        turned to `angle`, `dz` above the paddle's contact height there."""
        along = self.core.p["press_along_m"]
        offset = planar_rotate(torch.stack([dx, along * torch.cos(angle)], -1), door_yaw)
        z = self.cfg.contact_z_m - along * torch.sin(angle) + dz
        return tick.obs.task["handle_pos"] + torch.cat([offset, z.unsqueeze(-1)], -1)

    def _approach(self, tick: Tick, wall_yaw: Tensor) -> None:
        """APPROACH and SETTLE: to the stand-off in front of the handle, facing the wall."""
        core, p, S = self.core, self.core.p, DoorStage
        handle = tick.obs.task["handle_pos"]
        standoff = torch.stack([p["standoff_x_m"], p["standoff_y_m"]], -1)
        goal = handle[:, :2] - planar_rotate(standoff, wall_yaw)
        wait = torch.tensor(self.cfg.wait_hand_m, dtype=F64)
        yaw = p["hand_yaw_rad"]
        m = tick.stage == S.APPROACH
        vel = walk_to_pose(goal, wall_yaw, p["walk_mps"], p["side_mps"], p["back_mps"],
                           p["yaw_rate_rps"], pos_tol_m=0.008, yaw_tol_rad=0.015)
        tick.put(m, base_vel=vel, hand_pos=wait, hand_yaw=yaw, grip=1.0)
        err = goal.norm(dim=-1)
        still = tick.obs.root_lin_vel[:, :2].norm(dim=-1) < 0.05
        core.enter(m & (err < 0.025) & (wall_yaw.abs() < 0.05) & still, S.SETTLE, tick)

        m = tick.stage == S.SETTLE
        tick.put(m, hand_pos=wait, hand_yaw=yaw, grip=1.0)
        drifted = (err > 0.05) | (wall_yaw.abs() > 0.1)
        core.enter(m & drifted, S.APPROACH, tick)
        core.enter(m & ~drifted & (tick.elapsed_s > p["dwell_s"]), S.RAISE, tick)

    def _press(self, tick: Tick, door_yaw: Tensor) -> None:
        """RAISE, ABOVE, PRESS, PUSH, RELEASE. The pressing target leads the lever's angle
        along its arc, so the paddle stays on the lever as it turns."""
        core, cfg, p, S = self.core, self.cfg, self.core.p, DoorStage
        obs, elapsed = tick.obs, tick.elapsed_s
        handle_angle, door_angle = obs.task["handle_angle"][:, 0], obs.task["door_angle"][:, 0]
        hand_obs, yaw, dx = obs.hand_pos[:, RIGHT], p["hand_yaw_rad"], p["press_dx_m"]
        above = self._lever_point(tick, door_yaw, dx, handle_angle, p["above_m"])
        zero = torch.zeros_like(dx)
        beside = above - torch.cat([planar_rotate(torch.stack([zero, p["press_along_m"]], -1),
                                                  door_yaw), zero.unsqueeze(-1)], -1)
        m = tick.stage == S.RAISE
        tick.put(m, hand_pos=beside, hand_yaw=yaw, grip=1.0)
        near = (hand_obs - beside).norm(dim=-1) < 0.03
        core.enter(m & (near | (elapsed > 3.0)), S.ABOVE, tick)

        m = tick.stage == S.ABOVE
        tick.put(m, hand_pos=above, hand_yaw=yaw, grip=1.0)
        near = (hand_obs - above).norm(dim=-1) < 0.03
        core.enter(m & ((near & (elapsed > p["dwell_s"])) | (elapsed > 3.0)), S.PRESS, tick)

        lead = (handle_angle + p["press_lead_rad"]).clamp(max=cfg.max_press_rad)
        m = tick.stage == S.PRESS
        pressed = self._lever_point(tick, door_yaw, dx, lead, -p["press_extra_m"])
        tick.put(m, hand_pos=pressed, hand_yaw=yaw, grip=1.0, hand_speed=0.6)
        unlatched = handle_angle > LATCH_ANGLE_RAD + cfg.latch_margin_rad
        core.enter(m & unlatched, S.PUSH, tick)
        core.enter(m & ~unlatched & (elapsed > 5.0), S.ABOVE, tick)  # press again

        m = tick.stage == S.PUSH
        push = self._lever_point(tick, door_yaw, dx + p["push_m"], lead, -p["press_extra_m"])
        tick.put(m, hand_pos=push, hand_yaw=yaw, grip=1.0, hand_speed=0.6)
        # Let go once the door is open enough, or ajar and no longer following the hand (the
        # arm at full stretch): the walk through pushes it further.
        opened = (door_angle > p["open_rad"]) | ((door_angle > 0.1) & (elapsed > 2.5))
        core.enter(m & opened, S.RELEASE, tick)
        core.enter(m & ~opened & (elapsed > 3.0) & (door_angle < 0.05), S.ABOVE, tick)

        m = tick.stage == S.RELEASE
        up = core.hand_pos.clone()  # straight up from where the hand is commanded
        up[:, 2] = obs.task["handle_pos"][:, 2] + 0.1
        tick.put(m, hand_pos=up, hand_yaw=yaw, grip=1.0)
        core.enter(m & (elapsed > 0.6), S.SIDESTEP, tick)

    def _walk_through(self, tick: Tick, wall_yaw: Tensor) -> None:
        """SIDESTEP onto the doorway's centre line (through `goal_pos`), then THROUGH it."""
        core, p, S = self.core, self.core.p, DoorStage
        goal = tick.obs.task["goal_pos"]
        y = goal[:, 1] + p["side_y_m"]
        ly, lz = self.cfg.lead_hand_yz_m
        lead = torch.stack([p["lead_x_m"], torch.full_like(y, ly), torch.full_like(y, lz)], -1)
        yaw = p["hand_yaw_rad"]
        m = tick.stage == S.SIDESTEP
        line = torch.stack([torch.full_like(y, 0.15), y], -1)
        vel = walk_to_pose(line, wall_yaw, p["walk_mps"], p["side_mps"], p["back_mps"],
                           p["yaw_rate_rps"], far_m=10.0, near_m=9.0)
        tick.put(m, base_vel=vel, hand_pos=lead, hand_yaw=yaw, grip=1.0)
        core.enter(m & ((y.abs() < 0.04) | (tick.elapsed_s > 4.0)), S.THROUGH, tick)

        m = tick.stage == S.THROUGH
        beyond = torch.stack([goal[:, 0] + 0.3, y], -1)
        vel = walk_to_pose(beyond, wall_yaw, p["through_mps"], p["side_mps"], p["back_mps"],
                           p["yaw_rate_rps"], far_m=10.0, near_m=9.0)
        tick.put(m, base_vel=vel, hand_pos=lead, hand_yaw=yaw, grip=1.0)
