"""The `refine-dp` command line, run in-process: task listing, rendering, the sim benchmark."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from robot_io.errors import RefineDpError
from teleop_app.cli import main

BENCH_KEYS = {"task", "worlds", "threads", "physics_dt_s", "control_dt_s", "substeps",
              "env_control_steps_per_s", "env_physics_steps_per_s", "bare_physics_steps_per_s",
              "bare_held_physics_steps_per_s", "ratio", "torch_threads", "episode_s",
              "physics_warnings", "backend", "device", "controller"}


@pytest.fixture(scope="module")
def gl_context() -> None:
    """Skip rendering tests only where no OpenGL context can be created at all."""
    import mujoco

    from robot_io.sim.render import _open_renderer

    model = mujoco.MjModel.from_xml_string("<mujoco><worldbody/></mujoco>")
    try:
        _open_renderer(model, 8, 8).close()
    except RefineDpError as exc:
        pytest.skip(f"no OpenGL context for offscreen rendering: {exc}")


def test_tasks_lists_every_task_with_its_description(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tasks"]) == 0
    lines = capsys.readouterr().out.splitlines()
    box = [line for line in lines if line.split()[0] == "box_pickup"]
    assert box and "pick up a box" in box[0]


def test_render_of_an_unknown_task_is_an_error_listing_the_tasks(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "x.png"
    assert main(["render", "--task", "no_such_task", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("refine-dp: error: unknown task 'no_such_task'")
    assert "box_pickup" in err
    assert not out.exists()


@pytest.mark.usefixtures("gl_context")
def test_render_writes_a_png_of_the_scene(tmp_path: Path) -> None:
    out = tmp_path / "sub" / "box.png"
    assert main(["render", "--task", "box_pickup", "--out", str(out),
                 "--width", "160", "--height", "120", "--seed", "3"]) == 0
    with Image.open(out) as image:
        assert image.format == "PNG" and image.size == (160, 120) and image.mode == "RGB"
        pixels = np.asarray(image, dtype=np.float64)
    assert pixels.std() > 10.0  # a scene, not a blank frame
    assert [p.name for p in out.parent.iterdir()] == ["box.png"]  # no temporary file left


def test_bench_sim_json(capsys: pytest.CaptureFixture[str]) -> None:
    threads_before = torch.get_num_threads()
    assert main(["bench", "sim", "--task", "box_pickup", "--worlds", "4", "--seconds", "0.5",
                 "--threads", "1", "--json"]) == 0
    out = capsys.readouterr().out.strip()
    assert len(out.splitlines()) == 1
    result = json.loads(out)
    assert set(result) == BENCH_KEYS
    assert result["task"] == "box_pickup" and result["worlds"] == 4 and result["threads"] == 1
    assert (result["backend"], result["device"], result["controller"]) == ("mujoco", "cpu",
                                                                           "reference")
    assert result["substeps"] == round(result["control_dt_s"] / result["physics_dt_s"])
    assert result["env_physics_steps_per_s"] == pytest.approx(
        result["env_control_steps_per_s"] * result["substeps"])
    assert result["ratio"] == pytest.approx(
        result["env_physics_steps_per_s"] / result["bare_physics_steps_per_s"])
    assert result["ratio"] > 0 and result["physics_warnings"] == 0
    assert result["torch_threads"] == 1 and torch.get_num_threads() == threads_before


@pytest.mark.parametrize("args,message", [
    (["--worlds", "4", "--seconds", "0"], "seconds must be positive"),
    (["--worlds", "0"], "num_worlds must be at least 1"),
])
def test_bench_sim_bad_input(args: list[str], message: str,
                             capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "sim", "--task", "box_pickup", *args]) == 2
    assert message in capsys.readouterr().err


def test_a_bad_mujoco_gl_is_a_clear_error(monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("MUJOCO_GL", "bogus")
    assert main(["tasks"]) == 2
    err = capsys.readouterr().err
    assert "MUJOCO_GL='bogus'" in err and "libegl1" in err and "osmesa" in err
