"""The boundaries every layer relies on: worlds, command sources, controllers, step observers.

    obs  = world.observe()                    # World: simulator (batched), real robot, fake robot
    cmd  = source.next_command(obs)           # CommandSource: planner, teleop device, deployed DP
    tgt  = controller.step(cmd, obs)          # Controller: reference or learned
    sent = world.apply(safety.targets(tgt))   # SafetyFilter (robot_io.safety) in between
    observer.step(StepRecord(obs, cmd, sent)) # StepObserver: dataset recorder, metrics, GUI

Nothing here imports MuJoCo: a recorder, a GUI or a robot backend implements these protocols
with torch and numpy alone. Capabilities only a simulator has (exact-replay state, per-world
model fields, privileged physics quantities) are separate small protocols, checked with
`isinstance` where they are needed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor

from robot_io.robot_spec import RobotSpec
from robot_io.types import Command, JointTargets, Observation


# -- worlds ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StepOutcome:
    """Per-world outcome after a tick, where the world knows it: (B,) tensors.

    A real robot knows no success predicate and no time limit: its outcome is all False, and
    episodes end when an operator or a script ends them (`Session.end_episode`).
    """

    success: Tensor
    reward: Tensor
    timeout: Tensor
    unstable: Tensor  # the simulator found the world unstable: a failed episode

    @property
    def done(self) -> Tensor:
        return self.success | self.timeout | self.unstable

    @classmethod
    def unknown(cls, num_worlds: int) -> StepOutcome:
        """The outcome of a world without a success predicate or time limit."""
        no = torch.zeros(num_worlds, dtype=torch.bool)
        return cls(success=no, reward=torch.zeros(num_worlds, dtype=torch.float64),
                   timeout=no.clone(), unstable=no.clone())


@runtime_checkable
class World(Protocol):
    """What a session drives: N simulated worlds, one real robot, or a fake one (a batch of one).

    Attributes:
        num_worlds: B.
        robot: the robot spec (joint order, default pose, limits, gains, rates).
        control_dt_s: the control period.
        reset_params: randomisation values of the running episodes, {name: (B,)}; empty where
            nothing is randomised (a robot).
    """

    num_worlds: int
    robot: RobotSpec
    reset_params: dict[str, Tensor]

    @property
    def control_dt_s(self) -> float: ...

    def observe(self) -> Observation:
        """The current observation of every world."""

    def apply(self, targets: JointTargets) -> JointTargets:
        """Send joint targets for one control tick; returns what was actually sent."""

    def reset(self, ids: Tensor | None = None) -> Observation:
        """Start new episodes in worlds `ids` (all when None); observe all."""

    def outcome(self) -> StepOutcome:
        """Success, reward, time-out and instability of every world, where known."""

    def enter_safe_mode(self) -> None:
        """Stop moving at once: damping on a robot, a pause in simulation."""

    def leave_safe_mode(self) -> None:
        """Resume normal operation (after an explicit reset of the safety filter)."""


@runtime_checkable
class ReplayableWorld(Protocol):
    """Exact-replay state and per-world model fields: only a simulator has them."""

    def state(self) -> np.ndarray:
        """(B, nstate) full integration state."""

    def world_model_fields(self, ids: Tensor) -> dict[str, np.ndarray]:
        """Per-world model field values of worlds `ids`, {name: (n, ...)}."""

    def restore(self, ids: Tensor, state: np.ndarray,
                model_fields: dict[str, np.ndarray]) -> Observation:
        """Put worlds `ids` into a recorded state, starting a new episode there."""


@runtime_checkable
class PrivilegedSim(Protocol):
    """Privileged simulator quantities the reference controller reads (simulation only)."""

    flat_terrain: bool

    def terrain_height(self, xy: Tensor, ids: Tensor | None = None) -> Tensor:
        """Ground height (n, P) under world points xy (n, P, 2)."""

    def joint_bias_torque(self) -> Tensor:
        """(B, 29) gravity, Coriolis and centrifugal torques at the joints, robot joint order."""


# -- commands and control ----------------------------------------------------------------------
@runtime_checkable
class CommandSource(Protocol):
    """Produces planner commands: heuristic planners, teleop devices and the deployed DP."""

    def reset(self, obs: Observation, ids: Tensor | None = None) -> None:
        """Start new episodes in worlds `ids` (all when None)."""

    def next_command(self, obs: Observation) -> Command:
        """The command for this control tick, (B, ...)."""


@runtime_checkable
class TimedSource(Protocol):
    """A source whose commands come from an operator's input stream (teleop devices).

    The safety watchdog reads the time of the newest input; sources without it (planners, the
    deployed policy) compute every command fresh and are never stale.
    """

    def input_time_s(self) -> float | None:
        """When the newest operator input arrived, on the session's clock (None: never)."""


