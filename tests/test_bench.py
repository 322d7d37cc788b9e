"""The simulation benchmark's reference: bare physics must integrate exactly the env's motion."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from robot_io.env import BatchedEnv
from robot_io.sim import bench
from robot_io.sim.bench import BENCH_EPISODE_S, EnvLoop, Replay, bare_copy, record_episode
from robot_io.tasks import default_config


def test_bare_replay_reproduces_the_env_bit_for_bit() -> None:
    config = dataclasses.replace(default_config("box_pickup"), time_limit_s=BENCH_EPISODE_S)
    env = BatchedEnv("box_pickup", 3, threads=1, seed=5, task_config=config)
    loop = EnvLoop(env)
    for _ in range(5):
        loop.tick()
    start, inputs = record_episode(loop)
    assert len(inputs) == env.time_limit_steps - 1
    assert not np.array_equal(start, env.sim.batch.state)  # the robots did move
    replay = Replay(bare_copy(env, threads=1), start, inputs, env.robot.substeps)
    for _ in inputs:
        replay.tick()
    assert np.array_equal(replay.bare.state, env.sim.batch.state)


def test_timed_rate_counts_units_per_second_after_the_warm_up(
        monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [100.0]
    monkeypatch.setattr(bench.time, "perf_counter", lambda: clock[0])
    units: list[int] = []

    def tick() -> int:  # each call takes 0.1 s; warm-up calls report 1000 units, not counted
        started = clock[0]
        clock[0] += 0.1
        units.append(1000 if started < 100.25 else 3)
        return units[-1]

    assert bench.timed_rate(tick, seconds=1.0, warmup_s=0.25) == pytest.approx(30.0)
    assert units.count(1000) == 3 and units.count(3) >= 10
