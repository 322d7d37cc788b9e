"""The live 3D view: the MuJoCo scene drawn with VTK inside Qt, updated from runner snapshots.

    view = make_world_view(live.world.model, parent)   # WorldView, or MujocoFrameView as fallback
    timer.timeout.connect(lambda: view.show_snapshot(live.snapshot()))   # cheap: stores it only
    view.frames_rendered, view.fps(), view.capture()   # (H, W, 3) uint8 of the 3D content

`WorldView` builds one VTK actor per visible geom once (meshes decimated and cached on disk by
`mesh_cache`) and, per frame, only poses its own `MjData` from the snapshot's simulator state
(`mj_setState` + `mj_kinematics`) and copies the geom poses into the actors' user matrices. A
timer at `max_fps` renders only when a snapshot newer than the drawn one has arrived, so an
idle or paused world costs nothing. VTK releases the interpreter lock while it renders
(measured here: the control loop's thread keeps running during a Render), and the per-frame
Python work is about 2 ms. Software GL (Mesa's llvmpipe) rasterises on as many threads as there
are cores, which on a 2-core machine took the control loop's core (3-20 % late ticks at 50 Hz
while the view drew); the views therefore cap llvmpipe's threads so that two cores stay free
(`limit_software_gl_threads`; late ticks then 0-0.2 %), unless `LP_NUM_THREADS` is set. What
software GL pays for per pixel was cut where it did not show: no multisampling, one light, an
unlit textured floor, a plain sky, opaque overlays (1280x800 went from 14 to 23 FPS).

Overlays: the commanded hand poses as small frames (x red, y green, z blue), a sphere at each
actual hand coloured by its gripper (green open .. red closed), the base-velocity command as a
yellow arrow on the floor from under the root in the heading frame (1 m per m/s), and a line
of text with the numbers. The camera follows the root's horizontal motion and keeps the user's
orbit and zoom (left drag orbits, right drag or the wheel zooms, middle drag pans).

`MujocoFrameView` shows MuJoCo's own offscreen frames in a label instead, for platforms where
VTK inside Qt fails; `make_world_view` picks (env `REFINE_DP_VIEW=mujoco` forces it). A failure
inside the GL driver at the first render cannot be caught from Python: that is what the
environment variable is for.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import mujoco
import numpy as np
import torch
from PyQt6.QtCore import Qt, QTimer
from PyQt6.QtGui import QImage, QPixmap
from PyQt6.QtWidgets import QLabel, QSizePolicy, QVBoxLayout, QWidget

from robot_io.math3d import quat_to_mat
from robot_io.robot_spec import T1_JOINTS
from robot_io.runner import Snapshot
from robot_io.sim.render import TrackingView, tracking_camera
from robot_io.t1_model import ROOT_BODY
from robot_io.types import Command, Observation

log = logging.getLogger(__name__)

try:  # VTK may be missing or broken: make_world_view then falls back to MujocoFrameView
    import vtkmodules.qt
    vtkmodules.qt.PyQtImpl = "PyQt6"  # QVTK would otherwise try PySide6 first
    import vedo
    import vtkmodules.vtkInteractionStyle
    import vtkmodules.vtkRenderingFreeType
    import vtkmodules.vtkRenderingOpenGL2
    from vtkmodules.qt.QVTKRenderWindowInteractor import QVTKRenderWindowInteractor
    from vtkmodules.util.numpy_support import numpy_to_vtk, vtk_to_numpy
    from vtkmodules.vtkCommonDataModel import vtkImageData
    from vtkmodules.vtkCommonMath import vtkMatrix4x4
    from vtkmodules.vtkFiltersSources import vtkPlaneSource
    from vtkmodules.vtkInteractionStyle import vtkInteractorStyleTrackballCamera
    from vtkmodules.vtkRenderingCore import (
        vtkActor,
        vtkPolyDataMapper,
        vtkRenderer,
        vtkTextActor,
        vtkTexture,
        vtkWindowToImageFilter,
    )

    from teleop_app.app.mesh_cache import floor_colors, geom_shapes, overlay_meshes
    VTK_IMPORT_ERROR: ImportError | None = None
except ImportError as exc:
    VTK_IMPORT_ERROR = exc

VIEW_ENV = "REFINE_DP_VIEW"
VIEWS = ("vtk", "mujoco")
FPS_WINDOW_S = 1.0
ARROW_M_PER_MPS = 1.0  # base-velocity arrow length per m/s of commanded speed
ARROW_Z_M = 0.01  # the arrow lies just above the floor (the trunk would hide it at root height)
FLOOR_HALF_M = 25.0
FLOOR_TILE_M = 0.5  # MuJoCo's checker on our floor: 2x2 tiles per metre (texrepeat 1, uniform)
AMBIENT = 0.4
SKY_RGB = (0.45, 0.55, 0.7)
CAMERA = TrackingView(distance_m=2.5)  # the first view; closer than the video default (3 m)
GRIP_OPEN_RGB = np.array([0.1, 0.85, 0.2])
GRIP_CLOSED_RGB = np.array([0.95, 0.15, 0.1])
# The gripper marker floats above the grasp point (along the grasp frame's z, the fingers'
# normal): at the grasp point itself closed fingers would hide it.
GRIP_MARKER_M = 0.07
SOFTWARE_GL = ("llvmpipe", "softpipe", "swrast", "software")
LEGEND = ("frames: commanded hands (x red, y green, z blue)   spheres: grippers "
          "(green open, red closed)   yellow arrow: base velocity command")


class FrameCounter:
    """Frames per second over the last `window_s` seconds (times from the caller's clock)."""

    def __init__(self, window_s: float = FPS_WINDOW_S) -> None:
        self.window_s = window_s
        self._times: deque[float] = deque()

    def record(self, t: float) -> None:
        self._times.append(t)
        self._drop(t)

    def fps(self, now: float) -> float:
        """(frames - 1) / their time span, over the frames of the last window; 0 before two."""
        self._drop(now)
        if len(self._times) < 2 or self._times[-1] <= self._times[0]:
            return 0.0
        return (len(self._times) - 1) / (self._times[-1] - self._times[0])

    def _drop(self, now: float) -> None:
        while self._times and self._times[0] < now - self.window_s:
            self._times.popleft()


@dataclass(frozen=True)
class Overlays:
    """Overlay poses in the world (4x4 homogeneous, numpy float64) from one snapshot.

    Attributes:
        root: the root (trunk) pose.
        hands: (2, 4, 4) the actual grasp-site poses, left then right.
        gripper: (2,) the measured gripper closure, 0 open .. 1 closed.
        markers: (2, 3) where the gripper markers go: `GRIP_MARKER_M` along each hand's z.
        commanded: (2, 4, 4) the commanded hand poses, or None before a command was applied.
        commanded_gripper: (2,) or None.
        base_vel: (3,) vx, vy [m/s], yaw rate [rad/s] in the heading frame, or None.
        arrow_shaft, arrow_head: poses of the base-velocity arrow's unit-length shaft (x scaled
            to the arrow's length) and of its head; None when the commanded speed is ~0.
    """

    root: np.ndarray
    hands: np.ndarray
    gripper: np.ndarray
    markers: np.ndarray
    commanded: np.ndarray | None
    commanded_gripper: np.ndarray | None
    base_vel: np.ndarray | None
    arrow_shaft: np.ndarray | None
    arrow_head: np.ndarray | None


def overlay_poses(obs: Observation, command: Command | None) -> Overlays:
    """World poses of the overlays of world 0 (actual = root pose o observed hand pose,
    commanded = root pose o commanded hand pose; the arrow in the heading frame)."""
    root = _pose(obs.root_pos[0], obs.root_quat[0])
    hands = root @ _pose(obs.hand_pos[0], obs.hand_quat[0])
    gripper = obs.gripper_pos[0].double().numpy().copy()
    markers = hands[:, :3, 3] + GRIP_MARKER_M * hands[:, :3, 2]
    if command is None:
        return Overlays(root, hands, gripper, markers, None, None, None, None, None)
    commanded = root @ _pose(command.hand_pos[0], command.hand_quat[0])
    base_vel = command.base_vel[0].double().numpy().copy()
    shaft = head = None
    speed = float(math.hypot(base_vel[0], base_vel[1]))
    if speed > 1e-3:
        yaw = math.atan2(root[1, 0], root[0, 0])  # the heading: the root's x axis, levelled
        heading = math.atan2(base_vel[1], base_vel[0]) + yaw
        rot = np.array([[math.cos(heading), -math.sin(heading), 0.0],
                        [math.sin(heading), math.cos(heading), 0.0], [0.0, 0.0, 1.0]])
        length = ARROW_M_PER_MPS * speed
        shaft = np.eye(4)
        shaft[:3, :3] = rot @ np.diag([length, 1.0, 1.0])
        shaft[:3, 3] = (root[0, 3], root[1, 3], ARROW_Z_M)
        head = np.eye(4)
        head[:3, :3] = rot
        head[:3, 3] = shaft[:3, 3] + length * rot[:, 0]
    return Overlays(root, hands, gripper, markers, commanded,
                    command.gripper[0].double().numpy().copy(),
                    base_vel, shaft, head)


def _pose(pos: torch.Tensor, quat: torch.Tensor) -> np.ndarray:
    """(..., 4, 4) homogeneous matrices from positions (..., 3) and wxyz quaternions (..., 4)."""
    out = np.zeros((*pos.shape[:-1], 4, 4))
    out[..., :3, :3] = quat_to_mat(quat.double()).numpy()
    out[..., :3, 3] = pos.double().numpy()
    out[..., 3, 3] = 1.0
    return out


def overlay_text(ov: Overlays) -> str:
    """The view's line of numbers: base command and grippers."""
    grip = "  ".join(f"{side} {'closed' if g > 0.5 else 'open'} {g:.2f}"
                     for side, g in zip("LR", np.clip(ov.gripper, 0.0, 1.0)))
    if ov.base_vel is None:
        return f"no command applied   gripper {grip}"
    vx, vy, wz = ov.base_vel
    cmd = " ".join(f"{g:.2f}" for g in ov.commanded_gripper)
    return (f"base cmd vx {vx:+.2f} vy {vy:+.2f} m/s  yaw {wz:+.2f} rad/s   "
            f"gripper {grip} (cmd {cmd})")


def grip_rgb(closure: float) -> tuple[float, float, float]:
    """Green when open, red when closed."""
    c = min(max(float(closure), 0.0), 1.0)
    return tuple(float(x) for x in (1 - c) * GRIP_OPEN_RGB + c * GRIP_CLOSED_RGB)  # type: ignore


def _check_state(model: mujoco.MjModel, snapshot: Snapshot) -> None:
    """A snapshot from another model (a rebuilt world with a new task) is refused at once."""
    state = snapshot.world_state
    size = mujoco.mj_stateSize(model, mujoco.mjtState.mjSTATE_INTEGRATION)
    if state is not None and np.shape(state) != (size,):
        raise ValueError(f"the snapshot's world_state has shape {np.shape(state)}, this view's "
                         f"model needs ({size},): make a new view for the new world")


def _pose_data(model: mujoco.MjModel, data: mujoco.MjData, state: np.ndarray) -> None:
    mujoco.mj_setState(model, data, np.asarray(state, dtype=np.float64),
                       mujoco.mjtState.mjSTATE_INTEGRATION)
    mujoco.mj_kinematics(model, data)


@dataclass(frozen=True)
class ObservedJoints:
    """Where an observation's root pose and joint angles go in the model's qpos.

    Attributes:
        root_qpos: qpos address of the root body's free joint (-1: none).
        qpos: qpos addresses of the observed joints found in the model.
        columns: their columns in `Observation.joint_pos`.
    """

    root_qpos: int
    qpos: np.ndarray
    columns: np.ndarray


def observed_joints(model: mujoco.MjModel,
                    joint_names: tuple[str, ...] = T1_JOINTS) -> ObservedJoints:
    """The qpos addresses of `joint_names` (the order of `Observation.joint_pos`)."""
    root = -1
    body = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, ROOT_BODY)
    if body >= 0 and model.body_jntnum[body] > 0:
        joint = int(model.body_jntadr[body])
        if model.jnt_type[joint] == mujoco.mjtJoint.mjJNT_FREE:
            root = int(model.jnt_qposadr[joint])
    qpos, columns = [], []
    for column, name in enumerate(joint_names):
        joint = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, name)
        if joint >= 0:
            qpos.append(int(model.jnt_qposadr[joint]))
            columns.append(column)
    return ObservedJoints(root, np.array(qpos, dtype=np.int64), np.array(columns, dtype=np.int64))


