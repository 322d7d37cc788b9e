"""`RealtimeRunner`: deadline arithmetic on a fake clock, requests, STOP and faults.

The pacing tests run the loop on the test's thread (`run(max_passes)`) with an injected clock
that only moves when the loop sleeps or a tick "takes" its scripted time, so every start time,
jitter and late count is a hand-computed number. Two short real-thread tests (about 0.5 s at
50 Hz on the real simulator) check what only threads show, without timing asserts.
"""

from __future__ import annotations

import dataclasses
import threading
import time

import pytest
import torch

from robot_io.control.reference import ReferenceController
from robot_io.env import BatchedEnv
from robot_io.runner import RealtimeRunner, Snapshot
from robot_io.safety import SafetyState
from robot_io.session import Session
from robot_io.sim.bench_runner import WalkForward, bench_runner, format_runner_line
from robot_io.tick_stats import TickStats

T0 = 100.0
PERIOD = 0.02  # 50 Hz


class FakeClock:
    """Monotonic time that moves only when someone sleeps (plus `read_step_s` per read)."""

    def __init__(self, oversleep_s: float = 0.0, read_step_s: float = 0.0) -> None:
        self.now, self.oversleep_s, self.read_step_s = T0, oversleep_s, read_step_s
        self.sleeps: list[float] = []
        self.wakes: list[float] = []

    def __call__(self) -> float:
        t = self.now
        self.now += self.read_step_s
        return t

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds + self.oversleep_s
        self.wakes.append(self.now)


def make_session() -> Session:
    env = BatchedEnv("box_pickup", num_worlds=1, threads=1)
    session = Session(env, WalkForward(), ReferenceController(env))
    session.start_episodes()
    return session


def script_ticks(session: Session, clock: FakeClock, durations_s: list[float]) -> list[float]:
    """Make tick k of `session` take durations_s[k] (the last one repeats) on `clock`;
    returns the list the tick start times are appended to."""
    real, starts = session.tick, []

    def tick():
        starts.append(clock.now)
        result = real()
        clock.now += durations_s[min(len(starts), len(durations_s)) - 1]
        return result
    session.tick = tick
    return starts


@pytest.fixture
def session() -> Session:
    return make_session()


def test_tick_stats_count_every_tick_and_take_percentiles_over_the_last_capacity() -> None:
    stats = TickStats(target_rate_hz=50.0, capacity=4)
    assert stats.summary().ticks == 0 and stats.last_jitter_s is None
    for k in range(6):  # jitter k ms, 1 ms of compute, a start every 20 ms
        deadline = T0 + k * PERIOD
        assert stats.record(deadline, deadline + k * 1e-3, deadline + (k + 1) * 1e-3) == (k > 2)
    s = stats.summary()
    assert (s.ticks, s.late) == (6, 3) and s.late_fraction == pytest.approx(0.5)
    assert s.jitter_p50_ms == pytest.approx(3.5) and s.jitter_max_ms == pytest.approx(5.0)
    assert s.jitter_p99_ms == pytest.approx(2 + 3 * 0.99)  # of 2, 3, 4, 5 ms (linear)
    assert s.compute_mean_ms == pytest.approx(1.0) and s.compute_max_ms == pytest.approx(1.0)
    assert s.rate_hz == pytest.approx(5 / (5 * PERIOD + 5e-3))
    assert stats.window_rate_hz(3) == pytest.approx(2 / (2 * PERIOD + 2e-3))
    assert stats.last_jitter_s == pytest.approx(5e-3)


