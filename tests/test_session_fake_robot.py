"""A session driving the fake robot: STOP, watchdog, operator-labelled episodes, hand-over, and the
fake robot's own behaviour and injected link failures. No sleeps: the clock is injected."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor

from datasets.dataset import Dataset
from datasets.recorder import EpisodeRecorder
from robot_io.errors import SafetyLimitError
from robot_io.fake_robot import DAMPING, POSITION, FakeRobot, FakeRobotFaults
from robot_io.protocols import (CommandSource, Controller, PrivilegedSim, ReplayableWorld,
                                TimedSource, World)
from robot_io.robot_spec import RobotSpec
from robot_io.safety import SafetyState
from robot_io.session import Session, TickResult
from robot_io.t1_model import default_robot_spec
from robot_io.types import Command, HarnessTarget, JointTargets, Observation

F64 = torch.float64
DT = 0.02
LEFT_REST, RIGHT_REST = (0.12, 0.24, -0.13), (0.12, -0.24, -0.13)
KNEE = 20  # Left_Knee_Pitch, 0.4 rad in the default pose
SHOULDER_PITCH = (2, 9)  # left, right
# One tick of the fake robot's lag: 1 - exp(-0.02 / 0.05) = 1 - 0.670320 = 0.329680.
ALPHA = 0.3296799539643607


@pytest.fixture(scope="module")
def robot() -> RobotSpec:
    return default_robot_spec()


class FakeClock:
    """Monotonic seconds that move only when the test says so."""

    def __init__(self, t: float = 100.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class ScriptedTeleop:
    """A teleop device (CommandSource, TimedSource): the test sets its commands and input times."""

    def __init__(self, cmd: Command) -> None:
        self.cmd = cmd
        self.stamp_s: float | None = None
        self.resets: list[Tensor | None] = []
        self.calls = 0

    def send(self, cmd: Command, at_s: float) -> None:
        """An operator input arrives at `at_s` on the session's clock."""
        self.cmd, self.stamp_s = cmd, at_s

    def reset(self, obs: Observation, ids: Tensor | None = None) -> None:
        self.resets.append(ids)

    def next_command(self, obs: Observation) -> Command:
        self.calls += 1
        return self.cmd

    def input_time_s(self) -> float | None:
        return self.stamp_s


class HoldPoseController:
    """Default pose, shoulders pitched by the commanded hand heights, grippers as commanded."""

    def __init__(self, robot: RobotSpec) -> None:
        self.pose = torch.tensor(robot.default_pose, dtype=F64)

    def reset(self, obs: Observation, ids: Tensor | None = None) -> None:
        pass

    def step(self, cmd: Command, obs: Observation) -> JointTargets:
        joint = self.pose.repeat(cmd.num_worlds, 1)
        # Raising a hand 0.1 m pitches its shoulder 0.2 rad forward (negative pitch).
        joint[:, SHOULDER_PITCH] -= 2.0 * (cmd.hand_pos[:, :, 2] - LEFT_REST[2])
        return JointTargets(joint_pos=joint, gripper=cmd.gripper.clone())


def _cmd(vx: float = 0.0, left_z: float = LEFT_REST[2], gripper: float = 0.0) -> Command:
    quat = torch.zeros(1, 2, 4, dtype=F64)
    quat[..., 0] = 1.0
    left = (LEFT_REST[0], LEFT_REST[1], left_z)
    return Command(base_vel=torch.tensor([[vx, 0.0, 0.0]], dtype=F64),
                   hand_pos=torch.tensor([[left, RIGHT_REST]], dtype=F64), hand_quat=quat,
                   gripper=torch.full((1, 2), gripper, dtype=F64))


def _setup(robot: RobotSpec, observers: tuple = ()) -> tuple[Session, FakeRobot, ScriptedTeleop,
                                                              FakeClock]:
    clock = FakeClock()
    fake = FakeRobot(robot, clock=clock)
    teleop = ScriptedTeleop(_cmd())
    session = Session(fake, teleop, HoldPoseController(robot), observers=observers, clock=clock)
    session.start_episodes()
    return session, fake, teleop, clock


