"""Controller training: the policy I/O contract, command pool, upper-body env, PPO, DAgger."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
from dataclasses import replace


import pytest
import torch

from learning.controller.commands import sample_arm_poses
from learning.controller.dagger import DaggerConfig, dagger
from learning.controller.ppo import ActorCritic, PPOConfig, RunningNorm, train
from learning.controller.upper_env import (ARMS, UpperBodyEnv, UpperEnvConfig,
                                           UpperRewardConfig, Weight, tracking_terms)
from robot_io.control.kinematics import forward_kinematics
from robot_io.control.policy_io import (UPPER_OBS_TERMS, PolicySpec, PolicySpecError, rot6d,
                                        upper_observation)
from robot_io.math3d import quat_from_yaw
from robot_io.t1_model import default_robot_spec
from robot_io.tasks.base import fixed

ROBOT = default_robot_spec()


@pytest.fixture(scope="module")
def pool():
    return sample_arm_poses(ROBOT, 300, seed=3)


def small_env(pool, worlds: int = 4, **overrides) -> UpperBodyEnv:
    cfg = replace(UpperEnvConfig(num_worlds=worlds), **overrides)
    return UpperBodyEnv(cfg, seed=0, threads=1, pool=pool)


# -- contract -----------------------------------------------------------------------------
def test_rot6d_hand_checked():
    assert rot6d(torch.tensor([1.0, 0, 0, 0], dtype=torch.float64)).tolist() == [
        1, 0, 0, 0, 1, 0]
    quarter = quat_from_yaw(torch.tensor(math.pi / 2, dtype=torch.float64))
    # 90 degrees about z: first column (0, 1, 0), second column (-1, 0, 0).
    assert torch.allclose(rot6d(quarter), torch.tensor([0.0, 1, 0, -1, 0, 0],
                                                       dtype=torch.float64), atol=1e-12)


def test_upper_observation_layout(pool):
    env = small_env(pool, worlds=2)
    obs = env.env.observe()
    cmd_pos = obs.hand_pos + torch.tensor([0.1, -0.2, 0.05], dtype=torch.float64)
    last = torch.arange(28, dtype=torch.float64).reshape(2, 14)
    x = upper_observation(obs, cmd_pos, obs.hand_quat, last, env.default, env.chains)
    assert x.shape == (2, sum(w for _, w in UPPER_OBS_TERMS)) == (2, 107)
    start = {}
    at = 0
    for name, width in UPPER_OBS_TERMS:
        start[name] = (at, at + width)
        at += width
    a, b = start["hand_pos_err"]
    assert torch.allclose(x[:, a:b], torch.tensor([0.1, -0.2, 0.05] * 2).expand(2, 6),
                          atol=1e-6)
    a, b = start["hand_rot_err"]
    assert x[:, a:b].abs().max() < 1e-5  # commanded orientation == current
    a, b = start["last_action"]
    assert torch.equal(x[:, a:b], last.float())
    a, b = start["arm_joint_pos"]  # relative to the default pose: zero at reset
    assert x[:, a:b].abs().max() < 1e-6
    a, b = start["arm_ik_step"]  # a pure translation error: the IK step undoes it to first order
    step = x[:, a:b].double()
    full = obs.joint_pos.clone()
    full[:, ARMS] += step
    moved, _, _ = forward_kinematics(env.chains, full)
    assert (moved - cmd_pos).norm(dim=-1).max() < 0.5 * 0.23  # most of the 0.23 m error gone


def test_policy_spec_round_trip_and_errors(pool):
    env = small_env(pool, worlds=1)
    spec = env.policy_spec(torch.zeros(107), torch.ones(107), (32,), "elu", 5.0)
    assert PolicySpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(PolicySpecError, match="format"):
        PolicySpec.from_dict({**spec.to_dict(), "format": "other"})
    with pytest.raises(PolicySpecError, match="obs_mean has 3 entries"):
        replace(spec, obs_mean=(0.0, 0.0, 0.0))
    with pytest.raises(PolicySpecError, match="lacks hidden"):
        PolicySpec.from_dict({k: v for k, v in spec.to_dict().items() if k != "hidden"})


# -- commands -----------------------------------------------------------------------------
def test_arm_pose_pool_is_reachable_in_the_box_and_matches_the_env_kinematics(pool):
    env = small_env(pool, worlds=1)
    lo = torch.tensor((-0.15, -0.65, -0.45), dtype=torch.float64)
    hi = torch.tensor((0.75, 0.65, 0.65), dtype=torch.float64)
    assert bool(((pool.hand_pos >= lo) & (pool.hand_pos <= hi)).all())
    full = env.default.expand(len(pool), -1).clone()
    full[:, ARMS] = pool.q
    pos, _, _ = forward_kinematics(env.chains, full)
    assert torch.allclose(pos, pool.hand_pos, atol=1e-6)  # MuJoCo FK == the env's chains
    again = sample_arm_poses(ROBOT, 300, seed=3)
    assert torch.equal(again.q, pool.q)
    with pytest.raises(RuntimeError, match="passed the collision and hand-box checks"):
        sample_arm_poses(ROBOT, 5, seed=0, max_draws=3,
                         limits=replace(__import__("robot_io.types", fromlist=["x"])
                                        .CommandLimits(), hand_box_max_m=(-0.1, -0.6, -0.4)))


# -- rewards ------------------------------------------------------------------------------
def test_tracking_terms_hand_computed():
    rc = UpperRewardConfig()
    pos = torch.tensor([[0.1, 0.0]], dtype=torch.float64)
    rot = torch.tensor([[0.0, 0.5]], dtype=torch.float64)
    t = tracking_terms(pos, rot, rc)
    # left hand 0.1 m off: 2 * (e^-(0.01/0.16) + e^-1 + e^-(0.01/0.0064)); right exact: 2 * 3.
    expected_pos = 2 * (math.exp(-0.0625) + math.exp(-1) + math.exp(-1.5625)) + 6
    assert t["hand_pos"].item() == pytest.approx(expected_pos, rel=1e-12)
    assert t["hand_pos_pinpoint"].item() == pytest.approx(2 * (math.exp(-25) + 1), rel=1e-12)
    expected_rot = 3 + (math.exp(-0.25 / 0.64) + math.exp(-1) + math.exp(-0.25 / 0.09))
    assert t["hand_rot"].item() == pytest.approx(expected_rot, rel=1e-12)


def test_curriculum_weights_move_from_start_to_end():
    w = Weight(-0.01, -0.1)
    assert w.at(0.0) == -0.01 and w.at(1.0) == -0.1 and w.at(2.0) == -0.1
    assert w.at(0.5) == pytest.approx(-0.055)


def test_env_steps_resets_and_reports(pool):
    env = small_env(pool, worlds=3, episode_s=0.1)
    obs, critic = env.reset()
    assert obs.shape == (3, env.obs_dim) and critic.shape == (3, env.critic_obs_dim)
    truncated_seen = False
    for _ in range(6):
        obs, critic, reward, terminated, truncated, info = env.step(torch.zeros(3, 14))
        assert torch.isfinite(reward).all() and torch.isfinite(obs).all()
        truncated_seen |= bool(truncated.any())
    assert truncated_seen  # 0.1 s episodes end after 5 ticks, and the worlds were reset
    assert set(info["terms"]) >= {"hand_pos", "posture", "action_rate", "joint_limit"}
    # Payload randomisation reached the simulator.
    mass = env.env.sim.model_field("body_mass")[:, env._gripper_body[0]]
    assert torch.allclose(mass, env._gripper_mass0[0] + env.payload[:, 0])


def test_teacher_reaches_a_front_command(pool):
    env = small_env(pool, worlds=2, hold_s=fixed(5.0), move_s=fixed(0.0), walk_fraction=0.0,
                    payload_kg=fixed(0.0), front_fraction=1.0)
    env.reset()
    for _ in range(100):
        *_, info = env.step(env.expert_action())
    assert info["pos_err_m"].max() < 0.03, info["pos_err_m"]


# -- PPO ----------------------------------------------------------------------------------
def test_running_norm_hand_computed():
    norm = RunningNorm(1)
    norm.count.fill_(0.0)
    norm.var.fill_(0.0)
    norm.update(torch.tensor([[1.0], [3.0]]))
    norm.update(torch.tensor([[5.0]]))
    assert norm.mean.item() == pytest.approx(3.0)
    assert norm.var.item() == pytest.approx(8.0 / 3.0)  # population variance of 1, 3, 5


def test_ppo_trains_checkpoints_and_resumes(pool, tmp_path):
    env = small_env(pool, worlds=4)
    cfg = PPOConfig(iterations=2, horizon=4, epochs=1, minibatches=2,
                    actor_hidden=(16,), critic_hidden=(16,), checkpoint_every=1)
    model, state = train(env, cfg, tmp_path / "run", progress=False, log=lambda *_: None)
    assert state.iteration == 2 and (tmp_path / "run" / "metrics.jsonl").is_file()
    model2, state2 = train(env, replace(cfg, iterations=3), tmp_path / "run", progress=False,
                           log=lambda *_: None)
    assert state2.iteration == 3 and len(state2.history) == 3
    policy = model2.export(env)
    obs, _ = env.reset()
    with torch.no_grad():
        assert torch.allclose(policy(obs), model2.mean(obs).clamp(-6, 6), atol=1e-5)


def test_dagger_fits_the_teacher(pool):
    """After DAgger the student's actions on the states it visits itself are much closer to
    the teacher's than the teacher's actions are to zero."""
    env = small_env(pool, worlds=8)
    model = ActorCritic(env.obs_dim, env.critic_obs_dim, 14, PPOConfig(actor_hidden=(64, 64)))
    hist = dagger(env, model, DaggerConfig(iterations=10, horizon=16, teacher_decay_iterations=6,
                                           buffer_size=8192, batch_size=128, max_steps=100),
                  torch.Generator().manual_seed(0))
    assert hist[-1]["teacher_prob"] == 0.0
    obs, _ = env.reset()
    err, size = 0.0, 0.0
    for _ in range(12):
        teacher = env.expert_action()
        with torch.no_grad():
            student = model.mean(obs)
        err += float((student - teacher).square().mean())
        size += float(teacher.square().mean())
        obs, *_ = env.step(student)
    assert err < 0.5 * size, (err, size)  # an untrained (zero-output) student scores 1.0


def test_train_controller_end_to_end_exports_a_loadable_policy(tmp_path):
    from learning.controller.train import ControllerTrainConfig, train_controller
    from robot_io.control.policy_runtime import load_policy

    cfg = ControllerTrainConfig(
        out=str(tmp_path / "run"), worlds=2, threads=1, eval_worlds=2, eval_every=1,
        dagger=DaggerConfig(iterations=1, horizon=4, buffer_size=256, batch_size=8,
                            max_steps=2),
        ppo=PPOConfig(iterations=1, horizon=4, epochs=1, minibatches=1, actor_hidden=(8,),
                      critic_hidden=(8,)))
    metrics = train_controller(cfg, progress=False, log=lambda *_: None)
    assert metrics["ppo_iterations"] == 1
    assert {"all", "front", "all_randomised"} <= set(metrics["held_out_best"])
    policy = load_policy(tmp_path / "run" / "export", part="upper")
    out = policy(torch.zeros(1, 107))
    assert out.shape == (1, 14) and torch.isfinite(out).all()
    assert (tmp_path / "run" / "learning_curve.png").stat().st_size > 1000


def test_ppo_under_torchrun_keeps_ranks_in_sync(tmp_path):
    """Two gloo ranks: gradients are averaged, so both end with identical weights."""
    script = tmp_path / "ddp.py"
    script.write_text(textwrap.dedent(f"""
        import torch, torch.distributed as dist
        from learning.controller.commands import sample_arm_poses
        from learning.controller.ppo import PPOConfig, train
        from learning.controller.upper_env import UpperBodyEnv, UpperEnvConfig
        from robot_io.t1_model import default_robot_spec
        torch.set_num_threads(1)
        dist.init_process_group("gloo")
        rank = dist.get_rank()
        pool = sample_arm_poses(default_robot_spec(), 50, seed=1)
        env = UpperBodyEnv(UpperEnvConfig(num_worlds=2), seed=rank, threads=1, pool=pool)
        cfg = PPOConfig(iterations=2, horizon=3, epochs=1, minibatches=1,
                        actor_hidden=(8,), critic_hidden=(8,))
        model, _ = train(env, cfg, r"{tmp_path}/run", progress=False, log=lambda *_: None)
        flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
        torch.save(flat, r"{tmp_path}/w" + str(rank) + ".pt")
        dist.destroy_process_group()
    """))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2",
                           "--master-port=29517", str(script)], env=env, capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    w0, w1 = (torch.load(tmp_path / f"w{r}.pt") for r in (0, 1))
    assert torch.equal(w0, w1)


def test_bench_controller_env_prints_a_ratio():
    from learning.controller.bench import bench_controller_env, format_bench

    result = bench_controller_env("upper", worlds=2, threads=1, seconds=0.4, slices=1)
    assert 0.0 < result["ratio"] < 2.0
    assert "ratio" in format_bench(result)


def test_unstable_world_is_counted(pool):
    """A NaN state is reset by MuJoCo and reported as unstable for that world only."""
    env = small_env(pool, worlds=2)
    env.reset()
    env.env.sim.qvel[1, 0] = float("nan")
    obs, _, reward, terminated, truncated, _ = env.step(torch.zeros(2, 14))
    assert terminated.tolist() == [False, True] and not truncated.any()
    assert torch.isfinite(obs).all() and torch.isfinite(reward).all()  # world 1 was reset



def test_ppo_bc_regulariser_pulls_toward_the_teacher():
    """With zero advantages only the BC term moves the actor: its mean goes to the teacher."""
    from learning.controller.ppo import Rollout, update

    torch.manual_seed(0)
    t, b, o, a = 4, 8, 5, 3
    cfg = PPOConfig(epochs=300, minibatches=1, lr=1e-2, desired_kl=0.0, actor_hidden=(32,),
                    critic_hidden=(8,), bc_coef=1.0)
    model = ActorCritic(o, o, a, cfg)
    obs = torch.randn(t, b, o)
    teacher = torch.randn(t, b, a)
    zeros = torch.zeros(t, b)
    roll = Rollout(obs=obs, critic_obs=obs, actions=torch.randn(t, b, a), logp=zeros,
                   values=zeros, rewards=zeros, dones=zeros.bool(), teacher=teacher)
    before = float((model.mean(obs) - teacher).square().mean())
    update(model, torch.optim.Adam(model.parameters(), lr=cfg.lr), roll, torch.zeros(b), cfg,
           torch.Generator().manual_seed(0))
    after = float((model.mean(obs) - teacher).square().mean())
    assert after < 0.2 * before, (before, after)


def test_a_resumed_run_keeps_its_best_export(pool, tmp_path):
    """The best-so-far score is read back from evals.jsonl, so a worse actor after a resume
    does not overwrite the exported best one."""
    import json as _json

    from learning.controller.train import ControllerTrainConfig, _evaluator

    out = tmp_path / "run"
    (out / "export").mkdir(parents=True)
    (out / "export" / "upper.json").write_text("the best one")
    (out / "evals.jsonl").write_text(_json.dumps({"tag": "warm_start", "score": 1e-6}) + "\n")
    cfg = ControllerTrainConfig(out=str(out), worlds=2, threads=1, eval_worlds=2)
    env = small_env(pool, worlds=2)
    evaluate, best = _evaluator(cfg, out, env)
    assert best["tag"] == "warm_start"
    evaluate(ActorCritic(env.obs_dim, env.critic_obs_dim, 14, PPOConfig(actor_hidden=(8,))))
    assert (out / "export" / "upper.json").read_text() == "the best one"
    assert len((out / "evals.jsonl").read_text().splitlines()) == 2
