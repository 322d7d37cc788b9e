"""The desktop app's window (`teleop_app.app`) through its real widgets, on a real `LiveSession`
(real MuJoCo, real HDF5 files, real threads), with pytest-qt under Qt's offscreen platform.

The loop runs faster than real time (`FAST_HZ`) so that ticks come quickly; nothing here asserts
on timing: every wait is on a condition with a generous deadline. The window-logic tests use the
placeholder view (the 3D view is not what they test, and software GL would compete for the
cores); the command-line test starts the real entry point with its real view.
"""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # before Qt makes its application

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

pytest.importorskip("PyQt6", reason="the app extra (PyQt6) is not installed")
pytest.importorskip("pytestqt", reason="pytest-qt is not installed")

from PyQt6.QtCore import QEvent, QSize, Qt
from PyQt6.QtGui import QImage, QKeyEvent
from PyQt6.QtWidgets import QApplication, QComboBox

from datasets.dataset import Dataset
from datasets.validate import validate
from robot_io.control import ControllerChoice
from robot_io.errors import RefineDpError
from robot_io.safety import SafetyState
from teleop_app.app.keys import AppAction, app_action, key_name
from teleop_app.app.main_window import MainWindow
from teleop_app.app.widgets import placeholder_view, status_texts
from teleop_app.app_cli import AppConfig, check_display, cmd_app, start_live
from teleop_app.cli_parsing import parse
from teleop_app.live import LiveConfig, LiveSession
from teleop_app.settings import AppSettings, load_settings

pytestmark = pytest.mark.qt

FAST_HZ = 200.0
WAIT_S = 60.0  # generous: the machine is shared
LEFT, RIGHT = 0, 1
K = Qt.Key


def wait_for(qtbot, condition: Callable[[], object], what: str,
             timeout_s: float = WAIT_S) -> None:
    """Process Qt events until `condition()` holds."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        qtbot.wait(10)


def hands(live: LiveSession):
    """The commanded hand positions (2, 3) of the latest applied command."""
    return live.snapshot().command.hand_pos[0].clone()


def episode_of(live: LiveSession) -> int:
    return live.snapshot().episode_ids[0]


def next_episode(qtbot, live: LiveSession, after: int, ticks: int = 5) -> int:
    """Wait for a session episode after `after` that has run `ticks` ticks; returns its id."""
    def ready() -> bool:
        snap = live.snapshot()
        return snap.episode_ids[0] > after and snap.episode_steps[0] >= ticks
    wait_for(qtbot, ready, f"an episode after {after} with {ticks} ticks")
    return episode_of(live)


def stopped(live: LiveSession) -> bool:
    snap = live.snapshot()
    return snap.safety.state is SafetyState.STOPPED and not snap.applied


def ticks_later(qtbot, live: LiveSession, n: int) -> None:
    tick = live.snapshot().tick
    wait_for(qtbot, lambda: live.snapshot().tick >= tick + n, f"{n} more ticks")


def choose(combo: QComboBox, text: str) -> None:
    """What picking `text` in the combo's list does."""
    combo.setCurrentText(text)
    combo.textActivated.emit(text)


@pytest.fixture
def config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "config"
    monkeypatch.setenv("REFINE_DP_CONFIG_DIR", str(folder))
    return folder


@pytest.fixture
def open_window(qtbot, config_dir: Path) -> Iterator[Callable[..., tuple[LiveSession,
                                                                         MainWindow]]]:
    """Opens the window on a started live session of the given config; closes both after."""
    opened: list[tuple[LiveSession, MainWindow | None]] = []

    def open_(config: LiveConfig) -> tuple[LiveSession, MainWindow]:
        live = LiveSession(config).start()
        opened.append((live, None))
        window = MainWindow(live, save_on_close=False, view_factory=placeholder_view)
        opened[-1] = (live, window)
        window.show()
        window.activateWindow()
        wait_for(qtbot, window.isActiveWindow, "the window to be active")
        wait_for(qtbot, lambda: live.snapshot().command is not None, "a first command")
        return live, window

    yield open_
    for live, window in opened:
        if window is not None:
            window.close()
        live.close()


