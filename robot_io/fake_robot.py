"""`FakeRobot`: a `World` without simulator powers, the template the Booster SDK world follows.

What a real robot gives a session, and nothing more:
- one robot (a batch of one; `num_worlds=B` is allowed so tests can check batching);
- no exact-replay state, no per-world model fields, no privileged physics (it satisfies
  `World`, not `ReplayableWorld` or `PrivilegedSim`), no success predicate and no time limit
  (`outcome()` is `StepOutcome.unknown`), nothing randomised (`reset_params` is empty);
- time from a clock (`time.monotonic` unless one is injected): `Observation.time_s` is the
  clock's time at which the state was measured, counted from the episode's start;
- `reset` cannot teleport a robot: it starts a new episode where the robot stands;
- targets with a harness are refused (a real robot has none); `apply` returns what the robot
  actually holds afterwards (LeRobot's `send_action` convention).

The robot's "physics" is one first-order lag per control tick: every joint (and each gripper)
moves a fraction `1 - exp(-control_dt_s / time_constant_s)` of the way to its held target, so
observations change plausibly. It has no kinematics and does not walk: the root stays at its
nominal standing pose, and hand and foot poses in the observation are the constant nominal
poses below (a planner sees a robot standing with its hands at rest). The joint positions,
velocities and grippers are the only state that moves. One `apply` is one control tick of the
robot; the session only observes while the robot is in its safe mode, so no time passes then.

Failure modes a real link has, injected through `FakeRobotFaults` (all worlds alike):
- latency: `observe` returns the state of `latency_ticks` ticks ago;
- dropped commands: the applies of scripted ticks (`drop_ticks`), or a seeded random fraction
  (`drop_fraction`), never arrive: the robot keeps its previous targets and `apply` returns them;
- stale state: at the ticks in `stale_ticks` the state stream does not update, so `observe`
  returns the same frozen observation (its `time_s` included) as the tick before.
`enter_safe_mode()` is damping: the robot stops following targets and stays where it is, and an
`apply` while damping sends nothing and returns what the robot holds (its current joint
positions). `leave_safe_mode()` resumes position control at the current joint positions, so
old targets are never jumped to. Every apply, drop and mode change is counted (`counters`).

Nothing here imports MuJoCo: only the default robot spec reads joint limits from the MJCF
(`robot_io.t1_model.default_robot_spec`); pass `robot=` to avoid it.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from robot_io.errors import SafetyLimitError
from robot_io.protocols import Clock, StepOutcome
from robot_io.robot_spec import RobotSpec
from robot_io.types import JointTargets, Observation

F64 = torch.float64
# Nominal poses of the T1 standing in its default pose, in the root frame. Not measured on this
# fake (it has no kinematics); the trunk height is t1_model.STAND_HEIGHT_M, not imported because
# that module needs MuJoCo.
NOMINAL_ROOT_HEIGHT_M = 0.665
NOMINAL_HAND_POS_M = ((0.12, 0.24, -0.13), (0.12, -0.24, -0.13))  # left, right: hands at rest
NOMINAL_FOOT_POS_M = ((0.0, 0.1, -NOMINAL_ROOT_HEIGHT_M), (0.0, -0.1, -NOMINAL_ROOT_HEIGHT_M))
DAMPING, POSITION = "damping", "position"


@dataclass(frozen=True)
class FakeRobotFaults:
    """Failures the fake robot's link injects (see the module docstring).

    Attributes:
        latency_ticks: observations are this many ticks old.
        drop_fraction: probability that an apply does not arrive (seeded by `seed`).
        drop_ticks: robot ticks (0-based apply count) whose apply does not arrive.
        stale_ticks: robot ticks after which the state stream does not update.
        seed: seed of the random drops.
    """

    latency_ticks: int = 0
    drop_fraction: float = 0.0
    drop_ticks: frozenset[int] = frozenset()
    stale_ticks: frozenset[int] = frozenset()
    seed: int = 0

    def __post_init__(self) -> None:
        if self.latency_ticks < 0:
            raise ValueError(f"latency_ticks must be >= 0, got {self.latency_ticks}")
        if not 0.0 <= self.drop_fraction <= 1.0:
            raise ValueError(f"drop_fraction must be in [0, 1], got {self.drop_fraction}")
        for name in ("drop_ticks", "stale_ticks"):
            ticks = frozenset(getattr(self, name))
            if any(t < 0 for t in ticks):
                raise ValueError(f"{name} must hold ticks >= 0, got {sorted(ticks)}")
            object.__setattr__(self, name, ticks)


@dataclass
class FakeRobotCounters:
    """What the fake robot saw, for tests to assert on."""

    applies: int = 0              # apply calls (each one is a robot tick)
    sent: int = 0                 # applies whose targets arrived and were taken over
    drops: int = 0                # applies lost on the link (targets kept)
    ignored_in_safe_mode: int = 0  # applies while damping (nothing sent)
    resets: int = 0               # reset calls
    observes: int = 0
    safe_mode_entries: int = 0
    safe_mode_exits: int = 0

    @property
    def mode_changes(self) -> int:
        return self.safe_mode_entries + self.safe_mode_exits


@dataclass(frozen=True)
class _Measured:
    """The state as the robot's stream reports it at one tick, (B, ...)."""

    stamp_s: float
    joint_pos: Tensor
    joint_vel: Tensor
    gripper_pos: Tensor


