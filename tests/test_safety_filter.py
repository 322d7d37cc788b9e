"""`SafetyFilter` checked against numbers computed by hand: limits, watchdog, latches, counters."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from robot_io.errors import SafetyLimitError
from robot_io.fake_robot import FakeRobot
from robot_io.robot_spec import RobotSpec
from robot_io.safety import SafetyConfig, SafetyFilter, SafetyState
from robot_io.t1_model import default_robot_spec
from robot_io.types import Command, CommandLimits, JointTargets, Observation

F64 = torch.float64
LEFT_REST, RIGHT_REST = (0.12, 0.24, -0.13), (0.12, -0.24, -0.13)
KNEE = 20  # Left_Knee_Pitch: range [0, 2.34], torque 60 Nm, kp 200 -> band [-0.3, 2.64]


@pytest.fixture(scope="module")
def robot() -> RobotSpec:
    return default_robot_spec()


def _obs(robot: RobotSpec, b: int = 1) -> Observation:
    """A standing robot's observation (the fake robot: joints at the default pose)."""
    return FakeRobot(robot, num_worlds=b, clock=lambda: 0.0).observe()


def _cmd(b: int = 1, base: tuple[float, float, float] = (0.0, 0.0, 0.0),
         left: tuple[float, float, float] = LEFT_REST,
         right: tuple[float, float, float] = RIGHT_REST) -> Command:
    quat = torch.zeros(b, 2, 4, dtype=F64)
    quat[..., 0] = 1.0
    return Command(base_vel=torch.tensor(base, dtype=F64).repeat(b, 1),
                   hand_pos=torch.tensor((left, right), dtype=F64).repeat(b, 1, 1),
                   hand_quat=quat, gripper=torch.zeros(b, 2, dtype=F64))


def _filter(robot: RobotSpec, b: int = 1, **config: object) -> tuple[SafetyFilter, Observation]:
    safety = SafetyFilter(robot, b, SafetyConfig(**config))
    obs = _obs(robot, b)
    safety.episode_started(obs, torch.arange(b))
    return safety, obs


def _targets(robot: RobotSpec, b: int = 1) -> JointTargets:
    return JointTargets(joint_pos=torch.tensor(robot.default_pose, dtype=F64).repeat(b, 1),
                        gripper=torch.zeros(b, 2, dtype=F64))


# -- commands ----------------------------------------------------------------------------------
def test_base_velocity_is_clamped_to_the_limits(robot: RobotSpec) -> None:
    safety, obs = _filter(robot)
    out = safety.command(_cmd(base=(1.0, -0.5, 2.0)), obs)
    # Simulation limits: vx 0.6 m/s, vy 0.4 m/s, yaw 1.0 rad/s.
    assert out.base_vel[0].tolist() == [0.6, -0.4, 1.0]
    assert safety.counters.base_clamped == 1
    inside = safety.command(_cmd(base=(0.3, 0.1, -0.5)), obs)
    assert inside.base_vel[0].tolist() == [0.3, 0.1, -0.5]
    assert safety.counters.base_clamped == 1

    hardware, obs = _filter(robot, limits=CommandLimits.hardware())
    out = hardware.command(_cmd(base=(1.0, -0.5, 2.0)), obs)
    # Hardware limits: vx 0.2 m/s, vy 0.15 m/s, yaw 0.4 rad/s.
    assert out.base_vel[0].tolist() == [0.2, -0.15, 0.4]


