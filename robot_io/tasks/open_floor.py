"""The open floor: no objects, the scene the low-level controller is trained and evaluated in.

It is not one of the four planner tasks (it has no success predicate to reach), so it is not in
the task registry; controller training builds it directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import mujoco
import torch
from torch import Tensor

from robot_io.math3d import Frame
from robot_io.scene import add_environment
from robot_io.tasks.base import PhysicsRanges, Range, StartRanges, Task, TaskConfig


@dataclass(frozen=True)
class OpenFloorConfig(TaskConfig):
    """The robot starts at the origin with a random heading; the floor friction is randomised."""

    time_limit_s: float = 20.0
    start: StartRanges = field(default_factory=lambda: StartRanges(
        radius_m=Range(0.0, 0.0), polar_rad=Range(0.0, 0.0), heading_rad=Range(-3.14, 3.14)))
    physics: PhysicsRanges = field(default_factory=PhysicsRanges)


class OpenFloorTask(Task):
    name = "open_floor"
    config: OpenFloorConfig

    def __init__(self, config: OpenFloorConfig | None = None) -> None:
        super().__init__(config or OpenFloorConfig())

    def build_scene(self, spec: mujoco.MjSpec) -> None:
        add_environment(spec)

    def reset_objects(self, ids: Tensor, gen: torch.Generator) -> dict[str, Tensor]:
        return {}

    def anchor(self, ids: Tensor) -> tuple[Tensor, Tensor]:
        n = len(ids)
        return (torch.zeros(n, 2, dtype=torch.float64),
                torch.zeros(n, dtype=torch.float64))

    def observe(self, root: Frame) -> dict[str, Tensor]:
        return {}

    def success(self) -> Tensor:
        return torch.zeros(self.sim.num_worlds, dtype=torch.bool)