# -- keys ----------------------------------------------------------------------------------------
def test_key_names_and_app_keys_follow_lerobot() -> None:
    assert key_name(K.Key_W.value) == "w" and key_name(K.Key_Up.value) == "up"
    assert key_name(K.Key_F5.value) is None
    shift, ctrl = Qt.KeyboardModifier.ShiftModifier, Qt.KeyboardModifier.ControlModifier
    none = Qt.KeyboardModifier.NoModifier
    assert app_action(K.Key_Right.value, none) is AppAction.SAVE_SUCCESS
    assert app_action(K.Key_Right.value, shift) is AppAction.SAVE_FAILURE
    assert app_action(K.Key_Left.value, none) is AppAction.DISCARD
    assert app_action(K.Key_Escape.value, none) is AppAction.END_RECORDING
    assert app_action(K.Key_Space.value, ctrl) is AppAction.STOP  # Space is STOP, always
    assert app_action(K.Key_Right.value, ctrl) is None  # left to the window's shortcuts
    assert app_action(K.Key_W.value, none) is None


def test_teleop_keys_move_the_commanded_hands_and_walk(open_window, qtbot) -> None:
    live, window = open_window(LiveConfig(source="keyboard", rate_hz=FAST_HZ))
    start = hands(live)
    qtbot.keyPress(window, K.Key_W)  # the right hand is selected at start
    wait_for(qtbot, lambda: hands(live)[RIGHT, 0] > start[RIGHT, 0] + 0.02,
             "the right hand moving forward (+x)")
    # an auto-repeated release (X11 sends one with each repeat) does not release the key
    QApplication.sendEvent(window, QKeyEvent(QEvent.Type.KeyRelease, K.Key_W,
                                             Qt.KeyboardModifier.NoModifier, "w", True))
    assert window.router.held == {"w"}
    qtbot.keyRelease(window, K.Key_W)
    assert window.router.held == set()
    assert (hands(live)[LEFT] == start[LEFT]).all()

    qtbot.keyClick(window, K.Key_1)  # select the left hand
    qtbot.keyPress(window, K.Key_E)
    wait_for(qtbot, lambda: hands(live)[LEFT, 2] < start[LEFT, 2] - 0.02,
             "the left hand moving down (-z)")
    qtbot.keyRelease(window, K.Key_E)

    def base_vx() -> float:
        return float(live.snapshot().command.base_vel[0, 0])
    qtbot.keyPress(window, K.Key_Up)
    wait_for(qtbot, lambda: base_vx() > 0.1, "walking forward")
    qtbot.keyRelease(window, K.Key_Up)
    wait_for(qtbot, lambda: base_vx() == 0.0, "standing again")

    # a text field keeps its keys; Space is STOP there too
    edit = window.panel.dataset_edit
    edit.setFocus()
    qtbot.keyClicks(edit, "ws")
    assert edit.text() == "ws" and window.router.held == set()
    qtbot.keyClick(edit, K.Key_Space)
    wait_for(qtbot, lambda: stopped(live), "STOP from Space in a text field")
    assert edit.text() == "ws"


def test_keys_are_swallowed_when_the_keyboard_is_not_the_source(
        open_window, qtbot, monkeypatch: pytest.MonkeyPatch) -> None:
    live, window = open_window(LiveConfig(source="keyboard", rate_hz=FAST_HZ))
    keyboard = live.source("keyboard")
    presses: list[tuple] = []
    monkeypatch.setattr(keyboard, "press", lambda *args: presses.append(args))
    choose(window.panel.source_combo, "hold")
    wait_for(qtbot, lambda: live.source_name == "hold" and window._changes == 0,
             "the hand-over to hold")
    assert window.panel.source_combo.currentText() == "hold"
    qtbot.keyPress(window, K.Key_W)
    qtbot.keyRelease(window, K.Key_W)
    assert presses == [] and window.router.held == set()
    choose(window.panel.source_combo, "keyboard")
    wait_for(qtbot, lambda: live.source_name == "keyboard", "the hand-over back")
    qtbot.keyPress(window, K.Key_W)
    assert [args[0] for args in presses] == ["w"]
    qtbot.keyRelease(window, K.Key_W)


