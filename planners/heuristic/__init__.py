"""Stage-conditioned heuristic task planners: closed-loop, randomised `CommandSource`s that
solve each task with the reference controller, for demonstrations and baselines.

Each task has one small module (`box_pickup`, `pick_place`, `door`, `stair`); the stage
bookkeeping, smoothing and walking they share are in `common`, the pick skill three of them
share in `pick`. Every planner is batched over worlds, keeps each world's stage in a tensor,
and draws per-world random speeds, offsets and dwell times from its own seeded generator at
every episode start, so demonstrations are diverse and reproducible.
"""

from __future__ import annotations

from collections.abc import Callable

from planners.heuristic.box_pickup import BoxPickupPlanner
from planners.heuristic.door import DoorPlanner
from planners.heuristic.pick_place import PickPlacePlanner
from planners.heuristic.stair import StairPlanner
from robot_io.protocols import CommandSource

PlannerFactory = Callable[..., CommandSource]  # (num_worlds, seed=...) -> planner

PLANNERS: dict[str, PlannerFactory] = {
    "box_pickup": BoxPickupPlanner,
    "pick_place": PickPlacePlanner,
    "door": DoorPlanner,
    "stair": StairPlanner,
}


def make_heuristic_planner(task: str, num_worlds: int, seed: int = 0) -> CommandSource:
    """The heuristic planner of `task` for `num_worlds` worlds.

    Raises:
        ValueError: unknown task (the message lists the known ones), or num_worlds < 1.
    """
    if task not in PLANNERS:
        raise ValueError(f"no heuristic planner for task {task!r}; known tasks: "
                         f"{', '.join(sorted(PLANNERS))}")
    return PLANNERS[task](num_worlds, seed=seed)


__all__ = ["PLANNERS", "BoxPickupPlanner", "DoorPlanner", "PickPlacePlanner", "StairPlanner",
           "make_heuristic_planner"]