def test_hand_speed_is_limited_along_the_step(robot: RobotSpec) -> None:
    safety, obs = _filter(robot)
    safety.command(_cmd(), obs)  # first command of the episode: not speed-limited
    # Left hand asked 0.1 m further along (0.6, 0.8, 0): at most 0.8 m/s * 0.02 s = 0.016 m per
    # tick, along the same direction: (0.0096, 0.0128, 0).
    out = safety.command(_cmd(left=(0.12 + 0.06, 0.24 + 0.08, -0.13)), obs)
    assert out.hand_pos[0, 0].tolist() == pytest.approx([0.1296, 0.2528, -0.13], abs=1e-12)
    assert out.hand_pos[0, 1].tolist() == list(RIGHT_REST)
    assert safety.counters.hand_clamped == 1
    # The next tick goes on from there: another 0.016 m.
    out = safety.command(_cmd(left=(0.18, 0.32, -0.13)), obs)
    assert out.hand_pos[0, 0].tolist() == pytest.approx([0.1392, 0.2656, -0.13], abs=1e-12)

    hardware, obs = _filter(robot, limits=CommandLimits.hardware())
    hardware.command(_cmd(), obs)
    out = hardware.command(_cmd(left=(0.22, 0.24, -0.13)), obs)
    assert float(out.hand_pos[0, 0, 0]) == pytest.approx(0.12 + 0.05 * 0.02)  # 1 mm per tick


def test_hands_are_kept_in_the_box(robot: RobotSpec) -> None:
    safety, obs = _filter(robot)
    # Box: x [-0.15, 0.75], y [-0.65, 0.65], z [-0.45, 0.65] (root frame).
    out = safety.command(_cmd(left=(1.0, 0.9, -0.6), right=(-0.3, -0.2, 0.8)), obs)
    assert out.hand_pos[0].tolist() == [[0.75, 0.65, -0.45], [-0.15, -0.2, 0.65]]
    assert safety.counters.hand_clamped == 1


def test_clamps_count_ticks_and_invalid_inputs_count_worlds(robot: RobotSpec) -> None:
    safety, obs = _filter(robot, b=3, on_invalid="hold")
    cmd = _cmd(b=3)
    cmd.base_vel[0, 0] = 0.9
    cmd.base_vel[2, 2] = -1.5
    safety.command(cmd, obs)  # two worlds clamped in one tick
    assert (safety.counters.ticks, safety.counters.base_clamped) == (1, 1)
    safety.command(cmd, obs)
    safety.command(_cmd(b=3), obs)  # nothing to clamp
    assert (safety.counters.ticks, safety.counters.base_clamped) == (3, 2)
    assert safety.counters.hand_clamped == 0
    bad = _cmd(b=3)
    bad.gripper[0, 0] = math.nan
    bad.gripper[2, 1] = math.inf
    safety.command(bad, obs)  # two worlds held
    assert safety.counters.invalid_commands == 2


def test_nan_command_raises_naming_field_and_world(robot: RobotSpec) -> None:
    safety, obs = _filter(robot, b=2)
    cmd = _cmd(b=2)
    cmd.base_vel[1, 1] = math.nan
    with pytest.raises(SafetyLimitError, match="command field 'base_vel' of world 1 is not finite"):
        safety.command(cmd, obs)
    assert safety.counters.invalid_commands == 1
    zero = _cmd(b=2)
    zero.hand_quat[0, 1] = 0.0
    with pytest.raises(SafetyLimitError, match="'hand_quat' of world 0 has zero norm"):
        safety.command(zero, obs)
    assert safety.counters.invalid_commands == 2


def test_nan_command_is_held_and_counted(robot: RobotSpec) -> None:
    safety, obs = _filter(robot, b=2, on_invalid="hold")
    first = safety.command(_cmd(b=2, base=(0.3, 0.0, 0.0), left=(0.2, 0.24, -0.13)), obs)
    bad = _cmd(b=2, base=(0.4, 0.0, 0.0), left=(0.201, 0.24, -0.13))
    bad.hand_pos[0, 1, 2] = math.inf
    out = safety.command(bad, obs)
    # World 0 holds: base stopped, hands where they were last sent.
    assert out.base_vel[0].tolist() == [0.0, 0.0, 0.0]
    assert torch.equal(out.hand_pos[0], first.hand_pos[0])
    # World 1 is unaffected: its command goes through (a 1 mm step is within 16 mm).
    assert out.base_vel[1].tolist() == [0.4, 0.0, 0.0]
    assert out.hand_pos[1, 0].tolist() == [0.201, 0.24, -0.13]
    assert safety.counters.invalid_commands == 1