def _live_tick(session: Session, teleop: ScriptedTeleop, clock: FakeClock,
               cmd: Command | None = None) -> TickResult:
    """One control period passes, a fresh operator input arrives, the session ticks."""
    clock.t += DT
    teleop.send(cmd if cmd is not None else teleop.cmd, clock.t)
    return session.tick()


def _stale_tick(session: Session, clock: FakeClock) -> TickResult:
    """One control period passes without operator input."""
    clock.t += DT
    return session.tick()


# -- the fake robot ----------------------------------------------------------------------------
def test_fake_robot_is_a_world_without_simulator_powers(robot: RobotSpec) -> None:
    clock = FakeClock(50.0)
    fake = FakeRobot(robot, clock=clock)
    assert isinstance(fake, World)
    assert not isinstance(fake, ReplayableWorld) and not isinstance(fake, PrivilegedSim)
    assert (fake.num_worlds, fake.control_dt_s, fake.reset_params) == (1, 0.02, {})
    out = fake.outcome()
    assert not bool(out.done.any()) and out.success.shape == (1,)
    obs = fake.reset()
    assert obs.joint_pos[0].tolist() == list(robot.default_pose)
    assert obs.hand_pos[0].tolist() == [list(LEFT_REST), list(RIGHT_REST)]
    assert float(obs.time_s[0]) == 0.0
    clock.t += 0.5
    fake.apply(fake.held_targets)
    assert float(fake.observe().time_s[0]) == pytest.approx(0.5)  # measured on the clock
    assert fake.counters.resets == 1
    assert isinstance(ScriptedTeleop(_cmd()), CommandSource)
    assert isinstance(ScriptedTeleop(_cmd()), TimedSource)
    assert isinstance(HoldPoseController(robot), Controller)


def test_joints_follow_targets_with_a_first_order_lag(robot: RobotSpec) -> None:
    fake = FakeRobot(robot, num_worlds=2, clock=FakeClock())
    assert fake.alpha == pytest.approx(1 - math.exp(-0.02 / 0.05))
    targets = fake.held_targets
    targets.joint_pos[1, KNEE] += 0.1
    targets.gripper[1] = 1.0
    sent = fake.apply(targets)
    assert torch.equal(sent.joint_pos, targets.joint_pos)
    obs = fake.observe()
    # One tick: 0.4 + 0.1 * 0.329680 = 0.432968; velocity 0.0329680 / 0.02 s = 1.648400 rad/s.
    assert float(obs.joint_pos[1, KNEE]) == pytest.approx(0.4329680, abs=1e-6)
    assert float(obs.joint_vel[1, KNEE]) == pytest.approx(1.648400, abs=1e-5)
    assert obs.gripper_pos[1].tolist() == pytest.approx([ALPHA, ALPHA])
    assert float(obs.joint_pos[0, KNEE]) == 0.4  # world 0 was told to stay
    fake.apply(targets)
    # Two ticks: 0.4 + 0.1 * (1 - 0.670320^2) = 0.4 + 0.1 * 0.550671 = 0.4550671.
    assert float(fake.observe().joint_pos[1, KNEE]) == pytest.approx(0.4550671, abs=1e-6)
    assert (fake.counters.applies, fake.counters.sent, fake.counters.drops) == (2, 2, 0)


def test_fake_robot_refuses_a_harness_and_bad_targets(robot: RobotSpec) -> None:
    fake = FakeRobot(robot, clock=FakeClock())
    targets = fake.held_targets
    harness = HarnessTarget(pos=torch.zeros(1, 3), quat=torch.tensor([[1.0, 0, 0, 0]]))
    with pytest.raises(ValueError, match="a real robot has no harness"):
        fake.apply(JointTargets(targets.joint_pos, targets.gripper, harness=harness))
    with pytest.raises(ValueError, match=r"'joint_pos' has shape \(1, 28\), expected \(1, 29\)"):
        fake.apply(JointTargets(targets.joint_pos[:, :28], targets.gripper))
    targets.joint_pos[0, 3] = math.nan
    with pytest.raises(SafetyLimitError, match="non-finite"):
        fake.apply(targets)
    assert fake.counters.applies == 0 and fake.ticks == 0