def test_an_overrun_is_one_late_tick_and_re_anchors_without_catch_up_ticks(session) -> None:
    clock = FakeClock()
    starts = script_ticks(session, clock, [0.001, 0.001, 0.050, 0.001])
    runner = RealtimeRunner(session, clock=clock, sleep=clock.sleep, spin_s=0.0)
    runner.run(max_passes=6)
    # Deadlines 0, 20, 40 ms; the 40 ms tick ends at 90 ms, past the 60 ms deadline: the next
    # tick runs at once (late by 30 ms), then every 20 ms from its start, not from 60 ms.
    assert starts == pytest.approx([T0 + t for t in (0, .020, .040, .090, .110, .130)], abs=1e-9)
    stats = runner.stats()
    assert (stats.ticks, stats.late) == (6, 1)
    assert stats.late_fraction == pytest.approx(1 / 6)
    assert stats.jitter_max_ms == pytest.approx(30.0)
    assert stats.jitter_p50_ms == pytest.approx(0.0, abs=1e-6)
    assert stats.compute_mean_ms == pytest.approx(55 / 6)
    assert stats.compute_max_ms == pytest.approx(50.0)
    assert stats.rate_hz == pytest.approx(5 / 0.130)
    snap = runner.latest()
    assert (snap.paced_ticks, snap.late_ticks, snap.tick) == (6, 1, 6)
    assert snap.jitter_s == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("oversleep_s, late", [(0.0015, 0), (0.0025, 4)])
def test_small_delays_keep_the_grid_and_more_than_2_ms_is_late(session, oversleep_s,
                                                                late) -> None:
    clock = FakeClock(oversleep_s=oversleep_s)
    starts = script_ticks(session, clock, [0.005])
    runner = RealtimeRunner(session, clock=clock, sleep=clock.sleep, spin_s=0.0)
    runner.run(max_passes=5)
    if late:  # each wake-up is 2.5 ms late: every tick but the first re-anchors on its start
        expected = [T0 + k * (PERIOD + oversleep_s) for k in range(5)]
    else:  # 1.5 ms late is on time: the deadlines stay on the 20 ms grid, nothing drifts
        expected = [T0] + [T0 + k * PERIOD + oversleep_s for k in range(1, 5)]
    assert starts == pytest.approx(expected, abs=1e-9)
    assert runner.stats().late == late
    assert runner.stats().jitter_max_ms == pytest.approx(oversleep_s * 1e3)


def test_the_loop_sleeps_until_spin_s_before_the_deadline_then_spins(session) -> None:
    clock = FakeClock(read_step_s=1e-4)  # every clock read takes 0.1 ms
    starts = script_ticks(session, clock, [0.005])
    runner = RealtimeRunner(session, clock=clock, sleep=clock.sleep, spin_s=0.001)
    runner.run(max_passes=3)
    # After each tick (5 ms of work plus a few 0.1 ms clock reads) the loop sleeps until 1 ms
    # (plus the read that measured the remaining time) before the next deadline, on the 20 ms
    # grid, and spins the rest, reading the clock.
    assert len(clock.wakes) == 2 and clock.wakes[1] - clock.wakes[0] == pytest.approx(PERIOD)
    for wake, start in zip(clock.wakes, starts[1:]):
        assert 0.001 - 1e-4 <= start - wake <= 0.001 + 2e-4
    assert runner.stats().late == 0


def test_pause_stops_ticking_and_resume_re_anchors_without_lateness(session) -> None:
    clock = FakeClock()
    runner = RealtimeRunner(session, clock=clock, sleep=clock.sleep, spin_s=0.0)
    starts = script_ticks(session, clock, [0.001])
    real_sleep, paused_sleeps = clock.sleep, []

    def sleep(seconds: float) -> None:  # resume after three paused passes
        real_sleep(seconds)
        if runner.latest().paused:
            paused_sleeps.append(seconds)
            if len(paused_sleeps) == 3:
                runner.resume()
    runner.sleep = sleep
    tick = session.tick

    def pausing_tick():
        result = tick()
        if len(starts) == 2:
            runner.pause()
        return result
    session.tick = pausing_tick
    runner.run(max_passes=7)
    assert paused_sleeps == [PERIOD] * 3
    # Ticks at 0 and 20 ms; three paused passes of 20 ms from 21 ms; then ticks resume at
    # 81 ms and 101 ms on a new anchor, none of them late.
    assert starts == pytest.approx([T0, T0 + .020, T0 + .081, T0 + .101], abs=1e-9)
    assert (runner.stats().ticks, runner.stats().late) == (4, 0)
    assert not runner.latest().paused


