"""`RealtimeRunner`: paces a `Session` at its control rate on its own thread (no Qt).

    runner = RealtimeRunner(session)        # 1 / world.control_dt_s, e.g. 50 Hz
    with runner:                            # start() ... close()
        snap = runner.latest()              # any thread, any time: the newest Snapshot
        runner.stop()                       # STOP: one attribute write, latched at the next tick
        runner.end_episode([0], success=True)   # queued, applied between ticks

Pacing. Tick k is due at deadline d_k. The loop sleeps until `spin_s` before the deadline and
busy-waits the rest (the OS wakes a sleeper up to a few tenths of a millisecond late, more
under load; the spin hides that). The next deadline is d_k + period, not "now + period", so the
small delays of single ticks do not add up and the mean rate is exact. A tick that starts more
than `late_after_s` (2 ms) after its deadline is late. Policy for a late tick (an overrun of the
previous tick, a request that took long, a preempted process): it runs at once, is counted, and
the schedule is re-anchored on its start (next deadline = its start + period). Missed slots are
dropped, never made up by a burst of catch-up ticks: a robot must not receive commands faster
than its control rate, and one late tick is one late tick, not a run of them. Another process
on the same core can still delay a wake-up by a whole scheduler tick (4 ms measured here);
`rt_priority` runs the loop thread under SCHED_FIFO where that is allowed (figures in
`robot_io.sim.bench_runner`).

Requests. The GUI (or a script) never waits for the loop and the loop never waits for it:
- `latest()` returns the newest immutable `Snapshot` (one reference swap, no lock);
- `submit(fn)` queues `fn(session)`; the loop drains the queue between ticks (in the slack
  before it waits for the next deadline) and returns a `Future` the caller may poll;
  `reset_stop()`, `end_episode()` and `set_source()` are typed wrappers around it;
- `stop()` is not queued: it writes the session's STOP request at once (latched at the next
  tick, also while the runner is paused). A `reset_stop()` that was submitted before a later
  `stop()` is dropped, so a STOP pressed after a reset always wins;
- `pause()` / `resume()` stop and restart ticking (the world is not stepped, nothing is sent:
  on a robot the robot's own watchdog applies, so STOP first); unlike STOP nothing latches and
  the schedule is re-anchored on resume (the paused time does not count as late).

Faults. An exception inside a tick does not end the thread silently: the runner records it
(`Snapshot.error`, `error`, the log), latches STOP on the session and at once runs one more tick,
which puts the world into its safe mode (damping on a robot, a pause in simulation; if that tick
fails too, it calls `world.enter_safe_mode()` itself). After that it ticks no more: it keeps
applying requests (so the app can end or discard the running episode) and publishing snapshots
until `close()`. A request that raises does not stop the robot: its `Future` holds the exception
and the snapshot's `error` shows it. `close()` likewise latches STOP and runs a last tick by
default (`safe_stop=True`), so a closed runner leaves the world in its safe mode.

Python threads share one interpreter lock: a GUI thread that computes in Python can delay the
loop's wake-up by up to `sys.getswitchinterval()` (5 ms by default). An app entry point that
needs tighter timing may lower it (e.g. `sys.setswitchinterval(0.001)`); this module leaves the
global setting alone.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
from torch import Tensor

from robot_io.protocols import Clock, CommandSource, ReplayableWorld
from robot_io.safety import SafetySnapshot
from robot_io.session import Session, TickResult
from robot_io.tick_stats import LATE_AFTER_S, RunnerStats, TickStats
from robot_io.types import Command, Observation

log = logging.getLogger(__name__)
_Batch = TypeVar("_Batch", Observation, Command)

SPIN_S = 0.0005  # measured on a 2-core machine: see robot_io.sim.bench_runner


@dataclass(frozen=True)
class Snapshot:
    """What the loop looked like after its latest tick (or request), for a GUI.

    Attributes:
        tick: the session's tick counter (ticks done so far).
        time_s: the runner's clock when this snapshot was made.
        wall_time_s: `time.time()` then (for display and logs).
        obs: world 0's latest observation as a batch of one (CPU copies), None before a tick.
        command: world 0's last applied command as a batch of one (None: none applied yet).
        applied: whether the latest tick sent a command (False under STOP or a safe mode).
        safety: the safety filter's state, reason, counters and limits.
        input_age_s: age of the source's newest operator input (None: not an operator stream).
        episode_ids, episode_steps: the running episodes and their lengths in ticks.
        episodes_ended, episodes_succeeded: episodes that ended since the runner started.
        rate_hz: tick rate over the last `tick_stats.RATE_WINDOW` ticks (0.0 before two).
        paced_ticks, late_ticks: ticks the runner paced, and how many of them were late.
        jitter_s: start minus deadline of the latest paced tick (None before one).
        running: the loop is ticking (started, not paused, not closed, not faulted).
        paused: `pause()` holds.
        error: the latest error ("Type: message") of a tick or a request, or None.
        world_state: world 0's full simulator state (`ReplayableWorld.state()`, for a 3D view
            that poses its own copy of the model), or None where the world has none (a robot).
    """

    tick: int
    time_s: float
    wall_time_s: float
    obs: Observation | None
    command: Command | None
    applied: bool
    safety: SafetySnapshot
    input_age_s: float | None
    episode_ids: tuple[int, ...]
    episode_steps: tuple[int, ...]
    episodes_ended: int
    episodes_succeeded: int
    rate_hz: float
    paced_ticks: int
    late_ticks: int
    jitter_s: float | None
    running: bool
    paused: bool
    error: str | None
    world_state: np.ndarray | None = None


class RealtimeRunner:
    """Ticks `session` at `rate_hz` on a thread of its own (see the module docstring).

    Args:
        session: a session whose episodes have started (`session.start_episodes()`).
        rate_hz: ticks per second (default: 1 / the world's control_dt_s).
        clock: monotonic seconds (injectable in tests).
        sleep: sleeps for the given seconds (injectable in tests).
        late_after_s: a tick that starts later than this after its deadline is late.
        spin_s: the last part of each wait is a busy wait this long (0: sleep only).
        safe_stop: on `close()`, latch STOP and run a last tick (the world's safe mode).
        rt_priority: run the loop thread under Linux's SCHED_FIFO at this priority (1..99), so
            that other processes cannot delay its wake-ups; None keeps the normal scheduler.
            Needs the right to do so (root or CAP_SYS_NICE); without it the runner logs a
            warning and goes on normally (`realtime` says which).

    Raises:
        ValueError: a rate that is not positive and finite, a negative spin or late bound.
    """

    def __init__(self, session: Session, rate_hz: float | None = None,
                 clock: Clock = time.monotonic, sleep: Callable[[float], None] = time.sleep,
                 late_after_s: float = LATE_AFTER_S, spin_s: float = SPIN_S,
                 safe_stop: bool = True, rt_priority: int | None = None) -> None:
        rate_hz = 1.0 / session.world.control_dt_s if rate_hz is None else float(rate_hz)
        if not (math.isfinite(rate_hz) and rate_hz > 0):
            raise ValueError(f"rate_hz must be positive and finite, got {rate_hz}")
        if spin_s < 0 or late_after_s < 0:
            raise ValueError(f"spin_s ({spin_s}) and late_after_s ({late_after_s}) must be >= 0")
        if rt_priority is not None and not 1 <= rt_priority <= 99:
            raise ValueError(f"rt_priority must be in 1..99 or None, got {rt_priority}")
        self.session, self.rate_hz, self.period_s = session, rate_hz, 1.0 / rate_hz
        self._replayable = isinstance(session.world, ReplayableWorld)  # checked once, not per tick
        self.clock, self.sleep = clock, sleep
        self.late_after_s, self.spin_s, self.safe_stop = late_after_s, spin_s, safe_stop
        self.rt_priority, self.realtime = rt_priority, False
        self.error: BaseException | None = None
        self._requests: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._closing = self._paused = self._faulted = self._looping = False
        self._stop_seq, self._stop_reason = 0, "STOP"  # stop() calls so far, the latest reason
        self._error_text: str | None = None
        self._last: TickResult | None = None
        self._command: Command | None = None
        self._ended = self._succeeded = 0
        self.tick_stats = TickStats(rate_hz, late_after_s)
        self._latest = self._snapshot()

    # -- life cycle --------------------------------------------------------------------------
    def start(self) -> RealtimeRunner:
        """Start the loop thread (once)."""
        if self._thread is not None:
            raise RuntimeError("the runner was started already; make a new one")
        if self.session.obs is None:
            raise RuntimeError("start the session's episodes before starting the runner")
        self._thread = threading.Thread(target=self._main, name="refine-dp-runner", daemon=True)
        self._thread.start()
        return self

    def close(self, timeout_s: float = 2.0) -> None:
        """Ask the loop to end (STOP and a safe tick first, with `safe_stop`) and join it."""
        self._closing = True
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout_s)
            if thread.is_alive():
                log.warning("the runner thread did not end within %.1f s", timeout_s)

    def __enter__(self) -> RealtimeRunner:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- requests (any thread) ---------------------------------------------------------------
    def latest(self) -> Snapshot:
        """The newest snapshot (never blocks)."""
        return self._latest

    def stop(self, reason: str = "STOP") -> None:
        """Latch STOP at the next tick; not queued (one attribute write on the session)."""
        self._stop_reason = reason
        self._stop_seq += 1
        self.session.request_stop(reason)

    def submit(self, fn: Callable[[Session], object]) -> Future:
        """Run `fn(session)` on the loop thread between ticks; poll the returned future."""
        future: Future = Future()
        self._requests.put((fn, future))
        return future

    def reset_stop(self) -> Future:
        """Clear STOP at the next tick, unless `stop()` is called before then (result: applied)."""
        seq = self._stop_seq

        def reset(session: Session) -> bool:
            if seq != self._stop_seq:
                return False  # a STOP came after this reset was asked for: it wins
            session.reset_stop()
            if seq != self._stop_seq:  # one landed just now and the reset may have cleared it
                session.request_stop(self._stop_reason)
                return False
            return True
        return self.submit(reset)

    def end_episode(self, ids: Tensor | Sequence[int], success: bool | Tensor,
                    reason: str = "operator", keep: bool = True) -> Future:
        """End and label episodes (see `Session.end_episode`); result: the `EpisodeEnd`."""
        return self.submit(lambda session: session.end_episode(ids, success, reason, keep))

    def set_source(self, source: CommandSource) -> Future:
        """Hand the running episodes to `source` between ticks (no reset)."""
        return self.submit(lambda session: session.set_source(source))

    def pause(self) -> None:
        """Stop ticking until `resume()` (not a STOP: nothing latches)."""
        self._paused = True

    def resume(self) -> None:
        self._paused = False

    # -- the loop (its own thread) -----------------------------------------------------------
    def run(self, max_passes: int | None = None) -> None:
        """The loop, on the calling thread, until `close()` (or `max_passes` passes, for tests).

        A pass: the queued requests, then one paced tick, or (paused or halted by a fault) a
        sleep of one period.
        """
        deadline: float | None = None
        passes = 0
        self._looping = True
        while not self._closing and (max_passes is None or passes < max_passes):
            passes += 1
            if self._drain():
                self._collect_ended()
                self._publish()
            if self._faulted or self._paused:
                if not self._faulted and self.session.stopped and not self.session.safety.latched:
                    self._safe_tick()  # STOP while paused: the world still goes safe at once
                deadline = None  # re-anchor on resume: the pause is not lateness
                self.sleep(self.period_s)
                continue
            if deadline is None:
                deadline = self.clock()
            self._wait_until(deadline)
            start = self.clock()
            if not self._tick():
                continue
            end = self.clock()
            late = self.tick_stats.record(deadline, start, end)
            deadline = start + self.period_s if late else deadline + self.period_s
            self._publish()
        self._looping = False

    def _main(self) -> None:
        if self.rt_priority is not None:
            self.realtime = _set_realtime(self.rt_priority)
        try:
            self.run()
        except Exception as exc:
            self._looping = False
            self._fault(exc)
        if self.safe_stop and not self._faulted:
            self.stop("runner closed")
            self._safe_tick()

    def _wait_until(self, deadline: float) -> None:
        remaining = deadline - self.clock()
        if remaining > self.spin_s:
            self.sleep(remaining - self.spin_s)
        while self.clock() < deadline:
            pass  # busy wait: keeps the interpreter lock, wakes on time

    def _tick(self) -> bool:
        """One session tick; False when it raised (the runner is then halted)."""
        try:
            result = self.session.tick()
        except Exception as exc:
            self._fault(exc)
            return False
        self._took(result)
        return True

    def _took(self, result: TickResult) -> None:
        self._last = result
        if result.applied and result.command is not None:
            self._command = _first_world(result.command)
        self._collect_ended()

    def _collect_ended(self) -> None:
        """Count the episodes that ended (also keeps the session's list of them short)."""
        for end in self.session.take_ended():
            self._ended += len(end.success)
            self._succeeded += int(end.success.sum())

    def _fault(self, exc: Exception) -> None:
        log.error("a tick failed; STOP latched and the runner halted", exc_info=exc)
        self.error, self._error_text = exc, f"{type(exc).__name__}: {exc}"
        self.stop(f"runner error: {type(exc).__name__}")
        self._faulted = True
        self._safe_tick()

    def _safe_tick(self) -> None:
        """One tick under a latched STOP: the world enters its safe mode; nothing is sent."""
        try:
            self._took(self.session.tick())
        except Exception as exc:
            log.error("the safe tick failed; entering the world's safe mode directly",
                      exc_info=exc)
            failed = f"safe tick failed: {type(exc).__name__}: {exc}"
            self._error_text = f"{self._error_text}; {failed}" if self._error_text else failed
            try:
                self.session.world.enter_safe_mode()
            except Exception as exc2:
                log.critical("the world's safe mode failed", exc_info=exc2)
        self._publish()

    def _drain(self) -> bool:
        """Run the queued requests; returns whether there were any."""
        ran = False
        while True:
            try:
                fn, future = self._requests.get_nowait()
            except queue.Empty:
                return ran
            ran = True
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn(self.session))
            except Exception as exc:
                log.warning("a runner request failed: %s", exc)
                self._error_text = f"request failed: {type(exc).__name__}: {exc}"
                future.set_exception(exc)

    # -- stats and snapshots -----------------------------------------------------------------
    def stats(self) -> RunnerStats:
        """The pacing summary of the paced ticks (see `robot_io.tick_stats`)."""
        return self.tick_stats.summary()

    def _snapshot(self) -> Snapshot:
        session, last = self.session, self._last
        active, stats = session.active, self.tick_stats
        return Snapshot(
            tick=session.ticks, time_s=self.clock(), wall_time_s=time.time(),
            obs=_first_world(last.obs) if last is not None else None, command=self._command,
            applied=last.applied if last is not None else False,
            safety=session.safety.snapshot(),
            input_age_s=last.input_age_s if last is not None else None,
            episode_ids=tuple(session.episode_ids[active].tolist()),
            episode_steps=tuple(session.episode_steps[active].tolist()),
            episodes_ended=self._ended, episodes_succeeded=self._succeeded,
            rate_hz=stats.window_rate_hz(), paced_ticks=stats.count, late_ticks=stats.late,
            jitter_s=stats.last_jitter_s,
            running=self._looping and not (self._closing or self._paused or self._faulted),
            paused=self._paused, error=self._error_text,
            world_state=session.world.state()[0].copy() if self._replayable else None)

    def _publish(self) -> None:
        self._latest = self._snapshot()  # one reference swap: readers never wait


def _set_realtime(priority: int) -> bool:
    """Put the calling thread under SCHED_FIFO at `priority`; False (and a warning) if denied."""
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))  # 0: this thread
    except (AttributeError, OSError) as exc:  # not Linux, or no right to do so
        log.warning("the runner keeps the normal scheduler (SCHED_FIFO refused: %s)", exc)
        return False
    return True


def _first_world(x: _Batch) -> _Batch:
    """World 0 of a batch as a batch of one, on the CPU, in tensors of its own."""
    def one(t: Tensor) -> Tensor:
        return t[:1].detach().to("cpu", copy=True)
    values = {f.name: getattr(x, f.name) for f in dataclasses.fields(x)}
    return type(x)(**{k: ({n: one(t) for n, t in v.items()} if isinstance(v, dict) else one(v))
                      for k, v in values.items()})


