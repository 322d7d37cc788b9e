"""Which OpenGL backend MuJoCo renders with (`MUJOCO_GL`), checked without importing mujoco.

MuJoCo reads `MUJOCO_GL` once, when `mujoco` is first imported, and an unknown value makes that
import fail with a RuntimeError, so every command fails, not only rendering. Entry points call
`check_mujoco_gl()` before importing anything that imports mujoco, to report it as a clear error.
`robot_io/__init__.py` sets `MUJOCO_GL=egl` on Linux when it is unset (headless, works without a
GPU through Mesa's llvmpipe).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

from robot_io.errors import RefineDpError

HEADLESS_HINT = ("for headless rendering install the Debian/Ubuntu packages libegl1 and "
                 "libgl1-mesa-dri and use MUJOCO_GL=egl (the default on Linux), or install "
                 "libosmesa6 and set MUJOCO_GL=osmesa; with a desktop session MUJOCO_GL=glfw "
                 "also works")

# The values mujoco accepts (mujoco/rendering/classic/gl_context.py of mujoco 4.0).
_ANY_PLATFORM = ("", "enable", "enabled", "on", "true", "1", "glfw",
                 "disable", "disabled", "off", "false", "0")
_PER_PLATFORM = {"linux": ("glx", "egl", "osmesa"), "win32": ("wgl",), "darwin": ("cgl",)}


def valid_mujoco_gl_values(platform: str = sys.platform) -> tuple[str, ...]:
    """The `MUJOCO_GL` values MuJoCo accepts on `platform` (a `sys.platform` string)."""
    return _ANY_PLATFORM + _PER_PLATFORM.get(_platform_key(platform), ())


def check_mujoco_gl(environ: Mapping[str, str] = os.environ,
                    platform: str = sys.platform) -> None:
    """Raise `RefineDpError` when `MUJOCO_GL` holds a value MuJoCo would refuse at import.

    Raises:
        RefineDpError: names the bad value, the accepted ones and how to render headless.
    """
    value = environ.get("MUJOCO_GL", "")
    if value.lower().strip() in valid_mujoco_gl_values(platform):
        return
    backends = ", ".join(("glfw",) + _PER_PLATFORM.get(_platform_key(platform), ()))
    raise RefineDpError(f"environment variable MUJOCO_GL={value!r} is not a backend MuJoCo "
                        f"accepts on this platform ({backends}, or unset); {HEADLESS_HINT}")


def _platform_key(platform: str) -> str:
    return "linux" if platform.startswith("linux") else platform
