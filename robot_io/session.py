"""The session loop shared by the CLI collector, the app, evaluation and fine-tuning.

One control tick, for every world at once:

    obs  = world.observe()
    cmd  = gate(source.next_command(obs))   # validated and clamped: what is applied
    tgt  = controller.step(cmd, obs)
    sent = world.apply(tgt)                 # what was actually applied
    observers see (obs, cmd, sent)

Worlds run episodes independently: a world whose episode ends (success, time-out or an
unstable simulation) is reset at once while the others go on. Observers (a dataset recorder,
a progress display, a metrics logger) plug in through the small `StepObserver` protocol, so this
module never depends on them. A single robot is a batch of one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from robot_io.command_gate import CommandGate
from robot_io.env import BatchedEnv
from robot_io.protocols import CommandSource, Controller
from robot_io.types import Command, CommandLimits, JointTargets, Observation

StepCallback = Callable[[int, Observation, Command, JointTargets], None]


@dataclass(frozen=True)
class EpisodeStart:
    """Worlds that begin an episode, right after their reset.

    Attributes:
        world_ids, episode_ids: (n,) the worlds and the session's running episode numbers.
        obs: the whole batch's observation after the reset.
        params: (n,) randomisation values of those worlds, by name.
        sim_state: (n, nstate) their full integration state (for exact replay).
        model_fields: their per-world model fields, by name, (n, ...).
    """

    world_ids: Tensor
    episode_ids: Tensor
    obs: Observation
    params: dict[str, Tensor]
    sim_state: np.ndarray
    model_fields: dict[str, np.ndarray]


@dataclass(frozen=True)
class StepRecord:
    """One tick of every world: the observation the command was computed from, the applied
    command, the applied joint targets, and the integration state before the tick (B, ...)."""

    obs: Observation
    command: Command
    sent: JointTargets
    sim_state: np.ndarray


@dataclass(frozen=True)
class EpisodeEnd:
    """Worlds whose episode ended at this tick: (n,) tensors."""

    world_ids: Tensor
    episode_ids: Tensor
    success: Tensor
    timeout: Tensor
    unstable: Tensor
    steps: Tensor  # control steps the episode lasted


class StepObserver(Protocol):
    """Sees every episode start, every tick and every episode end of a session."""

    def episode_started(self, start: EpisodeStart) -> None: ...

    def step(self, record: StepRecord) -> None: ...

    def episode_ended(self, end: EpisodeEnd) -> None: ...


@dataclass(frozen=True)
class SessionResult:
    """What a session did: one entry per finished episode, in the order they ended."""

    episode_ids: Tensor
    success: Tensor
    steps: Tensor

    @property
    def success_rate(self) -> float:
        return float(self.success.to(torch.float64).mean()) if len(self.success) else 0.0


class Session:
    """Runs `source` through `controller` on `env`, episode after episode, in every world.

    Args:
        env: the worlds.
        source: where commands come from.
        controller: turns commands into joint targets.
        observers: see starts, ticks and ends (e.g. a dataset recorder).
        limits: the command limits of the gate.
        first_episode_id: number given to the first episode (to continue a dataset).
    """

    def __init__(self, env: BatchedEnv, source: CommandSource, controller: Controller,
                 observers: Sequence[StepObserver] = (), limits: CommandLimits | None = None,
                 first_episode_id: int = 0) -> None:
        self.env, self.source, self.controller = env, source, controller
        self.observers = list(observers)
        self.gate = CommandGate(limits or CommandLimits(), env.num_worlds, env.control_dt_s)
        self.next_episode_id = first_episode_id
        self.episode_ids = torch.full((env.num_worlds,), -1, dtype=torch.long)
        self.obs: Observation | None = None

    def _start(self, ids: Tensor) -> None:
        """Reset worlds `ids` and announce their new episodes."""
        env = self.env
        obs = env.reset(ids)
        self.source.reset(obs, ids)
        self.controller.reset(obs, ids)
        self.gate.reset(ids)
        self.episode_ids[ids] = torch.arange(self.next_episode_id,
                                             self.next_episode_id + len(ids))
        self.next_episode_id += len(ids)
        if self.observers:
            start = EpisodeStart(world_ids=ids, episode_ids=self.episode_ids[ids].clone(),
                                 obs=obs, params={k: v[ids] for k, v in env.reset_params.items()},
                                 sim_state=env.state()[ids.numpy()],
                                 model_fields=env.world_model_fields(ids))
            for observer in self.observers:
                observer.episode_started(start)
        self.obs = obs

    def run(self, episodes: int | None = None, stop_on_success: bool = True,
            on_step: StepCallback | None = None,
            done_when: Callable[[], bool] | None = None) -> SessionResult:
        """Run episodes in every world until `episodes` have been started and have ended, or
        until `done_when()` holds (checked whenever episodes end; the session then stops at
        once and abandons the episodes still running: observers see no end for them).

        Args:
            episodes: how many episodes to run at most (None: until `done_when`).
            stop_on_success: end an episode at its first success (else at the time limit).
            on_step: called after every tick with (tick, obs, command, sent).
            done_when: a stop condition, e.g. "enough successful episodes were recorded".
        """
        if episodes is None and done_when is None:
            raise ValueError("give episodes, done_when or both")
        if episodes is not None and episodes < 1:
            raise ValueError(f"episodes must be at least 1, got {episodes}")
        env = self.env
        n = env.num_worlds
        first = n if episodes is None else min(n, episodes)
        self._start(torch.arange(first))
        started = first
        active = torch.zeros(n, dtype=torch.bool)
        active[:started] = True
        ended_ids, ended_success, ended_steps = [], [], []
        tick = 0
        while bool(active.any()):
            obs = self.obs
            state = env.state() if self.observers else None
            cmd = self.gate(self.source.next_command(obs))
            sent = env.apply(self.controller.step(cmd, obs))
            if self.observers:
                record = StepRecord(obs=obs, command=cmd, sent=sent, sim_state=state)
                for observer in self.observers:
                    observer.step(record)
            self.obs = env.observe()
            if on_step is not None:
                on_step(tick, self.obs, cmd, sent)
            tick += 1
            out = env.outcome()
            done = (out.timeout | out.unstable | (out.success if stop_on_success else False))
            done = done & active
            if not bool(done.any()):
                continue
            ids = torch.nonzero(done).squeeze(1)
            end = EpisodeEnd(world_ids=ids, episode_ids=self.episode_ids[ids].clone(),
                             success=out.success[ids].clone(), timeout=out.timeout[ids].clone(),
                             unstable=out.unstable[ids].clone(),
                             steps=env.episode_steps[ids].clone())
            for observer in self.observers:
                observer.episode_ended(end)
            ended_ids.append(end.episode_ids)
            ended_success.append(end.success)
            ended_steps.append(end.steps)
            if done_when is not None and done_when():
                break
            wanted = len(ids) if episodes is None else max(0, episodes - started)
            restart = ids[:wanted]
            active[ids[len(restart):]] = False
            if len(restart):
                started += len(restart)
                self._start(restart)
        return SessionResult(episode_ids=torch.cat(ended_ids), success=torch.cat(ended_success),
                             steps=torch.cat(ended_steps))


@dataclass(frozen=True)
class EpisodeResult:
    """(B,) per-world results of one batched episode."""

    success: Tensor
    steps: Tensor  # control steps until success or the time limit

    @property
    def success_rate(self) -> float:
        return float(self.success.to(torch.float64).mean())


def run_episode(env: BatchedEnv, source: CommandSource, controller: Controller,
                limits: CommandLimits | None = None, on_step: StepCallback | None = None,
                stop_on_success: bool = True) -> EpisodeResult:
    """One episode in every world (a `Session` of `env.num_worlds` episodes).

    Returns per-world success and the steps to success (the time limit in steps otherwise).
    """
    session = Session(env, source, controller, limits=limits)
    result = session.run(env.num_worlds, stop_on_success=stop_on_success, on_step=on_step)
    order = torch.argsort(result.episode_ids)  # episode i ran in world i
    success, steps = result.success[order], result.steps[order]
    steps = torch.where(success, steps, torch.full_like(steps, env.time_limit_steps))
    return EpisodeResult(success=success, steps=steps)