def test_nan_targets_raise_or_hold(robot: RobotSpec) -> None:
    safety, _ = _filter(robot, b=2)
    bad = _targets(robot, b=2)
    bad.joint_pos[1, 5] = math.nan
    with pytest.raises(SafetyLimitError, match="joint target field 'joint_pos' of world 1"):
        safety.targets(bad)
    assert safety.counters.invalid_targets == 1

    safety, _ = _filter(robot, b=2, on_invalid="hold")
    good = _targets(robot, b=2)
    good.gripper[:] = 0.7  # both grippers holding something
    first = safety.targets(good)
    bad = _targets(robot, b=2)
    bad.joint_pos[0, KNEE] = 0.5
    bad.joint_pos[1, KNEE] = 0.5
    bad.gripper[1, 0] = math.nan
    out = safety.targets(bad)
    # World 1 holds its previous joint targets and grippers (an open gripper would drop the load).
    assert torch.equal(out.joint_pos[1], first.joint_pos[1])
    assert out.gripper[1].tolist() == [0.7, 0.7]
    assert float(out.joint_pos[0, KNEE]) == 0.5
    assert safety.counters.invalid_targets == 1


# -- joint targets -----------------------------------------------------------------------------
def test_joint_step_and_target_band(robot: RobotSpec) -> None:
    assert robot.target_band()[0][KNEE] == pytest.approx(-0.3)  # 0.0 - 60 / 200
    assert robot.target_band()[1][KNEE] == pytest.approx(2.64)  # 2.34 + 60 / 200
    safety, obs = _filter(robot)
    tgt = _targets(robot)
    tgt.joint_pos[0, KNEE] = 1.0  # the knee is at 0.4: 0.6 rad asked, 0.3 rad allowed
    out = safety.targets(tgt)
    assert float(out.joint_pos[0, KNEE]) == pytest.approx(0.7)
    assert torch.equal(out.joint_pos[0, :KNEE], tgt.joint_pos[0, :KNEE])
    assert (safety.counters.joint_step_clamped, safety.counters.joint_band_clamped) == (1, 0)
    tgt.joint_pos[0, KNEE] = 0.5  # within a step of 0.7
    assert float(safety.targets(tgt).joint_pos[0, KNEE]) == 0.5
    assert safety.counters.joint_step_clamped == 1

    # A knee measured at -0.1 (past its range): -1.0 is stepped to -0.4, then banded to -0.3.
    bent = dataclasses.replace(obs, joint_pos=obs.joint_pos.clone())
    bent.joint_pos[0, KNEE] = -0.1
    safety.episode_started(bent, torch.tensor([0]))
    tgt.joint_pos[0, KNEE] = -1.0
    out = safety.targets(tgt)
    assert float(out.joint_pos[0, KNEE]) == pytest.approx(-0.3)
    assert (safety.counters.joint_step_clamped, safety.counters.joint_band_clamped) == (2, 1)

    hardware = SafetyFilter(robot, 1, SafetyConfig.hardware())
    hardware.episode_started(obs, torch.tensor([0]))
    tgt.joint_pos[0, KNEE] = 1.0
    assert float(hardware.targets(tgt).joint_pos[0, KNEE]) == pytest.approx(0.45)  # 0.4 + 0.05


def test_targets_before_an_episode_start_are_refused(robot: RobotSpec) -> None:
    with pytest.raises(RuntimeError, match="episode_started"):
        SafetyFilter(robot, 1).targets(_targets(robot))


# -- latches and watchdog ----------------------------------------------------------------------
def test_stop_latches_until_reset(robot: RobotSpec) -> None:
    safety, obs = _filter(robot)
    safety.stop("operator pressed STOP")
    safety.stop("again")
    assert safety.state is SafetyState.STOPPED and safety.latched
    assert safety.counters.stops == 1
    assert safety.watchdog(0.0) is SafetyState.STOPPED  # fresh input does not clear it
    assert safety.watchdog(None) is SafetyState.STOPPED
    assert safety.snapshot().reason == "again"
    safety.reset()
    assert safety.state is SafetyState.OK and not safety.latched
    assert safety.snapshot().counters.stops == 1


