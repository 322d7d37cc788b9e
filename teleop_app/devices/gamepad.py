"""`GamepadDevice`: teleoperation from a gamepad through SDL2's joystick API (pygame).

pygame is optional (the `gamepad` extra) and imported only by `open_pygame_gamepad`. Everything
else reads any object with pygame's joystick methods (`get_numaxes`, `get_axis`,
`get_numbuttons`, `get_button`, `get_numhats`, `get_hat`), so the mapping is tested with a fake.
No window is opened: SDL runs with its dummy video driver, and joystick events are allowed in the
background, since the app's window is Qt's, not SDL's.

Mapping (an Xbox-style pad; `GamepadLayout` says which SDL axis or button is which):

    neither bumper held   left stick: walk (up forward, left sideways left); right stick x: turn
    LB / RB held          clutch the left / right hand (both: both hands move together); the
                          base stops and the sticks move the clutched hands in the root frame:
                          left stick x/y, right stick y up/down, right stick x yaw,
                          D-pad left/right roll, D-pad up/down pitch (fingers up/down)
    LT / RT               left / right gripper, analog (0 released .. 1 fully pulled)

The pad is read once per tick, in `reset` and `next_command` (on the session's thread); a read
is an operator input for the watchdog, so an unplugged pad goes stale and the session holds
(plugging it back in needs the device to be opened again).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor

from robot_io.optional import require
from robot_io.protocols import Clock
from robot_io.types import Command, CommandLimits, Observation
from teleop_app.devices import retarget
from teleop_app.devices.errors import DeviceNotFoundError


@dataclass(frozen=True)
class GamepadFrame:
    """One raw read of a pad: axes in [-1, 1], buttons 0/1, hats (x, y) in {-1, 0, 1}."""

    axes: tuple[float, ...]
    buttons: tuple[int, ...]
    hats: tuple[tuple[int, int], ...]


class JoystickLike(Protocol):
    """The part of `pygame.joystick.JoystickType` that is read."""

    def get_numaxes(self) -> int: ...
    def get_axis(self, i: int) -> float: ...
    def get_numbuttons(self) -> int: ...
    def get_button(self, i: int) -> int: ...
    def get_numhats(self) -> int: ...
    def get_hat(self, i: int) -> tuple[int, int]: ...


def read_frame(joystick: JoystickLike) -> GamepadFrame:
    """The current state of every axis, button and hat of `joystick`."""
    return GamepadFrame(
        axes=tuple(float(joystick.get_axis(i)) for i in range(joystick.get_numaxes())),
        buttons=tuple(int(joystick.get_button(i)) for i in range(joystick.get_numbuttons())),
        hats=tuple(tuple(joystick.get_hat(i)) for i in range(joystick.get_numhats())))


@dataclass(frozen=True)
class GamepadLayout:
    """Which SDL joystick axis, button and hat is which control.

    The default is an Xbox-style pad on Linux (the kernel's xpad/evdev order); `LAYOUTS` has
    the XInput order that SDL uses on Windows. Triggers rest at `trigger_rest` and read 1 fully
    pulled.
    """

    left_x: int = 0
    left_y: int = 1
    left_trigger: int = 2
    right_x: int = 3
    right_y: int = 4
    right_trigger: int = 5
    clutch_left: int = 4   # LB
    clutch_right: int = 5  # RB
    dpad_hat: int = 0
    trigger_rest: float = -1.0

    def check(self, num_axes: int, num_buttons: int, num_hats: int) -> None:
        """Raise ValueError naming the first control the pad does not have."""
        axes = ("left_x", "left_y", "left_trigger", "right_x", "right_y", "right_trigger")
        for name, count, kind in [*((a, num_axes, "axes") for a in axes),
                                  ("clutch_left", num_buttons, "buttons"),
                                  ("clutch_right", num_buttons, "buttons"),
                                  ("dpad_hat", num_hats, "hats")]:
            index = getattr(self, name)
            if not 0 <= index < count:
                raise ValueError(f"gamepad layout: {name}={index} but the pad has {count} {kind};"
                                 f" pick a layout that fits it (known: {sorted(LAYOUTS)})")


LAYOUTS: dict[str, GamepadLayout] = {
    "linux": GamepadLayout(),
    "xinput": GamepadLayout(left_trigger=4, right_x=2, right_y=3, right_trigger=5),
}


@dataclass(frozen=True)
class GamepadConfig:
    """Speeds and shaping of the gamepad device (speeds are capped by `CommandLimits`).

    Attributes:
        hand_speed_mps, hand_rate_rps: hand speed and rotation rate at full stick.
        base_vx_mps, base_vy_mps, base_yaw_rate_rps: base velocity at full stick.
        stick_deadband: per-axis stick deadband (fraction of full deflection).
        trigger_deadband: trigger travel that still reads as an open gripper.
        base_smoothing_s: time constant of the base velocity's low-pass (0: none).
    """

    hand_speed_mps: float = 0.1
    hand_rate_rps: float = 0.5
    base_vx_mps: float = 0.3
    base_vy_mps: float = 0.2
    base_yaw_rate_rps: float = 0.5
    stick_deadband: float = 0.1
    trigger_deadband: float = 0.05
    base_smoothing_s: float = 0.0

    def __post_init__(self) -> None:
        for name in ("hand_speed_mps", "hand_rate_rps", "base_vx_mps", "base_vy_mps",
                     "base_yaw_rate_rps"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("stick_deadband", "trigger_deadband"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.base_smoothing_s < 0:
            raise ValueError(f"base_smoothing_s must be >= 0, got {self.base_smoothing_s}")


@dataclass(frozen=True)
class GamepadIntent:
    """What a frame asks for, before integration and limits.

    Attributes:
        clutch: (2,) bool, left/right hand clutched (moved by the sticks).
        base_axes: (3,) forward, left, turn-left in [-1, 1] (zero while a hand is clutched).
        hand_axes: (6,) x, y, z, roll, pitch, yaw in [-1, 1] for the clutched hands.
        gripper: (2,) left/right gripper from the triggers, in [0, 1].
    """

    clutch: Tensor
    base_axes: Tensor
    hand_axes: Tensor
    gripper: Tensor


def map_frame(frame: GamepadFrame, layout: GamepadLayout, config: GamepadConfig) -> GamepadIntent:
    """The pure mapping of one frame (see the module docstring)."""
    f64 = torch.float64
    axes = torch.tensor(frame.axes, dtype=f64)
    lx, ly, rx, ry = (axes[getattr(layout, n)] for n in ("left_x", "left_y", "right_x", "right_y"))
    # SDL sticks: x right +, y down +; deadband per axis, rescaled.
    sticks = retarget.deadband(torch.stack([lx, ly, rx, ry]).clamp(-1, 1), config.stick_deadband)
    lx, ly, rx, ry = sticks.unbind()
    clutch = torch.tensor([frame.buttons[layout.clutch_left], frame.buttons[layout.clutch_right]],
                          dtype=torch.bool)
    hat_x, hat_y = frame.hats[layout.dpad_hat]
    zero = torch.zeros((), dtype=f64)
    if bool(clutch.any()):
        hand = torch.stack([-ly, -lx, -ry, zero + hat_x, zero - hat_y, -rx])
        base = torch.zeros(3, dtype=f64)
    else:
        hand = torch.zeros(6, dtype=f64)
        base = torch.stack([-ly, -lx, -rx])
    triggers = axes[[layout.left_trigger, layout.right_trigger]]
    gripper = retarget.trigger_to_gripper(triggers, config.trigger_deadband, layout.trigger_rest)
    return GamepadIntent(clutch=clutch, base_axes=base, hand_axes=hand, gripper=gripper)


class JoystickSource:
    """Reads frames from a pygame-like joystick.

    Args:
        joystick: a `pygame.joystick.JoystickType` or an object with the same methods.
        pump: called before each read; updates the joystick's state and returns False once the
            pad has been unplugged (default: always connected, for tests).
        close: releases the device.
        name: the pad's name, for messages.
    """

    def __init__(self, joystick: JoystickLike, pump: Callable[[], bool] = lambda: True,
                 close: Callable[[], None] = lambda: None, name: str = "gamepad") -> None:
        self.joystick, self._pump, self._close, self.name = joystick, pump, close, name
        self.num_axes = joystick.get_numaxes()
        self.num_buttons = joystick.get_numbuttons()
        self.num_hats = joystick.get_numhats()
        self.connected = True

    def read(self) -> GamepadFrame | None:
        """The current frame, or None once the pad is gone."""
        if self.connected and not self._pump():
            self.connected = False
        return read_frame(self.joystick) if self.connected else None

    def close(self) -> None:
        self._close()


class GamepadDevice:
    """A `CommandSource`, `TimedSource` and `RawInputSource` for a gamepad.

    Every world of the batch gets the same pad (the app drives one robot: B = 1).

    Args:
        source: where frames come from (`open_pygame_gamepad()`, or a `JoystickSource` over a
            fake joystick in tests).
        num_worlds: B.
        limits: the session's command limits (speed caps and the hand box).
        control_dt_s: the session's control period.
        config: speeds and shaping.
        layout: which axis and button is which (`LAYOUTS`).
        clock: seconds on the session's clock; a successful read is stamped with it.

    Raises:
        ValueError: the pad lacks a control the layout names.
    """

    def __init__(self, source: JoystickSource, num_worlds: int = 1,
                 limits: CommandLimits | None = None, control_dt_s: float = 0.02,
                 config: GamepadConfig | None = None, layout: GamepadLayout | None = None,
                 clock: Clock = time.monotonic) -> None:
        if num_worlds < 1:
            raise ValueError(f"num_worlds must be at least 1, got {num_worlds}")
        if control_dt_s <= 0:
            raise ValueError(f"control_dt_s must be positive, got {control_dt_s}")
        self.source, self.num_worlds = source, num_worlds
        self.dt_s, self.clock = control_dt_s, clock
        self.limits = limits = limits or CommandLimits()
        self.config = cfg = config or GamepadConfig()
        self.layout = layout or LAYOUTS["linux"]
        self.layout.check(source.num_axes, source.num_buttons, source.num_hats)
        self.hand_speed_mps = min(cfg.hand_speed_mps, limits.max_hand_speed_mps)
        self.base_max = (min(cfg.base_vx_mps, limits.max_vx_mps),
                         min(cfg.base_vy_mps, limits.max_vy_mps),
                         min(cfg.base_yaw_rate_rps, limits.max_yaw_rate_rps))
        self.box_min = torch.tensor(limits.hand_box_min_m, dtype=torch.float64)
        self.box_max = torch.tensor(limits.hand_box_max_m, dtype=torch.float64)
        n = num_worlds
        self.hand_pos = torch.zeros(n, 2, 3, dtype=torch.float64)
        self.hand_quat = torch.zeros(n, 2, 4, dtype=torch.float64)
        self.hand_quat[..., 0] = 1.0
        self.gripper = torch.zeros(n, 2, dtype=torch.float64)
        self.base_vel = torch.zeros(n, 3, dtype=torch.float64)
        # A trigger drives its gripper only once it has been seen released: some drivers
        # report 0 (half pulled, for a -1 rest) until the trigger first moves.
        self.trigger_armed = torch.zeros(2, dtype=torch.bool)
        self.frame: GamepadFrame | None = None
        self._input_time_s: float | None = None
        self._raw = {"axes": torch.zeros(n, source.num_axes, dtype=torch.float64),
                     "buttons": torch.zeros(n, source.num_buttons, dtype=torch.float64),
                     "hats": torch.zeros(n, 2 * source.num_hats, dtype=torch.float64)}

    def poll(self) -> GamepadFrame | None:
        """Read the pad now; a frame stamps the input time, an unplugged pad does not."""
        frame = self.source.read()
        if frame is not None:
            self.frame, self._input_time_s = frame, self.clock()
            layout = self.layout
            triggers = torch.tensor([frame.axes[layout.left_trigger],
                                     frame.axes[layout.right_trigger]], dtype=torch.float64)
            released = retarget.trigger_to_gripper(triggers, self.config.trigger_deadband,
                                                   layout.trigger_rest) <= 0.0
            self.trigger_armed |= released
        return frame

    def input_time_s(self) -> float | None:
        """When the pad was last read successfully (None: never)."""
        return self._input_time_s

    def raw_inputs(self) -> dict[str, Tensor]:
        """{"axes": (B, A), "buttons": (B, N), "hats": (B, 2 H)} of the last tick's frame (NaN
        where the pad was unplugged)."""
        return {k: v.clone() for k, v in self._raw.items()}

    def reset(self, obs: Observation, ids: Tensor | None = None) -> None:
        """Worlds `ids` hold their hands where they are, grippers as measured, base still."""
        ids = torch.arange(self.num_worlds) if ids is None else torch.as_tensor(ids).long()
        self.hand_pos[ids] = obs.hand_pos[ids].cpu().to(torch.float64)
        self.hand_quat[ids] = obs.hand_quat[ids].cpu().to(torch.float64)
        self.gripper[ids] = obs.gripper_pos[ids].cpu().to(torch.float64).clamp(0.0, 1.0)
        self.base_vel[ids] = 0.0
        self.poll()

    def next_command(self, obs: Observation) -> Command:
        """Read the pad and turn its frame into this tick's command."""
        frame = self.poll()
        self._record(frame)
        if frame is None:  # unplugged: hold; the watchdog sees the input go stale
            self.base_vel.zero_()
        else:
            self._apply(map_frame(frame, self.layout, self.config))
        return Command(base_vel=self.base_vel.clone(), hand_pos=self.hand_pos.clone(),
                       hand_quat=self.hand_quat.clone(), gripper=self.gripper.clone())

    def _apply(self, intent: GamepadIntent) -> None:
        sides = torch.nonzero(intent.clutch).squeeze(1)
        if len(sides):
            speed, rate = self.hand_speed_mps, self.config.hand_rate_rps
            pos, quat = retarget.jog_hand(
                self.hand_pos[:, sides], self.hand_quat[:, sides], intent.hand_axes[:3] * speed,
                intent.hand_axes[3:] * rate, self.dt_s, speed, rate, self.box_min, self.box_max)
            self.hand_pos[:, sides], self.hand_quat[:, sides] = pos, quat
        self.gripper = torch.where(self.trigger_armed, intent.gripper, self.gripper)
        target = retarget.base_velocity(intent.base_axes, *self.base_max).expand(
            self.num_worlds, 3)
        self.base_vel = retarget.smooth_position(self.base_vel, target, self.dt_s,
                                                 self.config.base_smoothing_s)

    def _record(self, frame: GamepadFrame | None) -> None:
        if frame is None:
            for value in self._raw.values():
                value.fill_(float("nan"))
            return
        f64 = torch.float64
        self._raw["axes"][:] = torch.tensor(frame.axes, dtype=f64)
        self._raw["buttons"][:] = torch.tensor(frame.buttons, dtype=f64)
        self._raw["hats"][:] = torch.tensor(frame.hats, dtype=f64).reshape(-1)

    def close(self) -> None:
        """Release the pad."""
        self.source.close()


