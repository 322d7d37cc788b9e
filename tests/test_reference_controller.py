"""Acceptance checks of the reference whole-body controller in real MuJoCo simulation."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from planners.scripted import make_scripted_source
from robot_io.control.reference import ReferenceController
from robot_io.env import BatchedEnv
from robot_io.math3d import quat_angle, quat_from_axis_angle, quat_mul, yaw_of
from robot_io.safety import SafetyFilter
from robot_io.session import run_episode
from robot_io.tasks import Range, StartRanges, default_config
from robot_io.types import Command


class _Guarded:
    """The controller behind the safety filter, as every loop runs it (joint band and step)."""

    def __init__(self, env: BatchedEnv, ctrl: ReferenceController) -> None:
        self.env, self.ctrl = env, ctrl
        self.safety = SafetyFilter(env.robot, env.num_worlds)
        self.safety.episode_started(env.observe(), torch.arange(env.num_worlds))

    def apply(self, cmd: Command, obs) -> None:
        self.env.apply(self.safety.targets(self.ctrl.step(cmd, obs)))

F64 = torch.float64


def _hold_hands(obs) -> tuple[torch.Tensor, torch.Tensor]:
    return obs.hand_pos.clone(), obs.hand_quat.clone()


def _open_floor_env(num_worlds: int) -> BatchedEnv:
    """The pickup scene with the robot started 3 m from the table, facing away from it."""
    cfg = default_config("box_pickup").nominal()
    cfg = dataclasses.replace(cfg, start=StartRanges(Range(3.0, 3.0), Range(0.0, 0.0),
                                                     Range(math.pi, math.pi)))
    return BatchedEnv("box_pickup", num_worlds=num_worlds, threads=1, seed=0, task_config=cfg)


@pytest.mark.parametrize("vel", [(0.3, 0.0, 0.0), (0.0, 0.2, 0.0), (0.2, 0.0, 0.4)])
def test_steady_state_base_velocity_within_10_percent(vel: tuple[float, float, float]) -> None:
    env = _open_floor_env(1)
    obs = env.reset()
    ctrl = ReferenceController(env)
    guarded = _Guarded(env, ctrl)
    hand_pos, hand_quat = _hold_hands(obs)
    cmd = Command(torch.tensor([vel], dtype=F64), hand_pos, hand_quat, torch.zeros(1, 2, dtype=F64))
    samples = []
    for k in range(200):  # 4 s; measure over the last 2 s
        guarded.apply(cmd, obs)
        obs = env.observe()
        if k in (99, 199):
            samples.append((obs.root_pos[0].clone(), yaw_of(obs.root_quat)[0].clone()))
    (p0, y0), (p1, y1) = samples
    dt = 100 * env.control_dt_s
    yaw_rate = float(torch.remainder(y1 - y0 + math.pi, 2 * math.pi) - math.pi) / dt
    mid_yaw = float(y0) + 0.5 * yaw_rate * dt
    # Planar velocity in the (mid-interval) heading frame; for turning walks, compare speeds.
    dxy = (p1 - p0)[:2] / dt
    speed, cmd_speed = float(dxy.norm()), math.hypot(vel[0], vel[1])
    assert speed == pytest.approx(cmd_speed, rel=0.1)
    if vel[2] == 0.0:
        c, s = math.cos(mid_yaw), math.sin(mid_yaw)
        local = (c * dxy[0] + s * dxy[1], -s * dxy[0] + c * dxy[1])
        for got, want in zip(local, vel[:2]):
            assert got == pytest.approx(want, abs=0.1 * cmd_speed)
    assert yaw_rate == pytest.approx(vel[2], abs=max(0.1 * abs(vel[2]), 0.02))


# Reachable poses (root frame): right hand poses, mirrored for the left hand.
RIGHT_POSES = [((0.35, -0.2, 0.0), 0.0, 0.0), ((0.4, -0.15, 0.05), 0.4, 0.0),
               ((0.3, -0.25, -0.1), 0.0, 0.3), ((0.45, -0.1, 0.0), 0.8, 0.0)]


def test_hands_reach_commanded_poses() -> None:
    n = len(RIGHT_POSES)
    env = _open_floor_env(n)
    obs = env.reset()
    ctrl = ReferenceController(env)
    guarded = _Guarded(env, ctrl)
    z, y = torch.tensor([0.0, 0, 1], dtype=F64), torch.tensor([0.0, 1, 0], dtype=F64)
    pos = torch.zeros(n, 2, 3, dtype=F64)
    quat = torch.zeros(n, 2, 4, dtype=F64)
    for i, (p, yaw, pitch) in enumerate(RIGHT_POSES):
        for side, sign in ((1, 1.0), (0, -1.0)):
            pos[i, side] = torch.tensor([p[0], sign * p[1], p[2]], dtype=F64)
            q = quat_mul(quat_from_axis_angle(z, torch.tensor(sign * yaw, dtype=F64)),
                         quat_from_axis_angle(y, torch.tensor(pitch, dtype=F64)))
            quat[i, side] = q
    cmd = Command(torch.zeros(n, 3, dtype=F64), pos, quat, torch.zeros(n, 2, dtype=F64))
    for _ in range(150):  # 3 s
        guarded.apply(cmd, obs)
        obs = env.observe()
    pos_err = (obs.hand_pos - pos).norm(dim=-1)
    ang_err = quat_angle(obs.hand_quat, quat)
    assert float(pos_err.max()) < 0.01, pos_err
    assert float(ang_err.max()) < math.radians(5), ang_err


@pytest.mark.parametrize("mass_kg", [1.0, 2.0])
def test_box_stays_in_gripper_while_walking(mass_kg: float) -> None:
    cfg = default_config("box_pickup").nominal()
    cfg = dataclasses.replace(cfg, physics=dataclasses.replace(
        cfg.physics, object_mass_kg=Range(mass_kg, mass_kg)))
    env = BatchedEnv("box_pickup", num_worlds=1, threads=1, seed=0, task_config=cfg)
    source = make_scripted_source("box_pickup")
    ctrl = ReferenceController(env)
    assert bool(run_episode(env, source, ctrl).success.all())
    guarded = _Guarded(env, ctrl)  # steps from where the joints are now
    obs = env.observe()
    cmd = source.next_command(obs)
    hold = Command(torch.tensor([[-0.3, 0.0, 0.0]], dtype=F64), cmd.hand_pos, cmd.hand_quat,
                   cmd.gripper)
    start = obs.root_pos.clone()
    for _ in range(150):  # 3 s backing away from the table at 0.3 m/s
        guarded.apply(hold, obs)
        obs = env.observe()
    assert float((obs.root_pos - start)[0, :2].norm()) > 0.8
    box = obs.task["object_pos"][0]
    hand = obs.hand_pos[0, 1]
    assert float((box - hand).norm()) < 0.05, "the box left the gripper"
    assert float(obs.gripper_pos[0, 1]) < 0.9, "the gripper closed on nothing"
