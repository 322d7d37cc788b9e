"""Every registered task resets, steps, and is solved by its hand-written command sequence."""

from __future__ import annotations

import pytest
import torch

from planners.scripted import make_scripted_source
from robot_io.control.reference import ReferenceController
from robot_io.env import BatchedEnv
from robot_io.session import run_episode
from robot_io.tasks import REGISTRY, default_config, make_task, task_names
from robot_io.types import Command


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_task_resets_and_steps(name: str) -> None:
    env = BatchedEnv(name, num_worlds=3, threads=1, seed=3)
    obs = env.reset()
    assert obs.joint_pos.shape == (3, 29)
    assert obs.task, "a task must contribute DP observation entries"
    for value in obs.task.values():
        assert value.shape[0] == 3 and torch.isfinite(value).all()
    ctrl = ReferenceController(env)
    cmd = Command(torch.zeros(3, 3, dtype=torch.float64), obs.hand_pos.clone(),
                  obs.hand_quat.clone(), torch.zeros(3, 2, dtype=torch.float64))
    t0 = obs.time_s.clone()
    for _ in range(10):
        env.apply(ctrl.step(cmd, obs))
        obs = env.observe()
    assert torch.allclose(obs.time_s - t0, torch.full((3,), 10 * env.control_dt_s, dtype=torch.float64))
    out = env.outcome()
    assert out.success.shape == (3,) and not out.success.any()
    assert (out.reward == 0).all() and not out.timeout.any()
    # Reset a subset: only world 1 returns to time zero.
    obs = env.reset(torch.tensor([1]))
    assert obs.time_s[1] == 0 and (obs.time_s[[0, 2]] > 0).all()
    # Randomisation differs between worlds.
    starts = env.reset_params["start_radius_m"]
    assert len(set(starts.tolist())) == 3


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_scripted_sequence_solves_task(name: str) -> None:
    env = BatchedEnv(name, num_worlds=1, threads=1, seed=0,
                     task_config=default_config(name).nominal())
    result = run_episode(env, make_scripted_source(name), ReferenceController(env))
    assert bool(result.success.all()), f"{name}: scripted sequence did not reach success"
    assert int(result.steps[0]) < env.time_limit_steps


def test_unknown_task_lists_known_names() -> None:
    with pytest.raises(ValueError, match="unknown task 'nope'; known tasks: box_pickup"):
        make_task("nope")
    assert task_names() == sorted(REGISTRY)


def test_curriculum_widens_start_ranges() -> None:
    cfg = default_config("box_pickup")
    wide = cfg.widened(1.1)
    r, w = cfg.start.radius_m, wide.start.radius_m
    assert w.mid == pytest.approx(r.mid)
    assert (w.hi - w.lo) == pytest.approx(1.1 * (r.hi - r.lo))
    nominal = cfg.nominal()
    assert nominal.start.polar_rad.lo == nominal.start.polar_rad.hi == pytest.approx(0.0)