class FakeRobot:
    """A `World` of `num_worlds` fake robots (see the module docstring).

    Args:
        robot: the robot spec (default: `default_robot_spec()`, which reads the MJCF).
        num_worlds: B (1 for a robot; more only for tests).
        faults: injected link failures (the attribute may be replaced between ticks).
        time_constant_s: the first-order lag of joints and grippers toward their targets.
        clock: monotonic seconds (`time.monotonic`, or an injected one in tests).
    """

    def __init__(self, robot: RobotSpec | None = None, num_worlds: int = 1,
                 faults: FakeRobotFaults | None = None, time_constant_s: float = 0.05,
                 clock: Clock = time.monotonic) -> None:
        if num_worlds < 1:
            raise ValueError(f"num_worlds must be at least 1, got {num_worlds}")
        if time_constant_s <= 0:
            raise ValueError(f"time_constant_s must be positive, got {time_constant_s}")
        if robot is None:
            from robot_io.t1_model import default_robot_spec  # reads joint limits from the MJCF
            robot = default_robot_spec()
        self.robot, self.num_worlds, self.clock = robot, num_worlds, clock
        self.faults = faults or FakeRobotFaults()
        self.reset_params: dict[str, Tensor] = {}
        self.alpha = 1.0 - math.exp(-robot.control_dt_s / time_constant_s)
        self.counters = FakeRobotCounters()
        self.ticks = 0  # robot ticks so far (= apply calls)
        self._rng = np.random.default_rng(self.faults.seed)
        b, n = num_worlds, robot.num_joints
        pose = torch.tensor(robot.default_pose, dtype=F64).expand(b, n)
        self.joint_pos, self.joint_vel = pose.clone(), torch.zeros(b, n, dtype=F64)
        self.gripper_pos = torch.zeros(b, 2, dtype=F64)
        self._held = JointTargets(joint_pos=pose.clone(), gripper=torch.zeros(b, 2, dtype=F64))
        self._damping = False
        self._episode_start_s = torch.full((b,), clock(), dtype=F64)
        self._history: deque[_Measured] = deque()
        self._published = self._measure()
        self._record(self._published)

    # -- World -------------------------------------------------------------------------------
    @property
    def control_dt_s(self) -> float:
        return self.robot.control_dt_s

    @property
    def mode(self) -> str:
        """The control mode: "damping" (safe mode) or "position" (following targets)."""
        return DAMPING if self._damping else POSITION

    @property
    def held_targets(self) -> JointTargets:
        """The targets the robot follows now (copies)."""
        return JointTargets(joint_pos=self._held.joint_pos.clone(),
                            gripper=self._held.gripper.clone())

    def observe(self) -> Observation:
        """The state as the stream reports it (late by `latency_ticks`, frozen when stale)."""
        self.counters.observes += 1
        m, b = self._published, self.num_worlds

        def const(value: tuple, *shape: int) -> Tensor:
            return torch.tensor(value, dtype=F64).expand(b, *shape).clone()

        identity = (1.0, 0.0, 0.0, 0.0)
        return Observation(
            time_s=(m.stamp_s - self._episode_start_s).clamp_min(0.0),
            joint_pos=m.joint_pos.clone(), joint_vel=m.joint_vel.clone(),
            gripper_pos=m.gripper_pos.clone(),
            root_pos=const((0.0, 0.0, NOMINAL_ROOT_HEIGHT_M), 3), root_quat=const(identity, 4),
            root_lin_vel=torch.zeros(b, 3, dtype=F64), root_ang_vel=torch.zeros(b, 3, dtype=F64),
            projected_gravity=const((0.0, 0.0, -1.0), 3),
            hand_pos=const(NOMINAL_HAND_POS_M, 2, 3), hand_quat=const((identity,) * 2, 2, 4),
            foot_pos=const(NOMINAL_FOOT_POS_M, 2, 3), foot_quat=const((identity,) * 2, 2, 4),
            task={})

    def apply(self, targets: JointTargets) -> JointTargets:
        """Send targets for one control tick; returns what the robot holds afterwards.

        Raises:
            ValueError: targets with a harness, or of the wrong shape.
            SafetyLimitError: NaN or inf targets (the safety filter lets none through).
        """
        self._check(targets)
        tick = self.ticks
        self.counters.applies += 1
        if self._damping:
            self.counters.ignored_in_safe_mode += 1
        elif tick in self.faults.drop_ticks or (self.faults.drop_fraction > 0.0 and
                                                self._rng.random() < self.faults.drop_fraction):
            self.counters.drops += 1
        else:
            self.counters.sent += 1
            self._held = JointTargets(joint_pos=targets.joint_pos.detach().cpu().to(F64).clone(),
                                      gripper=targets.gripper.detach().cpu().to(F64).clone())
        self._advance()
        if self._damping:
            return JointTargets(joint_pos=self.joint_pos.clone(),
                                gripper=self._held.gripper.clone())
        return self.held_targets

    def reset(self, ids: Tensor | None = None) -> Observation:
        """Start new episodes in worlds `ids` where the robots stand (a robot is not moved)."""
        ids = torch.arange(self.num_worlds) if ids is None else torch.as_tensor(ids).long()
        self.counters.resets += 1
        self._episode_start_s[ids] = self.clock()
        return self.observe()

    def outcome(self) -> StepOutcome:
        """A robot knows no success predicate and no time limit."""
        return StepOutcome.unknown(self.num_worlds)

    def enter_safe_mode(self) -> None:
        """Damping: stop following targets at once, stay where the joints are."""
        if not self._damping:
            self._damping = True
            self.counters.safe_mode_entries += 1
            self.joint_vel.zero_()

    def leave_safe_mode(self) -> None:
        """Position control again, holding the joints where they are now."""
        if self._damping:
            self._damping = False
            self.counters.safe_mode_exits += 1
            self._held = JointTargets(joint_pos=self.joint_pos.clone(),
                                      gripper=self._held.gripper.clone())

    # -- internals ---------------------------------------------------------------------------
    def _check(self, targets: JointTargets) -> None:
        if targets.harness is not None:
            raise ValueError("a real robot has no harness: send JointTargets with harness=None "
                             "(the harness belongs to the simulator's reference controller)")
        b, n = self.num_worlds, self.robot.num_joints
        for name, shape in (("joint_pos", (b, n)), ("gripper", (b, 2))):
            got = tuple(getattr(targets, name).shape)
            if got != shape:
                raise ValueError(f"joint target field '{name}' has shape {got}, expected {shape}")
        if not (bool(torch.isfinite(targets.joint_pos).all())
                and bool(torch.isfinite(targets.gripper).all())):
            raise SafetyLimitError("the robot refuses non-finite joint targets")

    def _advance(self) -> None:
        """One control tick of the robot, then publish what its stream reports."""
        if not self._damping:
            old = self.joint_pos
            self.joint_pos = old + self.alpha * (self._held.joint_pos - old)
            self.joint_vel = (self.joint_pos - old) / self.control_dt_s
            self.gripper_pos = self.gripper_pos + self.alpha * (self._held.gripper.clamp(0.0, 1.0)
                                                                - self.gripper_pos)
        measured = self._measure()
        self._record(measured)
        if self.ticks not in self.faults.stale_ticks:
            self._published = self._history[0]
        self.ticks += 1

    def _measure(self) -> _Measured:
        return _Measured(stamp_s=float(self.clock()), joint_pos=self.joint_pos.clone(),
                         joint_vel=self.joint_vel.clone(), gripper_pos=self.gripper_pos.clone())

    def _record(self, measured: _Measured) -> None:
        """Keep the last `latency_ticks + 1` states: the oldest is what the stream delivers."""
        self._history.append(measured)
        while len(self._history) > self.faults.latency_ticks + 1:
            self._history.popleft()


__all__ = ["DAMPING", "POSITION", "FakeRobot", "FakeRobotCounters", "FakeRobotFaults"]
