"""Task registry: a plain dict from name to (task class, default config factory)."""

from __future__ import annotations

from collections.abc import Callable

from robot_io.tasks import box_pickup, door, pick_place, stair
from robot_io.tasks.base import Range, StartRanges, Task, TaskConfig

REGISTRY: dict[str, tuple[type[Task], Callable[[], TaskConfig]]] = {
    "box_pickup": (box_pickup.BoxPickupTask, box_pickup.default_config),
    "pick_place": (pick_place.PickPlaceTask, pick_place.default_config),
    "door": (door.DoorTask, door.default_config),
    "stair": (stair.StairTask, stair.default_config),
}


def task_names() -> list[str]:
    return sorted(REGISTRY)


def default_config(name: str) -> TaskConfig:
    return _entry(name)[1]()


def make_task(name: str, config: TaskConfig | None = None) -> Task:
    """Instantiate a registered task; raises ValueError listing the known names."""
    cls, factory = _entry(name)
    return cls(config if config is not None else factory())


def _entry(name: str) -> tuple[type[Task], Callable[[], TaskConfig]]:
    if name not in REGISTRY:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name]


__all__ = ["REGISTRY", "Range", "StartRanges", "Task", "TaskConfig", "default_config",
           "make_task", "task_names"]