def pose_from_observation(model: mujoco.MjModel, data: mujoco.MjData, obs: Observation,
                          joints: ObservedJoints) -> None:
    """Pose `data` from an observation alone (a robot has no simulator state): the root pose
    and the joint angles; the scene objects and the fingers keep their last pose."""
    if joints.root_qpos >= 0:
        data.qpos[joints.root_qpos:joints.root_qpos + 3] = obs.root_pos[0].double().numpy()
        data.qpos[joints.root_qpos + 3:joints.root_qpos + 7] = obs.root_quat[0].double().numpy()
    data.qpos[joints.qpos] = obs.joint_pos[0].double().numpy()[joints.columns]
    mujoco.mj_kinematics(model, data)


def software_gl_threads(cpus: int) -> int:
    """llvmpipe's rasteriser threads on `cpus` cores: one core stays for the control loop and
    one for the GUI thread, which rasterises itself when the count is 0."""
    return max(cpus - 2, 0)


def limit_software_gl_threads() -> None:
    """Set `LP_NUM_THREADS` (read by Mesa when it makes its first GL context in this process;
    no effect on a GPU driver) unless it is set already."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    os.environ.setdefault("LP_NUM_THREADS", str(software_gl_threads(cpus or 1)))


class _SnapshotView(QWidget):
    """What both views share: the latest snapshot, the render timer, the frame counters."""

    def __init__(self, model: mujoco.MjModel, parent: QWidget | None, max_fps: float) -> None:
        if not (math.isfinite(max_fps) and max_fps > 0):
            raise ValueError(f"max_fps must be positive and finite, got {max_fps}")
        limit_software_gl_threads()  # before the view makes its GL context
        super().__init__(parent)
        self.model = model
        self.data = mujoco.MjData(model)  # our own: the loop's data is never touched here
        mujoco.mj_kinematics(model, self.data)  # the model's default pose until a snapshot
        self._joints = observed_joints(model)
        self.frames_rendered = 0
        self.frames_skipped = 0  # timer ticks with no new snapshot (nothing drawn)
        self._pending: Snapshot | None = None
        self._drawn: Snapshot | None = None
        self._counter = FrameCounter()
        self._timer = QTimer(self)
        self._timer.setInterval(max(1, round(1000.0 / max_fps)))
        self._timer.timeout.connect(self.render_pending)
        self._timer.start()

    def show_snapshot(self, snapshot: Snapshot) -> None:
        """Keep `snapshot` for the next frame (cheap; GUI thread). Raises ValueError for a
        snapshot whose simulator state does not fit this view's model."""
        _check_state(self.model, snapshot)
        self._pending = snapshot

    def fps(self) -> float:
        """Frames drawn per second over about the last second."""
        return self._counter.fps(time.monotonic())

    def render_pending(self) -> bool:
        """Draw the latest snapshot if it is new and the view is shown; returns whether it drew."""
        snap = self._pending
        if snap is None or snap is self._drawn or not self.isVisible():
            self.frames_skipped += 1
            return False
        self._drawn = snap
        if snap.world_state is not None:
            _pose_data(self.model, self.data, snap.world_state)
        elif snap.obs is not None:
            pose_from_observation(self.model, self.data, snap.obs, self._joints)
        self._draw(snap)
        self.frames_rendered += 1
        self._counter.record(time.monotonic())
        return True

    def shutdown(self) -> None:
        """Stop rendering and free the GL resources (call before the window closes)."""
        self._timer.stop()

    def _draw(self, snapshot: Snapshot) -> None:
        raise NotImplementedError