def test_dropped_commands_keep_the_previous_targets(robot: RobotSpec) -> None:
    fake = FakeRobot(robot, clock=FakeClock(), faults=FakeRobotFaults(drop_ticks={1, 2}))
    first, second = fake.held_targets, fake.held_targets
    first.joint_pos[0, KNEE] = 0.5
    second.joint_pos[0, KNEE] = 0.6
    assert float(fake.apply(first).joint_pos[0, KNEE]) == 0.5
    assert float(fake.apply(second).joint_pos[0, KNEE]) == 0.5  # tick 1: lost on the link
    assert float(fake.apply(second).joint_pos[0, KNEE]) == 0.5  # tick 2: lost
    assert float(fake.apply(second).joint_pos[0, KNEE]) == 0.6
    assert (fake.counters.applies, fake.counters.sent, fake.counters.drops) == (4, 2, 2)
    # The joint went on toward 0.5 for three ticks, then one tick toward 0.6:
    # 0.4 + 0.1 * (1 - 0.670320^3) = 0.4698807; + 0.329680 * (0.6 - 0.4698807) = 0.5127784.
    assert float(fake.joint_pos[0, KNEE]) == pytest.approx(0.5127784, abs=1e-6)


def test_random_drops_are_seeded(robot: RobotSpec) -> None:
    def dropped(seed: int) -> list[int]:
        fake = FakeRobot(robot, clock=FakeClock(),
                         faults=FakeRobotFaults(drop_fraction=0.3, seed=seed))
        out = []
        for tick in range(200):
            targets = fake.held_targets
            targets.joint_pos[0, KNEE] = 0.4 + 0.001 * (tick + 1)
            if not torch.equal(fake.apply(targets).joint_pos, targets.joint_pos):
                out.append(tick)
        assert fake.counters.drops == len(out) and fake.counters.sent == 200 - len(out)
        return out

    drops = dropped(seed=3)
    assert 40 <= len(drops) <= 80  # 0.3 * 200 = 60 expected, +-4 standard deviations ~ 26
    assert dropped(seed=3) == drops
    assert dropped(seed=4) != drops


def test_latency_delays_observations(robot: RobotSpec) -> None:
    clock = FakeClock(0.0)
    fake = FakeRobot(robot, clock=clock, faults=FakeRobotFaults(latency_ticks=2))
    fake.reset()
    truth, seen = [fake.joint_pos[0, KNEE].item()], []
    targets = fake.held_targets
    targets.joint_pos[0, KNEE] = 1.0
    for _ in range(5):
        clock.t += DT
        fake.apply(targets)
        truth.append(fake.joint_pos[0, KNEE].item())
        obs = fake.observe()
        seen.append((obs.joint_pos[0, KNEE].item(), obs.time_s[0].item()))
    # After tick k the stream delivers the state of tick k - 2 (the oldest one at the start).
    assert [s[0] for s in seen] == [truth[0], truth[0], truth[1], truth[2], truth[3]]
    assert [s[1] for s in seen] == pytest.approx([0.0, 0.0, 0.02, 0.04, 0.06])
    assert truth[1] != truth[0]


def test_stale_state_freezes_observations(robot: RobotSpec) -> None:
    clock = FakeClock(0.0)
    fake = FakeRobot(robot, clock=clock, faults=FakeRobotFaults(stale_ticks={2, 3, 4}))
    targets = fake.held_targets
    targets.joint_pos[0, KNEE] = 1.0
    seen = []
    for _ in range(6):
        clock.t += DT
        fake.apply(targets)
        seen.append(fake.observe())
    frozen = seen[1]  # the state of tick 1, the last before the stream stopped
    for obs in seen[2:5]:
        assert torch.equal(obs.joint_pos, frozen.joint_pos)
        assert torch.equal(obs.time_s, frozen.time_s)
    assert float(seen[5].joint_pos[0, KNEE]) > float(frozen.joint_pos[0, KNEE])
    assert float(seen[5].time_s[0]) == pytest.approx(6 * DT)
    assert torch.equal(seen[5].joint_pos, fake.joint_pos)  # the stream caught up


