"""The `refine-dp` command line, run in-process: finding the command, its errors, task listing,
rendering, the sim and policy benchmarks (tests/test_cli_config.py: the settings and defaults)."""

from __future__ import annotations

import json
import subprocess
import sys
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


# -- finding the command, and the errors of a rejected command line ------------------------------
def test_top_level_help_lists_the_commands_without_importing_torch_or_mujoco() -> None:
    code = ("import sys\nfrom teleop_app.cli import main\ntry:\n    main(['--help'])\n"
            "except SystemExit as exc:\n    assert exc.code == 0\n"
            "print(sorted(m for m in ('torch', 'mujoco') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert "dataset ACTION" in out and "train-controller" in out and "bench WHAT" in out
    assert out.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize(("argv", "message"), [
    (["teleport"], "unknown command 'teleport'; known: tasks, render"),
    (["bench", "gpu"], "unknown bench command 'gpu'; known: sim, planners, recorder, runner, app, policy"),
    ([], "missing COMMAND; choose from tasks, render"),
    (["dataset"], "missing ACTION; choose from info, validate"),
])
def test_an_unknown_or_missing_command_lists_the_known_ones(
        argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].startswith(f"refine-dp: error: {message}")


@pytest.mark.parametrize(("argv", "message"), [
    (["collect", "--task", "box_pickup", "--episodes", "1", "--out", "x", "--source", "teleop"],
     "argument --source: invalid choice: 'teleop' (choose from 'heuristic', 'scripted')"),
    (["collect", "--task", "box_pickup"],
     "the following arguments are required: --episodes, --out"),
    (["bench", "sim", "--task", "box_pickup", "--worlds", "many"], "argument --worlds: "),
    (["tasks", "--verbose"], "unrecognized arguments: --verbose"),
    (["dataset", "filter", "a", "b", "--success", "--failures"],
     "argument --failures: not allowed with argument --success"),
])
def test_a_rejected_command_line_is_one_error_line_with_status_2(
        argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"refine-dp: error: {message}") and err.count("\n") == 1


def test_a_value_the_config_rejects_is_a_one_line_error_listing_the_known_names(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # FinetuneConfig validates its task while tyro builds it; nothing is written.
    assert main(["finetune", "--policy", str(tmp_path / "p"), "--out", str(tmp_path / "ft"),
                 "--task", "no_such_task"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("refine-dp: error: unknown task 'no_such_task'; known tasks:")
    assert "box_pickup" in err and err.count("\n") == 1 and not (tmp_path / "ft").exists()


def test_a_command_help_shows_the_dataclass_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["collect", "--help"])
    assert exc.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "worlds in parallel. (default: 16)" in text
    assert "--controller {reference,learned}" in text and "(default: reference)" in text


def test_a_bad_mujoco_gl_is_caught_before_a_command_imports_mujoco(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("MUJOCO_GL", "bogus")
    assert main(["render", "--help"]) == 2
    assert "MUJOCO_GL='bogus'" in capsys.readouterr().err


def test_bench_policy_threads_are_set_by_the_command_not_the_library(
        capsys: pytest.CaptureFixture[str]) -> None:
    from learning.bench_policy import bench_policy

    before = torch.get_num_threads()
    try:
        assert bench_policy(None, calls=1, sampler=None)["threads"] == before  # untouched
        assert main(["bench", "policy", "--calls", "1", "--threads", "1", "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["threads"] == 1
    finally:
        torch.set_num_threads(before)