def test_watchdog_thresholds(robot: RobotSpec) -> None:
    safety, obs = _filter(robot)  # stale at 0.2 s, safe mode at 1.0 s
    assert safety.watchdog(0.0) is SafetyState.OK
    assert safety.watchdog(0.1999) is SafetyState.OK
    assert safety.watchdog(0.2) is SafetyState.HOLD
    assert safety.watchdog(None) is SafetyState.OK  # a source that is never stale
    assert safety.watchdog(0.9999) is SafetyState.HOLD
    assert safety.watchdog(0.05) is SafetyState.OK  # input came back: HOLD is not latched
    assert safety.counters.safe_mode_entries == 0
    assert safety.watchdog(1.0) is SafetyState.SAFE_MODE
    assert safety.latched and safety.counters.safe_mode_entries == 1
    assert safety.watchdog(0.0) is SafetyState.SAFE_MODE  # latched
    assert safety.watchdog(None) is SafetyState.SAFE_MODE
    assert safety.counters.safe_mode_entries == 1
    safety.reset()
    assert safety.watchdog(0.0) is SafetyState.OK


def test_stale_input_holds_hands_and_stops_the_base(robot: RobotSpec) -> None:
    safety, obs = _filter(robot)
    sent = safety.command(_cmd(base=(0.3, 0.1, 0.2), left=(0.2, 0.3, 0.0)), obs, age_s=0.0)
    out = safety.command(_cmd(base=(0.5, 0.0, 0.0), left=(0.21, 0.3, 0.0)), obs, age_s=0.25)
    assert safety.state is SafetyState.HOLD
    assert out.base_vel[0].tolist() == [0.0, 0.0, 0.0]
    assert torch.equal(out.hand_pos, sent.hand_pos)
    assert safety.counters.watchdog_holds == 1  # ticks
    # The first command of an episode, already stale: hands hold where they are observed.
    fresh, obs = _filter(robot)
    out = fresh.command(_cmd(left=(0.3, 0.3, 0.1)), obs, age_s=0.5)
    assert out.hand_pos[0].tolist() == [list(LEFT_REST), list(RIGHT_REST)]


def test_safety_config_validation() -> None:
    with pytest.raises(ValueError, match="unknown on_invalid 'ignore'; known: raise, hold"):
        SafetyConfig(on_invalid="ignore")
    with pytest.raises(ValueError, match=r"need 0 < stale_after_s \(0.0\)"):
        SafetyConfig(stale_after_s=0.0)
    with pytest.raises(ValueError, match=r"stale_after_s \(1.0\) < safe_mode_after_s \(1.0\)"):
        SafetyConfig(stale_after_s=1.0, safe_mode_after_s=1.0)
    with pytest.raises(ValueError, match="max_joint_step_rad must be positive, got 0.0"):
        SafetyConfig(max_joint_step_rad=0.0)
    hw = SafetyConfig.hardware()
    assert (hw.limits.max_vx_mps, hw.limits.max_hand_speed_mps) == (0.2, 0.05)
    assert (hw.max_joint_step_rad, hw.on_invalid) == (0.05, "hold")


def test_resume_steps_from_where_the_robot_sagged(robot: RobotSpec) -> None:
    safety, obs = _filter(robot)
    tgt = _targets(robot)
    tgt.joint_pos[0, KNEE] = 0.7
    safety.targets(tgt)  # last sent: 0.7
    sagged = dataclasses.replace(obs, joint_pos=obs.joint_pos.clone())
    sagged.joint_pos[0, KNEE] = 1.5  # the knee folded while damping
    safety.resume(sagged)
    out = safety.targets(tgt)  # 0.7 asked again: one step of 0.3 from 1.5, not from 0.7
    assert float(out.joint_pos[0, KNEE]) == pytest.approx(1.2)