def test_help_overlay_toggles_with_f1_and_esc_closes_it_first(open_window, qtbot,
                                                              tmp_path: Path) -> None:
    live, window = open_window(LiveConfig(rate_hz=FAST_HZ))
    window.panel.help_button.click()
    assert window.help.isVisible() and "hand forward" in window.help.text.text()
    qtbot.keyClick(window, K.Key_F1)
    assert not window.help.isVisible()
    qtbot.keyClick(window, K.Key_F1)
    assert window.help.isVisible()
    window.panel.dataset_edit.setText(str(tmp_path / "data"))
    qtbot.mouseClick(window.panel.record_button, Qt.MouseButton.LeftButton)
    wait_for(qtbot, lambda: live.status().recording is not None, "the recording")
    qtbot.keyClick(window, K.Key_Escape)  # closes the help, keeps recording
    assert not window.help.isVisible()
    ticks_later(qtbot, live, 20)
    assert live.status().recording is not None
    qtbot.keyClick(window, K.Key_Escape)
    wait_for(qtbot, lambda: live.status().recording is None, "the recording to end")


# -- recording -----------------------------------------------------------------------------------
def test_record_right_left_right_saves_two_successes_and_shift_right_a_failure(
        open_window, qtbot, tmp_path: Path) -> None:
    folder = tmp_path / "data"
    live, window = open_window(LiveConfig(rate_hz=FAST_HZ))
    panel = window.panel
    panel.dataset_edit.setText(str(folder))

    def saved() -> int | None:
        rec = live.status().recording
        return None if rec is None else rec.saved

    episode = episode_of(live)
    qtbot.mouseClick(panel.record_button, Qt.MouseButton.LeftButton)
    episode = next_episode(qtbot, live, episode)
    assert saved() == 0
    qtbot.keyClick(window, K.Key_Right)
    wait_for(qtbot, lambda: saved() == 1, "the first episode saved")
    episode = next_episode(qtbot, live, episode)
    qtbot.keyClick(window, K.Key_Left)
    episode = next_episode(qtbot, live, episode)
    assert saved() == 1
    qtbot.keyClick(window, K.Key_Right)
    wait_for(qtbot, lambda: saved() == 2, "the second episode saved")
    qtbot.keyClick(window, K.Key_Escape)
    wait_for(qtbot, lambda: "recording ended: 2 episode(s) saved" in panel.message_label.text(),
             "the recording's files")
    dataset = Dataset.open(folder)
    assert dataset.episode_ids() == [0, 1]
    assert [dataset.attrs(i).success for i in (0, 1)] == [True, True]
    assert {dataset.attrs(i).end_reason for i in (0, 1)} == {"operator"}
    assert validate(folder) == []

    wait_for(qtbot, panel.record_button.isEnabled, "Record to be enabled again")
    episode = episode_of(live)
    qtbot.mouseClick(panel.record_button, Qt.MouseButton.LeftButton)
    next_episode(qtbot, live, episode)
    qtbot.keyClick(window, K.Key_Right, Qt.KeyboardModifier.ShiftModifier)
    wait_for(qtbot, lambda: saved() == 1, "the failure saved")
    wait_for(qtbot, panel.end_recording_button.isEnabled, "End recording to be enabled")
    qtbot.mouseClick(panel.end_recording_button, Qt.MouseButton.LeftButton)
    wait_for(qtbot, lambda: "recording ended: 1 episode(s) saved" in panel.message_label.text(),
             "the second recording's files")
    dataset = Dataset.open(folder)
    assert dataset.episode_ids() == [0, 1, 2]
    assert dataset.attrs(2).success is False and dataset.attrs(2).end_reason == "operator"
    assert validate(folder) == []


