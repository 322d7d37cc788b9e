"""`LiveSession`: the app's live world on real MuJoCo, real HDF5 files and real threads (no Qt).

The loop runs faster than real time (`FAST_HZ`: every tick starts at once after the previous
one) so that episodes take seconds; nothing here asserts on timing: every wait is on a
condition with a generous deadline.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import CancelledError
from pathlib import Path

import pytest
import torch

from datasets.dataset import Dataset
from datasets.errors import DatasetError
from datasets.validate import validate
from robot_io.control import ControllerChoice
from robot_io.control.policy_io import PolicySpecError
from robot_io.safety import SafetyCounters, SafetyState
from robot_io.types import Command, Observation
from teleop_app.live import SOURCES, LiveConfig, LiveSession, format_status, register_source
from teleop_app.live_status import summarize_interventions

FAST_HZ = 1000.0
WAIT_S = 60.0  # generous: the machine is shared


def wait_until(condition: Callable[[], object], what: str, timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.005)


def steps(live: LiveSession) -> int:
    snap = live.snapshot()
    return snap.episode_steps[0] if snap.episode_steps else 0


def run_ticks(live: LiveSession, n: int, episode: int | None = None) -> None:
    """Wait until the running episode (session episode `episode`, when given: a request's
    result comes a moment before the snapshot that shows it) has at least `n` ticks."""
    def ready() -> bool:
        snap = live.snapshot()
        return (episode is None or snap.episode_ids == (episode,)) and steps(live) >= n
    wait_until(ready, f"{n} ticks of episode {episode}")


def next_episode(end) -> int:
    """The session episode that starts after `end` (an `EpisodeEnd` of the one world)."""
    return int(end.episode_ids[0]) + 1


def fast(**kwargs) -> LiveConfig:
    return LiveConfig(rate_hz=FAST_HZ, **kwargs)


def test_record_success_failure_discard_end_writes_exactly_two_labelled_episodes(
        tmp_path: Path) -> None:
    folder = tmp_path / "data"
    with LiveSession(fast()) as live:  # the empty floor, the "hold" source
        wait_until(lambda: live.status().rate_hz > 0, "a measured loop rate")
        with pytest.raises(RuntimeError, match="not recording"):
            live.save_success().result(WAIT_S)
        first = live.start_recording(folder).result(WAIT_S)
        status = live.status()
        assert status.recording is not None and status.recording.episode_id == 0
        assert status.recording.dataset == str(folder) and status.recording.dataset_episodes == 0
        run_ticks(live, 15, first)
        end = live.save_success().result(WAIT_S)
        assert end.success.tolist() == [True] and end.steps.item() >= 15
        status = live.status()
        assert (status.recording.saved, status.recording.episode_id,
                status.recording.dataset_episodes) == (1, 1, 1)
        line = format_status(status)
        assert "REC ep 1" in line and "hold" in line and "reference" in line
        run_ticks(live, 15, next_episode(end))
        end = live.save_failure().result(WAIT_S)
        assert end.success.tolist() == [False] and end.steps.item() >= 15
        run_ticks(live, 5, next_episode(end))
        end = live.discard().result(WAIT_S)
        assert end.keep.tolist() == [False]
        run_ticks(live, 5, next_episode(end))
        assert live.end_recording().result(WAIT_S) == 2
        assert live.status().recording is None
        assert live.end_recording().result(WAIT_S) == 0  # none open: nothing to do
    dataset = Dataset.open(folder)
    assert dataset.episode_ids() == [0, 1]
    attrs = [dataset.attrs(i) for i in (0, 1)]
    assert [a.success for a in attrs] == [True, False]
    assert {a.end_reason for a in attrs} == {"operator"}
    assert all(a.length >= 15 for a in attrs)
    assert {(a.source, a.task, a.controller) for a in attrs} == {("hold", "open_floor",
                                                                  "reference")}
    assert validate(folder) == []
    episode = dataset.episode(0)
    assert len(episode.arrays["command/base_vel"]) == attrs[0].length  # recorded from its start


def test_a_new_recording_continues_the_dataset_after_the_last_one_closed(
        tmp_path: Path) -> None:
    folder = tmp_path / "data"
    with LiveSession(fast()) as live:
        for _ in range(2):
            run_ticks(live, 5, live.start_recording(folder).result(WAIT_S))
            live.save_success().result(WAIT_S)
            closing = live.end_recording()  # not waited for: the next start waits
        assert closing.result(WAIT_S) == 1
    assert Dataset.open(folder).episode_ids() == [0, 1] and validate(folder) == []
    with pytest.raises(DatasetError, match="not empty"), LiveSession(fast()) as live:
        (tmp_path / "other").mkdir()
        (tmp_path / "other" / "notes.txt").write_text("mine")
        live.start_recording(tmp_path / "other")


def test_episodes_that_end_by_themselves_are_recorded_as_the_task_labels_them(
        tmp_path: Path) -> None:
    folder = tmp_path / "data"
    with LiveSession(fast(time_limit_s=0.2)) as live:  # 10-tick episodes that time out
        live.start_recording(folder).result(WAIT_S)
        wait_until(lambda: live.status().recording.saved >= 2, "two timed-out episodes")
        saved = live.end_recording().result(WAIT_S)
    dataset = Dataset.open(folder)
    assert len(dataset) == saved >= 2
    for i in dataset.episode_ids():
        a = dataset.attrs(i)
        assert (a.success, a.end_reason, a.length) == (False, "timeout", 10)
    assert validate(folder) == []


def test_stop_latches_until_reset_stop_and_carries_over_a_rebuild(tmp_path: Path) -> None:
    with LiveSession(fast()) as live:
        run_ticks(live, 5)
        live.stop()
        wait_until(lambda: live.snapshot().safety.state is SafetyState.STOPPED, "STOP")
        wait_until(lambda: not live.snapshot().applied, "a tick under STOP")
        frozen, tick = live.snapshot().obs.time_s.item(), live.snapshot().tick
        seen = set()

        def ticked_on() -> bool:  # it keeps ticking and sends nothing
            snap = live.snapshot()
            seen.add((snap.applied, snap.obs.time_s.item()))
            return snap.tick >= tick + 30
        wait_until(ticked_on, "30 ticks under STOP")
        assert seen == {(False, frozen)}  # nothing applied, the simulation paused
        assert live.status().safety == "stopped" and "STOPPED" in format_status(live.status())

        # A rebuild keeps STOP; one that fails leaves the running world as it was.
        assert live.set_task("box_pickup").result(WAIT_S).task == "box_pickup"
        assert live.status().task == "box_pickup"
        wait_until(lambda: live.snapshot().tick > 5, "ticks of the rebuilt world")
        assert live.snapshot().safety.state is SafetyState.STOPPED
        assert not live.snapshot().applied
        bad = ControllerChoice("learned", weights=tmp_path / "missing")
        with pytest.raises(PolicySpecError, match="missing"):
            live.set_controller(bad).result(WAIT_S)
        assert live.config.controller.name == "reference" and live.status().task == "box_pickup"

        assert live.reset_stop().result(WAIT_S) is True
        wait_until(lambda: live.snapshot().applied and steps(live) > 5, "ticks after the reset")
        assert live.snapshot().safety.state is SafetyState.OK


def test_set_source_hands_over_without_a_reset_and_names_both_sources(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    with LiveSession(fast(task="box_pickup")) as live:
        with pytest.raises(ValueError, match="known sources: .*heuristic.*hold.*scripted"):
            live.set_source("no such device")
        run_ticks(live, 20, live.start_recording(folder).result(WAIT_S))
        before = live.snapshot()
        live.set_source("heuristic").result(WAIT_S)
        wait_until(lambda: steps(live) >= before.episode_steps[0] + 20, "ticks after hand-over")
        after = live.snapshot()
        assert after.episode_ids == before.episode_ids  # the same episode goes on
        assert after.obs.time_s.item() > before.obs.time_s.item()
        assert live.status().source == "heuristic"
        assert live.current_config().source == "heuristic"
        live.save_success().result(WAIT_S)
        live.end_recording().result(WAIT_S)
    attrs = Dataset.open(folder).attrs(0)
    assert attrs.source == "hold+heuristic" and attrs.length >= 40
    assert validate(folder) == []


def test_a_planner_run_while_recording_writes_its_episodes_and_hands_back(
        tmp_path: Path) -> None:
    folder = tmp_path / "data"
    with LiveSession(fast(task="box_pickup", nominal_start=True)) as live:
        with pytest.raises(RuntimeError, match="needs an open recording"):
            live.run_planner("scripted", episodes=2, record=True).result(WAIT_S)
        live.start_recording(folder).result(WAIT_S)
        run = live.run_planner("scripted", episodes=2)
        wait_until(lambda: live.status().planner is not None, "the run to start")
        assert live.status().source == "scripted"
        progress = run.result(WAIT_S)
        assert (progress.done, progress.successes, progress.finished) == (2, 2, True)
        assert progress.recording and live.status().source == "hold"
        assert live.end_recording().result(WAIT_S) == 2
    dataset = Dataset.open(folder)
    attrs = [dataset.attrs(i) for i in dataset.episode_ids()]
    assert [(a.success, a.end_reason, a.source) for a in attrs] == [(True, "success",
                                                                    "scripted")] * 2
    assert validate(folder) == []


def test_a_planner_run_can_be_cancelled_and_a_task_without_planner_says_so() -> None:
    with LiveSession(fast(task="box_pickup")) as live:
        run = live.run_planner("heuristic", episodes=3)
        wait_until(lambda: live.status().source == "heuristic", "the run to start")
        assert live.current_config().source == "hold"  # what the run hands back to
        assert live.cancel_planner().result(WAIT_S).cancelled
        with pytest.raises(CancelledError):
            run.result(WAIT_S)
        assert live.status().source == "hold" and not live.status().planner.active
    with LiveSession(fast()) as live, pytest.raises(ValueError, match="no heuristic planner"):
        live.set_source("heuristic")


class Forward:
    """A tiny constant `CommandSource`: walk forward, hands held where they are."""

    def reset(self, obs: Observation, ids: torch.Tensor | None = None) -> None:
        """Stateless."""

    def next_command(self, obs: Observation) -> Command:
        n = obs.num_worlds
        return Command(torch.tensor([[0.2, 0.0, 0.0]] * n, dtype=torch.float64),
                       obs.hand_pos.clone(), obs.hand_quat.clone(),
                       torch.zeros(n, 2, dtype=torch.float64))


def test_registered_sources_plug_in() -> None:
    register_source("test-forward", lambda world, seed: Forward())
    try:
        with pytest.raises(ValueError, match="registered already"):
            register_source("test-forward", lambda world, seed: Forward())
        with LiveSession(fast(source="test-forward")) as live:
            assert isinstance(live.source(), Forward)
            run_ticks(live, 10)
            assert live.snapshot().command.base_vel[0, 0].item() == pytest.approx(0.2)
    finally:
        del SOURCES["test-forward"]


def test_config_and_status_helpers_reject_and_summarise() -> None:
    with pytest.raises(ValueError, match="unknown task 'moon'"):
        LiveConfig(task="moon")
    with pytest.raises(ValueError, match="rate_hz"):
        LiveConfig(rate_hz=0.0)
    with pytest.raises(ValueError, match="threads"):
        LiveConfig(threads=-1)
    assert LiveConfig().threads == 1 and LiveConfig(nominal_start=True).task_config().start \
        .heading_rad.lo == 0.0
    assert summarize_interventions(SafetyCounters()) == "no interventions"
    assert summarize_interventions(SafetyCounters(base_clamped=3, stops=1)) == \
        "clamps: base 3; stops 1"
    assert LiveConfig(task="door", time_limit_s=90.0).task_config().time_limit_s == 90.0


def test_the_keyboard_device_drives_the_live_world() -> None:
    """Keys pressed on the GUI side move the commanded hand in the live session."""
    import time as _time

    from teleop_app.live import LiveConfig, LiveSession

    with LiveSession(LiveConfig(source="keyboard")) as live:
        keyboard = live.source()
        keyboard.heartbeat(_time.monotonic())
        deadline = _time.monotonic() + 60
        while live.snapshot() is None or live.snapshot().command is None:
            assert _time.monotonic() < deadline
            keyboard.heartbeat(_time.monotonic())
            _time.sleep(0.01)
        before = live.snapshot().command.hand_pos[0, 1, 0].item()  # right hand x (default hand)
        keyboard.press("w", _time.monotonic())
        while live.snapshot().command.hand_pos[0, 1, 0].item() < before + 0.01:
            assert _time.monotonic() < deadline, "the hand did not move forward"
            keyboard.heartbeat(_time.monotonic())
            _time.sleep(0.01)
        keyboard.release("w", _time.monotonic())
        assert live.status().source == "keyboard"