def test_stop_while_paused_still_puts_the_world_into_its_safe_mode(session) -> None:
    clock = FakeClock()
    runner = RealtimeRunner(session, clock=clock, sleep=clock.sleep, spin_s=0.0)
    runner.pause()
    runner.stop()
    runner.run(max_passes=2)
    assert session.safety.latched and session.world.paused
    assert runner.stats().ticks == 0  # the safe tick is not a paced tick
    assert runner.latest().safety.state is SafetyState.STOPPED


def test_a_stop_after_a_queued_reset_wins(session) -> None:
    clock = FakeClock()
    runner = RealtimeRunner(session, clock=clock, sleep=clock.sleep, spin_s=0.0)
    runner.stop()
    runner.run(max_passes=1)
    assert session.safety.latched
    dropped = runner.reset_stop()
    runner.stop("again")
    runner.run(max_passes=1)
    assert dropped.result(timeout=0) is False
    assert session.safety.latched and runner.latest().safety.reason == "again"
    applied = runner.reset_stop()
    runner.run(max_passes=1)
    assert applied.result(timeout=0) is True
    assert not session.safety.latched and runner.latest().applied


def test_a_stop_that_lands_while_the_reset_is_applied_still_latches(session) -> None:
    clock = FakeClock()
    runner = RealtimeRunner(session, clock=clock, sleep=clock.sleep, spin_s=0.0)
    runner.stop()
    runner.run(max_passes=1)
    reset = runner.reset_stop()
    real = session.reset_stop
    # STOP arrives after the runner checked for later STOPs, while the session resets (which
    # clears the STOP requests it finds): the runner writes it again.
    session.reset_stop = lambda: (runner.stop("late STOP"), real())[1]
    runner.run(max_passes=1)
    assert reset.result(timeout=0) is False
    assert session.safety.latched and runner.latest().safety.reason == "late STOP"


def test_requests_run_between_ticks_and_a_failing_one_is_reported(session) -> None:
    clock = FakeClock()
    runner = RealtimeRunner(session, clock=clock, sleep=clock.sleep, spin_s=0.0)
    seen = []
    good = runner.submit(lambda s: seen.append(s.ticks) or "done")
    bad = runner.submit(lambda s: 1 / 0)
    end = runner.end_episode([0], success=False, keep=False)
    assert not good.done()  # nothing runs before the loop drains the queue
    runner.run(max_passes=2)
    assert good.result(timeout=0) == "done" and seen == [0]
    assert isinstance(bad.exception(timeout=0), ZeroDivisionError)
    assert end.result(timeout=0).reasons == ("operator",)
    snap = runner.latest()
    assert snap.error == "request failed: ZeroDivisionError: division by zero"
    assert not session.stopped and snap.applied and snap.tick == 2  # a request is not fatal
    assert (snap.episodes_ended, snap.episodes_succeeded, snap.episode_ids) == (1, 0, (1,))


def test_a_snapshot_is_frozen_and_holds_copies_of_world_0(session) -> None:
    clock = FakeClock()
    runner = RealtimeRunner(session, clock=clock, sleep=clock.sleep, spin_s=0.0)
    runner.run(max_passes=2)
    snap = runner.latest()
    with pytest.raises(dataclasses.FrozenInstanceError):
        snap.tick = 5
    assert snap.obs.joint_pos.shape == (1, 29) and snap.command.hand_pos.shape == (1, 2, 3)
    assert snap.obs.joint_pos.data_ptr() != session.obs.joint_pos.data_ptr()
    assert torch.equal(snap.obs.joint_pos, session.obs.joint_pos[:1])
    assert snap.episode_steps == (2,)
    runner.run(max_passes=1)
    assert runner.latest() is not snap and snap.tick == 2  # published anew, the old one intact


