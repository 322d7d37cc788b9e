"""Real-time pacing of one simulated robot: `refine-dp bench runner [--seconds 120]`.

A `RealtimeRunner` ticks a `Session` of one MuJoCo world (the reference controller, the safety
filter) at `rate_hz` for `seconds`, while the calling thread only sleeps, and reports how well
the ticks kept their deadlines: late ticks (started more than 2 ms after their deadline),
jitter percentiles (start minus deadline) and the compute time of a tick.

Sources: "constant" walks forward at 0.2 m/s with the hands held where they are, in episodes
cut to `BENCH_EPISODE_S` (so a reset happens inside a tick every 1.5 s, and the robot never
walks into the task's furniture). Any `CommandSource` may be passed instead and then runs
episodes of the task's own length; the heuristic and scripted planners live above `robot_io`
in the import layers, so a caller that may import them (the `refine-dp` CLI) passes e.g.
`planners.scripted.make_scripted_source(task)` (its default, `--source scripted`).

Torch runs on one thread here (`torch.set_num_threads(1)`, restored afterwards): the tensors
of one world are tiny, and torch's own thread pool would only compete with the physics and the
loop's thread for the machine's cores.

Spin and priority, measured on the 2-core development machine (box_pickup, 50 Hz, 30 s runs,
load average 0.7 to 1.5 from other jobs): `time.sleep` wakes about 0.13 ms late at the median
(0.17 ms at p90). Sleeping only (spin 0) gave jitter p50 0.12 ms and 0.53 % late ticks (twice);
spinning the last 0.5 ms gave p50 0.002 ms, p99 0.004 / 0.03 ms and 0.07 % late (twice); 1 ms
0.07 / 0.20 %, 2 ms 0.13 / 2.3 %. The late ticks are wake-ups delayed by a whole scheduler tick
(4 ms) while another process holds the core, which no spin hides, and a longer spin leaves the
loop busy (so preemptible) for longer: `SPIN_S` is 0.5 ms. At a load average of 2 to 3 the
normal scheduler gave 2 to 12 % late ticks; SCHED_FIFO (`--rt-priority 50`) gave none (max
jitter 1.9 ms at load 2.3). With the defaults, 120 s at a load average of 1.0 falling to 0.25:
6001 ticks, none late, jitter p50 0.002 ms, p99 0.005 ms, max 1.7 ms, tick compute 3.2 ms.
"""

from __future__ import annotations

import dataclasses
import os
import time

import torch
from torch import Tensor

from robot_io.control.reference import ReferenceController
from robot_io.env import BatchedEnv
from robot_io.protocols import CommandSource
from robot_io.runner import SPIN_S, RealtimeRunner
from robot_io.session import Session
from robot_io.sim.bench import BENCH_EPISODE_S, constant_command
from robot_io.tasks import default_config
from robot_io.tick_stats import LATE_AFTER_S
from robot_io.types import Command, Observation

BENCH_SOURCES = ("constant",)

BENCH_TORCH_THREADS = 1
WARMUP_TICKS = 25  # unpaced ticks before timing (first calls allocate and fill caches)


class WalkForward:
    """A `CommandSource`: 0.2 m/s forward, hands held where they are, grippers open."""

    def reset(self, obs: Observation, ids: Tensor | None = None) -> None:
        """Stateless."""

    def next_command(self, obs: Observation) -> Command:
        return constant_command(obs)


