"""Teleop devices: Qt-free `CommandSource`s (also `TimedSource` and `RawInputSource`).

`DEVICES` maps a device name to a factory `(num_worlds, limits, control_dt_s, clock) -> device`;
`make_device(name, ...)` looks one up. Retargeting maths shared by all devices is in
`teleop_app.devices.retarget`.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from robot_io.protocols import Clock, CommandSource
from robot_io.types import CommandLimits
from teleop_app.devices.gamepad import GamepadDevice, open_pygame_gamepad
from teleop_app.devices.keyboard import KeyboardDevice

DeviceFactory = Callable[..., CommandSource]


def make_keyboard(num_worlds: int = 1, limits: CommandLimits | None = None,
                  control_dt_s: float = 0.02, clock: Clock = time.monotonic) -> KeyboardDevice:
    """A keyboard device with default speeds (the widget forwards its keys to it)."""
    return KeyboardDevice(num_worlds=num_worlds, limits=limits, control_dt_s=control_dt_s,
                          clock=clock)


def make_gamepad(num_worlds: int = 1, limits: CommandLimits | None = None,
                 control_dt_s: float = 0.02, clock: Clock = time.monotonic) -> GamepadDevice:
    """The first connected gamepad, through pygame (the `gamepad` extra).

    Raises:
        MissingDependencyError: pygame is not installed.
        DeviceNotFoundError: no gamepad is connected.
    """
    return GamepadDevice(open_pygame_gamepad(0), num_worlds=num_worlds, limits=limits,
                         control_dt_s=control_dt_s, clock=clock)


DEVICES: dict[str, DeviceFactory] = {"keyboard": make_keyboard, "gamepad": make_gamepad}


def make_device(name: str, num_worlds: int = 1, limits: CommandLimits | None = None,
                control_dt_s: float = 0.02, clock: Clock = time.monotonic) -> CommandSource:
    """The device registered as `name`.

    Raises:
        ValueError: unknown name (the message lists the known ones).
    """
    if name not in DEVICES:
        raise ValueError(f"unknown teleop device {name!r}; known: {sorted(DEVICES)}")
    return DEVICES[name](num_worlds=num_worlds, limits=limits, control_dt_s=control_dt_s,
                         clock=clock)