@runtime_checkable
class RawInputSource(Protocol):
    """A source whose raw operator inputs (device frames) are recorded beside the commands, so
    that retargeting can be replayed and improved later (teleop devices)."""

    def raw_inputs(self) -> dict[str, Tensor]:
        """The raw input behind this tick's command, {name: (B, ...)}: fixed names and shapes
        for the whole session, finite numbers (NaN where an input is invalid is allowed)."""


@runtime_checkable
class Controller(Protocol):
    """Turns commands into joint targets: the reference controller or the learned pi_L."""

    def reset(self, obs: Observation, ids: Tensor | None = None) -> None:
        """Forget internal state of worlds `ids` (all when None)."""

    def step(self, cmd: Command, obs: Observation) -> JointTargets:
        """Joint targets for this control tick."""


# -- observers ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class EpisodeStart:
    """Worlds that begin an episode, right after their reset.

    Attributes:
        world_ids, episode_ids: (n,) the worlds and the session's running episode numbers.
        obs: the whole batch's observation after the reset.
        params: (n,) randomisation values of those worlds, by name (empty on a robot).
        sim_state: (n, nstate) their full integration state (exact replay), or None where the
            world has none (a robot).
        model_fields: their per-world model fields, by name, (n, ...) (empty on a robot).
    """

    world_ids: Tensor
    episode_ids: Tensor
    obs: Observation
    params: dict[str, Tensor]
    sim_state: np.ndarray | None = None
    model_fields: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True)
class StepRecord:
    """One tick of every world: the observation the command was computed from, the applied
    command, the applied joint targets, the integration state before the tick (B, ...) or None
    where the world has none, and the source's raw operator inputs (`RawInputSource`; empty
    for planners and policies)."""

    obs: Observation
    command: Command
    sent: JointTargets
    sim_state: np.ndarray | None = None
    inputs: dict[str, Tensor] = field(default_factory=dict)


END_REASONS = ("success", "timeout", "unstable", "operator", "stopped")


@dataclass(frozen=True)
class EpisodeEnd:
    """Worlds whose episode ended at this tick: (n,) tensors.

    Attributes:
        success: the episode's label: the task's predicate, or what the operator said.
        reasons: why each ended, one of `END_REASONS`.
        keep: False where the operator discarded the episode (a recorder drops it).
    """

    world_ids: Tensor
    episode_ids: Tensor
    success: Tensor
    timeout: Tensor
    unstable: Tensor
    steps: Tensor  # control steps the episode lasted
    reasons: tuple[str, ...] = ()
    keep: Tensor | None = None

    def reason(self, i: int) -> str:
        """Why the i-th listed episode ended."""
        if self.reasons:
            return self.reasons[i]
        return ("success" if bool(self.success[i]) else "unstable" if bool(self.unstable[i])
                else "timeout")

    def kept(self, i: int) -> bool:
        return True if self.keep is None else bool(self.keep[i])

    def select(self, rows: Tensor) -> EpisodeEnd:
        """The same message for the listed rows only."""
        index = rows.tolist()
        return EpisodeEnd(world_ids=self.world_ids[rows], episode_ids=self.episode_ids[rows],
                          success=self.success[rows], timeout=self.timeout[rows],
                          unstable=self.unstable[rows], steps=self.steps[rows],
                          reasons=tuple(self.reasons[i] for i in index) if self.reasons else (),
                          keep=None if self.keep is None else self.keep[rows])


class StepObserver(Protocol):
    """Sees every episode start, every tick and every episode end of a session."""

    def episode_started(self, start: EpisodeStart) -> None: ...

    def step(self, record: StepRecord) -> None: ...

    def episode_ended(self, end: EpisodeEnd) -> None: ...


Clock = Callable[[], float]
"""Seconds on a monotonic clock (`time.monotonic`, or an injected one in tests)."""