def test_saving_without_a_recording_says_so(open_window, qtbot) -> None:
    _, window = open_window(LiveConfig(rate_hz=FAST_HZ))
    qtbot.keyClick(window, K.Key_Right)
    wait_for(qtbot, lambda: "not recording" in window.panel.message_label.text(),
             "the error in the message line")
    window.panel.dataset_edit.setText("")
    window.panel.record_button.click()
    assert "choose a dataset folder" in window.panel.message_label.text()


# -- planner runs --------------------------------------------------------------------------------
def test_a_planner_runs_n_episodes_with_progress_and_can_be_cancelled(open_window, qtbot) -> None:
    # episodes time out after 0.3 s of simulated time: a run of 2 ends in about 30 ticks
    live, window = open_window(LiveConfig(task="box_pickup", rate_hz=FAST_HZ, time_limit_s=0.3))
    panel = window.panel
    panel.planner_combo.setCurrentText("heuristic")
    panel.episodes_spin.setValue(2)
    qtbot.mouseClick(panel.run_button, Qt.MouseButton.LeftButton)
    wait_for(qtbot, lambda: "heuristic: 2/2 episodes, 0 ok" in panel.message_label.text(),
             "the run's end")
    wait_for(qtbot, lambda: panel.progress.value() == 2 and panel.progress.maximum() == 2,
             "the progress bar")
    assert live.source_name == "hold" and panel.run_button.isEnabled()

    panel.episodes_spin.setValue(1000)
    qtbot.mouseClick(panel.run_button, Qt.MouseButton.LeftButton)
    wait_for(qtbot, panel.cancel_button.isEnabled, "Cancel enabled during the run")
    assert live.source_name == "heuristic" and not panel.run_button.isEnabled()
    qtbot.mouseClick(panel.cancel_button, Qt.MouseButton.LeftButton)
    wait_for(qtbot, lambda: "(cancelled)" in panel.planner_label.text(), "the run cancelled")
    assert live.source_name == "hold" and "cancelled" in panel.message_label.text()


# -- STOP ----------------------------------------------------------------------------------------
def test_stop_latches_from_space_and_the_button_until_reset(open_window, qtbot) -> None:
    live, window = open_window(LiveConfig(source="keyboard", rate_hz=FAST_HZ))
    panel = window.panel
    wait_for(qtbot, lambda: live.snapshot().applied, "a command applied")
    qtbot.keyClick(window, K.Key_Space)
    wait_for(qtbot, lambda: stopped(live), "STOP")
    qtbot.keyPress(window, K.Key_W)  # keys do not move a stopped robot
    ticks_later(qtbot, live, 40)
    assert stopped(live)
    qtbot.keyRelease(window, K.Key_W)

    # Space on a focused button is STOP, never the button's click
    wait_for(qtbot, panel.reset_stop_button.isEnabled, "Reset STOP enabled")
    panel.reset_stop_button.setFocus()
    qtbot.keyClick(panel.reset_stop_button, K.Key_Space)
    ticks_later(qtbot, live, 20)
    assert stopped(live) and panel.stop_button.text() == "STOPPED"

    qtbot.mouseClick(panel.reset_stop_button, Qt.MouseButton.LeftButton)
    wait_for(qtbot, lambda: live.snapshot().safety.state is not SafetyState.STOPPED
             and live.snapshot().applied, "the reset")
    qtbot.mouseClick(panel.stop_button, Qt.MouseButton.LeftButton)
    wait_for(qtbot, lambda: stopped(live), "STOP from the button")
    ticks_later(qtbot, live, 20)
    assert stopped(live)
    wait_for(qtbot, panel.reset_stop_button.isEnabled, "Reset STOP enabled")
    qtbot.mouseClick(panel.reset_stop_button, Qt.MouseButton.LeftButton)
    wait_for(qtbot, lambda: not stopped(live), "the second reset")


