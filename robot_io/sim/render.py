"""Offscreen images of simulated worlds with MuJoCo's OpenGL renderer.

The OpenGL backend is chosen by `MUJOCO_GL`; `robot_io` sets it to `egl` on Linux when it is
unset (headless; see README "Headless rendering" and `robot_io.sim.gl_setup`).

    image = render_world(env, world=0)              # (H, W, 3) uint8, default tracking camera
    save_png(image, "out/box_pickup.png")           # atomic
    with WorldRenderer(env) as renderer:            # one GL context for many frames (videos)
        frames = [renderer.render(0) for _ in ...]
"""

from __future__ import annotations

import io
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mujoco
import numpy as np
from PIL import Image

from robot_io.atomic import write_bytes_atomic  # re-exported: callers import it here
from robot_io.errors import RefineDpError
from robot_io.sim.backend import SimBackend
from robot_io.sim.gl_setup import HEADLESS_HINT
from robot_io.t1_model import ROOT_BODY


@dataclass(frozen=True)
class TrackingView:
    """The default camera: a free camera that follows the trunk, from the robot's front-left.

    When a scene object (a wall, a table) hides the trunk from the preferred side, the camera
    takes the first clear one of `sides_deg`, so a robot behind a door is seen from behind.

    Attributes:
        distance_m: camera distance from the look-at point.
        elevation_deg: negative looks down.
        sides_deg: where the camera stands seen from the robot, counter-clockwise from its
            forward axis, in order of preference (45: front-left, 135: back-left).
        ahead_m: the look-at point lies this far ahead of the trunk, so that the object the robot
            walks to is in view too.
        drop_m: the look-at point lies this far below the trunk (table tops are near 0.6 m).
    """

    distance_m: float = 3.0
    elevation_deg: float = -20.0
    sides_deg: tuple[float, ...] = (45.0, -45.0, 135.0, -135.0)
    ahead_m: float = 0.5
    drop_m: float = 0.15


def tracking_camera(model: mujoco.MjModel, data: mujoco.MjData,
                    view: TrackingView = TrackingView()) -> mujoco.MjvCamera:
    """A free camera placed by `view` relative to the trunk's position and heading in `data`."""
    trunk = data.body(ROOT_BODY)
    w, x, y, z = trunk.xquat
    yaw = math.atan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z))
    cam = mujoco.MjvCamera()
    cam.type = mujoco.mjtCamera.mjCAMERA_FREE
    cam.lookat[:] = trunk.xpos + np.array([view.ahead_m * math.cos(yaw),
                                           view.ahead_m * math.sin(yaw), -view.drop_m])
    cam.distance = view.distance_m
    cam.elevation = view.elevation_deg
    robot_root = int(model.body_rootid[model.body(ROOT_BODY).id])
    for side_deg in view.sides_deg:
        # MuJoCo's azimuth is the direction the camera looks in, opposite to where it stands.
        cam.azimuth = math.degrees(yaw) + side_deg + 180.0
        if _clear_line(model, data, trunk.xpos.copy(), _camera_position(cam), robot_root):
            return cam
    cam.azimuth = math.degrees(yaw) + view.sides_deg[0] + 180.0
    return cam


def _camera_position(cam: mujoco.MjvCamera) -> np.ndarray:
    """World position of a free camera (MuJoCo's convention for azimuth and elevation)."""
    az, el = math.radians(cam.azimuth), math.radians(cam.elevation)
    forward = np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)])
    return np.asarray(cam.lookat) - cam.distance * forward


def _clear_line(model: mujoco.MjModel, data: mujoco.MjData, start: np.ndarray, end: np.ndarray,
                robot_root: int, max_hits: int = 64) -> bool:
    """True when no geom outside the robot's kinematic tree lies between `start` and `end`."""
    length = float(np.linalg.norm(end - start))
    unit = (end - start) / length
    geom_id = np.zeros(1, dtype=np.int32)
    travelled = 0.0
    for _ in range(max_hits):
        # Rays skip the robot's own geoms one at a time: mj_ray can exclude only one body.
        dist = mujoco.mj_ray(model, data, start + travelled * unit, unit, None, 1, -1, geom_id)
        if dist < 0 or travelled + dist > length:
            return True
        if model.body_rootid[model.geom_bodyid[geom_id[0]]] != robot_root:
            return False
        travelled += dist + 1e-4
    return True