class WorldView(_SnapshotView):
    """The scene in VTK, embedded in Qt (see the module docstring).

    Args:
        model: the scene's compiled model (e.g. `LiveSession.world.model`).
        parent: the Qt parent.
        decimate: fraction of each mesh's faces drawn, in (0, 1].
        max_fps: the most frames per second it draws.
        cache_dir: the decimated-mesh cache (default `mesh_cache.mesh_cache_dir()`).
        antialias: 4x multisampling; None: on unless the GL is software (llvmpipe), where it
            halves the frame rate.

    Raises:
        ImportError: VTK or vedo cannot be imported.
        ValueError: bad `decimate` or `max_fps`.
    """

    def __init__(self, model: mujoco.MjModel, parent: QWidget | None = None,
                 decimate: float = 0.1, max_fps: float = 30.0,
                 cache_dir: Path | None = None, antialias: bool | None = None) -> None:
        if VTK_IMPORT_ERROR is not None:
            raise ImportError(f"the VTK view needs vtk and vedo: {VTK_IMPORT_ERROR}")
        shapes = geom_shapes(model, decimate, cache_dir)  # before any widget exists: may raise
        super().__init__(model, parent, max_fps)
        self._vtk = QVTKRenderWindowInteractor(self)
        # The operator's keys belong to the window (teleop); VTK's own keys ('e' exits, 'w'
        # wireframe, ...) must never fire.
        self._vtk.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self._vtk)
        self.renderer = vtkRenderer()
        self.renderer.SetBackground(*SKY_RGB)  # a gradient sky cost 10 % of a frame
        # VTK's single headlight: every extra light costs per pixel on software GL (a light
        # kit of four made 960x600 about 20 % slower here).
        self.window = self._vtk.GetRenderWindow()
        self.window.AddRenderer(self.renderer)
        interactor = self.window.GetInteractor()
        interactor.SetInteractorStyle(vtkInteractorStyleTrackballCamera())
        interactor.RemoveObservers("CharEvent")
        camera = self.renderer.GetActiveCamera()
        camera.SetViewAngle(float(model.vis.global_.fovy))
        camera.SetViewUp(0.0, 0.0, 1.0)
        self._geom_ids = np.array([s.geom_id for s in shapes], dtype=np.int64)
        robot_tree = _robot_tree(model)
        self._robot_actors, self._geom_matrices = [], []
        for s in shapes:
            actor, matrix = self._add_mesh(s.verts, s.faces, s.rgba)
            self._geom_matrices.append(matrix)
            if model.body_rootid[model.geom_bodyid[s.geom_id]] == robot_tree:
                self._robot_actors.append(actor)
        self._pose_geoms()  # the default pose until the first snapshot
        self._floor = self._add_floor(model)
        self._overlays = self._add_overlays()
        self._text = vtkTextActor()
        self._text.GetTextProperty().SetFontSize(15)
        self._text.GetTextProperty().SetColor(1.0, 1.0, 1.0)
        self._text.SetDisplayPosition(10, 10)
        self.renderer.AddViewProp(self._text)
        legend = vtkTextActor()
        legend.SetInput(LEGEND)
        legend.GetTextProperty().SetFontSize(12)
        legend.GetTextProperty().SetColor(0.85, 0.9, 1.0)
        legend.SetDisplayPosition(10, 32)
        self.renderer.AddViewProp(legend)
        self._anchor: np.ndarray | None = None  # root x, y the camera was last moved with
        self._started = False
        self._antialias = antialias

    # -- building (once) ---------------------------------------------------------------------
    def _add_mesh(self, verts: np.ndarray, faces: np.ndarray,
                  rgba: tuple[float, ...]) -> tuple[vtkActor, vtkMatrix4x4]:
        """An actor for one geom, and the matrix that poses it (set per frame)."""
        mesh = vedo.Mesh([verts, faces]).compute_normals(points=True, cells=False,
                                                         feature_angle=45)
        mesh.color(rgba[:3]).alpha(rgba[3]).lighting("default")
        # Ambient light is free; with the headlight alone, surfaces seen at a grazing angle
        # (a table top from 20 degrees above) would be almost black.
        mesh.actor.GetProperty().SetAmbient(AMBIENT)
        mesh.actor.GetProperty().SetDiffuse(1.0 - AMBIENT)
        matrix = vtkMatrix4x4()
        mesh.actor.SetUserMatrix(matrix)
        self.renderer.AddActor(mesh.actor)
        return mesh.actor, matrix

    def _add_floor(self, model: mujoco.MjModel) -> vtkActor:
        """A large checker floor: one quad with a repeated 2x2 texture, unlit (a lit floor of
        a quad per tile cost 40 % of a frame on software GL)."""
        plane = vtkPlaneSource()  # texture coordinates 0..1 over the plane
        plane.SetOrigin(-FLOOR_HALF_M, -FLOOR_HALF_M, 0.0)
        plane.SetPoint1(FLOOR_HALF_M, -FLOOR_HALF_M, 0.0)
        plane.SetPoint2(-FLOOR_HALF_M, FLOOR_HALF_M, 0.0)
        plane.Update()
        polydata = plane.GetOutput()
        periods = FLOOR_HALF_M / FLOOR_TILE_M  # 2x2 tiles per texture repeat
        tcoords = vtk_to_numpy(polydata.GetPointData().GetTCoords()) * periods
        polydata.GetPointData().SetTCoords(numpy_to_vtk(tcoords.astype(np.float32), deep=True))
        first, second = (np.asarray(c) * 255 for c in floor_colors(model))
        image = vtkImageData()
        image.SetDimensions(2, 2, 1)
        texels = np.array([first, second, second, first]).astype(np.uint8)
        image.GetPointData().SetScalars(numpy_to_vtk(texels, deep=True))
        texture = vtkTexture()
        texture.SetInputData(image)
        texture.InterpolateOff()
        texture.RepeatOn()
        mapper = vtkPolyDataMapper()
        mapper.SetInputData(polydata)
        mapper.ScalarVisibilityOff()
        actor = vtkActor()
        actor.SetMapper(mapper)
        actor.SetTexture(texture)
        actor.GetProperty().LightingOff()
        actor.GetProperty().SetColor(1.0, 1.0, 1.0)  # the texture's colours as they are
        self.renderer.AddActor(actor)
        return actor

    def _add_overlays(self) -> dict[str, list]:
        """Commanded hand frames, gripper spheres and the base arrow; matrices and actors."""
        parts = overlay_meshes()
        out: dict[str, list] = {}
        for name, count in (("frame", 2), ("sphere", 2), ("shaft", 1), ("head", 1)):
            out[name] = []
            for _ in range(count):
                mesh = parts[name].clone()
                matrix = vtkMatrix4x4()
                mesh.actor.SetUserMatrix(matrix)
                mesh.actor.VisibilityOff()
                self.renderer.AddActor(mesh.actor)
                out[name].append((mesh.actor, matrix))
        return out

    # -- per frame -----------------------------------------------------------------------------
    def _draw(self, snapshot: Snapshot) -> None:
        self._ensure_started()
        self._pose_geoms()
        if snapshot.obs is not None:
            ov = overlay_poses(snapshot.obs, snapshot.command)
            self._draw_overlays(ov)
            self._follow(ov.root[:3, 3])
        elif self._robot_actors:
            self._follow(self.data.body(ROOT_BODY).xpos.copy())
        self.window.Render()

    def _pose_geoms(self) -> None:
        """Copy the geom poses of `self.data` into the actors' matrices."""
        ids = self._geom_ids
        poses = np.zeros((len(ids), 4, 4))
        poses[:, :3, :3] = self.data.geom_xmat[ids].reshape(-1, 3, 3)
        poses[:, :3, 3] = self.data.geom_xpos[ids]
        poses[:, 3, 3] = 1.0
        for matrix, pose in zip(self._geom_matrices, poses.reshape(-1, 16)):
            matrix.DeepCopy(pose)

    def _draw_overlays(self, ov: Overlays) -> None:
        def place(name: str, i: int, pose: np.ndarray | None) -> vtkActor:
            actor, matrix = self._overlays[name][i]
            actor.SetVisibility(pose is not None)
            if pose is not None:
                matrix.DeepCopy(pose.ravel())
            return actor
        for i in range(2):
            place("frame", i, None if ov.commanded is None else ov.commanded[i])
            marker = np.eye(4)
            marker[:3, 3] = ov.markers[i]
            sphere = place("sphere", i, marker)
            sphere.GetProperty().SetColor(*grip_rgb(ov.gripper[i]))
        place("shaft", 0, ov.arrow_shaft)
        place("head", 0, ov.arrow_head)
        text = overlay_text(ov)
        if text != self._text.GetInput():
            self._text.SetInput(text)
        # The floor moves with the robot by whole checker periods, so it never ends.
        period = 2 * FLOOR_TILE_M
        self._floor.SetPosition(period * round(ov.root[0, 3] / period),
                                period * round(ov.root[1, 3] / period), 0.0)

    def _follow(self, root: np.ndarray) -> None:
        """Translate the camera with the root's x, y; keep the user's orbit and zoom."""
        camera = self.renderer.GetActiveCamera()
        if self._anchor is None:
            self._place_camera()
        else:
            dx, dy = root[:2] - self._anchor
            fx, fy, fz = camera.GetFocalPoint()
            px, py, pz = camera.GetPosition()
            camera.SetFocalPoint(fx + dx, fy + dy, fz)
            camera.SetPosition(px + dx, py + dy, pz)
        self._anchor = np.array(root[:2], dtype=float)
        self.renderer.ResetCameraClippingRange()

    def _place_camera(self) -> None:
        """The first view: MuJoCo's tracking view of the posed robot (`robot_io.sim.render`)."""
        cam = tracking_camera(self.model, self.data, CAMERA)
        az, el = math.radians(cam.azimuth), math.radians(cam.elevation)
        forward = np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az),
                            math.sin(el)])
        lookat = np.asarray(cam.lookat, dtype=float)
        camera = self.renderer.GetActiveCamera()
        camera.SetFocalPoint(*lookat)
        camera.SetPosition(*(lookat - cam.distance * forward))
        camera.SetViewUp(0.0, 0.0, 1.0)

    def reset_camera(self) -> None:
        """Back to the default view of the robot at the next frame."""
        self._anchor = None

    def _ensure_started(self) -> None:
        if not self._started:
            self._vtk.Initialize()
            self._vtk.Start()
            antialias = self._antialias
            if antialias is None:
                antialias = not is_software_gl(self.window.ReportCapabilities())
            self.window.SetMultiSamples(4 if antialias else 0)
            self._started = True

    # -- images --------------------------------------------------------------------------------
    def capture(self) -> np.ndarray:
        """(H, W, 3) uint8 of the 3D content as last drawn (rendered again from the back
        buffer; `QWidget.grab` cannot see GL content).

        Raises:
            RuntimeError: the view was never shown and drawn.
        """
        if not self._started:
            raise RuntimeError("the 3D view has not drawn yet: show it and give it a snapshot")
        grabber = vtkWindowToImageFilter()
        grabber.SetInput(self.window)
        grabber.SetInputBufferTypeToRGB()
        grabber.ReadFrontBufferOff()
        grabber.Update()
        image = grabber.GetOutput()
        w, h, _ = image.GetDimensions()
        pixels = vtk_to_numpy(image.GetPointData().GetScalars()).reshape(h, w, 3)
        return np.ascontiguousarray(pixels[::-1])  # VTK's rows run bottom-up

    def set_robot_visible(self, visible: bool) -> None:
        """Show or hide the robot's geoms (the scene objects and overlays stay): for tests,
        and for an operator who wants to see the command overlays alone."""
        for actor in self._robot_actors:
            actor.SetVisibility(visible)

    def shutdown(self) -> None:
        super().shutdown()
        self._vtk.Finalize()


