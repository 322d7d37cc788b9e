"""The velocity-to-footstep planner (hand-checked cases) and the lower-body training environment:
observation layout, finite rewards, the weight curriculum, fall termination, a tiny PPO run."""

from __future__ import annotations

import json
import math
from itertools import pairwise
from pathlib import Path

import pytest
import torch

from learning.controller.commands import ArmPoses, sample_arm_poses
from learning.controller.lower_env import LowerBodyEnv, LowerEnvConfig
from learning.controller.ppo import PPOConfig, train
from robot_io.control.footsteps import NO_SWING, FootstepConfig, FootstepPlanner
from robot_io.control.policy_io import LOWER_OBS_TERMS, lower_observation
from robot_io.math3d import yaw_of
from robot_io.t1_model import default_robot_spec

DT = 0.02
W = FootstepConfig().stance_width_m
T = FootstepConfig().step_period_s


def standing_feet(n: int = 1, yaw: float = 0.0) -> torch.Tensor:
    """(n, 2, 3) feet side by side at the origin facing `yaw`."""
    c, s = math.cos(yaw), math.sin(yaw)
    feet = torch.tensor([[-s * W / 2, c * W / 2, yaw], [s * W / 2, -c * W / 2, yaw]],
                        dtype=torch.float64)
    return feet.expand(n, 2, 3).clone()


def walk(planner: FootstepPlanner, vel: tuple[float, float, float], ticks: int) -> list[dict]:
    """Step the planner with perfect tracking (every foot lands on its planned foothold);
    log each tick."""
    log = []
    cmd = torch.tensor([vel], dtype=torch.float64)
    for _ in range(ticks):
        planner.step(cmd, planner.planned_footholds.clone())
        landed, footholds = planner.planned_touchdowns()
        log.append({"swing": int(planner.swing_leg[0]), "countdown": float(planner.countdown_s[0]),
                    "footholds": planner.planned_footholds[0].clone(), "landed": landed[0],
                    "landed_footholds": footholds[0]})
    return log


def touchdowns(log: list[dict]) -> list[tuple[int, torch.Tensor]]:
    """(leg, foothold) of every completed step, in order."""
    out = []
    for prev, cur in pairwise(log):
        if prev["swing"] != NO_SWING and (cur["swing"] != prev["swing"]
                                          or cur["countdown"] > prev["countdown"]):
            out.append((prev["swing"], prev["footholds"][prev["swing"]]))
    return out


def test_zero_command_keeps_feet_in_place() -> None:
    planner = FootstepPlanner(2, DT)
    feet = standing_feet(2)
    planner.reset(feet)
    gen = torch.Generator().manual_seed(0)
    for _ in range(100):  # the measured feet wobble; the plan must not follow them
        noisy = feet + 0.02 * torch.randn(feet.shape, generator=gen, dtype=torch.float64)
        planner.step(torch.zeros(2, 3, dtype=torch.float64), noisy)
        assert (planner.swing_leg == NO_SWING).all()
    assert torch.equal(planner.planned_footholds, feet)
    assert (planner.countdown_s == 0).all() and (planner.swing_indicator() == 0).all()


def test_constant_vx_steps_alternate_with_step_length_vx_times_period() -> None:
    vx = 0.3
    planner = FootstepPlanner(1, DT)
    planner.reset(standing_feet())
    log = walk(planner, (vx, 0.0, 0.0), 200)
    steps = touchdowns(log)
    assert len(steps) >= 8
    legs = [leg for leg, _ in steps]
    assert all(a != b for a, b in pairwise(legs))  # alternating
    xs = [float(f[0]) for _, f in steps]
    for a, b in pairwise(xs):
        assert b - a == pytest.approx(vx * T, abs=1e-9)
    for leg, foothold in steps:  # nominal stance width, facing forward
        assert float(foothold[1]) == pytest.approx(W / 2 if leg == 0 else -W / 2, abs=1e-9)
        assert float(foothold[2]) == pytest.approx(0.0, abs=1e-12)
    # The touchdowns the planner reports (for evaluation) are the same steps.
    reported = [(int(e["landed"].nonzero()[0, 0]), e["landed_footholds"][e["landed"]][0])
                for e in log if e["landed"].any()]
    assert len(reported) == len(steps)
    for (leg, foothold), (leg2, foothold2) in zip(steps, reported, strict=True):
        assert leg == leg2 and torch.equal(foothold, foothold2)
    # Within a step the countdown falls by one control period per tick, from T.
    ticks_per_step = round(T / DT)
    first = [e["countdown"] for e in log[:ticks_per_step]]
    assert first[0] == pytest.approx(T)
    assert all(b == pytest.approx(a - DT) for a, b in pairwise(first))


def test_yaw_command_turns_the_targets() -> None:
    rate = 0.5
    planner = FootstepPlanner(1, DT)
    planner.reset(standing_feet())
    steps = touchdowns(walk(planner, (0.0, 0.0, rate), 120))
    yaws = [float(f[2]) for _, f in steps]
    for k, yaw in enumerate(yaws):  # each step turns by yaw_rate * period
        assert yaw == pytest.approx((k + 1) * rate * T, abs=1e-9)
    # A left turn leads with the left foot, and the feet stay a stance width apart.
    assert steps[0][0] == 0
    for (_, a), (_, b) in pairwise(steps):
        assert float((a[:2] - b[:2]).norm()) == pytest.approx(W, abs=1e-9)


