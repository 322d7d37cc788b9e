"""Errors of the teleop devices."""

from __future__ import annotations

from robot_io.errors import RefineDpError


class DeviceNotFoundError(RefineDpError, RuntimeError):
    """A teleop device is not connected (or was unplugged); the message says what to check."""
