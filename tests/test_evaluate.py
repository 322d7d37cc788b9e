"""Closed-loop evaluation: hand-computed tracking metrics, episode bookkeeping across resets, a
real heuristic run with its files, and the `refine-dp eval` command line."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from learning.evaluate import EvalMetrics, HandState, SourceFactory, evaluate, tick_metrics
from planners.heuristic import make_heuristic_planner
from robot_io.errors import RefineDpError
from robot_io.session import EpisodeEnd, EpisodeStart, StepRecord
from robot_io.tasks import default_config
from robot_io.types import Command
from teleop_app.cli import main

F64 = torch.float64
IDENTITY = (1.0, 0.0, 0.0, 0.0)
PLOTS = ("success.png", "completion_time.png", "tracking.png")


@pytest.fixture(scope="module")
def gl_context() -> None:
    """Skip video tests only where no OpenGL context can be created at all."""
    import mujoco

    from robot_io.sim.render import WorldRenderer

    model = mujoco.MjModel.from_xml_string("<mujoco><worldbody/></mujoco>")
    backend = SimpleNamespace(world_model=lambda i: model, world_data=lambda i: None)
    try:
        WorldRenderer(backend, 8, 8).close()
    except RefineDpError as exc:
        pytest.skip(f"no OpenGL context for offscreen rendering: {exc}")


def heuristic(task: str = "box_pickup") -> SourceFactory:
    return lambda env: make_heuristic_planner(task, env.num_worlds, seed=0)


def t(values: object) -> torch.Tensor:
    return torch.tensor(values, dtype=F64)


# -- the per-tick maths -------------------------------------------------------------------------
def test_tick_metrics_match_hand_computed_values() -> None:
    half = math.sqrt(0.5)
    before = HandState(root_pos=t([[0.0, 0.0, 0.0]]), root_quat=t([IDENTITY]),
                       hand_pos=t([[[0.1, 0.0, 0.0], [0.0, 0.0, 0.1]]]),
                       hand_quat=t([[IDENTITY, IDENTITY]]))
    # The trunk moved 2 cm forward and turned 90 degrees left during the tick.
    after = HandState(root_pos=t([[0.02, 0.0, 0.0]]), root_quat=t([[half, 0.0, 0.0, half]]),
                      hand_pos=t([[[0.1, 0.0, 0.0], [0.0, 0.0, 0.1]]]),
                      hand_quat=t([[[math.cos(0.15), math.sin(0.15), 0.0, 0.0],
                                    [-1.0, 0.0, 0.0, 0.0]]]))  # -identity: the same rotation
    m = tick_metrics(cmd_hand_pos=t([[[0.4, 0.4, 0.0], [0.0, 0.1, 0.1]]]),
                     cmd_hand_quat=t([[IDENTITY, IDENTITY]]), before=before, after=after,
                     control_dt_s=0.02)
    # Errors in the root frame: (0.3, 0.4, 0) and (0, 0.1, 0); 0.3 rad about x; none.
    torch.testing.assert_close(m.hand_pos_err_m, t([[0.5, 0.1]]))
    torch.testing.assert_close(m.hand_rot_err_rad, t([[0.3, 0.0]]), atol=1e-6, rtol=0)
    # World hands: left (0.1, 0, 0) -> (0.02, 0.1, 0); right (0, 0, 0.1) -> (0.02, 0, 0.1).
    torch.testing.assert_close(m.ee_speed_mps, t([[math.hypot(0.08, 0.1) / 0.02, 1.0]]))


def _record(hand_x: list[float], offset: list[float]) -> StepRecord:
    """Two worlds, hands at x = hand_x (both hands), commanded `offset` further along y."""
    x = t(hand_x).reshape(2, 1, 1).expand(2, 2, 1)
    hand_pos = torch.cat([x, torch.zeros(2, 2, 2, dtype=F64)], dim=-1)
    cmd_pos = hand_pos + torch.cat([torch.zeros(2, 2, 1, dtype=F64),
                                    t(offset).reshape(2, 1, 1).expand(2, 2, 1),
                                    torch.zeros(2, 2, 1, dtype=F64)], dim=-1)
    quat = t(IDENTITY).expand(2, 2, 4)
    obs = SimpleNamespace(root_pos=torch.zeros(2, 3, dtype=F64), root_quat=t(IDENTITY).expand(2, 4),
                          hand_pos=hand_pos, hand_quat=quat)
    cmd = Command(base_vel=torch.zeros(2, 3, dtype=F64), hand_pos=cmd_pos, hand_quat=quat,
                  gripper=torch.zeros(2, 2, dtype=F64))
    return StepRecord(obs=obs, command=cmd, sent=None, sim_state=None)


def _start(worlds: list[int], episodes: list[int]) -> EpisodeStart:
    return EpisodeStart(world_ids=torch.tensor(worlds), episode_ids=torch.tensor(episodes),
                        obs=None, params={}, sim_state=None, model_fields={})


def _end(world: int, episode: int, steps: int, reason: str) -> EpisodeEnd:
    flags = {r: torch.tensor([reason == r]) for r in ("success", "timeout", "unstable")}
    return EpisodeEnd(world_ids=torch.tensor([world]), episode_ids=torch.tensor([episode]),
                      steps=torch.tensor([steps]), **flags)


def test_metrics_drop_each_episodes_last_tick_and_never_mix_episodes() -> None:
    metrics = EvalMetrics(num_worlds=2, control_dt_s=0.02)
    metrics.episode_started(_start([0, 1], [0, 1]))
    for _ in range(3):  # episode 0 in world 0: commands 0.1 m off, hands still
        metrics.step(_record([0.2, 0.5], [0.1, 0.3]))
    metrics.episode_ended(_end(0, 0, steps=3, reason="success"))
    # World 0's reset moved its hands 10 m: compared across the reset, that would be 500 m/s.
    metrics.episode_started(_start([0], [2]))
    for _ in range(2):
        metrics.step(_record([10.2, 0.5], [0.2, 0.3]))
    metrics.episode_ended(_end(1, 1, steps=5, reason="timeout"))
    metrics.episode_ended(_end(0, 2, steps=2, reason="unstable"))
    by_id = {e["episode"]: e for e in metrics.episodes}
    assert [by_id[i]["end_reason"] for i in range(3)] == ["success", "timeout", "unstable"]
    for episode, err in ((0, 0.1), (1, 0.3), (2, 0.2)):
        assert by_id[episode]["hand_pos_err_m"] == pytest.approx(err)
        assert by_id[episode]["hand_rot_err_rad"] == 0.0
        assert by_id[episode]["ee_speed_mps"] == 0.0
    assert by_id[0]["time_s"] == pytest.approx(0.06)
    pos, rot = metrics.pooled()
    # Finished ticks (the last of each episode dropped): 2 + 4 + 1, two hands each.
    assert len(pos) == len(rot) == 2 * (2 + 4 + 1)
    np.testing.assert_allclose(np.sort(pos), [0.1] * 4 + [0.2] * 2 + [0.3] * 8)


# -- real runs ----------------------------------------------------------------------------------
def test_heuristic_box_pickup_report_and_files(tmp_path: Path) -> None:
    out = tmp_path / "eval"
    report = evaluate("box_pickup", heuristic(), episodes=2, worlds=2, threads=1, out_dir=out,
                      progress=False, label="heuristic")
    assert report.episodes == 2 and report.successes == 2 and report.success_rate == 1.0
    assert report.end_reasons == {"success": 2, "timeout": 0, "unstable": 0}
    assert 2.0 < report.completion_time_s_mean < 20.0
    for value in (report.hand_pos_err_m_mean, report.hand_pos_err_m_median):
        assert 0.0 < value < 0.1
    for value in (report.hand_rot_err_rad_mean, report.hand_rot_err_rad_median):
        assert 0.0 < value < 0.5
    assert 0.0 < report.ee_speed_mps_mean < 1.0
    assert [e["episode"] for e in report.per_episode] == [0, 1]
    assert report.policy_latency is None
    assert sorted(report.files.values()) == sorted([*PLOTS, "eval.json"])
    assert sorted(p.name for p in out.iterdir()) == sorted(report.files.values())  # no temp
    for name in PLOTS:
        assert (out / name).read_bytes().startswith(b"\x89PNG")
    assert json.loads((out / "eval.json").read_text()) == report.to_dict()
    assert "box_pickup [heuristic]: success 100.0% (2/2 episodes" in report.format()


class _TimedSource:
    """A heuristic planner that also reports a (fake) latency summary, like a policy does."""

    def __init__(self, num_worlds: int) -> None:
        self.inner = make_heuristic_planner("box_pickup", num_worlds)
        self.reset, self.next_command = self.inner.reset, self.inner.next_command

    def latency_summary(self) -> dict:
        return {"calls": 3, "median_ms": 1.5}


@pytest.mark.usefixtures("gl_context")
def test_timeouts_latency_and_video(tmp_path: Path) -> None:
    config = dataclasses.replace(default_config("box_pickup"), time_limit_s=0.3)  # 15 ticks
    report = evaluate("box_pickup", lambda env: _TimedSource(env.num_worlds), episodes=1,
                      worlds=4, threads=1, task_config=config, out_dir=tmp_path,
                      video_episodes=1, progress=False)
    assert report.worlds == 1  # never more worlds than episodes
    assert report.success_rate == 0.0 and report.end_reasons["timeout"] == 1
    assert report.per_episode[0]["steps"] == 15
    assert math.isnan(report.completion_time_s_mean)
    assert report.policy_latency == {"calls": 3, "median_ms": 1.5}
    saved = json.loads((tmp_path / "eval.json").read_text())
    assert saved["completion_time_s_mean"] is None and saved["policy_latency"]["calls"] == 3
    assert report.files["video"] == "episodes.mp4"
    import imageio.v2 as imageio

    with imageio.get_reader(tmp_path / "episodes.mp4") as reader:
        frames = [frame for frame in reader]
    assert len(frames) == 1 + 15 // 2 and frames[0].shape == (240, 320, 3)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"episodes": 0}, "episodes must be at least 1, got 0"),
    ({"worlds": 0}, "worlds must be at least 1, got 0"),
    ({"video_episodes": -1}, "video_episodes must be 0 or more"),
    ({"video_episodes": 1}, "a video needs an output folder"),
    ({"task": "no_such_task"}, "unknown task 'no_such_task'; known tasks: box_pickup"),
])
def test_evaluate_rejects_bad_arguments(kwargs: dict, message: str) -> None:
    kwargs = {"task": "box_pickup", **kwargs}
    with pytest.raises(ValueError, match=message):
        evaluate(make_source=heuristic(), progress=False, **kwargs)


# -- the command line ---------------------------------------------------------------------------
def test_cli_eval_heuristic(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    assert main(["eval", "--source", "heuristic", "--task", "box_pickup", "--episodes", "1",
                 "--worlds", "1", "--threads", "1", "--widen", "0.5", "--out", str(out),
                 "--no-progress", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads((out / "eval.json").read_text())
    assert printed["label"] == "heuristic" and printed["success_rate"] == 1.0
    assert printed["episodes"] == 1 and printed["files"]["report"] == "eval.json"


@pytest.mark.parametrize(("argv", "message"), [
    (["--source", "heuristic", "--task", "no_such_task"], "unknown task 'no_such_task'"),
    (["--source", "heuristic", "--task", "box_pickup", "--sampler", "ddim"],
     "--sampler and --device apply to --policy only"),
    (["--source", "heuristic", "--task", "box_pickup", "--widen", "-1"],
     "--widen must be a positive factor, got -1.0"),
    (["--source", "scripted", "--task", "box_pickup", "--widen", "2"],
     "--widen does not apply to --source scripted"),
    (["--source", "heuristic", "--task", "box_pickup", "--episodes", "0"],
     "episodes must be at least 1, got 0"),
    (["--policy", "no_such_run", "--task", "box_pickup"], "no_such_run"),
])
def test_cli_eval_bad_arguments_are_one_line_errors(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str],
        message: str) -> None:
    out = tmp_path / "never"
    assert main(["eval", *argv, "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("refine-dp: error: ") and message in err
    assert len(err.strip().splitlines()) == 1 and not out.exists()


@pytest.mark.parametrize("argv", [
    ["--task", "box_pickup"],  # neither a policy nor a source
    ["--policy", "run", "--source", "heuristic", "--task", "box_pickup"],  # both
])
def test_cli_eval_needs_exactly_one_of_policy_and_source(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["eval", *argv])
    assert exc.value.code == 2
