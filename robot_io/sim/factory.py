"""Simulator backends by name: `make_backend("mujoco" | "warp", model, num_worlds, ...)`.

The registry is a plain dict of constructors. The Warp backend is imported only when asked for,
so importing robot_io never imports warp; without the `gpu` extra, asking for it raises
`MissingDependencyError` naming the extra to install.
"""

from __future__ import annotations

from collections.abc import Callable

import mujoco

from robot_io.optional import require
from robot_io.sim.backend import SimBackend
from robot_io.sim.mujoco_batch import MujocoBatchBackend

WARP_PURPOSE = "the MuJoCo Warp backend (backend='warp')"


def _mujoco(model: mujoco.MjModel, num_worlds: int, threads: int,
            device: str | None) -> SimBackend:
    if device not in (None, "cpu"):
        raise ValueError(f"the mujoco backend runs on the CPU only, got device={device!r}; "
                         f"use backend='warp' for a GPU")
    return MujocoBatchBackend(model, num_worlds, threads)


def _warp(model: mujoco.MjModel, num_worlds: int, threads: int,
          device: str | None) -> SimBackend:
    require("warp", "gpu", WARP_PURPOSE)
    require("mujoco_warp", "gpu", WARP_PURPOSE)
    from robot_io.sim.distributed import warp_device
    from robot_io.sim.warp_backend import WarpBackend

    return WarpBackend(model, num_worlds, device=device or warp_device())


BACKENDS: dict[str, Callable[[mujoco.MjModel, int, int, str | None], SimBackend]] = {
    "mujoco": _mujoco,
    "warp": _warp,
}
"""Backend name -> constructor(model, num_worlds, threads, device)."""


def make_backend(name: str, model: mujoco.MjModel, num_worlds: int, threads: int = 0,
                 device: str | None = None) -> SimBackend:
    """N worlds of `model` on the backend `name`.

    Args:
        name: "mujoco" (CPU, `mujoco.batch`) or "warp" (MuJoCo Warp).
        model: the compiled scene.
        num_worlds: number of worlds N.
        threads: physics threads of the mujoco backend (0: all CPUs); Warp ignores it.
        device: "cpu" for mujoco (or None); for warp "cuda", "cuda:N" or "cpu", None meaning
            `robot_io.sim.distributed.warp_device()` (cuda:LOCAL_RANK under torchrun).

    Raises:
        ValueError: an unknown backend name or a device the backend cannot use.
        MissingDependencyError: backend "warp" without mujoco_warp / warp installed.
    """
    if name not in BACKENDS:
        raise ValueError(f"unknown simulator backend {name!r}; known backends: "
                         f"{sorted(BACKENDS)}")
    return BACKENDS[name](model, num_worlds, threads, device)