def test_safe_mode_is_damping(robot: RobotSpec) -> None:
    fake = FakeRobot(robot, clock=FakeClock())
    targets = fake.held_targets
    targets.joint_pos[0, KNEE] = 0.6
    fake.apply(targets)
    knee = float(fake.joint_pos[0, KNEE])  # 0.4 + 0.2 * 0.329680 = 0.465936
    fake.enter_safe_mode()
    fake.enter_safe_mode()
    assert fake.mode == DAMPING
    sent = fake.apply(targets)  # nothing is sent; it reports where it holds
    assert float(sent.joint_pos[0, KNEE]) == pytest.approx(knee)
    assert float(fake.joint_pos[0, KNEE]) == knee  # stopped following
    assert float(fake.observe().joint_vel[0, KNEE]) == 0.0
    fake.leave_safe_mode()
    assert fake.mode == POSITION
    assert float(fake.held_targets.joint_pos[0, KNEE]) == knee  # no jump back to the old 0.6
    c = fake.counters
    assert (c.applies, c.sent, c.ignored_in_safe_mode, c.mode_changes) == (2, 1, 1, 2)


# -- a session on the fake robot ---------------------------------------------------------------
def test_stop_takes_effect_within_one_tick(robot: RobotSpec) -> None:
    session, fake, teleop, clock = _setup(robot)
    for _ in range(5):
        assert _live_tick(session, teleop, clock, _cmd(vx=0.3)).applied
    assert fake.counters.sent == 5
    session.request_stop("operator")
    result = _live_tick(session, teleop, clock)
    assert not result.applied and result.sent is None and result.command is None
    assert result.safety is SafetyState.STOPPED
    assert fake.mode == DAMPING
    for _ in range(10):
        assert not _live_tick(session, teleop, clock).applied
    assert (fake.counters.applies, fake.counters.sent) == (5, 5)  # nothing more was sent
    assert fake.counters.safe_mode_entries == 1


def test_stop_latches_until_reset(robot: RobotSpec) -> None:
    session, fake, teleop, clock = _setup(robot)
    _live_tick(session, teleop, clock)
    session.request_stop()
    results = [_live_tick(session, teleop, clock, _cmd(vx=0.2)) for _ in range(30)]
    assert not any(r.applied for r in results)
    assert fake.counters.applies == 1 and session.safety.counters.stops == 1
    session.reset_stop()
    result = _live_tick(session, teleop, clock, _cmd(vx=0.2))
    assert result.applied and result.safety is SafetyState.OK
    assert float(result.command.base_vel[0, 0]) == 0.2
    assert fake.mode == POSITION and fake.counters.safe_mode_exits == 1
    assert (fake.counters.applies, fake.counters.sent) == (2, 2)


def test_stop_requested_after_a_reset_still_stops(robot: RobotSpec) -> None:
    session, fake, teleop, clock = _setup(robot)
    session.request_stop()
    _live_tick(session, teleop, clock)
    session.reset_stop()
    session.request_stop("pressed again")  # both before the next tick: the later one wins
    assert not _live_tick(session, teleop, clock).applied
    assert fake.mode == DAMPING and fake.counters.applies == 0


def test_stop_during_run_puts_the_robot_in_safe_mode(robot: RobotSpec) -> None:
    clock = FakeClock()
    fake = FakeRobot(robot, clock=clock)
    session = Session(fake, ScriptedTeleop(_cmd()), HoldPoseController(robot), clock=clock)
    session.source.send(_cmd(), clock.t)

    def on_step(tick: int, *_: object) -> None:
        if tick == 3:
            session.request_stop("operator")  # as the GUI thread would, between two ticks

    session.run(done_when=lambda: session.ticks >= 50, on_step=on_step)
    assert fake.counters.sent == 4
    assert fake.mode == DAMPING and session.safety.state is SafetyState.STOPPED