def test_lateral_steps_keep_a_minimum_width_and_stopping_squares_up() -> None:
    cfg = FootstepConfig()
    planner = FootstepPlanner(1, DT, cfg)
    planner.reset(standing_feet())
    steps = touchdowns(walk(planner, (0.0, -0.3, 0.0), 100))
    assert steps[0][0] == 1  # moving right: the right foot leads
    for (_, a), (_, b) in pairwise(steps):
        assert abs(float(a[1] - b[1])) >= cfg.min_width_m - 1e-9
    log = walk(planner, (0.0, 0.0, 0.0), 60)
    assert log[-1]["swing"] == NO_SWING
    left, right = log[-1]["footholds"]
    assert float(left[1] - right[1]) == pytest.approx(W, abs=1e-9)


def test_planner_rejects_bad_shapes_and_config() -> None:
    planner = FootstepPlanner(2, DT)
    with pytest.raises(ValueError, match="base_vel"):
        planner.step(torch.zeros(3, 3), torch.zeros(2, 2, 3))
    with pytest.raises(ValueError, match="step_period_s"):
        FootstepConfig(step_period_s=0.0)
    with pytest.raises(ValueError, match="min_width_m"):
        FootstepConfig(min_width_m=0.5)


# -- the environment ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pool() -> ArmPoses:
    return sample_arm_poses(default_robot_spec(), 20, seed=3)


def make_env(pool: ArmPoses, **cfg) -> LowerBodyEnv:
    return LowerBodyEnv(LowerEnvConfig(num_worlds=4, **cfg), seed=0, threads=1, pool=pool)


@pytest.fixture(scope="module")
def env(pool: ArmPoses) -> LowerBodyEnv:
    return make_env(pool)


def test_observation_layout_and_finite_rewards(env: LowerBodyEnv) -> None:
    obs, critic = env.reset()
    width = sum(w for _, w in LOWER_OBS_TERMS)
    assert obs.shape == (4, width) == (4, env.obs_dim) and width == 54
    assert critic.shape == (4, env.critic_obs_dim) and env.critic_obs_dim == width + 28
    gen = torch.Generator().manual_seed(1)
    for _ in range(30):
        obs, critic, reward, _, _, info = env.step(
            0.3 * torch.randn(4, 12, generator=gen))
        assert torch.isfinite(obs).all() and torch.isfinite(critic).all()
        assert torch.isfinite(reward).all()
        assert all(torch.isfinite(v).all() for v in info["terms"].values())
    # The command slots of the observation hold the planner's state.
    p = env.planner
    root = env._obs
    direct = lower_observation(root, p.swing_indicator(), p.countdown_s,
                               p.relative_footholds(root.root_pos, yaw_of(root.root_quat)),
                               env.base_vel, env.last_action, env.default)
    assert torch.equal(obs, direct)
    assert torch.equal(obs[:, 2], p.countdown_s.float())
    assert torch.equal(obs[:, 9:12], env.base_vel.float())


def test_curriculum_moves_regularisation_weights(pool: ArmPoses) -> None:
    env = make_env(pool)
    action = torch.full((4, 12), 0.5)
    values = {}
    for progress in (0.0, 1.0):
        env.reset()
        env.set_progress(progress)
        env.step(torch.zeros(4, 12))
        _, _, _, _, _, info = env.step(action)  # last action 0 -> |da|^2 = 12 * 0.25
        values[progress] = info["terms"]["action_rate"]
    rc = env.cfg.rewards
    assert torch.allclose(values[0.0], torch.full((4,), rc.action_rate.start * 3.0,
                                                  dtype=torch.float64))
    assert torch.allclose(values[1.0], torch.full((4,), rc.action_rate.end * 3.0,
                                                  dtype=torch.float64))
    assert (rc.action_rate.start, rc.action_rate.end) == (-0.001, -0.5)
    assert (rc.joint_acc.at(0.0), rc.joint_acc.at(1.0)) == (-1e-7, -1e-5)
    assert rc.joint_acc.at(0.5) == pytest.approx(0.5 * (-1e-7 - 1e-5))


def test_a_fall_terminates_and_resets(env: LowerBodyEnv) -> None:
    env.reset()
    env.step(torch.zeros(4, 12))
    sim = env.env.sim
    a = env.env.root_qadr
    sim.qpos[1, a + 2] = 0.3  # trunk far below the fall height
    sim.forward(torch.tensor([1]))
    _, _, _, terminated, truncated, _ = env.step(torch.zeros(4, 12))
    assert terminated.tolist() == [False, True, False, False]
    assert not truncated.any()
    assert int(env.ticks[1]) == 0 and int(env.ticks[0]) == 2


def test_velocity_only_variant_drops_foot_terms(pool: ArmPoses) -> None:
    env = make_env(pool, track_footholds=False)
    env.reset()
    _, _, _, _, _, info = env.step(torch.zeros(4, 12))
    assert (info["terms"]["foot_pos"] == 0).all() and (info["terms"]["foot_yaw"] == 0).all()
    assert (info["terms"]["lin_vel"] > 0).all()


def test_two_ppo_iterations_end_to_end(env: LowerBodyEnv, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    cfg = PPOConfig(iterations=2, horizon=4, epochs=1, minibatches=2, actor_hidden=(16,),
                    critic_hidden=(16,), checkpoint_every=1)
    model, state = train(env, cfg, tmp_path, progress=False, log=lambda _: None)
    assert state.iteration == 2
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2
    for key in ("reward_per_step", "pos_err_median_m", "vel_err_mps_median"):
        assert math.isfinite(rows[-1][key])
    policy = model.export(env)
    assert policy.spec.part == "lower" and policy.spec.obs_terms == LOWER_OBS_TERMS
    obs, _ = env.reset()
    assert policy(obs).shape == (4, 12)
