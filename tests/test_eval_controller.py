"""`refine-dp eval-controller`: the random command source, hand-computed fall and velocity maths,
plausible numbers for the reference controller, the JSON report, planner mode, a forced fall,
the learned controller's latency and footholds, and the command line's errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from learning.controller.commands import (
    ArmPoses,
    RandomCommandConfig,
    RandomCommandSource,
    sample_arm_poses,
)
from learning.controller.eval_metrics import (
    ControllerMetrics,
    FallCriteria,
    fallen,
    heading_velocity,
)
from learning.controller.evaluate import evaluate_controller, run_random
from learning.controller.upper_eval import HELD_OUT_SEED
from robot_io.control import ControllerChoice
from robot_io.control.reference import ReferenceController
from robot_io.env import BatchedEnv
from robot_io.math3d import quat_from_axis_angle
from robot_io.t1_model import default_robot_spec
from robot_io.tasks.base import Range, fixed
from robot_io.tasks.open_floor import OpenFloorTask
from teleop_app.cli import main

F64 = torch.float64
DISTRIBUTION = {"median", "mean", "p90", "samples"}
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def front_pool() -> ArmPoses:
    """Held-out arm poses with both hands in front of the trunk, below the shoulders: the
    workspace the reference controller's IK reaches from any start (far poses, e.g. overhead
    or across the midline, can leave it in a local minimum)."""
    pool = sample_arm_poses(default_robot_spec(), 300, HELD_OUT_SEED)
    front = ((pool.hand_pos[..., 0] > 0.05) & (pool.hand_pos[..., 2] < 0.2)).all(-1)
    return ArmPoses(pool.q[front], pool.hand_pos[front], pool.hand_quat[front])


def fake_obs(root_z: float, tilt_rad: float, world_vel: tuple[float, float, float] = (0, 0, 0),
             yaw_rad: float = 0.0, yaw_rate: float = 0.0):
    """An observation-like object with a trunk tilted about x, then yawed."""
    from types import SimpleNamespace

    from robot_io.math3d import quat_conj, quat_mul, quat_rotate

    tilt = quat_from_axis_angle(torch.tensor([[1.0, 0, 0]], dtype=F64),
                                torch.tensor([tilt_rad], dtype=F64))
    yaw = quat_from_axis_angle(torch.tensor([[0, 0, 1.0]], dtype=F64),
                               torch.tensor([yaw_rad], dtype=F64))
    quat = quat_mul(yaw, tilt)
    inv = quat_conj(quat)
    return SimpleNamespace(
        root_pos=torch.tensor([[0.0, 0.0, root_z]], dtype=F64), root_quat=quat,
        root_lin_vel=quat_rotate(inv, torch.tensor([world_vel], dtype=F64)),
        root_ang_vel=quat_rotate(inv, torch.tensor([[0.0, 0.0, yaw_rate]], dtype=F64)),
        projected_gravity=quat_rotate(inv, torch.tensor([[0.0, 0.0, -1.0]], dtype=F64)))


# -- pure maths ---------------------------------------------------------------------------------
def test_fall_criteria_match_hand_computed_values() -> None:
    ground = torch.zeros(1, dtype=F64)
    crit = FallCriteria()  # 0.45 m, 60 degrees
    assert not fallen(fake_obs(0.46, math.radians(59)), ground, crit)
    assert fallen(fake_obs(0.44, 0.0), ground, crit)
    assert fallen(fake_obs(0.7, math.radians(61)), ground, crit)
    # Height counts above the ground under the trunk: a trunk 0.6 m up over a 0.2 m step.
    assert fallen(fake_obs(0.6, 0.0), torch.tensor([0.2], dtype=F64), crit)


def test_heading_velocity_removes_yaw_and_tilt() -> None:
    # Facing +y (yaw 90 deg) and moving +y in the world: forward in the heading frame.
    obs = fake_obs(0.7, math.radians(20), world_vel=(0.0, 0.3, 0.0), yaw_rad=math.pi / 2,
                   yaw_rate=0.5)
    np.testing.assert_allclose(heading_velocity(obs)[0].numpy(), [0.3, 0.0, 0.5], atol=1e-12)


# -- the command source -------------------------------------------------------------------------
def test_random_commands_hold_jump_and_reach_pool_poses(front_pool: ArmPoses) -> None:
    env = BatchedEnv(OpenFloorTask(), num_worlds=2, threads=1)
    cfg = RandomCommandConfig(vel_hold_s=fixed(1.0), zero_vel_fraction=0.0,
                              arm_jump_fraction=1.0, arm_hold_s=fixed(0.5))
    source = RandomCommandSource(env, front_pool, seed=3, cfg=cfg)
    source.reset(env.observe())
    cmds = [source.next_command(None) for _ in range(100)]
    vel = torch.stack([c.base_vel for c in cmds])  # (T, B, 3)
    limits = torch.tensor([0.6, 0.4, 1.0], dtype=F64)
    assert bool((vel.abs() <= limits).all()) and bool((vel.abs() > 0).all())
    changes = torch.nonzero((vel[1:] != vel[:-1]).any(-1).any(-1)).squeeze(1) + 1
    assert changes.tolist() == [50]  # held for exactly 1 s
    # A jump reaches its pool entry at once and holds it for 25 ticks (0.5 s).
    pos = torch.stack([c.hand_pos for c in cmds])
    moved = torch.nonzero((pos[1:, 0] != pos[:-1, 0]).any(-1).any(-1)).squeeze(1) + 1
    assert moved.tolist() == [25, 50, 75]
    target = pos[30, 0]
    assert bool(((front_pool.hand_pos - target).abs().amax((-1, -2)) < 1e-9).any())


# -- the reference controller -------------------------------------------------------------------
def test_reference_controller_metrics_are_plausible(front_pool: ArmPoses,
                                                    tmp_path: Path) -> None:
    cfg = RandomCommandConfig(zero_vel_fraction=0.0, arm_jump_fraction=1.0,
                              arm_hold_s=Range(2.0, 3.0))
    report = evaluate_controller(ControllerChoice(), "random", worlds=2, seconds=3.0,
                                 threads=1, progress=False, pool=front_pool, commands=cfg,
                                 out_dir=tmp_path)
    m = report.metrics
    hands = m["hand_position_error_m"]
    assert hands["settled"]["samples"] > 100
    assert hands["settled"]["median"] < 0.03
    assert hands["all"]["median"] >= hands["settled"]["median"]
    assert m["hand_orientation_error_rad"]["settled"]["median"] < 0.15
    vel = m["base_velocity_error"]
    assert vel["vx_mps"]["samples"] > 100
    for key in ("vx_mps", "vy_mps", "planar_mps"):
        assert vel[key]["median"] < 0.1
    assert vel["yaw_rate_rps"]["median"] < 0.2
    feet = m["foot_placement_error"]
    assert feet["position_m"]["samples"] >= 4 and feet["position_m"]["median"] < 0.2
    assert 0 < m["ee_speed_mps"]["mean"] < 2.0
    assert m["falls"]["count"] == 0 and m["falls"]["per_hour"] == 0.0
    assert m["sim_time_s"] == pytest.approx(6.0)
    assert report.controller_latency is None  # the reference controller reports none
    for name in ("hand_errors.png", "base_velocity.png", "foot_placement.png"):
        assert (tmp_path / name).read_bytes().startswith(PNG)


def test_forced_fall_is_detected_counted_and_reset(front_pool: ArmPoses) -> None:
    env = BatchedEnv(OpenFloorTask(), num_worlds=2, threads=1)
    controller = ReferenceController(env)
    metrics = ControllerMetrics(env, controller)
    source = RandomCommandSource(env, front_pool, seed=0)
    tipped = quat_from_axis_angle(torch.tensor([1.0, 0, 0], dtype=F64),
                                  torch.tensor(math.pi / 2, dtype=F64))

    def push_over(tick: int, env: BatchedEnv) -> None:
        if tick == 20:  # world 1's trunk lies on its side from the next tick on
            env.sim.qpos[1, env.root_qadr + 3:env.root_qadr + 7] = tipped

    run_random(env, source, controller, 1.0, metrics, hook=push_over)
    falls = metrics.summary()["falls"]
    assert falls["count"] == 1
    assert falls["events"][0]["world"] == 1
    assert falls["events"][0]["time_s"] == pytest.approx(22 * env.control_dt_s)
    assert falls["per_hour"] == pytest.approx(1 / (2 * 1.0 / 3600))
    ended = [e for e in metrics.episodes if e["end_reason"] == "fall"]
    assert [(e["world"], e["steps"]) for e in ended] == [(1, 22)]
    # The world was reset and measured to the end of the run, upright again.
    assert metrics.measured_ticks == 2 * 50
    assert env.observe().projected_gravity[1, 2] < -0.9


def test_footholds_are_null_with_a_reason_when_the_controller_plans_none() -> None:
    class ArmsOnly:  # a controller that exposes no gait and no planned_touchdowns()
        def __init__(self, env: BatchedEnv) -> None:
            self._inner = ReferenceController(env)

        def reset(self, obs, ids=None) -> None:
            self._inner.reset(obs, ids)

        def step(self, cmd, obs):
            return self._inner.step(cmd, obs)

    env = BatchedEnv(OpenFloorTask(), num_worlds=1, threads=1)
    summary = ControllerMetrics(env, ArmsOnly(env)).summary()
    assert summary["foot_placement_error"] is None
    assert "ArmsOnly exposes no planned footholds" in summary["foot_placement_note"]


# -- the JSON report and planner mode through the command line ----------------------------------
def run_cli(argv: list[str], capsys: pytest.CaptureFixture) -> dict:
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_random_mode_json_schema(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    doc = run_cli(["eval-controller", "--mode", "random", "--worlds", "2", "--seconds", "1.5",
                   "--threads", "1", "--out", str(tmp_path), "--json", "--no-progress"], capsys)
    assert doc == json.loads((tmp_path / "controller_eval.json").read_text())
    assert (doc["format"], doc["version"], doc["mode"], doc["task"]) == (
        "refine-dp-controller-eval", 1, "random", "open_floor")
    assert doc["controller"] == {"name": "reference", "weights": None, "runtime": "torch",
                                 "device": "cpu"}
    assert (doc["worlds"], doc["seed"], doc["seconds_per_world"]) == (2, 0, 1.5)
    assert doc["sim_time_s"] == pytest.approx(3.0)
    assert doc["planner"] is None and doc["foot_placement_note"] is None
    for key in ("vx_mps", "vy_mps", "yaw_rate_rps", "planar_mps"):
        assert set(doc["base_velocity_error"][key]) == DISTRIBUTION
    for key in ("hand_position_error_m", "hand_orientation_error_rad"):
        assert set(doc[key]) == {"all", "settled"}
        assert set(doc[key]["all"]) == DISTRIBUTION
        assert math.isfinite(doc[key]["all"]["median"])
    assert set(doc["foot_placement_error"]) == {"position_m", "yaw_rad"}
    assert set(doc["ee_speed_mps"]) == DISTRIBUTION
    assert set(doc["falls"]) == {"count", "per_hour", "events"}
    for name in doc["files"].values():
        assert (tmp_path / name).is_file()


def test_planner_mode_two_episodes(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    doc = run_cli(["eval-controller", "--mode", "planner", "--task", "box_pickup",
                   "--episodes", "2", "--worlds", "2", "--threads", "1", "--out", str(tmp_path),
                   "--json", "--no-progress"], capsys)
    p = doc["planner"]
    assert (doc["mode"], doc["task"], p["episodes"]) == ("planner", "box_pickup", 2)
    assert sum(p["end_reasons"].values()) == 2 and len(p["per_episode"]) == 2
    assert p["successes"] == 2 and p["end_reasons"]["fall"] == 0
    assert 2.0 < p["completion_time_s"]["median"] < 20.0
    assert doc["hand_position_error_m"]["all"]["median"] < 0.05
    assert doc["falls"]["count"] == 0 and doc["seconds_per_world"] is None


# -- the learned controller ---------------------------------------------------------------------
def test_learned_controller_reports_latency_and_its_legs_footholds(front_pool: ArmPoses,
                                                                  tmp_path: Path) -> None:
    from learning.controller.export import export_policy
    from robot_io.control.policy_io import PART_JOINTS, UPPER_OBS_TERMS, PolicyMLP, PolicySpec

    robot, arms = default_robot_spec(), list(PART_JOINTS["upper"])
    obs_dim = sum(width for _, width in UPPER_OBS_TERMS)
    spec = PolicySpec(
        part="upper", joint_names=tuple(robot.joint_names[i] for i in arms),
        default_pose=tuple(robot.default_pose[i] for i in arms), action_scale=0.5,
        action_clip=2.0, kp=tuple(robot.kp[i] for i in arms),
        kd=tuple(robot.kd[i] for i in arms), obs_terms=UPPER_OBS_TERMS,
        obs_mean=(0.0,) * obs_dim, obs_std=(1.0,) * obs_dim, obs_clip=5.0, hidden=(16,),
        activation="elu", control_dt_s=robot.control_dt_s)
    torch.manual_seed(0)
    export_policy(PolicyMLP(spec).eval(), tmp_path / "ctrl", onnx=False)
    cfg = RandomCommandConfig(zero_vel_fraction=0.0)
    report = evaluate_controller(ControllerChoice("learned", tmp_path / "ctrl"), "random",
                                 worlds=2, seconds=1.0, threads=1, progress=False,
                                 pool=front_pool, commands=cfg)
    assert report.controller["name"] == "learned"
    assert report.controller_latency["calls"] == 50
    assert report.controller_latency["median_ms"] > 0
    # Its legs are a reference controller: footholds come from their gait.
    assert report.metrics["foot_placement_error"] is not None


# -- bad input ----------------------------------------------------------------------------------
def test_unknown_controller_and_missing_weights_are_clear_errors(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    base = ["eval-controller", "--mode", "random", "--worlds", "1", "--seconds", "0.1",
            "--no-progress", "--out", str(tmp_path / "out")]
    with pytest.raises(SystemExit) as exc:
        main(base + ["--controller", "walker"])
    assert exc.value.code == 2
    assert "invalid choice: 'walker'" in capsys.readouterr().err
    missing = tmp_path / "no-such-weights"
    assert main(base + ["--controller", "learned", "--controller-weights", str(missing)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("refine-dp: error:") and str(missing) in err
    assert main(["eval-controller", "--mode", "random", "--episodes", "3", "--no-progress",
                 "--out", str(tmp_path / "out")]) == 2
    assert "--episodes and --task apply to --mode planner only" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # nothing written on bad input
    with pytest.raises(ValueError, match="known controllers: learned, reference"):
        ControllerChoice("walker")
    with pytest.raises(ValueError, match="known modes: random, planner"):
        evaluate_controller(ControllerChoice(), "teleop")
