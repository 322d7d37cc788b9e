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


def test_interleaved_rates_count_units_per_second_after_the_warm_up(
        monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [100.0]
    monkeypatch.setattr(bench.time, "perf_counter", lambda: clock[0])

    def make(cost_s: float, units: int, warm_calls: int):
        calls = [0]

        def tick() -> int:  # warm-up calls report 1000 units, which must not be counted
            calls[0] += 1
            clock[0] += cost_s
            return 1000 if calls[0] <= warm_calls else units
        return tick

    # Warm-up 0.5 s: 5 calls of 0.1 s for "a", 10 calls of 0.05 s for "b".
    ticks = {"a": make(0.1, 3, warm_calls=5), "b": make(0.05, 1, warm_calls=10)}
    rates = bench.interleaved_rates(ticks, seconds=2.0, rounds=4, warmup_s=0.5)
    assert rates["a"] == pytest.approx(30.0)
    assert rates["b"] == pytest.approx(20.0)
