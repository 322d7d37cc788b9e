"""`SafetyFilter`: the one safety layer between controllers and every world.

It sits on both sides of the controller, for a simulator, a fake robot and the real T1 alike:

    cmd  = safety.command(source_cmd, obs, age_s)   # NaN/inf rejection, watchdog, speed limits
    tgt  = controller.step(cmd, obs)
    sent = world.apply(safety.targets(tgt))         # NaN/inf rejection, joint band, joint step

- Commands: NaN or inf is rejected (raised, or replaced by a hold: `SafetyConfig.on_invalid`);
  base velocity and hand speed are clamped, hands are kept in a box in the root frame.
- Watchdog on the age of the newest operator input: once it is older than `stale_after_s`, the
  hands hold where they were last sent and the base stops; once it is older than
  `safe_mode_after_s`, the filter latches the world's safe mode (damping on a robot, a pause in
  simulation).
- STOP latches until `reset()`; so does a watchdog safe mode: a robot never starts moving again
  because a stream came back, only because an operator said so.
- Joint targets: NaN or inf is rejected, targets are kept in the robot's target band and may
  move at most `max_joint_step_rad` per tick.

Every intervention is counted (`counters`), and `snapshot()` gives an immutable summary for a
status bar. The filter holds no simulator and no Qt: torch tensors in, torch tensors out.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass

import torch
from torch import Tensor

from robot_io.errors import SafetyLimitError
from robot_io.robot_spec import RobotSpec
from robot_io.types import (
    Command,
    CommandLimits,
    JointTargets,
    Observation,
    check_shapes,
    clamp_command,
)

INVALID_POLICIES = ("raise", "hold")


@dataclass(frozen=True)
class SafetyConfig:
    """Limits and timings of the safety filter (simulation defaults; see `hardware()`).

    Attributes:
        limits: base velocity, hand speed and hand box limits of commands.
        max_joint_step_rad: how far a joint target may move in one control tick.
        stale_after_s: input age at which the watchdog holds the hands and stops the base.
        safe_mode_after_s: input age at which the world goes to its safe mode (latched).
        on_invalid: "raise" a `SafetyLimitError` on a NaN/inf command or target (scripts, where
            it is a bug), or "hold" the last safe command and count it (an operator's app).
    """

    limits: CommandLimits = CommandLimits()
    max_joint_step_rad: float = 0.3
    stale_after_s: float = 0.2
    safe_mode_after_s: float = 1.0
    on_invalid: str = "raise"

    def __post_init__(self) -> None:
        if self.on_invalid not in INVALID_POLICIES:
            raise ValueError(f"unknown on_invalid {self.on_invalid!r}; known: "
                             f"{', '.join(INVALID_POLICIES)}")
        if not 0 < self.stale_after_s < self.safe_mode_after_s:
            raise ValueError(f"need 0 < stale_after_s ({self.stale_after_s}) < "
                             f"safe_mode_after_s ({self.safe_mode_after_s})")
        if self.max_joint_step_rad <= 0:
            raise ValueError(f"max_joint_step_rad must be positive, got {self.max_joint_step_rad}")

    @classmethod
    def hardware(cls) -> SafetyConfig:
        """Conservative settings for the real robot: base 0.2 m/s, hands 0.05 m/s, small joint
        steps, invalid commands held rather than raised."""
        return cls(limits=CommandLimits.hardware(), max_joint_step_rad=0.05, stale_after_s=0.2,
                   safe_mode_after_s=0.5, on_invalid="hold")


class SafetyState(enum.Enum):
    """What the filter does this tick, from least to most restrictive."""

    OK = "ok"
    HOLD = "hold"            # stale input: hands hold, base stopped
    SAFE_MODE = "safe mode"  # latched by the watchdog: the world is in its safe mode
    STOPPED = "stopped"      # latched by STOP


@dataclass
class SafetyCounters:
    """Interventions so far. Invalid commands and targets count worlds; clamps count ticks in
    which any world was clamped (one comparison per tick on the hot path); watchdog holds
    count ticks."""

    ticks: int = 0
    invalid_commands: int = 0
    invalid_targets: int = 0
    base_clamped: int = 0
    hand_clamped: int = 0
    joint_band_clamped: int = 0
    joint_step_clamped: int = 0
    watchdog_holds: int = 0
    safe_mode_entries: int = 0
    stops: int = 0


@dataclass(frozen=True)
class SafetySnapshot:
    """An immutable view of the filter for a status bar."""

    state: SafetyState
    reason: str
    counters: SafetyCounters
    limits: CommandLimits
    max_joint_step_rad: float


class SafetyFilter:
    """The safety layer of `num_worlds` worlds of `robot` (see the module docstring).

    Args:
        robot: joint order and target band.
        num_worlds: B.
        config: limits and timings.
    """

    def __init__(self, robot: RobotSpec, num_worlds: int,
                 config: SafetyConfig | None = None) -> None:
        self.robot, self.num_worlds = robot, num_worlds
        self.config = config or SafetyConfig()
        band = robot.target_band()
        self.target_lower = torch.tensor(band[0], dtype=torch.float64)
        self.target_upper = torch.tensor(band[1], dtype=torch.float64)
        self.counters = SafetyCounters()
        self._state = SafetyState.OK
        self._reason = ""
        self._prev_joint: Tensor | None = None   # (B, 29) last sent joint targets
        self._prev_gripper: Tensor | None = None  # (B, 2) last sent gripper targets
        self._prev_cmd: Command | None = None    # last applied command
        self._fresh = torch.ones(num_worlds, dtype=torch.bool)  # no speed limit on next cmd

    # -- latches -----------------------------------------------------------------------------
    @property
    def state(self) -> SafetyState:
        return self._state

    @property
    def latched(self) -> bool:
        """STOP or a watchdog safe mode holds: nothing may move until `reset()`."""
        return self._state in (SafetyState.STOPPED, SafetyState.SAFE_MODE)

    def stop(self, reason: str = "STOP") -> None:
        """Latch STOP (the world goes to its safe mode); only `reset()` clears it."""
        if self._state is not SafetyState.STOPPED:
            self.counters.stops += 1
        self._state, self._reason = SafetyState.STOPPED, reason

    def reset(self) -> None:
        """The explicit reset that clears STOP and a watchdog safe mode."""
        self._state, self._reason = SafetyState.OK, ""

    def snapshot(self) -> SafetySnapshot:
        return SafetySnapshot(state=self._state, reason=self._reason,
                              counters=dataclasses.replace(self.counters),
                              limits=self.config.limits,
                              max_joint_step_rad=self.config.max_joint_step_rad)

    # -- episodes ----------------------------------------------------------------------------
    def episode_started(self, obs: Observation, ids: Tensor) -> None:
        """Worlds `ids` start over: their joint targets step from where the joints are now,
        and their next command is not speed-limited against the previous episode's."""
        joint = obs.joint_pos.to(torch.float64)
        gripper = obs.gripper_pos.to(torch.float64).clamp(0.0, 1.0)
        if self._prev_joint is None or self._prev_joint.device != joint.device:
            self._prev_joint, self._prev_gripper = joint.clone(), gripper.clone()
            self.target_lower = self.target_lower.to(joint.device)
            self.target_upper = self.target_upper.to(joint.device)
        self._prev_joint[ids] = joint[ids]
        self._prev_gripper[ids] = gripper[ids]
        self._fresh[ids.cpu()] = True

    def resume(self, obs: Observation) -> None:
        """After a safe mode (a robot may have sagged while damping): joint targets step from
        where the joints are now, and hand commands ramp from where the hands are."""
        self._prev_joint = obs.joint_pos.to(torch.float64).clone()
        self._prev_gripper = obs.gripper_pos.to(torch.float64).clamp(0.0, 1.0).clone()
        if self._prev_cmd is not None:
            self._prev_cmd = Command(base_vel=torch.zeros_like(self._prev_cmd.base_vel),
                                     hand_pos=obs.hand_pos.cpu().to(torch.float64).clone(),
                                     hand_quat=self._prev_cmd.hand_quat,
                                     gripper=self._prev_cmd.gripper)

    # -- commands ----------------------------------------------------------------------------
    def watchdog(self, age_s: float | None) -> SafetyState:
        """Update the watchdog with the newest input's age (None: not an operator stream)."""
        if self.latched or age_s is None:
            if self._state is SafetyState.HOLD:
                self._state = SafetyState.OK
            return self._state
        cfg = self.config
        if age_s >= cfg.safe_mode_after_s:
            self._state = SafetyState.SAFE_MODE
            self._reason = f"no operator input for {age_s:.2f} s (limit {cfg.safe_mode_after_s} s)"
            self.counters.safe_mode_entries += 1
        elif age_s >= cfg.stale_after_s:
            self._state = SafetyState.HOLD
            self._reason = f"operator input is {age_s:.2f} s old (limit {cfg.stale_after_s} s)"
        else:
            self._state, self._reason = SafetyState.OK, ""
        return self._state

    def command(self, cmd: Command, obs: Observation, age_s: float | None = None) -> Command:
        """The command the controller may execute this tick (see the module docstring).

        Args:
            cmd: the source's command, (B, ...).
            obs: the observation it was computed from (hands hold there on the first tick).
            age_s: age of the newest operator input, or None for sources that are never stale.

        Raises:
            SafetyLimitError: NaN/inf or a zero quaternion with `on_invalid="raise"`.
        """
        check_shapes(cmd, self.num_worlds)
        self.counters.ticks += 1
        cmd = _as_float64(cmd)
        state = self.watchdog(age_s)
        # "raise": clamp_command's own checks raise (one pass on the hot path); "hold": find
        # the bad worlds first and hold them.
        if self.config.on_invalid == "hold" and not _valid(cmd):
            bad = _invalid_worlds(cmd)
            self.counters.invalid_commands += int(bad.sum())
            cmd = _where(bad, self._hold(obs), cmd)
        if state is not SafetyState.OK:
            self.counters.watchdog_holds += state is SafetyState.HOLD
            cmd = self._hold(obs)
        try:
            applied = self._clamp(cmd)
        except SafetyLimitError:
            self.counters.invalid_commands += int(_invalid_worlds(cmd).sum())
            raise
        self._prev_cmd = applied
        return applied

    def _hold(self, obs: Observation) -> Command:
        """Hands and grippers where they were last sent (else where they are), base stopped."""
        prev = self._prev_cmd
        if prev is None:
            prev = Command(base_vel=torch.zeros(self.num_worlds, 3, dtype=torch.float64),
                           hand_pos=obs.hand_pos.cpu().to(torch.float64),
                           hand_quat=obs.hand_quat.cpu().to(torch.float64),
                           gripper=obs.gripper_pos.cpu().to(torch.float64).clamp(0.0, 1.0))
        return Command(base_vel=torch.zeros_like(prev.base_vel), hand_pos=prev.hand_pos,
                       hand_quat=prev.hand_quat, gripper=prev.gripper)

    def _clamp(self, cmd: Command) -> Command:
        limits = self.config.limits
        prev_hand = None
        if self._prev_cmd is not None:
            prev_hand = torch.where(self._fresh[:, None, None], cmd.hand_pos,
                                    self._prev_cmd.hand_pos)
        applied = clamp_command(cmd, limits, prev_hand, self.robot.control_dt_s)
        self.counters.base_clamped += not torch.equal(applied.base_vel, cmd.base_vel)
        self.counters.hand_clamped += not torch.equal(applied.hand_pos, cmd.hand_pos)
        self._fresh[:] = False
        return applied

    # -- joint targets -----------------------------------------------------------------------
    def targets(self, targets: JointTargets) -> JointTargets:
        """The joint targets the world may apply: finite, in the band, within a step of the
        last ones.

        Raises:
            SafetyLimitError: NaN/inf targets with `on_invalid="raise"`.
        """
        if self._prev_joint is None:
            raise RuntimeError("SafetyFilter.episode_started must run before the first targets")
        prev = self._prev_joint
        joint, gripper = targets.joint_pos, targets.gripper
        if not bool(torch.isfinite(joint).all() & torch.isfinite(gripper).all()):
            bad = (~torch.isfinite(joint).all(-1)) | (~torch.isfinite(gripper).all(-1))
            self.counters.invalid_targets += int(bad.sum())
            if self.config.on_invalid == "raise":
                world = int(torch.nonzero(bad)[0, 0])
                name = "joint_pos" if not bool(torch.isfinite(joint[world]).all()) else "gripper"
                raise SafetyLimitError(f"joint target field '{name}' of world {world} is not "
                                       f"finite; controllers must output finite targets")
            # Hold the whole world, grippers included: opening one would drop what it holds.
            joint = torch.where(bad[:, None], prev, joint)
            gripper = torch.where(bad[:, None], self._prev_gripper.to(gripper.dtype), gripper)
        step = self.config.max_joint_step_rad
        stepped = torch.minimum(torch.maximum(joint, prev - step), prev + step)
        banded = torch.minimum(torch.maximum(stepped, self.target_lower), self.target_upper)
        self.counters.joint_step_clamped += not torch.equal(stepped, joint)
        self.counters.joint_band_clamped += not torch.equal(banded, stepped)
        self._prev_joint = banded
        gripper = gripper.clamp(0.0, 1.0)
        self._prev_gripper = gripper.to(torch.float64)
        return JointTargets(joint_pos=banded.clone(), gripper=gripper.clone(),
                            harness=targets.harness)


def _as_float64(cmd: Command) -> Command:
    if all(getattr(cmd, n).dtype == torch.float64 for n in Command.field_names()):
        return cmd
    return Command(*(getattr(cmd, n).to(torch.float64) for n in Command.field_names()))


def _valid(cmd: Command) -> bool:
    """Every entry finite and every hand quaternion of non-zero norm."""
    return bool(torch.isfinite(cmd.to_vector()).all()
                & (cmd.hand_quat.abs().amax(-1) > 1e-6).all())


def _invalid_worlds(cmd: Command) -> Tensor:
    """(B,) worlds with a NaN/inf entry or a zero hand quaternion."""
    vec = cmd.to_vector()
    bad = ~torch.isfinite(vec).all(-1)
    return bad | (cmd.hand_quat.norm(dim=-1) < 1e-6).any(-1)


def _where(mask: Tensor, a: Command, b: Command) -> Command:
    """Per world: `a` where mask, else `b`."""
    out = []
    for name in Command.field_names():
        x, y = getattr(a, name), getattr(b, name)
        m = mask.reshape(-1, *([1] * (x.dim() - 1)))
        out.append(torch.where(m, x, y))
    return Command(*out)
