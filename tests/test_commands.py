"""The command boundary (the safety filter's command side): NaN/inf rejected with world and
field named, clamps applied; and the joint-target side in front of a real simulator."""

from __future__ import annotations

import math

import pytest
import torch

from robot_io.env import BatchedEnv
from robot_io.errors import SafetyLimitError
from robot_io.safety import SafetyConfig, SafetyFilter
from robot_io.t1_model import default_robot_spec
from robot_io.types import COMMAND_DIM, Command, CommandLimits, JointTargets

F64 = torch.float64


def _cmd(b: int = 3) -> Command:
    quat = torch.zeros(b, 2, 4, dtype=F64)
    quat[..., 0] = 1.0
    pos = torch.tensor([[0.3, 0.2, 0.0], [0.3, -0.2, 0.0]], dtype=F64).expand(b, 2, 3).clone()
    return Command(torch.zeros(b, 3, dtype=F64), pos, quat, torch.zeros(b, 2, dtype=F64))


class CommandGate:
    """The command side of a `SafetyFilter` for `num_worlds` worlds, called like a function."""

    def __init__(self, limits: CommandLimits, num_worlds: int, dt_s: float) -> None:
        robot = default_robot_spec()
        assert dt_s == robot.control_dt_s
        self.filter = SafetyFilter(robot, num_worlds, SafetyConfig(limits=limits))

    def __call__(self, cmd: Command) -> Command:
        return self.filter.command(cmd, obs=None)  # obs is only read to hold hands

    def reset(self) -> None:
        self.filter._fresh[:] = True


@pytest.mark.parametrize("field,value", [("base_vel", math.nan), ("hand_pos", math.inf),
                                         ("hand_quat", math.nan), ("gripper", -math.inf)])
def test_non_finite_command_names_world_and_field(field: str, value: float) -> None:
    cmd = _cmd()
    getattr(cmd, field).reshape(3, -1)[2, 0] = value
    gate = CommandGate(CommandLimits(), 3, 0.02)
    with pytest.raises(SafetyLimitError, match=rf"command field '{field}' of world 2 is not finite"):
        gate(cmd)


def test_speeds_hand_box_and_gripper_are_clamped() -> None:
    limits = CommandLimits()
    cmd = _cmd(1)
    cmd.base_vel[0] = torch.tensor([2.0, -1.0, 5.0], dtype=F64)
    cmd.hand_pos[0, 0] = torch.tensor([3.0, 0.2, -3.0], dtype=F64)
    cmd.gripper[0] = torch.tensor([1.5, -0.2], dtype=F64)
    cmd.hand_quat[0, 1] = torch.tensor([-1.0, 0.0, 0.0, -1.0], dtype=F64)  # not unit, w < 0 hemisphere
    out = CommandGate(limits, 1, 0.02)(cmd)
    assert out.base_vel[0].tolist() == [limits.max_vx_mps, -limits.max_vy_mps,
                                        limits.max_yaw_rate_rps]
    assert out.hand_pos[0, 0].tolist() == [limits.hand_box_max_m[0], 0.2, limits.hand_box_min_m[2]]
    assert out.gripper[0].tolist() == [1.0, 0.0]
    assert torch.allclose(out.hand_quat[0, 1], torch.tensor([1.0, 0, 0, 1.0], dtype=F64) / math.sqrt(2))


def test_hand_speed_is_limited_between_ticks() -> None:
    limits = CommandLimits(max_hand_speed_mps=0.5)
    gate = CommandGate(limits, 1, 0.02)
    first = gate(_cmd(1))
    jump = _cmd(1)
    jump.hand_pos[0, 1, 0] += 0.1  # 0.1 m in one tick = 5 m/s
    second = gate(jump)
    step = (second.hand_pos - first.hand_pos)[0, 1]
    assert float(step[0]) == pytest.approx(0.5 * 0.02)  # 1 cm per 20 ms tick
    assert second.hand_pos[0, 0].tolist() == first.hand_pos[0, 0].tolist()
    gate.reset()
    assert gate(jump).hand_pos[0, 1, 0] == pytest.approx(0.4)  # fresh after a reset


def test_zero_quaternion_is_rejected() -> None:
    cmd = _cmd(2)
    cmd.hand_quat[1, 0] = 0.0
    with pytest.raises(SafetyLimitError, match="'hand_quat' of world 1 has zero norm"):
        CommandGate(CommandLimits(), 2, 0.02)(cmd)


def test_wrong_shape_is_rejected() -> None:
    good = _cmd(2)
    bad = Command(good.base_vel, good.hand_pos, good.hand_quat, torch.zeros(3, 2, dtype=F64))
    with pytest.raises(ValueError, match=r"'gripper' has shape \(3, 2\), expected \(2, 2\)"):
        CommandGate(CommandLimits(), 2, 0.02)(bad)


def test_vector_round_trip() -> None:
    cmd = _cmd(4)
    vec = cmd.to_vector()
    assert vec.shape == (4, COMMAND_DIM)
    back = Command.from_vector(vec)
    for name in Command.field_names():
        assert torch.equal(getattr(back, name), getattr(cmd, name))


def test_nan_targets_are_rejected_and_clamped_before_the_simulator() -> None:
    env = BatchedEnv("box_pickup", num_worlds=2, threads=1)
    safety = SafetyFilter(env.robot, 2)
    safety.episode_started(env.observe(), torch.arange(2))
    targets = env.default_pose.expand(2, -1).clone()
    bad = targets.clone()
    bad[1, 5] = math.nan
    with pytest.raises(SafetyLimitError, match="'joint_pos' of world 1 is not finite"):
        env.apply(safety.targets(JointTargets(bad, torch.zeros(2, 2, dtype=F64))))
    far = targets.clone()
    far[:, 20] += 5.0  # left knee, far beyond what one tick may move
    sent = env.apply(safety.targets(JointTargets(far, torch.zeros(2, 2, dtype=F64))))
    step = safety.config.max_joint_step_rad
    assert torch.allclose(sent.joint_pos[:, 20], targets[:, 20] + step)
    assert torch.equal(env.sim.ctrl[:, 20], sent.joint_pos[:, 20])  # what was sent is applied
    assert safety.counters.invalid_targets == 1 and safety.counters.joint_step_clamped == 1
