"""The app's 3D view (teleop_app.app.world_view, mesh_cache).

Pure parts run anywhere: which geoms of the real box_pickup scene are drawn, the decimation and
its disk cache, primitive shapes, the overlay maths against hand-computed poses, the frame
counter. The MuJoCo fallback view runs here under the offscreen Qt platform (its GL context is
MuJoCo's own). The VTK view needs a real X display: it runs in a child process on an Xvfb of
its own (a crash inside the GL driver then fails one test instead of ending the run), shows the
view in a real QMainWindow and reports pixel statistics of its captures as JSON, which the
tests below check.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import mujoco
import numpy as np
import pytest
import torch

pytest.importorskip("PyQt6")
pytest.importorskip("vedo")
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from robot_io.control.reference import ReferenceController
from robot_io.env import BatchedEnv
from robot_io.runner import RealtimeRunner, Snapshot
from robot_io.session import Session
from robot_io.types import Command, Observation
from teleop_app.app import mesh_cache, world_view
from teleop_app.app.mesh_cache import geom_shapes, primitive, visible_geoms
from teleop_app.app.world_view import (
    FrameCounter,
    MujocoFrameView,
    grip_rgb,
    is_software_gl,
    limit_software_gl_threads,
    make_world_view,
    overlay_poses,
    overlay_text,
    software_gl_threads,
)

pytestmark = pytest.mark.qt

HAND_OFFSET_M = (0.25, 0.0, 0.25)  # the commanded hands: this far from where they started


class Reach:
    """A CommandSource: hands to their start + HAND_OFFSET_M (root frame), walk 0.3 m/s
    forward and 0.1 m/s left, left gripper open, right closed."""

    def __init__(self) -> None:
        self.start: torch.Tensor | None = None

    def reset(self, obs: Observation, ids: torch.Tensor | None = None) -> None:
        self.start = obs.hand_pos.clone()

    def next_command(self, obs: Observation) -> Command:
        b = obs.num_worlds
        return Command(base_vel=torch.tensor([[0.3, 0.1, 0.0]], dtype=torch.float64).expand(b, 3),
                       hand_pos=self.start + torch.tensor(HAND_OFFSET_M, dtype=torch.float64),
                       hand_quat=obs.hand_quat.clone(),
                       gripper=torch.tensor([[0.0, 1.0]], dtype=torch.float64).expand(b, 2))


def live_snapshot(env: BatchedEnv, ticks: int) -> Snapshot:
    """A real runner snapshot after `ticks` ticks (run on this thread, unpaced)."""
    session = Session(env, Reach(), ReferenceController(env))
    session.start_episodes()
    runner = RealtimeRunner(session, sleep=lambda s: None, spin_s=0.0, safe_stop=False)
    runner.run(max_passes=ticks)
    return runner.latest()


def moved(model: mujoco.MjModel, snap: Snapshot, dx_m: float) -> Snapshot:
    """`snap` with the robot's root shifted along x in the simulator state only."""
    data = mujoco.MjData(model)
    spec = mujoco.mjtState.mjSTATE_INTEGRATION
    mujoco.mj_setState(model, data, snap.world_state, spec)
    data.qpos[model.jnt_qposadr[model.body("Trunk").jntadr[0]]] += dx_m
    state = np.zeros(mujoco.mj_stateSize(model, spec))
    mujoco.mj_getState(model, data, state, spec)
    return dataclasses.replace(snap, world_state=state)


@pytest.fixture(scope="module")
def env() -> BatchedEnv:
    return BatchedEnv("box_pickup", 1, threads=1)


# -- what is drawn ----------------------------------------------------------------------------
def test_box_pickup_draws_the_visual_geoms_once_and_no_collision_or_hidden_ones(env) -> None:
    m = env.model
    ids = visible_geoms(m)
    types = [int(m.geom_type[i]) for i in ids]
    # 30 T1 meshes minus the two hidden rubber hands (group 5); per hand a palm and two fingers;
    # the table's top and four legs; the box. Not the floor plane (drawn as the view's floor),
    # not the transparent collision boxes/capsules (alpha 0), not group 3 (pelvis, foot rails).
    assert types.count(mujoco.mjtGeom.mjGEOM_MESH) == 28
    assert len(ids) == 28 + 2 * 3 + 5 + 1
    names = {m.geom(i).name for i in ids}
    assert {"left_palm", "right_finger_b", "table_top", "table_leg3", "box"} <= names
    assert not {"floor", "pelvis", "L_rail_1"} & names
    assert all(m.geom_group[i] <= 2 and m.geom_rgba[i, 3] > 0 for i in ids)