def _named_camera(model: mujoco.MjModel, name: str) -> mujoco.MjvCamera:
    """A fixed camera of the model by name; ValueError listing the model's cameras otherwise."""
    try:
        cam_id = model.camera(name).id
    except KeyError:
        known = [model.camera(i).name for i in range(model.ncam)]
        raise ValueError(f"unknown camera {name!r}; cameras of this scene: "
                         f"{', '.join(known) or 'none'} (or None for the tracking camera)") from None
    cam = mujoco.MjvCamera()
    cam.type = mujoco.mjtCamera.mjCAMERA_FIXED
    cam.fixedcamid = cam_id
    return cam


def _as_backend(env_or_backend: Any) -> SimBackend:
    """The backend of a `BatchedEnv` (its `.sim`), or the backend itself."""
    sim = getattr(env_or_backend, "sim", env_or_backend)
    if not (hasattr(sim, "world_model") and hasattr(sim, "world_data")):
        raise TypeError(f"expected a BatchedEnv or a simulator backend with world_model() and "
                        f"world_data(), got {type(env_or_backend).__name__}")
    return sim


def _open_renderer(model: mujoco.MjModel, width: int, height: int) -> mujoco.Renderer:
    """A `mujoco.Renderer`, with a failure to create the GL context turned into a clear error."""
    if width < 1 or height < 1:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    # The offscreen framebuffer must hold the image; `model` is our own per-world copy.
    model.vis.global_.offwidth = max(model.vis.global_.offwidth, width)
    model.vis.global_.offheight = max(model.vis.global_.offheight, height)
    try:
        return mujoco.Renderer(model, height=height, width=width)
    except (ImportError, RuntimeError, mujoco.FatalError) as exc:
        backend = os.environ.get("MUJOCO_GL", "")
        raise RefineDpError(f"cannot create an OpenGL context for offscreen rendering with "
                            f"MUJOCO_GL={backend!r} ({type(exc).__name__}: {exc}); "
                            f"{HEADLESS_HINT}") from exc


class WorldRenderer:
    """One OpenGL context and framebuffer, reused for many frames of the worlds of a backend.

    Each frame uses its world's own model (per-world colours or sizes show), drawn with the
    meshes and textures of world 0, which all worlds share.

    Args:
        env_or_backend: a `BatchedEnv` or a simulator backend.
        width, height: image size in pixels.
        view: placement of the default tracking camera.

    Raises:
        RefineDpError: no OpenGL context can be created (says which packages are needed).
    """

    def __init__(self, env_or_backend: Any, width: int = 640, height: int = 480,
                 view: TrackingView = TrackingView()) -> None:
        self.sim = _as_backend(env_or_backend)
        self.view = view
        self._renderer: mujoco.Renderer | None = _open_renderer(
            self.sim.world_model(0), width, height)
        self._option = mujoco.MjvOption()

    def render(self, world: int = 0, camera: str | None = None) -> np.ndarray:
        """(H, W, 3) uint8 image of world `world` now, from camera `camera` (None: tracking)."""
        if self._renderer is None:
            raise RuntimeError("this WorldRenderer is closed")
        num_worlds = self.sim.num_worlds
        if not 0 <= world < num_worlds:
            raise ValueError(f"world {world} out of range: there are {num_worlds} worlds")
        model = self.sim.world_model(world)
        data = self.sim.world_data(world)
        if camera is None:
            cam = tracking_camera(model, data, self.view)
        else:
            cam = _named_camera(model, camera)
        mujoco.mjv_updateScene(model, data, self._option, None, cam,
                               mujoco.mjtCatBit.mjCAT_ALL.value, self._renderer.scene)
        return self._renderer.render()

    def close(self) -> None:
        """Free the GL context now (safe to call twice)."""
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    def __enter__(self) -> WorldRenderer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def render_world(env_or_backend: Any, world: int = 0, width: int = 640, height: int = 480,
                 camera: str | None = None) -> np.ndarray:
    """One (H, W, 3) uint8 image of a world (a fresh GL context; use `WorldRenderer` for many).

    Raises:
        RefineDpError: no OpenGL context can be created (says which packages are needed).
        ValueError: bad world index, image size or camera name.
    """
    with WorldRenderer(env_or_backend, width, height) as renderer:
        return renderer.render(world, camera)


def save_png(image: np.ndarray, path: str | os.PathLike[str]) -> Path:
    """Write an (H, W, 3) uint8 image as PNG atomically (temporary file, fsync, rename).

    Creates missing parent folders. Returns the path written.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 image, got shape {image.shape} "
                         f"dtype {image.dtype}")
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return write_bytes_atomic(path, buf.getvalue())