def bench_runner(task: str = "box_pickup", seconds: float = 120.0, rate_hz: float = 50.0,
                 source: str | CommandSource = "constant", threads: int = 1,
                 spin_s: float = SPIN_S, rt_priority: int | None = None,
                 seed: int = 0) -> dict[str, object]:
    """Pace one simulated world with a `RealtimeRunner` for `seconds` and summarise its timing.

    Args:
        task: a registered task name.
        seconds: how long the runner runs (after `WARMUP_TICKS` unpaced ticks).
        rate_hz: the tick rate.
        source: "constant" (see the module docstring) or a `CommandSource`.
        threads: physics threads of the world.
        spin_s: the runner's busy wait before each deadline.
        rt_priority: run the loop under SCHED_FIFO at this priority (see `RealtimeRunner`).
        seed: the world's seed.

    Returns:
        task, source, rate_hz, seconds, threads, torch_threads, spin_ms, late_after_ms,
        rt_priority, realtime (whether SCHED_FIFO took effect), cpus,
        load_1m_before / load_1m_after (`os.getloadavg()`), the `RunnerStats` fields (ticks,
        late, late_fraction, jitter_p50_ms, jitter_p99_ms, jitter_max_ms, compute_mean_ms,
        compute_max_ms, rate_hz_measured, target_rate_hz), episodes_ended, episodes_succeeded
        and error (a tick's error, or None).

    Raises:
        ValueError: seconds <= 0, an unknown source name, an unknown task.
    """
    if seconds <= 0:
        raise ValueError(f"seconds must be positive, got {seconds}")
    if isinstance(source, str):
        if source not in BENCH_SOURCES:
            raise ValueError(f"unknown source {source!r}; known: {sorted(BENCH_SOURCES)} or a "
                             f"CommandSource")
        name, config = source, dataclasses.replace(default_config(task),
                                                   time_limit_s=BENCH_EPISODE_S)
        source = WalkForward()
    else:
        name, config = type(source).__name__, None
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(BENCH_TORCH_THREADS)
    try:
        env = BatchedEnv(task, num_worlds=1, threads=threads, seed=seed, task_config=config)
        session = Session(env, source, ReferenceController(env))
        session.start_episodes()
        for _ in range(WARMUP_TICKS):
            session.tick()
        session.take_ended()
        load_before = os.getloadavg()[0]
        with RealtimeRunner(session, rate_hz=rate_hz, spin_s=spin_s,
                            rt_priority=rt_priority) as runner:
            time.sleep(seconds)
        load_after = os.getloadavg()[0]
    finally:
        torch.set_num_threads(previous_threads)
    stats = dataclasses.asdict(runner.stats())
    stats["rate_hz_measured"] = stats.pop("rate_hz")
    snap = runner.latest()
    return {"task": task, "source": name, "rate_hz": rate_hz, "seconds": seconds,
            "threads": threads, "torch_threads": BENCH_TORCH_THREADS, "spin_ms": spin_s * 1e3,
            "late_after_ms": LATE_AFTER_S * 1e3, "rt_priority": rt_priority,
            "realtime": runner.realtime, "cpus": os.cpu_count(),
            "load_1m_before": load_before, "load_1m_after": load_after, **stats,
            "episodes_ended": snap.episodes_ended,
            "episodes_succeeded": snap.episodes_succeeded, "error": snap.error}


def format_runner_line(result: dict[str, object]) -> str:
    """One human-readable line for a `bench_runner` result."""
    r = result
    line = (f"bench runner {r['task']} ({r['source']} source, 1 world, {r['threads']} physics "
            f"thread(s), torch threads {r['torch_threads']}, spin {r['spin_ms']:.1f} ms"
            f"{', SCHED_FIFO ' + str(r['rt_priority']) if r['realtime'] else ''}): "
            f"{r['ticks']} ticks in {r['seconds']:.0f} s at {r['rate_hz_measured']:.2f} Hz "
            f"(target {r['target_rate_hz']:.0f} Hz); late (> {r['late_after_ms']:.0f} ms) "
            f"{r['late']} = {100 * r['late_fraction']:.2f} %; jitter p50 "
            f"{r['jitter_p50_ms']:.3f} ms, p99 {r['jitter_p99_ms']:.3f} ms, max "
            f"{r['jitter_max_ms']:.2f} ms; tick compute mean {r['compute_mean_ms']:.2f} ms "
            f"(max {r['compute_max_ms']:.1f} ms); {r['episodes_ended']} episodes; load "
            f"{r['load_1m_before']:.2f} -> {r['load_1m_after']:.2f} on {r['cpus']} CPUs")
    if r["error"]:
        line += f" (error: {r['error']})"
    return line
