"""Heuristic planner for box pickup: walk to the table, grasp the box, lift it and hold it.

Stages: the pick skill's (`PickStage`: approach, settle, pregrasp, reach, grasp, lift, hold,
recover) on the box pose the task observes (`object_pos`, `object_quat`, root frame).
"""

from __future__ import annotations


from planners.heuristic.common import CorePlannerSource, MotionConfig, PlannerCore
from planners.heuristic.pick import PickConfig, PickSkill
from robot_io.types import Command, Observation


class BoxPickupPlanner(CorePlannerSource):
    """A `CommandSource` for `box_pickup`, batched over `num_worlds` worlds.

    Args:
        num_worlds: B.
        seed: seed of the per-world random parameters (speeds, offsets, dwell times).
        motion: speed ranges.
        pick: stand-off, grasp and carrying ranges.
    """

    stage_names = PickSkill.stage_names

    def __init__(self, num_worlds: int, seed: int = 0, motion: MotionConfig | None = None,
                 pick: PickConfig | None = None) -> None:
        pick = pick or PickConfig()
        self.core = PlannerCore(num_worlds, seed, (motion or MotionConfig(), pick))
        self.pick = PickSkill(self.core, pick)

    def next_command(self, obs: Observation) -> Command:
        """The command of every world for this tick, (B, ...)."""
        tick = self.core.begin_tick(obs)
        self.pick.step(tick, tick.obs.task["object_pos"], tick.obs.task["object_quat"])
        return self.core.command(tick)