def test_decimation_keeps_about_a_tenth_of_the_faces_and_the_second_build_hits_the_cache(
        env, tmp_path, monkeypatch) -> None:
    m = env.model
    shapes = geom_shapes(m, decimate=0.1, cache_dir=tmp_path)
    meshes = [s for s in shapes if m.geom_type[s.geom_id] == mujoco.mjtGeom.mjGEOM_MESH]
    full = sum(int(m.mesh_facenum[m.geom_dataid[s.geom_id]]) for s in meshes)
    kept = sum(len(s.faces) for s in meshes)
    assert 0.09 <= kept / full <= 0.12, (kept, full)
    for s in meshes:  # each mesh: about 10 %, small ones keep MIN_FACES
        n = int(m.mesh_facenum[m.geom_dataid[s.geom_id]])
        assert len(s.faces) <= max(0.1 * n * 1.05 + 2, mesh_cache.MIN_FACES), (n, len(s.faces))
        assert s.faces.max() < len(s.verts) and s.verts.dtype == np.float32
    files = sorted(tmp_path.glob("*.npz"))
    assert len(files) == 28  # one per decimated mesh, named by its content hash

    def no_decimation(*args, **kwargs):
        raise AssertionError("decimated again although the cache holds the mesh")
    monkeypatch.setattr(mesh_cache.vedo.Mesh, "decimate", no_decimation)
    again = geom_shapes(m, decimate=0.1, cache_dir=tmp_path)
    for a, b in zip(shapes, again, strict=True):
        assert a.geom_id == b.geom_id and a.rgba == b.rgba
        np.testing.assert_array_equal(a.verts, b.verts)
        np.testing.assert_array_equal(a.faces, b.faces)


