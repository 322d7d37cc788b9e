"""Heuristic planner for stair-assisted retrieval: walk up onto the platform (the controller
steps onto it), reach the object on the pedestal, grasp it and lift it.

Stages: the pick skill's (`PickStage`: approach, settle, pregrasp, reach, grasp, lift, hold,
recover) on the observed object pose. The approach itself is the step up: while a foot is still
below the platform and its edge (`platform_edge_pos`) is near, the walk is capped at a slower,
per-world speed, so the steps onto the platform are short.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from planners.heuristic.common import CorePlannerSource, MotionConfig, PlannerCore
from planners.heuristic.pick import PickConfig, PickSkill
from robot_io.tasks.base import Range
from robot_io.types import Command, Observation


def stair_pick_config() -> PickConfig:
    """The pick skill set up for the 6 x 6 x 12 cm object on the pedestal."""
    return PickConfig(standoff_x_m=Range(0.41, 0.45), wait_z_m=Range(-0.02, 0.02),
                      grasp_dz_m=Range(-0.01, 0.01))


@dataclass(frozen=True)
class StepUpConfig:
    """How the robot steps onto the platform (Ranges sampled per world)."""

    step_up_mps: Range = Range(0.15, 0.22)  # forward speed cap near the edge
    edge_zone_m: tuple[float, float] = (-0.35, 0.45)  # edge x in the root frame: near it
    on_platform_m: float = 0.03  # a sole this far below the platform top is still down


class StairPlanner(CorePlannerSource):
    """A `CommandSource` for `stair`, batched over `num_worlds` worlds.

    Args:
        num_worlds: B.
        seed: seed of the per-world random parameters.
        motion: speed ranges.
        pick: stand-off and grasp ranges (default: `stair_pick_config()`).
        step_up: the slow-down at the platform's edge.
    """

    stage_names = PickSkill.stage_names

    def __init__(self, num_worlds: int, seed: int = 0, motion: MotionConfig | None = None,
                 pick: PickConfig | None = None, step_up: StepUpConfig | None = None) -> None:
        pick, step_up = pick or stair_pick_config(), step_up or StepUpConfig()
        self.core = PlannerCore(num_worlds, seed, (motion or MotionConfig(), pick, step_up))
        self.pick = PickSkill(self.core, pick)
        self.step_up = step_up

    def next_command(self, obs: Observation) -> Command:
        """The command of every world for this tick, (B, ...)."""
        tick = self.core.begin_tick(obs)
        task = tick.obs.task
        edge = task["platform_edge_pos"]
        lo, hi = self.step_up.edge_zone_m
        near_edge = (edge[:, 0] > lo) & (edge[:, 0] < hi)
        sole_z = tick.obs.foot_pos[:, :, 2].min(dim=1).values
        below = sole_z < edge[:, 2] - self.step_up.on_platform_m
        cap = torch.where(near_edge & below, self.core.p["step_up_mps"],
                          torch.full_like(edge[:, 0], torch.inf))
        self.pick.step(tick, task["object_pos"], task["object_quat"], walk_cap_mps=cap)
        return self.core.command(tick)
