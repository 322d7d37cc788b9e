"""The session: one control tick for every loop (collection, the app, evaluation, fine-tuning
rollouts, replay, benchmarks), for any `World`.

One tick, for every world at once (`Session.tick`, the only implementation of it):

    obs  = the latest observation
    cmd  = safety.command(source.next_command(obs), obs, input age)  # gate + watchdog
    tgt  = safety.targets(controller.step(cmd, obs))                  # band + joint step
    sent = world.apply(tgt)                                           # what was applied
    observers see (obs, cmd, sent); obs = world.observe(); outcome -> episode ends

Worlds run episodes independently: a world whose episode ends (success, time-out, an unstable
simulation, or an operator's `end_episode`) is reset at once while the others go on, unless
`auto_restart` is off (fine-tuning restarts worlds at chunk boundaries with `start_episodes`).

The session is steppable and steerable between ticks: `request_stop()` (any thread; STOP latches
at the next tick and the world goes to its safe mode), `reset_stop()`, `end_episode(ids,
success, reason)`, `set_source()` (hand-over without a reset) and `start_episodes()`. `run()` is a
loop over `tick()`. Observers (a dataset recorder, metrics, a GUI snapshot) plug in through
`StepObserver`, so this module depends on none of them. A single robot is a batch of one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from robot_io.protocols import (
    Clock,
    CommandSource,
    Controller,
    EpisodeEnd,
    EpisodeStart,
    RawInputSource,
    ReplayableWorld,
    StepObserver,
    StepOutcome,
    StepRecord,
    TimedSource,
    World,
)
from robot_io.safety import SafetyConfig, SafetyFilter, SafetyState
from robot_io.types import Command, CommandLimits, JointTargets, Observation

StepCallback = Callable[[int, Observation, Command, JointTargets], None]

# Re-exported: observers used to import these from here.
__all__ = ["EpisodeEnd", "EpisodeResult", "EpisodeStart", "Session", "SessionResult",
           "StepObserver", "StepOutcome", "StepRecord", "TickResult", "run_episode"]


@dataclass(frozen=True)
class TickResult:
    """What one tick did.

    Attributes:
        tick: the session's tick counter before this tick.
        applied: False when nothing was sent (STOP or a safe mode latched).
        obs: the observation after the tick.
        command, sent: the applied command and joint targets (None when not applied).
        ended: the episodes that ended at this tick, or None.
        safety: the filter's state after the tick.
        input_age_s: age of the source's newest input (None: not an operator stream).
    """

    tick: int
    applied: bool
    obs: Observation
    command: Command | None
    sent: JointTargets | None
    ended: EpisodeEnd | None
    safety: SafetyState
    input_age_s: float | None


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
    """Runs `source` through `controller` and the safety filter on `world`.

    Args:
        world: the worlds (simulator, fake or real robot).
        source: where commands come from.
        controller: turns commands into joint targets.
        observers: see starts, ticks and ends (e.g. a dataset recorder).
        safety: the safety filter, or its config (default: `SafetyConfig(limits=limits)`).
        limits: command limits of the default safety filter (ignored when `safety` is given).
        first_episode_id: number given to the first episode (to continue a dataset).
        stop_on_success: end an episode at its first success (else at the time limit).
        auto_restart: reset a world as soon as its episode ends.
        clock: monotonic seconds, for the input age the watchdog checks (injectable in tests).
    """

    def __init__(self, world: World, source: CommandSource, controller: Controller,
                 observers: Sequence[StepObserver] = (),
                 safety: SafetyFilter | SafetyConfig | None = None,
                 limits: CommandLimits | None = None, first_episode_id: int = 0,
                 stop_on_success: bool = True, auto_restart: bool = True,
                 clock: Clock = time.monotonic) -> None:
        self.world, self.source, self.controller = world, source, controller
        self.observers = list(observers)
        if not isinstance(safety, SafetyFilter):
            config = safety or SafetyConfig(limits=limits or CommandLimits())
            safety = SafetyFilter(world.robot, world.num_worlds, config)
        self.safety = safety
        self.stop_on_success, self.auto_restart, self.clock = stop_on_success, auto_restart, clock
        n = world.num_worlds
        self.next_episode_id = first_episode_id
        self.episode_ids = torch.full((n,), -1, dtype=torch.long)
        self.active = torch.zeros(n, dtype=torch.bool)
        self.episode_steps = torch.zeros(n, dtype=torch.long)
        self.ticks = 0
        self.obs: Observation | None = None
        self.budget: int | None = None  # episodes that may still start (None: unlimited)
        self._stop_request: str | None = None
        self._reset_request = False
        self._world_safe = False
        self._replayable = isinstance(world, ReplayableWorld)
        self._timed = isinstance(source, TimedSource)  # a Protocol check costs microseconds
        self._raw = isinstance(source, RawInputSource)
        self._ended: list[EpisodeEnd] = []

    # -- requests (between ticks) ------------------------------------------------------------
    def request_stop(self, reason: str = "STOP") -> None:
        """Latch STOP at the next tick (safe from any thread: one attribute write)."""
        self._stop_request = reason

    def reset_stop(self) -> None:
        """Clear STOP and a watchdog safe mode at the next tick (the explicit reset).

        It clears a STOP requested before it; one requested after it still latches."""
        self._stop_request = None
        self._reset_request = True

    @property
    def stopped(self) -> bool:
        return self.safety.latched or self._stop_request is not None

    def set_source(self, source: CommandSource) -> None:
        """Hand the running episodes to another source, without resetting any world."""
        if self.obs is None:
            raise RuntimeError("start episodes before handing them to another source")
        source.reset(self.obs, torch.nonzero(self.active).squeeze(1))
        self.source, self._timed = source, isinstance(source, TimedSource)
        self._raw = isinstance(source, RawInputSource)

    def start_episodes(self, ids: Tensor | None = None, reset_world: bool = True) -> Observation:
        """Start new episodes in worlds `ids` (all when None) and announce them.

        Args:
            reset_world: reset the worlds first; False when the caller has put them into a
                state already (exact replay: `ReplayableWorld.restore`).
        """
        world = self.world
        ids = torch.arange(world.num_worlds) if ids is None else torch.as_tensor(ids).long()
        obs = world.reset(ids) if reset_world else world.observe()
        self.source.reset(obs, ids)
        self.controller.reset(obs, ids)
        self.safety.episode_started(obs, ids)
        count = len(ids)
        self.episode_ids[ids] = torch.arange(self.next_episode_id, self.next_episode_id + count)
        self.next_episode_id += count
        self.active[ids] = True
        self.episode_steps[ids] = 0
        if self.budget is not None:
            self.budget -= count
        if self.observers:
            state = model_fields = None
            if self._replayable:
                state = world.state()[ids.numpy()]
                model_fields = world.world_model_fields(ids)
            start = EpisodeStart(world_ids=ids, episode_ids=self.episode_ids[ids].clone(),
                                 obs=obs, params={k: v[ids] for k, v in world.reset_params.items()},
                                 sim_state=state, model_fields=model_fields or {})
            for observer in self.observers:
                observer.episode_started(start)
        self.obs = obs
        return obs

    def end_episode(self, ids: Tensor | Sequence[int], success: bool | Tensor,
                    reason: str = "operator", keep: bool = True,
                    restart: bool | None = None) -> EpisodeEnd | None:
        """End and label the running episodes of worlds `ids` now (an operator or a script).

        Args:
            success: the label, one for all or (n,).
            reason: why, stored with the episode (see `robot_io.protocols.END_REASONS`).
            keep: False discards the episode (a recorder drops it).
            restart: start new episodes there (default: `auto_restart`).
        """
        ids = torch.as_tensor(ids, dtype=torch.long).reshape(-1)
        ids = ids[self.active[ids]]
        if not len(ids):
            return None
        label = torch.as_tensor(success, dtype=torch.bool).expand(len(ids)).clone()
        no = torch.zeros(len(ids), dtype=torch.bool)
        end = self._finish(ids, label, no, no, (reason,) * len(ids),
                           torch.full((len(ids),), keep, dtype=torch.bool))
        if self.auto_restart if restart is None else restart:
            self._restart(ids)
        return end

    # -- the tick ----------------------------------------------------------------------------
    def tick(self) -> TickResult:
        """Run exactly one control tick of every world (see the module docstring)."""
        if self.obs is None:
            raise RuntimeError("start episodes (start_episodes or run) before ticking")
        safety, world = self.safety, self.world
        if self._reset_request:
            self._reset_request = False
            safety.reset()
        if self._stop_request is not None:
            safety.stop(self._stop_request)
            self._stop_request = None
        age = self._input_age()
        if not safety.latched:
            safety.watchdog(age)
        if safety.latched:
            return self._hold_safe(age)
        if self._world_safe:
            world.leave_safe_mode()
            self._world_safe = False
            self.obs = world.observe()
            safety.resume(self.obs)  # step from where the robot is after damping
        obs = self.obs
        state = world.state() if self.observers and self._replayable else None
        cmd = safety.command(self.source.next_command(obs), obs, age)
        sent = world.apply(safety.targets(self.controller.step(cmd, obs)))
        if self.observers:
            inputs = self.source.raw_inputs() if self._raw else {}
            record = StepRecord(obs=obs, command=cmd, sent=sent, sim_state=state, inputs=inputs)
            for observer in self.observers:
                observer.step(record)
        self.obs = world.observe()
        tick = self.ticks
        self.ticks += 1
        self.episode_steps += 1
        ended = self._check_outcome(world.outcome())
        return TickResult(tick=tick, applied=True, obs=self.obs, command=cmd, sent=sent,
                          ended=ended, safety=safety.state, input_age_s=age)

    def _input_age(self) -> float | None:
        if not self._timed:
            return None
        stamp = self.source.input_time_s()
        if stamp is None:
            # No input yet (a device still connecting): hold where the robot is, but do not
            # latch the safe mode; that is for a stream that was live and then went stale.
            return self.safety.config.stale_after_s
        return max(0.0, self.clock() - stamp)

    def _hold_safe(self, age: float | None) -> TickResult:
        """A latched STOP or safe mode: the world is in its safe mode, nothing is sent."""
        if not self._world_safe:
            self.world.enter_safe_mode()
            self._world_safe = True
        self.obs = self.world.observe()
        tick = self.ticks
        self.ticks += 1
        return TickResult(tick=tick, applied=False, obs=self.obs, command=None, sent=None,
                          ended=None, safety=self.safety.state, input_age_s=age)

    def _check_outcome(self, out: StepOutcome) -> EpisodeEnd | None:
        success = out.success if self.stop_on_success else torch.zeros_like(out.success)
        done = (out.timeout | out.unstable | success).cpu() & self.active
        if not bool(done.any()):
            return None
        ids = torch.nonzero(done).squeeze(1)
        succ, timeout = out.success.cpu()[ids], out.timeout.cpu()[ids]
        unstable = out.unstable.cpu()[ids]
        reasons = tuple("success" if s else "unstable" if u else "timeout"
                        for s, u in zip(succ.tolist(), unstable.tolist()))
        end = self._finish(ids, succ.clone(), timeout.clone(), unstable.clone(), reasons, None)
        if self.auto_restart:
            self._restart(ids)
        return end

    def _finish(self, ids: Tensor, success: Tensor, timeout: Tensor, unstable: Tensor,
                reasons: tuple[str, ...], keep: Tensor | None) -> EpisodeEnd:
        end = EpisodeEnd(world_ids=ids, episode_ids=self.episode_ids[ids].clone(),
                         success=success, timeout=timeout, unstable=unstable,
                         steps=self.episode_steps[ids].clone(), reasons=reasons, keep=keep)
        self.active[ids] = False
        for observer in self.observers:
            observer.episode_ended(end)
        self._ended.append(end)
        return end

    def _restart(self, ids: Tensor) -> None:
        if self.budget is not None:
            ids = ids[:max(0, self.budget)]
        if len(ids):
            self.start_episodes(ids)

    # -- the loop ----------------------------------------------------------------------------
    def run(self, episodes: int | None = None, on_step: StepCallback | None = None,
            done_when: Callable[[], bool] | None = None,
            stop_on_success: bool | None = None) -> SessionResult:
        """Tick until `episodes` have started and ended, `done_when()` holds (checked after
        every tick; the episodes still running are abandoned: observers see no end for them),
        or STOP is requested.

        Args:
            episodes: how many episodes to run at most (None: until `done_when` or STOP).
            on_step: called after every applied tick with (tick, obs, command, sent).
            done_when: a stop condition, e.g. "enough successful episodes were recorded".
            stop_on_success: overrides the session's setting.
        """
        if episodes is None and done_when is None:
            raise ValueError("give episodes, done_when or both")
        if episodes is not None and episodes < 1:
            raise ValueError(f"episodes must be at least 1, got {episodes}")
        if stop_on_success is not None:
            self.stop_on_success = stop_on_success
        n = self.world.num_worlds
        self.budget = episodes
        self._ended = []
        self.start_episodes(torch.arange(n if episodes is None else min(n, episodes)))
        # A pending STOP request is latched by one more tick, which puts the world in its
        # safe mode; only then does the loop end.
        while bool(self.active.any()) and not self.safety.latched:
            result = self.tick()
            if on_step is not None and result.applied:
                on_step(result.tick, result.obs, result.command, result.sent)
            if done_when is not None and done_when():
                break
        ended, self._ended = self._ended, []
        if not ended:
            empty = torch.zeros(0, dtype=torch.long)
            return SessionResult(empty, empty.bool(), empty)
        return SessionResult(episode_ids=torch.cat([e.episode_ids for e in ended]),
                             success=torch.cat([e.success for e in ended]),
                             steps=torch.cat([e.steps for e in ended]))

    def take_ended(self) -> list[EpisodeEnd]:
        """The episode ends since the last call (for loops that tick by themselves)."""
        ended, self._ended = self._ended, []
        return ended


@dataclass(frozen=True)
class EpisodeResult:
    """(B,) per-world results of one batched episode."""

    success: Tensor
    steps: Tensor  # control steps until success or the time limit

    @property
    def success_rate(self) -> float:
        return float(self.success.to(torch.float64).mean())


def run_episode(world: World, source: CommandSource, controller: Controller,
                limits: CommandLimits | None = None, on_step: StepCallback | None = None,
                stop_on_success: bool = True, time_limit_steps: int | None = None
                ) -> EpisodeResult:
    """One episode in every world (a `Session` of `world.num_worlds` episodes).

    Returns per-world success and the steps to success (the time limit in steps otherwise:
    `time_limit_steps`, default the world's `time_limit_steps` attribute when it has one).
    """
    session = Session(world, source, controller, limits=limits)
    result = session.run(world.num_worlds, stop_on_success=stop_on_success, on_step=on_step)
    order = torch.argsort(result.episode_ids)  # episode i ran in world i
    success, steps = result.success[order], result.steps[order]
    limit = time_limit_steps if time_limit_steps is not None else getattr(
        world, "time_limit_steps", None)
    if limit is not None:
        steps = torch.where(success, steps, torch.full_like(steps, limit))
    return EpisodeResult(success=success, steps=steps)