def test_operator_labels_are_recorded_and_a_discard_is_not(robot: RobotSpec,
                                                           tmp_path: Path) -> None:
    dataset = Dataset.create(tmp_path / "ds", robot)
    recorder = EpisodeRecorder(dataset, task="fake_robot", source="teleop",
                               controller="hold_pose", seed=0, control_dt_s=DT, task_config={},
                               background=False)
    session, fake, teleop, clock = _setup(robot, observers=(recorder,))
    sent = [_live_tick(session, teleop, clock, _cmd(left_z=-0.13 + 0.01 * i)).sent
            for i in range(7)]
    end = session.end_episode([0], success=True, reason="operator")
    assert end is not None and end.steps.tolist() == [7]
    assert session.episode_ids.tolist() == [1]  # restarted
    for _ in range(4):
        _live_tick(session, teleop, clock)
    session.end_episode([0], success=False, reason="operator")
    for _ in range(3):
        _live_tick(session, teleop, clock)
    session.end_episode([0], success=True, reason="operator", keep=False, restart=False)
    assert not bool(session.active.any())
    recorder.close()

    stored = Dataset.open(tmp_path / "ds", robot)
    assert stored.episode_ids() == [0, 1]
    assert recorder.episodes_dropped == 1
    first, second = stored.episode(0), stored.episode(1)
    assert (first.attrs.success, first.attrs.end_reason, first.attrs.length) == (True,
                                                                                 "operator", 7)
    assert (second.attrs.success, second.attrs.end_reason, second.attrs.length) == (False,
                                                                                    "operator", 4)
    assert first["targets/joint_pos"].shape == (7, 29)
    assert torch.equal(torch.from_numpy(first["targets/joint_pos"]),
                       torch.cat([s.joint_pos for s in sent]))
    assert "sim/state" not in first.arrays and "sim/initial_state" not in first.arrays
    assert fake.counters.resets == 3  # the first start and two restarts


def test_source_swap_without_a_reset(robot: RobotSpec) -> None:
    session, fake, first, clock = _setup(robot)
    for _ in range(3):
        _live_tick(session, first, clock, _cmd(vx=0.1))
    second = ScriptedTeleop(_cmd(vx=0.3, gripper=1.0))
    second.stamp_s = clock.t
    calls = first.calls
    session.set_source(second)
    assert fake.counters.resets == 1 and session.episode_ids.tolist() == [0]
    assert [ids.tolist() for ids in second.resets] == [[0]]
    result = _live_tick(session, second, clock)
    assert result.applied
    assert float(result.command.base_vel[0, 0]) == 0.3
    assert result.sent.gripper[0].tolist() == [1.0, 1.0]
    assert first.calls == calls and second.calls == 1
    assert session.episode_steps.tolist() == [4] and fake.counters.resets == 1


