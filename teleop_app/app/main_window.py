"""`MainWindow`: the desktop app's window over a running `LiveSession`.

    with LiveSession(config) as live:
        window = MainWindow(live, loaded.settings)
        window.show()
        app.exec()                  # closing the window saves the settings

Layout: the control panel (a dock on the left: STOP and Reset STOP, task / controller / source,
dataset folder and recording, planner runs with progress, the key help), the 3D view in the
centre (`teleop_app.app.world_view`, or a placeholder where it is missing or fails), a status
bar (loop rate and late ticks, command age, controller and source, safety state and
interventions, recording).

Nothing here waits for the loop: two timers read `live.status()` (10 Hz) and hand
`live.snapshot()` to the view (30 Hz, only when a new snapshot arrived); every request returns
a `Future` whose outcome comes back to the GUI thread through a queued signal and is shown in
the panel's message line. Keys: `teleop_app.app.keys`.
"""

from __future__ import annotations

import dataclasses
import logging
import traceback
from collections.abc import Callable, Iterable
from concurrent.futures import CancelledError, Future
from pathlib import Path
from types import TracebackType
from typing import Any

from PyQt6.QtCore import QBuffer, QEvent, QIODevice, QObject, QSize, Qt, QTimer, pyqtSignal
from PyQt6.QtGui import QAction, QCloseEvent, QImage, QKeySequence, QMoveEvent, QResizeEvent
from PyQt6.QtWidgets import (QApplication, QDockWidget, QFileDialog, QMainWindow, QMessageBox,
                             QScrollArea, QVBoxLayout, QWidget)

from robot_io.control import CONTROLLERS, ControllerChoice
from robot_io.errors import RefineDpError
from teleop_app.app.keys import AppAction, KeyRouter
from teleop_app.app.widgets import (ControlPanel, HelpOverlay, StatusFields, ViewFactory,
                                    compose_screenshot, make_view, placeholder_view,
                                    shutdown_view, status_texts)
from teleop_app.devices.keyboard import KeyboardDevice
from teleop_app.live import SOURCES, LiveSession, live_tasks
from teleop_app.settings import AppSettings, save_settings

log = logging.getLogger(__name__)

STATUS_HZ = 10.0
DEFAULT_SIZE = (1400, 860)  # pixels, before any saved geometry; at most the screen's
VIEW_HZ = 30.0
HEARTBEAT_S = 0.05  # the keyboard device counts keys as released after 0.2 s without one
SOURCE_ORDER = ("keyboard", "gamepad", "heuristic", "scripted", "hold")
PLANNERS = ("heuristic", "scripted")
REQUEST_ERRORS = (RefineDpError, ValueError, RuntimeError, OSError)
"""What a request to the live session raises for bad input or state (shown, not fatal)."""

class _Calls(QObject):
    """Runs callables on the GUI thread: emitted from any thread, delivered queued."""

    call = pyqtSignal(object)


class _ViewHolder(QWidget):
    """The central widget: holds the 3D view (and takes the focus, for the keys)."""

    def __init__(self) -> None:
        super().__init__()
        self.layout_ = QVBoxLayout(self)
        self.layout_.setContentsMargins(0, 0, 0, 0)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)


