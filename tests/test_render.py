"""Rendering helpers that need no scene: atomic PNG writing and the GL error messages."""

from __future__ import annotations

from pathlib import Path

import mujoco
import numpy as np
import pytest
from PIL import Image

from robot_io.errors import RefineDpError
from robot_io.sim.gl_setup import check_mujoco_gl
from robot_io.sim.render import _open_renderer, save_png


def test_save_png_round_trips_and_leaves_no_temporary(tmp_path: Path) -> None:
    image = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    path = save_png(image, tmp_path / "a.png")
    with Image.open(path) as png:
        assert np.array_equal(np.asarray(png), image)
    assert [p.name for p in tmp_path.iterdir()] == ["a.png"]


def test_save_png_refuses_a_bad_image_and_keeps_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    path.write_bytes(b"old")
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
        save_png(np.zeros((4, 4), dtype=np.float32), path)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.png"]


def test_a_failing_gl_context_names_the_packages(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_context(*args: object, **kwargs: object) -> None:
        raise mujoco.FatalError("an OpenGL platform library has not been loaded")

    monkeypatch.setattr(mujoco, "Renderer", no_context)
    model = mujoco.MjModel.from_xml_string("<mujoco><worldbody/></mujoco>")
    with pytest.raises(RefineDpError, match="libegl1 and libgl1-mesa-dri.*libosmesa6"):
        _open_renderer(model, 8, 8)


@pytest.mark.parametrize("value,ok", [("egl", True), ("OSMesa", True), ("", True),
                                      ("bogus", False), ("cgl", False)])
def test_check_mujoco_gl_on_linux(value: str, ok: bool) -> None:
    if ok:
        check_mujoco_gl({"MUJOCO_GL": value}, platform="linux")
    else:
        with pytest.raises(RefineDpError, match=f"MUJOCO_GL='{value}'"):
            check_mujoco_gl({"MUJOCO_GL": value}, platform="linux")