def test_a_damaged_cache_file_is_rebuilt(env, tmp_path, caplog) -> None:
    verts, faces = mesh_cache.model_mesh(env.model, 0)
    good = mesh_cache.decimated(verts, faces, 0.1, tmp_path)
    path = tmp_path / f"{mesh_cache.cache_key(verts, faces, 0.1)}.npz"
    intact = path.read_bytes()
    bad_faces = np.full((4, 3), len(verts) + 7, np.int32)  # indices past the vertices
    damaged = [b"not a zip file", intact[: len(intact) // 2]]
    with open(tmp_path / "bad.npz", "wb") as f:
        np.savez(f, verts=good[0], faces=bad_faces)
    damaged.append((tmp_path / "bad.npz").read_bytes())
    for content in damaged:
        path.write_bytes(content)
        with caplog.at_level(logging.WARNING, logger=mesh_cache.__name__):
            caplog.clear()
            rebuilt = mesh_cache.decimated(verts, faces, 0.1, tmp_path)
        assert "rebuilding" in caplog.text
        np.testing.assert_array_equal(rebuilt[1], good[1])
        assert path.read_bytes() != content  # rewritten with a valid mesh
        np.testing.assert_array_equal(np.load(path)["faces"], good[1])


def test_bad_decimation_fraction_is_refused(env, tmp_path) -> None:
    for bad in (0.0, -0.5, 1.5):
        with pytest.raises(ValueError, match="fraction of faces"):
            geom_shapes(env.model, decimate=bad, cache_dir=tmp_path)


def test_primitives_have_mujocos_sizes() -> None:
    g = mujoco.mjtGeom

    def extent(gtype, size):
        verts, faces = primitive(gtype, np.array(size, dtype=float))
        assert faces.shape[1] == 3 and faces.max() < len(verts)
        return np.round(verts.min(0), 3), np.round(verts.max(0), 3)
    lo, hi = extent(g.mjGEOM_BOX, (0.1, 0.2, 0.3))  # half extents
    np.testing.assert_allclose(hi, (0.1, 0.2, 0.3))
    np.testing.assert_allclose(lo, -hi)
    _, hi = extent(g.mjGEOM_CAPSULE, (0.05, 0.2, 0))  # radius, half length along z
    np.testing.assert_allclose(hi, (0.05, 0.05, 0.25), atol=2e-3)
    _, hi = extent(g.mjGEOM_CYLINDER, (0.05, 0.2, 0))
    np.testing.assert_allclose(hi, (0.05, 0.05, 0.2), atol=2e-3)
    _, hi = extent(g.mjGEOM_ELLIPSOID, (0.1, 0.2, 0.3))
    np.testing.assert_allclose(hi, (0.1, 0.2, 0.3), atol=2e-3)
    assert primitive(g.mjGEOM_HFIELD, np.ones(3)) is None


# -- overlays ---------------------------------------------------------------------------------
def _obs(root_pos, root_quat, hand_pos, gripper=(0.0, 1.0)) -> Observation:
    def t(x):
        return torch.tensor([x], dtype=torch.float64)
    ident = [1.0, 0.0, 0.0, 0.0]
    return Observation(time_s=t(0.0), joint_pos=torch.zeros(1, 29), joint_vel=torch.zeros(1, 29),
                       gripper_pos=t(list(gripper)), root_pos=t(root_pos), root_quat=t(root_quat),
                       root_lin_vel=t([0.0] * 3), root_ang_vel=t([0.0] * 3),
                       projected_gravity=t([0.0, 0.0, -1.0]), hand_pos=t(hand_pos),
                       hand_quat=t([ident, ident]), foot_pos=t([[0.0] * 3] * 2),
                       foot_quat=t([ident, ident]), task={})


def test_overlay_poses_compose_the_root_pose_with_the_hand_poses_by_hand() -> None:
    c, s = np.cos(np.pi / 4), np.sin(np.pi / 4)
    yaw90 = [c, 0.0, 0.0, s]  # +90 degrees about z: root x -> world y, root y -> world -x
    obs = _obs([1.0, 2.0, 0.6], yaw90, [[0.3, 0.2, 0.0], [0.3, -0.2, 0.1]], gripper=(0.25, 1.0))
    cmd = Command(base_vel=torch.tensor([[0.5, 0.0, 0.2]], dtype=torch.float64),
                  hand_pos=torch.tensor([[[0.4, 0.2, 0.0], [0.3, -0.2, 0.2]]], dtype=torch.float64),
                  hand_quat=torch.tensor([[[1.0, 0, 0, 0], [c, s, 0, 0]]], dtype=torch.float64),
                  gripper=torch.tensor([[0.0, 1.0]], dtype=torch.float64))
    ov = overlay_poses(obs, cmd)
    np.testing.assert_allclose(ov.hands[0][:3, 3], [1.0 - 0.2, 2.0 + 0.3, 0.6], atol=1e-12)
    np.testing.assert_allclose(ov.hands[1][:3, 3], [1.0 + 0.2, 2.0 + 0.3, 0.7], atol=1e-12)
    np.testing.assert_allclose(ov.commanded[0][:3, 3], [0.8, 2.4, 0.6], atol=1e-12)
    np.testing.assert_allclose(ov.commanded[1][:3, 3], [1.2, 2.3, 0.8], atol=1e-12)
    # right commanded hand: root yaw 90 then 90 about its own x: its z axis points to world +x
    np.testing.assert_allclose(ov.commanded[1][:3, 2], [1.0, 0.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(ov.gripper, [0.25, 1.0])
    marker = world_view.GRIP_MARKER_M  # above each hand along its z (identity in the root frame)
    np.testing.assert_allclose(ov.markers[0], [0.8, 2.3, 0.6 + marker], atol=1e-12)
    # vx 0.5 in the heading frame = world +y; 1 m per m/s, on the floor under the root
    np.testing.assert_allclose(ov.arrow_shaft[:3, 3], [1.0, 2.0, world_view.ARROW_Z_M])
    np.testing.assert_allclose(ov.arrow_shaft[:3, 0], [0.0, 0.5, 0.0], atol=1e-12)
    np.testing.assert_allclose(ov.arrow_head[:3, 3], [1.0, 2.5, world_view.ARROW_Z_M], atol=1e-12)
    assert overlay_text(ov).startswith("base cmd vx +0.50 vy +0.00 m/s  yaw +0.20 rad/s")
    assert "L open 0.25  R closed 1.00 (cmd 0.00 1.00)" in overlay_text(ov)


def test_no_command_or_standing_still_draws_no_arrow() -> None:
    obs = _obs([0.0, 0.0, 0.6], [1.0, 0, 0, 0], [[0.3, 0.2, 0.0], [0.3, -0.2, 0.0]])
    ov = overlay_poses(obs, None)
    assert ov.commanded is None and ov.arrow_shaft is None and ov.base_vel is None
    assert overlay_text(ov).startswith("no command applied")
    still = Command(base_vel=torch.zeros(1, 3, dtype=torch.float64),
                    hand_pos=obs.hand_pos.clone(), hand_quat=obs.hand_quat.clone(),
                    gripper=torch.zeros(1, 2, dtype=torch.float64))
    assert overlay_poses(obs, still).arrow_shaft is None


def test_a_robot_without_simulator_state_is_posed_from_its_observation(env) -> None:
    snap = live_snapshot(env, 5)
    data = mujoco.MjData(env.model)
    joints = world_view.observed_joints(env.model)
    assert len(joints.qpos) == 29 and joints.root_qpos == 0
    world_view.pose_from_observation(env.model, data, snap.obs, joints)
    ov = overlay_poses(snap.obs, snap.command)  # the hands the observation reports
    for i, side in enumerate(("left", "right")):
        np.testing.assert_allclose(data.site(f"{side}_hand").xpos, ov.hands[i][:3, 3], atol=1e-9)
    np.testing.assert_allclose(data.body("Trunk").xpos, snap.obs.root_pos[0].numpy())


def test_gripper_colour_and_frame_counter() -> None:
    assert grip_rgb(0.0) == pytest.approx(tuple(world_view.GRIP_OPEN_RGB))
    assert grip_rgb(1.0) == pytest.approx(tuple(world_view.GRIP_CLOSED_RGB))
    assert grip_rgb(7.0) == grip_rgb(1.0)
    counter = FrameCounter(window_s=1.0)
    assert counter.fps(0.0) == 0.0
    for t in (10.0, 10.1, 10.2, 10.3, 10.5):  # 4 intervals in 0.5 s
        counter.record(t)
    assert counter.fps(10.5) == pytest.approx(8.0)
    assert counter.fps(11.25) == pytest.approx(1 / 0.2)  # 10.3 and 10.5 are left: 1 interval
    assert counter.fps(20.0) == 0.0


def test_software_gl_leaves_two_cores_to_the_loop_and_the_gui(monkeypatch) -> None:
    assert [software_gl_threads(n) for n in (1, 2, 4, 16)] == [0, 0, 2, 14]
    monkeypatch.setenv("LP_NUM_THREADS", "3")
    limit_software_gl_threads()
    assert os.environ["LP_NUM_THREADS"] == "3"  # the user's setting wins
    monkeypatch.delenv("LP_NUM_THREADS")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    limit_software_gl_threads()
    assert os.environ["LP_NUM_THREADS"] == "0"


def test_software_gl_is_recognised_from_vtks_capabilities() -> None:
    mesa = ("glx extensions:  GLX_MESA_query_renderer\n"
            "OpenGL renderer string:  llvmpipe (LLVM 15.0.6, 256 bits)\n")
    assert is_software_gl(mesa)
    assert not is_software_gl("OpenGL renderer string:  NVIDIA H100 PCIe/PCIe/SSE2\n")


def test_make_world_view_refuses_unknown_names(monkeypatch) -> None:
    with pytest.raises(ValueError, match="known: vtk, mujoco"):
        make_world_view(None, prefer="ogre")
    monkeypatch.setenv(world_view.VIEW_ENV, "ogre")
    with pytest.raises(ValueError, match="REFINE_DP_VIEW"):
        make_world_view(None)


# -- the MuJoCo fallback (offscreen Qt; MuJoCo's own GL context) -----------------------------
def test_fallback_view_without_vtk_renders_new_snapshots_only(env, monkeypatch, qtbot,
                                                              caplog) -> None:
    monkeypatch.delenv(world_view.VIEW_ENV, raising=False)
    monkeypatch.setenv("LP_NUM_THREADS", os.environ.get("LP_NUM_THREADS", "0"))  # no leak
    monkeypatch.setattr(world_view, "VTK_IMPORT_ERROR", ImportError("no vtk here"))
    with caplog.at_level(logging.WARNING, logger=world_view.__name__):
        view = make_world_view(env.model, max_fps=50)
    assert isinstance(view, MujocoFrameView) and "no vtk here" in caplog.text
    qtbot.addWidget(view)
    view.resize(480, 300)
    view.show()
    qtbot.waitExposed(view)
    snap = live_snapshot(env, 5)
    view.show_snapshot(snap)
    qtbot.waitUntil(lambda: view.frames_rendered == 1, timeout=5000)
    first = view.capture()
    assert first.shape == (600, 960, 3) and first.dtype == np.uint8 and first.std() > 20
    qtbot.wait(150)  # no new snapshot: nothing is drawn again
    assert view.frames_rendered == 1 and view.frames_skipped > 0
    view.show_snapshot(moved(env.model, snap, 0.4))
    view.show_snapshot(moved(env.model, snap, 0.6))  # only the latest counts
    qtbot.waitUntil(lambda: view.frames_rendered == 2, timeout=5000)
    assert (np.abs(view.capture().astype(int) - first).max(-1) > 30).sum() > 2000
    assert view.fps() > 0
    with pytest.raises(ValueError, match="world_state has shape"):
        view.show_snapshot(dataclasses.replace(snap, world_state=np.zeros(3)))
    view.shutdown()


# -- the VTK view in a real window on Xvfb (child process) -----------------------------------
@pytest.fixture(scope="module")
def xvfb_display():
    """A private Xvfb on a free display number, stopped after the module."""
    if shutil.which("Xvfb") is None:
        pytest.skip("Xvfb is not on PATH (apt-get install xvfb): the VTK view needs X")
    number = next(n for n in range(150, 250) if not Path(f"/tmp/.X{n}-lock").exists()
                  and not Path(f"/tmp/.X11-unix/X{n}").exists())
    proc = subprocess.Popen(["Xvfb", f":{number}", "-screen", "0", "1280x1024x24",
                             "-nolisten", "tcp"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10.0
    while not Path(f"/tmp/.X11-unix/X{number}").exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.skip(f"Xvfb :{number} did not start")
        time.sleep(0.05)
    yield f":{number}"
    proc.terminate()
    proc.wait(5)


@pytest.fixture(scope="module")
def xvfb_report(xvfb_display, tmp_path_factory) -> dict:
    """Run `_window_check` in a child process on the Xvfb display; its JSON report."""
    out = tmp_path_factory.mktemp("world_view")
    env = {**os.environ, "DISPLAY": xvfb_display, "QT_QPA_PLATFORM": "xcb",
           "REFINE_DP_CACHE_DIR": str(out / "cache")}
    env.pop(world_view.VIEW_ENV, None)
    proc = subprocess.run([sys.executable, __file__, str(out)], env=env, capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode == 0, f"the window check failed:\n{proc.stdout}\n{proc.stderr[-4000:]}"
    return json.loads((out / "report.json").read_text())


def test_vtk_view_in_a_real_window_draws_the_scene(xvfb_report) -> None:
    r = xvfb_report["vtk"]
    assert r["type"] == "WorldView"
    assert r["shape"] == [600, 960, 3] and r["std"] > 20  # not blank
    # hiding the scene's geoms changes many pixels, around where the root projects
    assert r["robot_pixels"] > 3000
    x0, y0, x1, y1 = r["robot_bbox"]
    rx, ry = r["root_pixel"]
    assert x0 <= rx <= x1 and y0 <= ry <= y1, (r["robot_bbox"], r["root_pixel"])
    assert r["moved_pixels"] > 2000  # the robot moved in the second snapshot
    assert r["overlay_pixels"] > 200  # hand frames, gripper spheres, arrow
    # the camera follows the root (x, y) and keeps the user's orbit offset
    assert r["focal_shift"] == pytest.approx([1.0, -0.5, 0.0], abs=1e-9)
    assert r["frames_by_timer"] >= 3 and r["fps"] > 0
    assert r["frames_when_idle"] == 0  # no new snapshot, no frame
    assert r["vtk_char_observers"] == 0  # VTK's own keys ('e' exits) are off


def test_fallback_view_in_a_real_window(xvfb_report) -> None:
    r = xvfb_report["mujoco"]
    assert r["type"] == "MujocoFrameView"
    assert r["std"] > 20 and r["moved_pixels"] > 2000 and r["fps"] > 0


def _window_check(out: Path) -> None:
    """In the child process: both views in a QMainWindow on the X display; writes
    report.json and world_view.png into `out`."""
    from PyQt6.QtWidgets import QApplication, QMainWindow

    from robot_io.sim.render import save_png
    app = QApplication([])
    sim = BatchedEnv("box_pickup", 1, threads=1)
    snap = live_snapshot(sim, 30)
    report = {}

    def pump(seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            app.processEvents()
            time.sleep(0.005)

    for kind in ("vtk", "mujoco"):
        os.environ[world_view.VIEW_ENV] = kind
        window = QMainWindow()
        view = make_world_view(sim.model, window, max_fps=30)
        window.setCentralWidget(view)
        window.resize(960, 600)
        window.show()
        pump(0.3)
        view.show_snapshot(snap)
        pump(0.3)  # the timer draws it
        shown = view.capture()
        r = {"type": type(view).__name__, "shape": list(shown.shape), "std": float(shown.std())}
        view.show_snapshot(moved(sim.model, snap, 0.5))
        pump(0.3)
        r["moved_pixels"] = int(_changed(view.capture(), shown).sum())
        if kind == "vtk":
            save_png(shown, out / "world_view.png")
            r.update(_vtk_checks(view, snap, pump))
        count = view.frames_rendered
        pump(0.3)
        r["frames_when_idle"] = view.frames_rendered - count
        for i in range(5):
            view.show_snapshot(moved(sim.model, snap, 0.1 * i))
            pump(0.15)
        r["frames_by_timer"] = view.frames_rendered - count
        r["fps"] = view.fps()
        report[kind] = r
        view.shutdown()
        window.close()
    (out / "report.json").write_text(json.dumps(report))


def _changed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(H, W) bool: pixels whose colour differs by more than 30 in some channel."""
    return np.abs(a.astype(int) - b.astype(int)).max(-1) > 30


def _layers(view, overlays: list, robot: bool, overlay: bool) -> np.ndarray:
    """A capture with the scene's geoms and the (drawn) overlays switched on or off."""
    view.set_robot_visible(robot)
    for actor, on in overlays:
        actor.SetVisibility(on and overlay)
    view.window.Render()
    return view.capture()


def _vtk_checks(view, snap: Snapshot, pump) -> dict:
    """Robot and overlay pixels by hiding layers, the root's projection, the camera follow."""
    r = {"vtk_char_observers": view.window.GetInteractor().HasObserver("CharEvent")}
    overlays = [(actor, actor.GetVisibility()) for name in ("frame", "sphere", "shaft", "head")
                for actor, _ in view._overlays[name]]
    bare = _layers(view, overlays, robot=False, overlay=False)
    robot = _changed(_layers(view, overlays, robot=True, overlay=False), bare)
    r["overlay_pixels"] = int(_changed(_layers(view, overlays, False, True), bare).sum())
    _layers(view, overlays, robot=True, overlay=True)
    ys, xs = np.nonzero(robot)
    r["robot_pixels"] = int(robot.sum())
    r["robot_bbox"] = [int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())]
    view.renderer.SetWorldPoint(*view.data.body("Trunk").xpos, 1.0)  # the drawn (moved) root
    view.renderer.WorldToDisplay()
    x, y, _ = view.renderer.GetDisplayPoint()
    r["root_pixel"] = [x, bare.shape[0] - 1 - y]  # display y runs bottom-up
    camera = view.renderer.GetActiveCamera()
    before = np.array(camera.GetFocalPoint())
    shift = torch.tensor([[1.0, -0.5, 0.3]], dtype=torch.float64)
    obs = dataclasses.replace(snap.obs, root_pos=snap.obs.root_pos + shift)
    view.show_snapshot(dataclasses.replace(snap, obs=obs))
    pump(0.2)
    r["focal_shift"] = list(np.array(camera.GetFocalPoint()) - before)
    return r


if __name__ == "__main__":
    _window_check(Path(sys.argv[1]))
