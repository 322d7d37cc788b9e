"""The command sources the live world can switch between: a plain dict of factories.

    SOURCES["heuristic"](world, seed) -> CommandSource
    register_source("keyboard", lambda world, seed: KeyboardDevice(...))

"hold" (stand still, hands held where they were), "heuristic" and "scripted" are built in;
teleop devices plug in with `register_source`. A factory runs on the caller's thread when the
GUI first asks for the source, so it should be quick (load heavy things before registering).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
from torch import Tensor

from planners.heuristic import make_heuristic_planner
from planners.scripted import make_scripted_source
from robot_io.protocols import CommandSource, World
from robot_io.types import Command, Observation

log = logging.getLogger(__name__)

SourceFactory = Callable[[World, int], CommandSource]
"""(world, seed) -> a command source for `world.num_worlds` worlds."""


class HoldSource:
    """A `CommandSource` that stands still: zero base velocity, the hands held where they were
    when it took over (at a reset or a hand-over), grippers open."""

    def __init__(self) -> None:
        self._hand_pos: Tensor | None = None
        self._hand_quat: Tensor | None = None

    def reset(self, obs: Observation, ids: Tensor | None = None) -> None:
        if self._hand_pos is None or self._hand_pos.shape[0] != obs.num_worlds:
            self._hand_pos, self._hand_quat = obs.hand_pos.clone(), obs.hand_quat.clone()
            return
        ids = slice(None) if ids is None else torch.as_tensor(ids, dtype=torch.long)
        self._hand_pos[ids] = obs.hand_pos[ids]
        self._hand_quat[ids] = obs.hand_quat[ids]

    def next_command(self, obs: Observation) -> Command:
        if self._hand_pos is None:
            self.reset(obs)
        n, dtype, device = obs.num_worlds, torch.float64, obs.hand_pos.device
        return Command(base_vel=torch.zeros(n, 3, dtype=dtype, device=device),
                       hand_pos=self._hand_pos.clone(), hand_quat=self._hand_quat.clone(),
                       gripper=torch.zeros(n, 2, dtype=dtype, device=device))


def task_of(world: World) -> str:
    """The task name of a simulated world (planners need one).

    Raises:
        ValueError: the world has no task (a robot).
    """
    name = getattr(getattr(world, "task", None), "name", None)
    if not isinstance(name, str):
        raise ValueError("planners need a simulated world with a task; this world has none")
    return name


def _hold(world: World, seed: int) -> CommandSource:
    return HoldSource()


def _heuristic(world: World, seed: int) -> CommandSource:
    return make_heuristic_planner(task_of(world), world.num_worlds, seed)


def _scripted(world: World, seed: int) -> CommandSource:
    task = task_of(world)
    source = make_scripted_source(task)
    config = world.task.config  # type: ignore[attr-defined]  # task_of checked it is there
    if config != config.nominal():
        log.warning("the %s script is written for the nominal start; this world randomises "
                    "its starts (LiveConfig.nominal_start=True), so it may fail", task)
    return source


def _device(name: str) -> SourceFactory:
    """A teleop device (teleop_app.devices) for one world, on the session's clock."""
    def factory(world: World, seed: int) -> CommandSource:
        from teleop_app.devices import make_device

        return make_device(name, num_worlds=world.num_worlds, control_dt_s=world.control_dt_s)
    return factory


SOURCES: dict[str, SourceFactory] = {"hold": _hold, "heuristic": _heuristic,
                                     "scripted": _scripted, "keyboard": _device("keyboard"),
                                     "gamepad": _device("gamepad")}


def register_source(name: str, factory: SourceFactory, replace: bool = False) -> None:
    """Add a command source (a teleop device) under `name`.

    Raises:
        ValueError: an empty name, or one taken already (unless `replace`).
        TypeError: a factory that is not callable.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"a source name must be a non-empty string, got {name!r}")
    if not callable(factory):
        raise TypeError(f"the factory of source {name!r} must be callable, got {factory!r}")
    if name in SOURCES and not replace:
        raise ValueError(f"source {name!r} is registered already; pass replace=True to replace "
                         f"it")
    SOURCES[name] = factory


def make_source(name: str, world: World, seed: int,
                registry: dict[str, SourceFactory] | None = None) -> CommandSource:
    """Source `name` for `world`; raises ValueError listing the known names."""
    registry = SOURCES if registry is None else registry
    if name not in registry:
        raise ValueError(f"unknown source {name!r}; known sources: {', '.join(sorted(registry))}")
    return registry[name](world, seed)


__all__ = ["SOURCES", "HoldSource", "SourceFactory", "make_source", "register_source", "task_of"]