def test_an_exception_in_a_tick_latches_stop_runs_the_safe_tick_and_halts(session) -> None:
    clock = FakeClock()
    runner = RealtimeRunner(session, clock=clock, sleep=clock.sleep, spin_s=0.0)
    source, calls = session.source, []

    def next_command(obs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("planner exploded")
        return WalkForward.next_command(source, obs)
    source.next_command = next_command
    runner.run(max_passes=6)
    # Two ticks, the failing one (no tick counted), the safe tick, then no more ticks.
    assert session.ticks == 3 and len(calls) == 3
    assert session.safety.latched and session.world.paused
    snap = runner.latest()
    assert snap.error == "RuntimeError: planner exploded"
    assert snap.safety.reason == "runner error: RuntimeError" and not snap.running
    assert isinstance(runner.error, RuntimeError)
    end = runner.end_episode([0], success=False, keep=False)  # still applied after the fault
    runner.run(max_passes=1)
    assert end.result(timeout=0) is not None and session.ticks == 3


def test_rejects_bad_settings(session) -> None:
    for rate in (0.0, -5.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="rate_hz"):
            RealtimeRunner(session, rate_hz=rate)
    with pytest.raises(ValueError, match="spin_s"):
        RealtimeRunner(session, spin_s=-1e-3)
    for priority in (0, 100):
        with pytest.raises(ValueError, match="rt_priority"):
            RealtimeRunner(session, rt_priority=priority)
    unstarted = Session(session.world, WalkForward(), ReferenceController(session.world))
    with pytest.raises(RuntimeError, match="start the session"):
        RealtimeRunner(unstarted).start()


def wait_for(predicate, timeout_s: float = 10.0) -> None:
    """Poll until `predicate()` (a generous bound so that a loaded machine does not fail)."""
    end = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > end:
            raise TimeoutError("condition not reached")
        time.sleep(0.005)


def test_on_its_thread_snapshots_arrive_requests_wait_for_no_tick_and_stop_is_one_tick(
        session) -> None:
    real, in_tick, stop_called = session.tick, threading.Event(), threading.Event()
    log: list[tuple[bool, bool]] = []  # per tick: (started after stop() returned, applied)

    def tick():
        after = stop_called.is_set()
        in_tick.set()
        result = real()
        in_tick.clear()
        log.append((after, result.applied))
        return result
    session.tick = tick
    runner = RealtimeRunner(session)
    assert runner.rate_hz == 50.0
    seen: list[Snapshot] = []
    with runner:
        wait_for(lambda: runner.latest().paced_ticks >= 5)
        seen.append(runner.latest())
        request = runner.submit(lambda s: (in_tick.is_set(), threading.current_thread().name))
        wait_for(request.done)
        assert request.result() == (False, "refine-dp-runner")
        runner.stop("operator STOP")
        stop_called.set()
        wait_for(lambda: any(after for after, _ in log)
                 and runner.latest().safety.state is SafetyState.STOPPED)
        seen.append(runner.latest())
    # The tick running when stop() was called may have sent a command; no later one did.
    assert log[0] == (False, True)
    assert not any(applied for after, applied in log if after)
    assert seen[1].safety.state is SafetyState.STOPPED and seen[1].safety.reason == "operator STOP"
    assert seen[1].tick > seen[0].tick >= 5 and seen[0].running and seen[0].obs is not None
    assert not runner.alive and session.safety.latched and session.world.paused
    assert runner.latest().error is None


def test_on_its_thread_a_failing_tick_halts_the_loop_and_is_reported(session) -> None:
    def explode(obs):
        raise ValueError("bad command")
    runner = RealtimeRunner(session)
    with runner:
        wait_for(lambda: runner.latest().paced_ticks >= 3)
        runner.set_source(type("Bad", (WalkForward,), {"next_command": staticmethod(explode)})())
        wait_for(lambda: runner.latest().error is not None)
        snap = runner.latest()
        ticks = session.ticks
        assert runner.alive  # still draining requests
        request = runner.submit(lambda s: s.ticks)
        wait_for(request.done)
        assert request.result() == ticks
        assert session.ticks == ticks  # and ticking no more
    assert snap.error == "ValueError: bad command" and not snap.running
    assert snap.safety.state is SafetyState.STOPPED and session.world.paused


def test_bench_runner_reports_its_figures() -> None:
    result = bench_runner(seconds=0.2, rate_hz=50.0)
    assert result["ticks"] >= 2 and result["error"] is None and result["source"] == "constant"
    assert result["late"] <= result["ticks"] and result["target_rate_hz"] == 50.0
    line = format_runner_line(result)
    assert line.startswith("bench runner box_pickup (constant source") and "p99" in line
    with pytest.raises(ValueError, match="unknown source"):
        bench_runner(seconds=1.0, source="teleop")