def test_an_unexpected_error_stops_the_robot_and_keeps_the_saved_episodes(
        open_window, qtbot, tmp_path: Path) -> None:
    folder = tmp_path / "data"
    live, window = open_window(LiveConfig(rate_hz=FAST_HZ))
    window.panel.dataset_edit.setText(str(folder))
    episode = episode_of(live)
    window.panel.record_button.click()
    next_episode(qtbot, live, episode)
    window.save_success()
    wait_for(qtbot, lambda: live.status().recording.saved == 1, "the saved episode")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        window.handle_unexpected_error(*sys.exc_info())
    wait_for(qtbot, lambda: stopped(live), "STOP")
    wait_for(qtbot, lambda: live.status().recording is None, "the recording to end")
    assert window._error_box is not None and window._error_box.isVisible()
    assert "boom" in window._error_box.text()
    window._error_box.close()
    wait_for(qtbot, lambda: Dataset.open(folder).episode_ids() == [0] and not list(
        folder.glob("episodes/*.partial")), "the saved episode's file")
    assert validate(folder) == []


# -- status bar ----------------------------------------------------------------------------------
def test_the_status_bar_shows_loop_source_safety_and_recording(open_window, qtbot,
                                                               tmp_path: Path) -> None:
    live, window = open_window(LiveConfig(source="keyboard", rate_hz=FAST_HZ))
    fields = window.status_fields
    wait_for(qtbot, lambda: fields.loop.text().startswith("Loop ")
             and "late" in fields.loop.text(), "the loop rate")
    wait_for(qtbot, lambda: fields.command_age.text().endswith(" ms"), "the command age")
    assert fields.sources.text() == "reference · keyboard"
    window.stop("test")
    wait_for(qtbot, lambda: fields.safety.text() == "STOPPED: test", "the STOP state")
    assert "stops 1" in fields.interventions.text()
    window.panel.dataset_edit.setText(str(tmp_path / "data"))
    window.record()
    wait_for(qtbot, lambda: "REC episode 0" in fields.recording.text(), "the recording state")
    assert "0 in dataset" in fields.recording.text()
    texts = status_texts(live.status())
    assert texts.safety_level == "stop" and texts.recording_level == "rec"


# -- settings ------------------------------------------------------------------------------------
def test_settings_persist_between_runs(qtbot, config_dir: Path, tmp_path: Path) -> None:
    def launch() -> tuple[LiveSession, MainWindow]:
        loaded = load_settings()
        live, messages = start_live(AppConfig(), loaded.settings)
        window = MainWindow(live, loaded.settings, messages=messages, settings_path=loaded.path,
                            view_factory=placeholder_view)
        window.show()
        return live, window

    live, window = launch()
    try:
        assert (live.config.task, live.source_name) == ("open_floor", "hold")
        choose(window.panel.task_combo, "box_pickup")
        wait_for(qtbot, lambda: live.config.task == "box_pickup" and window._changes == 0,
                 "the rebuild for box_pickup")
        choose(window.panel.source_combo, "keyboard")
        wait_for(qtbot, lambda: live.source_name == "keyboard" and window._changes == 0,
                 "the hand-over to the keyboard")
        window.panel.dataset_edit.setText(str(tmp_path / "data"))
        window.resize(760, 560)  # within the offscreen platform's 800 x 600 screen
        wait_for(qtbot, lambda: window.size() == QSize(760, 560), "the resize")
    finally:
        window.close()
        live.close()
    assert (config_dir / "app.json").exists()

    live, window = launch()
    try:
        assert (live.config.task, live.source_name) == ("box_pickup", "keyboard")
        assert window.panel.task_combo.currentText() == "box_pickup"
        assert window.panel.source_combo.currentText() == "keyboard"
        assert window.panel.dataset_edit.text() == str(tmp_path / "data")
        assert window.size() == QSize(760, 560)
    finally:
        window.close()
        live.close()


def test_a_saved_source_that_cannot_start_falls_back_to_hold(config_dir: Path) -> None:
    live, messages = start_live(AppConfig(), AppSettings(source="no-such-device"))
    try:
        assert live.source_name == "hold"
        assert len(messages) == 1 and "no-such-device" in messages[0]
    finally:
        live.close()
    with pytest.raises(ValueError, match="unknown source 'no-such-device'"):
        start_live(AppConfig(source="no-such-device"), AppSettings())