def _robot_tree(model: mujoco.MjModel) -> int:
    """The root body id of the robot's kinematic tree (-1 when the model has no robot)."""
    try:
        return int(model.body_rootid[model.body(ROOT_BODY).id])
    except KeyError:
        return -1


def is_software_gl(capabilities: str) -> bool:
    """Whether VTK's `ReportCapabilities()` text names a software rasteriser."""
    renderer = next((line for line in capabilities.splitlines()
                     if "renderer string" in line.lower()), "")
    return any(name in renderer.lower() for name in SOFTWARE_GL)


class MujocoFrameView(_SnapshotView):
    """The fallback: MuJoCo's offscreen frames (its own GL context) shown in a label.

    Args:
        model: the scene's compiled model.
        parent: the Qt parent.
        max_fps: the most frames per second it draws.
        width, height: the rendered image size, at most the model's offscreen buffer
            (`model.vis.global_.offwidth` x `offheight`); the label scales it to fit.

    Raises:
        ImportError, RuntimeError or mujoco.FatalError: MuJoCo cannot make a GL context
            (`MUJOCO_GL`; see README "Headless rendering").
    """

    def __init__(self, model: mujoco.MjModel, parent: QWidget | None = None,
                 max_fps: float = 30.0, width: int = 960, height: int = 600) -> None:
        super().__init__(model, parent, max_fps)
        width = min(width, int(model.vis.global_.offwidth))
        height = min(height, int(model.vis.global_.offheight))
        self._renderer: mujoco.Renderer | None = mujoco.Renderer(model, height, width)
        self._label = QLabel(self)
        self._label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self._label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Ignored)
        self._label.setStyleSheet("background: #1a1e28")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self._label)
        self._frame: np.ndarray | None = None

    def _draw(self, snapshot: Snapshot) -> None:
        if self._renderer is None:
            return
        mujoco.mj_camlight(self.model, self.data)
        camera = tracking_camera(self.model, self.data, CAMERA)
        self._renderer.update_scene(self.data, camera=camera)
        if snapshot.obs is not None:
            _add_mujoco_overlays(self._renderer.scene,
                                 overlay_poses(snapshot.obs, snapshot.command))
        frame = self._renderer.render()
        self._frame = frame
        h, w, _ = frame.shape
        image = QImage(frame.data, w, h, 3 * w, QImage.Format.Format_RGB888)
        pixmap = QPixmap.fromImage(image)  # copies: `frame` may go
        self._label.setPixmap(pixmap.scaled(self._label.size(),
                                            Qt.AspectRatioMode.KeepAspectRatio,
                                            Qt.TransformationMode.SmoothTransformation))

    def capture(self) -> np.ndarray:
        """(H, W, 3) uint8: the last frame drawn.

        Raises:
            RuntimeError: nothing was drawn yet.
        """
        if self._frame is None:
            raise RuntimeError("the view has not drawn yet: show it and give it a snapshot")
        return self._frame.copy()

    def shutdown(self) -> None:
        super().shutdown()
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None


