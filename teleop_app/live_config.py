"""`LiveConfig`: what the app's live world runs (task, controller, source, seed, threads, rate),
and `build_world`, its one simulated world."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from robot_io.control import ControllerChoice
from robot_io.env import BatchedEnv
from robot_io.safety import SafetyConfig
from robot_io.tasks import TaskConfig, default_config, task_names
from robot_io.tasks.open_floor import OpenFloorConfig, OpenFloorTask

OPEN_FLOOR = "open_floor"


def live_tasks() -> list[str]:
    """The tasks the live world can show: the registered ones and the empty floor."""
    return sorted([*task_names(), OPEN_FLOOR])


@dataclass(frozen=True)
class LiveConfig:
    """What the live world runs.

    Attributes:
        task: a registered task or "open_floor" (the empty floor).
        controller: the low-level controller.
        source: the command source's name in `SOURCES` at start.
        seed: the world's randomisation seed (and the planners').
        threads: physics threads; 1 leaves the other core to the GUI and the 3D view.
        rate_hz: ticks per second (None: the robot's control rate, 50 Hz).
        nominal_start: every random range at its centre (the scripted planner's start).
        time_limit_s: overrides the task's episode time limit (None: the task's).
        safety: the safety filter's limits and timings (invalid commands are held and counted,
            as an operator's app should, not raised).
        rt_priority: run the loop thread under SCHED_FIFO (see `RealtimeRunner`).
    """

    task: str = OPEN_FLOOR
    controller: ControllerChoice = ControllerChoice()
    source: str = "hold"
    seed: int = 0
    threads: int = 1
    rate_hz: float | None = None
    nominal_start: bool = False
    time_limit_s: float | None = None
    safety: SafetyConfig = field(default_factory=lambda: SafetyConfig(on_invalid="hold"))
    rt_priority: int | None = None

    def __post_init__(self) -> None:
        if self.task not in live_tasks():
            raise ValueError(f"unknown task {self.task!r}; known: {', '.join(live_tasks())}")
        if not isinstance(self.controller, ControllerChoice):
            raise TypeError(f"controller must be a ControllerChoice, got {self.controller!r}")
        if not isinstance(self.source, str) or not self.source:
            raise ValueError(f"source must be a source name, got {self.source!r}")
        if self.threads < 0:
            raise ValueError(f"threads must be >= 0 (0: all CPUs), got {self.threads}")
        if self.rate_hz is not None and not (math.isfinite(self.rate_hz) and self.rate_hz > 0):
            raise ValueError(f"rate_hz must be positive and finite or None, got {self.rate_hz}")
        if self.time_limit_s is not None and not self.time_limit_s > 0:
            raise ValueError(f"time_limit_s must be positive or None, got {self.time_limit_s}")

    def task_config(self) -> TaskConfig:
        """The task's config with `nominal_start` and `time_limit_s` applied."""
        config = OpenFloorConfig() if self.task == OPEN_FLOOR else default_config(self.task)
        if self.nominal_start:
            config = config.nominal()
        if self.time_limit_s is not None:
            config = dataclasses.replace(config, time_limit_s=self.time_limit_s)
        return config


def build_world(config: LiveConfig) -> BatchedEnv:
    """The one simulated world of `config` (on the calling thread)."""
    task_config = config.task_config()
    task = OpenFloorTask(task_config) if config.task == OPEN_FLOOR else config.task
    return BatchedEnv(task, num_worlds=1, threads=config.threads, seed=config.seed,
                      task_config=None if config.task == OPEN_FLOOR else task_config)



__all__ = ["OPEN_FLOOR", "LiveConfig", "build_world", "live_tasks"]