# -- the command line ----------------------------------------------------------------------------
def test_app_config_from_the_command_line() -> None:
    assert parse(AppConfig, [], prog="refine-dp app") == AppConfig()
    cfg = parse(AppConfig, ["--task", "box_pickup", "--controller", "learned", "--source",
                            "keyboard", "--screenshot", "x.png", "--exit-after", "2"],
                prog="refine-dp app")
    assert cfg == AppConfig(task="box_pickup", controller=ControllerChoice("learned"),
                            source="keyboard", screenshot=Path("x.png"), exit_after=2.0)
    with pytest.raises(ValueError, match="unknown task 'nope'"):
        AppConfig(task="nope")
    with pytest.raises(ValueError, match="--exit-after"):
        AppConfig(screenshot=Path("x.png"))
    with pytest.raises(ValueError, match="PNG"):
        AppConfig(screenshot=Path("x.jpg"), exit_after=1.0)
    with pytest.raises(ValueError, match="--controller learned"):
        parse(AppConfig, ["--controller-weights", "w"], prog="refine-dp app")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the display check is Linux's")
def test_no_display_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    check_display({"QT_QPA_PLATFORM": "offscreen"})
    check_display({"WAYLAND_DISPLAY": "wayland-0"})
    with pytest.raises(RefineDpError, match="no display.*xvfb-run refine-dp app"):
        check_display({})
    with pytest.raises(RefineDpError, match="QT_QPA_PLATFORM=xcb"):
        check_display({"QT_QPA_PLATFORM": "xcb", "WAYLAND_DISPLAY": "wayland-0"})
    with pytest.raises(RefineDpError, match="cannot connect to the X display ':4711'"):
        check_display({"DISPLAY": ":4711"})
    for name in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(RefineDpError, match="QT_QPA_PLATFORM=offscreen"):
        cmd_app(AppConfig())


def test_refine_dp_app_writes_a_screenshot_of_the_window_and_exits(qapp, tmp_path: Path) -> None:
    from teleop_app.cli import COMMANDS

    png = tmp_path / "app.png"
    entry = ["teleop_app.cli", "app"] if "app" in COMMANDS else ["teleop_app.app_cli"]
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen",
           "REFINE_DP_CONFIG_DIR": str(tmp_path / "config")}
    result = subprocess.run([sys.executable, "-m", *entry, "--task", "box_pickup",
                             "--screenshot", str(png), "--exit-after", "2"],
                            env=env, capture_output=True, text=True, timeout=300,
                            check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    image = QImage(str(png))
    assert not image.isNull() and image.width() >= 800 and image.height() >= 500
    # the 3D view (right of the control panel) shows a scene, not a flat colour
    colours = {image.pixel(x, y) for x in range(image.width() // 2, image.width(), 16)
               for y in range(image.height() // 8, image.height() * 7 // 8, 16)}
    assert len(colours) > 50
    assert not (tmp_path / "config" / "app.json").exists()  # scripted runs save no settings


@pytest.mark.qt
def test_sigkill_of_the_app_mid_recording_loses_only_the_episode_in_progress(tmp_path) -> None:
    """A real app process, recording scripted box pickups, killed with SIGKILL."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from datasets.dataset import Dataset
    from datasets.validate import validate

    folder = tmp_path / "ds"
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "REFINE_DP_CONFIG_DIR": str(tmp_path),
           "REFINE_DP_VIEW": "mujoco"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "teleop_app.cli", "app", "--task", "box_pickup", "--source",
         "scripted", "--dataset", str(folder), "--record", "--exit-after", "600"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 240
        episodes = folder / "episodes"
        while time.monotonic() < deadline and proc.poll() is None:
            if episodes.is_dir() and len(list(episodes.glob("*.h5"))) >= 2:
                break
            time.sleep(0.1)
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert [p for p in validate(folder) if p.level == "error"] == []
    dataset = Dataset.open(folder)
    kept = dataset.episode_ids()
    assert len(kept) >= 2
    for episode_id in kept:  # every finished episode is whole and readable
        episode = dataset.episode(episode_id)
        assert episode.attrs.source == "scripted" and episode.attrs.length > 0
        assert episode["obs/joint_pos"].shape == (episode.attrs.length, 29)