def _add_mujoco_overlays(scene: mujoco.MjvScene, ov: Overlays) -> None:
    """The same overlays as MuJoCo decor geoms (arrows and spheres) appended to `scene`."""
    def add(kind: int, rgba: tuple[float, ...], start: np.ndarray, end: np.ndarray | None,
            width: float) -> None:
        if scene.ngeom >= scene.maxgeom:
            return
        geom = scene.geoms[scene.ngeom]
        mujoco.mjv_initGeom(geom, kind, np.full(3, width), np.asarray(start, float),
                            np.eye(3).ravel(), np.asarray(rgba, np.float32))
        if end is not None:
            mujoco.mjv_connector(geom, kind, width, start, end)
        scene.ngeom += 1
    axes_rgba = ((0.9, 0.1, 0.1, 1), (0.1, 0.8, 0.1, 1), (0.15, 0.3, 0.95, 1))
    for i in range(2):
        add(mujoco.mjtGeom.mjGEOM_SPHERE, (*grip_rgb(ov.gripper[i]), 1.0), ov.markers[i],
            None, 0.03)
        if ov.commanded is not None:
            origin = ov.commanded[i][:3, 3]
            for axis in range(3):
                add(mujoco.mjtGeom.mjGEOM_ARROW, axes_rgba[axis], origin,
                    origin + 0.12 * ov.commanded[i][:3, axis], 0.008)
    if ov.arrow_shaft is not None:
        start = ov.arrow_shaft[:3, 3]
        add(mujoco.mjtGeom.mjGEOM_ARROW, (1.0, 0.85, 0.1, 1.0), start,
            start + ov.arrow_shaft[:3, 0], 0.02)


def make_world_view(model: mujoco.MjModel, parent: QWidget | None = None, prefer: str = "vtk",
                    max_fps: float = 30.0) -> QWidget:
    """The VTK `WorldView`, or `MujocoFrameView` when VTK cannot be imported or set up (logged)
    or when asked for (`prefer="mujoco"`, or the environment variable REFINE_DP_VIEW=mujoco,
    which wins over `prefer`).

    Raises:
        ValueError: `prefer` or the environment variable names no known view.
    """
    choice = os.environ.get(VIEW_ENV) or prefer
    if choice not in VIEWS:
        raise ValueError(f"unknown 3D view {choice!r} (from {VIEW_ENV} or prefer); "
                         f"known: {', '.join(VIEWS)}")
    if choice == "vtk":
        try:
            return WorldView(model, parent, max_fps=max_fps)
        except (ImportError, RuntimeError, OSError) as exc:
            log.warning("the VTK 3D view is not available (%s); showing MuJoCo's frames "
                        "instead", exc)
    return MujocoFrameView(model, parent, max_fps=max_fps)
