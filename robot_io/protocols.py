"""The boundaries every layer relies on: command sources, controllers and step observers."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from torch import Tensor

from robot_io.types import Command, JointTargets, Observation


@runtime_checkable
class CommandSource(Protocol):
    """Produces planner commands: heuristic planners, teleop devices and the deployed DP."""

    def reset(self, obs: Observation, ids: Tensor | None = None) -> None:
        """Start new episodes in worlds `ids` (all when None)."""

    def next_command(self, obs: Observation) -> Command:
        """The command for this control tick, (B, ...)."""


@runtime_checkable
class Controller(Protocol):
    """Turns commands into joint targets: the reference controller or the learned pi_L."""

    def reset(self, obs: Observation, ids: Tensor | None = None) -> None:
        """Forget internal state of worlds `ids` (all when None)."""

    def step(self, cmd: Command, obs: Observation) -> JointTargets:
        """Joint targets for this control tick."""