class MainWindow(QMainWindow):
    """The app's window over `live` (see the module docstring).

    Args:
        live: a started live session; the caller closes it after the window.
        settings: the settings loaded at start (window geometry and layout, dataset folder,
            the controller's weights); the task, controller and source are the session's.
        messages: shown at start (e.g. the settings loader's).
        settings_path: where closing saves the settings (None: `settings_path()`); saving is
            skipped when `save_on_close` is False.
        view_factory: builds the 3D view (default: `make_view`).
    """

    def __init__(self, live: LiveSession, settings: AppSettings | None = None, *,
                 messages: Iterable[str] = (), settings_path: Path | None = None,
                 save_on_close: bool = True, view_factory: ViewFactory | None = None) -> None:
        super().__init__()
        self.live = live
        self.settings = settings or AppSettings()
        self.settings_path, self.save_on_close = settings_path, save_on_close
        self._view_factory = view_factory or make_view
        self._changes = 0  # task / controller / source changes in flight: the combos wait
        self._last_snapshot: object = None
        self._error_box: QMessageBox | None = None
        self._closed = False
        self._calls = _Calls(self)
        self._calls.call.connect(lambda fn: fn())

        self.panel = ControlPanel(live_tasks(), list(CONTROLLERS), _sources(),
                                  [p for p in PLANNERS if p in SOURCES])
        dock = QDockWidget("Controls", self)
        dock.setObjectName("controls")
        dock.setFeatures(QDockWidget.DockWidgetFeature.DockWidgetMovable
                         | QDockWidget.DockWidgetFeature.DockWidgetFloatable)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(self.panel)
        scroll.setMinimumWidth(self.panel.sizeHint().width() + 20)
        dock.setWidget(scroll)
        self.addDockWidget(Qt.DockWidgetArea.LeftDockWidgetArea, dock)

        self.holder = _ViewHolder()
        self.setCentralWidget(self.holder)
        self._model = live.world.env.model
        self.view = self._view_factory(self._model, self.holder)
        self.holder.layout_.addWidget(self.view)
        self.help = HelpOverlay(self.holder)
        self.status_fields = StatusFields(self.statusBar())

        self._build_menu()
        self._wire_panel()
        self.router = KeyRouter(self, self._on_key_action, self._keyboard)
        app = QApplication.instance()
        if app is not None:
            app.installEventFilter(self.router)

        size = QSize(*DEFAULT_SIZE)
        if self.screen() is not None:
            size = size.boundedTo(self.screen().availableGeometry().size())
        self.resize(size)
        if self.settings.geometry_bytes():
            self.restoreGeometry(self.settings.geometry_bytes())
        if self.settings.state_bytes():
            self.restoreState(self.settings.state_bytes())
        if self.settings.dataset_folder:
            self.panel.dataset_edit.setText(self.settings.dataset_folder)
        self._sync_combos()
        self._refresh_status()
        messages = list(messages)
        if messages:
            self.show_message("\n".join(messages))

        self._timers = [self._timer(1.0 / STATUS_HZ, self._refresh_status),
                        self._timer(1.0 / VIEW_HZ, self._refresh_view),
                        self._timer(HEARTBEAT_S, self._heartbeat)]
        self.holder.setFocus()

    # -- construction ------------------------------------------------------------------------
    def _timer(self, period_s: float, fn: Callable[[], None]) -> QTimer:
        timer = QTimer(self)
        timer.setTimerType(Qt.TimerType.PreciseTimer)
        timer.timeout.connect(fn)
        timer.start(max(1, round(1e3 * period_s)))
        return timer

    def _build_menu(self) -> None:
        file = self.menuBar().addMenu("&File")
        for text, slot, keys in (("&New dataset…", self.new_dataset, None),
                                 ("&Open dataset…", self.choose_dataset, None),
                                 ("&Quit", self.close, QKeySequence.StandardKey.Quit)):
            action = QAction(text, self)
            action.triggered.connect(slot)
            if keys is not None:
                action.setShortcut(keys)
            file.addAction(action)
        help_menu = self.menuBar().addMenu("&Help")
        self.help_action = QAction("&Keys", self)
        self.help_action.setShortcut(QKeySequence(Qt.Key.Key_F1))
        self.help_action.setShortcutContext(Qt.ShortcutContext.ApplicationShortcut)
        self.help_action.triggered.connect(self.help.toggle)
        help_menu.addAction(self.help_action)
        self.addAction(self.help_action)

    def _wire_panel(self) -> None:
        p = self.panel
        p.stop_button.clicked.connect(lambda: self.stop("STOP button"))
        p.reset_stop_button.clicked.connect(self.reset_stop)
        p.task_combo.textActivated.connect(self.set_task)
        p.controller_combo.textActivated.connect(self.set_controller)
        p.source_combo.textActivated.connect(self.set_source)
        p.open_dataset_button.clicked.connect(self.choose_dataset)
        p.new_dataset_button.clicked.connect(self.new_dataset)
        p.dataset_edit.returnPressed.connect(self.holder.setFocus)
        p.record_button.clicked.connect(self.record)
        p.end_recording_button.clicked.connect(self.end_recording)
        p.run_button.clicked.connect(self.run_planner)
        p.cancel_button.clicked.connect(self.cancel_planner)
        p.help_button.clicked.connect(self.help.toggle)

    # -- requests (each returns at once; the outcome comes back through `_watch`) -------------
    def stop(self, reason: str = "STOP") -> None:
        """STOP: latched until Reset STOP (not queued: honoured at the next tick)."""
        self.live.stop(reason)
        self.show_message(f"STOP ({reason}): press Reset STOP to go on")

    def reset_stop(self) -> None:
        self._request(self.live.reset_stop, "reset STOP",
                      lambda applied: "STOP cleared" if applied else "STOP is still held")

    def save_success(self) -> None:
        self._request(self.live.save_success, "save the episode",
                      lambda end: "episode saved as a success")

    def save_failure(self) -> None:
        self._request(self.live.save_failure, "save the episode",
                      lambda end: "episode saved as a failure")

    def discard(self) -> None:
        self._request(self.live.discard, "discard the episode",
                      lambda end: "episode discarded; a new one begins")

    def end_recording(self) -> None:
        self._request(self.live.end_recording, "end the recording",
                      lambda saved: f"recording ended: {saved} episode(s) saved")

    def record(self) -> None:
        """Record into the dataset folder of the panel (created, or continued)."""
        folder = self.panel.dataset_edit.text().strip()
        if not folder:
            self.show_message("choose a dataset folder first (Open… or New dataset…)", True)
            return
        self.settings = dataclasses.replace(self.settings, dataset_folder=folder)
        self._request(lambda: self.live.start_recording(folder), f"record into {folder}",
                      lambda episode: f"recording into {folder}")

    def run_planner(self) -> None:
        """Run the panel's planner for its number of episodes (recorded if recording)."""
        name, episodes = self.panel.planner_combo.currentText(), self.panel.episodes_spin.value()
        self._request(lambda: self.live.run_planner(name, episodes), f"run {name}",
                      lambda p: f"{p.name}: {p.done}/{p.episodes} episodes, {p.successes} ok")

    def cancel_planner(self) -> None:
        self._request(self.live.cancel_planner, "cancel the planner",
                      lambda _: "planner cancelled")

    def set_task(self, task: str) -> None:
        self._change(lambda: self.live.set_task(task), f"task {task}")

    def set_controller(self, name: str) -> None:
        weights = self.settings.controller_weights if name == "learned" else None
        choice = ControllerChoice(name, None if weights is None else Path(weights))
        self._change(lambda: self.live.set_controller(choice), f"controller {name}")

    def set_source(self, name: str) -> None:
        self._change(lambda: self.live.set_source(name), f"source {name}", rebuild=False)

    def choose_dataset(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Open a dataset folder",
                                                  self.panel.dataset_edit.text())
        if folder:
            self.panel.dataset_edit.setText(folder)

    def new_dataset(self) -> None:
        """Pick a new folder name; Record creates the dataset there."""
        folder, _ = QFileDialog.getSaveFileName(self, "New dataset folder",
                                                self.panel.dataset_edit.text())
        if folder:
            self.panel.dataset_edit.setText(folder)
            self.show_message(f"new dataset: press Record to create {folder}")

    def _change(self, call: Callable[[], Future], what: str, rebuild: bool = True) -> None:
        """A task, controller or source change; the combos follow the session once it is done
        (a task or controller change rebuilds the world, which ends an open recording)."""
        self.router.release_all()
        recording = rebuild and self.live.recording is not None
        self._changes += 1

        def done(_: Any) -> str:
            return f"switched to {what}" + (" (the recording was ended)" if recording else "")
        if self._request(call, f"switch to {what}", done, finally_=self._changed) is None:
            self._changed()

    def _changed(self) -> None:
        self._changes -= 1
        self._sync_combos()

    def _request(self, call: Callable[[], Future], what: str,
                 done_message: Callable[[Any], str] | None = None,
                 finally_: Callable[[], None] | None = None) -> Future | None:
        """Call a live-session request; show its outcome when its future resolves."""
        try:
            future = call()
        except REQUEST_ERRORS as exc:
            self.show_message(f"could not {what}: {exc}", error=True)
            self._sync_combos()
            return None
        self._watch(future, what, done_message, finally_)
        return future

    def _watch(self, future: Future, what: str, done_message: Callable[[Any], str] | None,
               finally_: Callable[[], None] | None = None) -> None:
        def on_gui_thread() -> None:
            try:
                result = future.result()
            except CancelledError:
                self.show_message(f"{what}: cancelled")
            except Exception as exc:  # noqa: BLE001 - the request's own error, shown
                self.show_message(f"could not {what}: {exc}", error=True)
            else:
                if done_message is not None:
                    self.show_message(done_message(result))
            finally:
                if finally_ is not None:
                    finally_()

        def deliver(_: Future) -> None:
            try:
                self._calls.call.emit(on_gui_thread)
            except RuntimeError:  # the window is gone
                pass
        future.add_done_callback(deliver)

    def show_message(self, text: str, error: bool = False) -> None:
        """The panel's message line (errors in red); also logged."""
        (log.warning if error else log.info)("%s", text)
        self.panel.show_message(text, error)

    # -- keys --------------------------------------------------------------------------------
    def _keyboard(self) -> KeyboardDevice | None:
        """The keyboard device when it is the running source."""
        try:
            source = self.live.source()
        except RuntimeError:
            return None
        return source if isinstance(source, KeyboardDevice) else None

    def _on_key_action(self, action: AppAction) -> None:
        if action is AppAction.STOP:
            self.stop("Space")
        elif action is AppAction.SAVE_SUCCESS:
            self.save_success()
        elif action is AppAction.SAVE_FAILURE:
            self.save_failure()
        elif action is AppAction.DISCARD:
            self.discard()
        elif self.help.isVisible():  # Esc closes the help first
            self.help.hide()
        else:
            self.end_recording()

    def _heartbeat(self) -> None:
        if self.isActiveWindow():
            self.router.heartbeat()

    def moveEvent(self, event: QMoveEvent | None) -> None:
        super().moveEvent(event)
        if self.help.isVisible():
            self.help.place()

    def resizeEvent(self, event: QResizeEvent | None) -> None:
        super().resizeEvent(event)
        if self.help.isVisible():
            self.help.place()

    def changeEvent(self, event: QEvent | None) -> None:
        if (event is not None and event.type() == QEvent.Type.ActivationChange
                and not self.isActiveWindow()):
            self.router.release_all()  # a release event may never come now
        super().changeEvent(event)

    # -- showing the session -------------------------------------------------------------------
    def _refresh_view(self) -> None:
        try:
            self._sync_world()
            snapshot = self.live.snapshot()
        except RuntimeError:  # closed
            return
        if snapshot is not self._last_snapshot:
            self._last_snapshot = snapshot
            try:
                self.view.show_snapshot(snapshot)
            except ValueError:  # the world was swapped in between: the next tick swaps views
                self._last_snapshot = None

    def _refresh_status(self) -> None:
        try:
            status = self.live.status()
        except RuntimeError:  # closed
            return
        texts = status_texts(status)
        self.status_fields.show(texts)
        p = self.panel
        recording = status.recording is not None
        p.recording_label.setText(texts.recording)
        p.record_button.setEnabled(not recording)
        p.end_recording_button.setEnabled(recording)
        running = status.planner is not None and status.planner.active
        p.run_button.setText("Run into dataset" if recording else "Run")
        p.run_button.setEnabled(not running)
        p.cancel_button.setEnabled(running)
        p.progress.setMaximum(max(texts.planner_episodes, 1))
        p.progress.setValue(texts.planner_done)
        p.planner_label.setText(texts.planner)
        stopped = status.safety == "stopped"
        p.stop_button.setText("STOPPED" if stopped else "STOP")
        p.reset_stop_button.setEnabled(stopped)
        self.setWindowTitle(f"refine-dp · T1 live · {status.task}")
        self._sync_world()
        if self._changes == 0:
            self._sync_combos()

    def _sync_world(self) -> None:
        """A rebuilt world (another task) has another model: the view is rebuilt for it."""
        model = self.live.world.env.model
        if model is self._model:
            return
        self._model, old = model, self.view
        self.view = self._view_factory(model, self.holder)
        self.holder.layout_.replaceWidget(old, self.view)
        shutdown_view(old)
        old.deleteLater()
        self._last_snapshot = None

    def _sync_combos(self) -> None:
        """The combos show what the session runs (the source a planner run hands back to)."""
        config = self.live.current_config()
        for combo, value in ((self.panel.task_combo, config.task),
                             (self.panel.controller_combo, config.controller.name),
                             (self.panel.source_combo, config.source)):
            if combo.currentText() != value:
                combo.blockSignals(True)
                combo.setCurrentText(value)
                combo.blockSignals(False)

    # -- settings, screenshot, errors, closing -------------------------------------------------
    def current_settings(self) -> AppSettings:
        """What closing saves: the session's task, controller and source, the dataset folder,
        the window's geometry and layout."""
        config = self.live.current_config()
        weights = config.controller.weights
        folder = self.panel.dataset_edit.text().strip() or self.settings.dataset_folder
        settings = dataclasses.replace(
            self.settings, task=config.task, controller=config.controller.name,
            controller_weights=(self.settings.controller_weights if weights is None
                                else str(weights)),
            source=config.source, dataset_folder=folder)
        return settings.with_window(bytes(self.saveGeometry()), bytes(self.saveState()))

    def screenshot(self) -> QImage:
        """The whole window as shown, the 3D view's content and the help included."""
        return compose_screenshot(self, self.view, self.help)

    def save_screenshot(self, path: str | Path) -> Path:
        """`screenshot()` as a PNG, written atomically."""
        from robot_io.atomic import write_bytes_atomic

        buffer = QBuffer()
        buffer.open(QIODevice.OpenModeFlag.WriteOnly)
        if not self.screenshot().save(buffer, "PNG"):
            raise OSError(f"could not encode the screenshot for {path}")
        return write_bytes_atomic(path, bytes(buffer.data()))

    def handle_unexpected_error(self, exc_type: type[BaseException], exc: BaseException,
                                tb: TracebackType | None) -> None:
        """The top level's catch (installed as `sys.excepthook` by `cmd_app`): STOP the robot,
        end the recording (the episode in progress is dropped, saved ones stay), show a dialog.
        """
        text = "".join(traceback.format_exception(exc_type, exc, tb))
        log.error("unexpected error in the app:\n%s", text)
        try:
            self.live.stop(f"app error: {exc_type.__name__}")
            if self.live.recording is not None:
                self.live.end_recording()
        except Exception as inner:  # noqa: BLE001 - already handling an error
            log.error("could not stop the live session cleanly: %s", inner)
        self.show_message(f"unexpected error: {exc_type.__name__}: {exc}", error=True)
        if self._error_box is None:
            self._error_box = QMessageBox(QMessageBox.Icon.Critical, "refine-dp: unexpected error",
                                          "", QMessageBox.StandardButton.Ok, self)
        box = self._error_box
        box.setText(f"{exc_type.__name__}: {exc}\n\nThe robot is stopped and the episode in "
                    f"progress was dropped (saved episodes are kept). Press Reset STOP to go on.")
        box.setDetailedText(text)
        box.open()  # not exec(): the loop and the timers keep running

    def closeEvent(self, event: QCloseEvent | None) -> None:
        if self._closed:
            super().closeEvent(event)
            return
        self._closed = True
        for timer in self._timers:
            timer.stop()
        shutdown_view(self.view)
        self.router.release_all()
        app = QApplication.instance()
        if app is not None:
            app.removeEventFilter(self.router)
        if self.save_on_close:
            try:
                save_settings(self.current_settings(), self.settings_path)
            except (OSError, RuntimeError) as exc:
                log.warning("could not save the settings: %s", exc)
        super().closeEvent(event)


def _sources() -> list[str]:
    """The source names: the usual ones first, then any others registered."""
    return [s for s in SOURCE_ORDER if s in SOURCES] + sorted(set(SOURCES) - set(SOURCE_ORDER))


__all__ = ["MainWindow", "make_view", "placeholder_view"]