def test_watchdog_holds_then_latches_safe_mode(robot: RobotSpec) -> None:
    session, fake, teleop, clock = _setup(robot)
    last = None
    for i in range(5):  # the operator lifts the left hand 5 mm per tick and walks at 0.3 m/s
        last = _live_tick(session, teleop, clock, _cmd(vx=0.3, left_z=-0.13 + 0.005 * (i + 1)))
    assert last.safety is SafetyState.OK and float(last.command.base_vel[0, 0]) == 0.3
    input_at = teleop.stamp_s
    results = [_stale_tick(session, clock) for _ in range(60)]
    ages = [r.input_age_s for r in results]
    first_hold = next(i for i, r in enumerate(results) if r.safety is SafetyState.HOLD)
    # stale_after_s = 0.2 s is 10 ticks of 0.02 s: the hold starts at tick 10 (11 if rounding
    # puts 10 * 0.02 a hair under 0.2), within 2 ticks of the command going stale.
    assert first_hold + 1 in (10, 11) and ages[first_hold] >= 0.2 > ages[first_hold - 1]
    held = results[first_hold]
    assert held.applied and held.command.base_vel[0].tolist() == [0.0, 0.0, 0.0]
    assert torch.equal(held.command.hand_pos, last.command.hand_pos)
    assert all(r.safety is SafetyState.OK for r in results[:first_hold])
    # safe_mode_after_s = 1.0 s is 50 ticks: then damping, latched.
    first_safe = next(i for i, r in enumerate(results) if r.safety is SafetyState.SAFE_MODE)
    assert first_safe + 1 in (50, 51) and ages[first_safe] >= 1.0
    assert all(r.safety is SafetyState.HOLD and r.applied
               for r in results[first_hold:first_safe])
    assert not results[first_safe].applied and fake.mode == DAMPING
    assert fake.counters.sent == 5 + first_safe
    assert session.safety.counters.watchdog_holds == first_safe - first_hold
    assert clock.t - input_at == pytest.approx(60 * DT)
    # Input resumes: the safe mode stays until the operator resets it.
    for _ in range(10):
        result = _live_tick(session, teleop, clock, _cmd())
        assert not result.applied and result.safety is SafetyState.SAFE_MODE
    assert fake.mode == DAMPING
    session.reset_stop()
    result = _live_tick(session, teleop, clock, _cmd())
    assert result.applied and result.safety is SafetyState.OK and fake.mode == POSITION
    assert session.safety.counters.safe_mode_entries == 1



class _Device(ScriptedTeleop):
    """A teleop source with a raw input frame per tick (a stick value and a button)."""

    def raw_inputs(self) -> dict[str, Tensor]:
        return {"stick": torch.full((1, 2), float(self.calls)), "button": torch.ones(1, 1)}


def test_raw_device_inputs_are_recorded_beside_the_commands(robot: RobotSpec,
                                                            tmp_path: Path) -> None:
    from robot_io.protocols import RawInputSource

    dataset = Dataset.create(tmp_path / "ds", robot)
    recorder = EpisodeRecorder(dataset, task="fake_robot", source="device",
                               controller="hold_pose", seed=0, control_dt_s=DT, task_config={},
                               background=False)
    clock = FakeClock()
    fake = FakeRobot(robot, clock=clock)
    device = _Device(_cmd())
    assert isinstance(device, RawInputSource)
    session = Session(fake, device, HoldPoseController(robot), observers=[recorder], clock=clock)
    session.start_episodes()
    for _ in range(3):
        _live_tick(session, device, clock)
    planner = ScriptedTeleop(_cmd())  # a hand-over to a source without raw inputs
    session.set_source(planner)
    for _ in range(2):
        _live_tick(session, planner, clock)
    session.end_episode([0], success=True)
    recorder.close()
    episode = Dataset.open(tmp_path / "ds", robot).episode(0)
    stick = episode["inputs/stick"]
    # The stick value is the device's call count: ticks 1, 2, 3; then no device, NaN.
    assert stick.shape == (5, 2)
    assert stick[:3, 0].tolist() == [1.0, 2.0, 3.0]
    assert np.isnan(stick[3:]).all()
    assert episode["command/base_vel"].shape == (5, 3)
    from datasets.validate import validate

    assert validate(tmp_path / "ds") == []  # NaN raw inputs are not a broken recording


def test_a_device_without_input_yet_holds_but_does_not_latch(robot: RobotSpec) -> None:
    session, fake, teleop, clock = _setup(robot)  # teleop.stamp_s is None: nothing received
    for _ in range(100):  # 2 s, longer than safe_mode_after_s
        clock.t += DT
        result = session.tick()
    assert result.applied and result.safety is SafetyState.HOLD
    assert fake.mode == POSITION  # no damping: the robot holds where it is
    assert float(result.command.base_vel.abs().max()) == 0.0
    _live_tick(session, teleop, clock, _cmd(vx=0.1))  # the first input: live at once
    assert session.safety.state is SafetyState.OK