def _import_pygame() -> Any:
    """pygame, with SDL set up for reading pads without a window."""
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")  # no window: the app's window is Qt's
    os.environ.setdefault("SDL_JOYSTICK_ALLOW_BACKGROUND_EVENTS", "1")  # read without focus
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
    return require("pygame", purpose="the gamepad device")


def open_pygame_gamepad(index: int = 0) -> JoystickSource:
    """Open gamepad `index` through pygame's SDL2 joystick API.

    Raises:
        MissingDependencyError: pygame is not installed (the `gamepad` extra).
        DeviceNotFoundError: no pad with that index is connected.
    """
    pygame = _import_pygame()
    pygame.display.init()  # pumping events needs SDL's video subsystem (dummy driver)
    pygame.joystick.init()
    count = pygame.joystick.get_count()
    if not 0 <= index < count:
        raise DeviceNotFoundError(
            f"no gamepad connected at index {index} ({count} found); plug one in (USB or "
            f"paired over Bluetooth) and check that it shows under /dev/input/ (Linux) or in "
            f"the system's game controller settings, or choose the keyboard device")
    joystick = pygame.joystick.Joystick(index)
    joystick.init()
    instance = joystick.get_instance_id()

    def pump() -> bool:
        pygame.event.pump()
        gone = any(getattr(e, "instance_id", None) == instance
                   for e in pygame.event.get(pygame.JOYDEVICEREMOVED))
        pygame.event.clear()  # nothing else reads SDL's queue: keep it empty
        return not gone

    return JoystickSource(joystick, pump=pump, close=joystick.quit, name=joystick.get_name())
