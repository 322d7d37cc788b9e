"""The main window's parts: the control panel, the status bar's fields, the help overlay, the
3D view's factory (with a placeholder where the view is missing or fails) and the screenshot.
They lay widgets out and show texts; `MainWindow` wires them to the live session.
`status_texts` turns the live session's `StatusModel` into the status bar's words.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from PyQt6.QtCore import QPoint, QRect, QSize, Qt
from PyQt6.QtGui import QFontDatabase, QImage, QMouseEvent, QPainter, QPaintEvent
from PyQt6.QtWidgets import (QApplication, QComboBox, QFormLayout, QFrame, QGroupBox,
                             QHBoxLayout, QLabel, QLineEdit, QProgressBar, QPushButton, QSpinBox,
                             QStatusBar, QToolButton, QVBoxLayout, QWidget)

from robot_io.runner import Snapshot
from teleop_app.devices.keyboard import help_text
from teleop_app.live_status import StatusModel

if TYPE_CHECKING:
    import mujoco

log = logging.getLogger(__name__)

WINDOWLESS_PLATFORMS = frozenset({"offscreen", "minimal", "minimalegl"})

STOP_STYLE = ("QPushButton { background: #c62828; color: white; font-size: 22pt; "
              "font-weight: bold; border: 3px solid #7f0000; border-radius: 10px; }"
              "QPushButton:pressed { background: #8e0000; }")
LEVEL_STYLES = {
    "ok": "QLabel { color: #1b5e20; font-weight: bold; }",
    "warn": "QLabel { color: black; background: #ffcc80; font-weight: bold; }",
    "stop": "QLabel { color: white; background: #c62828; font-weight: bold; }",
    "rec": "QLabel { color: #b71c1c; font-weight: bold; }",
    "": "",
}
MARGIN_PX = 16
APP_KEYS = (("Space", "STOP"), ("→", "save episode: success"),
            ("Shift+→", "save episode: failure"), ("←", "discard, re-record"),
            ("Esc", "end recording"))


@dataclass(frozen=True)
class StatusTexts:
    """The status bar's words for one `StatusModel`.

    Attributes:
        loop: loop rate, late ticks and jitter.
        command_age: age of the newest operator input.
        sources: controller and command source.
        safety, safety_level: the safety state (and why), and its colour: "ok", "warn", "stop".
        interventions: the safety filter's counters (clamps, watchdog holds, stops).
        recording, recording_level: the recording (episode, timer, episodes in the dataset);
            level "rec" while recording.
        planner: the latest planner run, "" when there was none.
        planner_done, planner_episodes: the run's progress.
    """

    loop: str
    command_age: str
    sources: str
    safety: str
    safety_level: str
    interventions: str
    recording: str
    recording_level: str
    planner: str
    planner_done: int
    planner_episodes: int


def status_texts(s: StatusModel) -> StatusTexts:
    """The status bar's words for `s`."""
    jitter = "" if s.jitter_p99_ms is None else f" · jitter p99 {s.jitter_p99_ms:.1f} ms"
    loop = f"Loop {s.rate_hz:.0f}/{s.target_rate_hz:g} Hz · late {s.late_ticks}/{s.ticks}{jitter}"
    age = "Input –" if s.command_age_s is None else f"Input {1e3 * s.command_age_s:.0f} ms"
    level = {"ok": "ok", "stopped": "stop"}.get(s.safety, "warn")
    safety = s.safety.upper() + (f": {s.safety_reason}" if s.safety_reason else "")
    if s.error:
        safety += f" · error: {s.error}"
    if s.recording is not None:
        r = s.recording
        recording = (f"● REC episode {r.episode_id} · {s.episode_time_s:.1f} s · "
                     f"{r.dataset_episodes} in dataset")
    else:
        recording = f"Not recording · episode {s.episode_time_s:.1f} s"
    planner, done, total = "", 0, 0
    if s.planner is not None:
        p = s.planner
        state = ("cancelled" if p.cancelled else "done" if p.finished else
                 "into dataset" if p.recording else "running")
        planner = f"{p.name}: {p.done}/{p.episodes} episodes, {p.successes} ok ({state})"
        done, total = p.done, p.episodes
    return StatusTexts(loop=loop, command_age=age, sources=f"{s.controller} · {s.source}",
                       safety=safety, safety_level=level, interventions=s.interventions,
                       recording=recording, recording_level="rec" if s.recording else "",
                       planner=planner, planner_done=done, planner_episodes=total)


class ElidedLabel(QLabel):
    """A one-line label that shortens its text with "…" to the width it gets (the full text
    in its tooltip), so that a long text cannot push its neighbours off the status bar."""

    def minimumSizeHint(self) -> QSize:
        return QSize(60, super().minimumSizeHint().height())

    def paintEvent(self, event: QPaintEvent | None) -> None:
        painter = QPainter(self)
        rect = self.contentsRect()
        text = self.fontMetrics().elidedText(self.text(), Qt.TextElideMode.ElideRight,
                                             rect.width())
        painter.drawText(rect, int(Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignLeft),
                         text)
        painter.end()


class StatusFields:
    """The status bar's labels (permanent widgets of `bar`, left to right)."""

    def __init__(self, bar: QStatusBar) -> None:
        bar.setStyleSheet("QStatusBar::item { border: none; } "
                          "QStatusBar QLabel { padding: 0 6px; border-left: 1px solid #b0b0b0; }")
        self.loop, self.command_age, self.sources = QLabel(), QLabel(), QLabel()
        self.safety, self.recording = QLabel(), QLabel()
        self.interventions = ElidedLabel()
        for label in (self.loop, self.command_age, self.sources, self.safety,
                      self.interventions, self.recording):
            label.setTextInteractionFlags(Qt.TextInteractionFlag.NoTextInteraction)
            bar.addPermanentWidget(label, 1 if label is self.interventions else 0)

    def show(self, t: StatusTexts) -> None:
        self.loop.setText(t.loop)
        self.command_age.setText(t.command_age)
        self.sources.setText(t.sources)
        self.safety.setText(t.safety)
        self.safety.setStyleSheet(LEVEL_STYLES[t.safety_level])
        self.safety.setToolTip(t.safety)
        self.interventions.setText(t.interventions)
        self.interventions.setToolTip(t.interventions)
        self.recording.setText(t.recording)
        self.recording.setStyleSheet(LEVEL_STYLES[t.recording_level])


class ControlPanel(QWidget):
    """The left panel: world, dataset, planner and safety controls (unwired)."""

    def __init__(self, tasks: list[str], controllers: list[str], sources: list[str],
                 planners: list[str], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 8, 8, 8)

        self.stop_button = QPushButton("STOP")
        self.stop_button.setStyleSheet(STOP_STYLE)
        self.stop_button.setMinimumHeight(80)
        self.stop_button.setToolTip("STOP the robot (Space, always). Latched until Reset STOP.")
        self.reset_stop_button = QPushButton("Reset STOP")
        self.reset_stop_button.setToolTip("clear a latched STOP")
        layout.addWidget(self.stop_button)
        layout.addWidget(self.reset_stop_button)

        world = QGroupBox("World")
        form = QFormLayout(world)
        self.task_combo = _combo(tasks)
        self.controller_combo = _combo(controllers)
        self.source_combo = _combo(sources)
        form.addRow("Task", self.task_combo)
        form.addRow("Controller", self.controller_combo)
        form.addRow("Source", self.source_combo)
        layout.addWidget(world)

        data = QGroupBox("Dataset")
        box = QVBoxLayout(data)
        self.dataset_edit = QLineEdit()
        self.dataset_edit.setPlaceholderText("choose or create a dataset folder")
        self.open_dataset_button = QPushButton("Open…")
        self.new_dataset_button = QPushButton("New dataset…")
        self.record_button = QPushButton("● Record")
        self.record_button.setStyleSheet("QPushButton { color: #b71c1c; font-weight: bold; }")
        self.end_recording_button = QPushButton("End recording (Esc)")
        self.recording_label = QLabel("Not recording")
        self.recording_label.setWordWrap(True)
        box.addWidget(self.dataset_edit)
        box.addLayout(_row(self.open_dataset_button, self.new_dataset_button))
        box.addLayout(_row(self.record_button, self.end_recording_button))
        box.addWidget(self.recording_label)
        layout.addWidget(data)

        planner = QGroupBox("Planner")
        pbox = QVBoxLayout(planner)
        pform = QFormLayout()
        self.planner_combo = _combo(planners)
        self.episodes_spin = QSpinBox()
        self.episodes_spin.setRange(1, 10_000)
        pform.addRow("Planner", self.planner_combo)
        pform.addRow("Episodes", self.episodes_spin)
        self.run_button = QPushButton("Run")
        self.run_button.setToolTip("run the planner for N fresh episodes, recorded when a "
                                   "recording is open, then hand back to the source")
        self.cancel_button = QPushButton("Cancel")
        self.progress = QProgressBar()
        self.progress.setFormat("%v/%m")
        self.progress.setValue(0)
        self.planner_label = QLabel("")
        self.planner_label.setWordWrap(True)
        pbox.addLayout(pform)
        pbox.addLayout(_row(self.run_button, self.cancel_button))
        pbox.addWidget(self.progress)
        pbox.addWidget(self.planner_label)
        layout.addWidget(planner)

        keys = QGroupBox("Keys")
        kform = QFormLayout(keys)
        kform.setVerticalSpacing(2)
        for key, text in APP_KEYS:
            kform.addRow(f"<b>{key}</b>", QLabel(text))
        self.help_button = QToolButton()
        self.help_button.setText("? All keys (F1)")
        self.help_button.setToolTip("the key map: teleop keys and the app's keys")
        kform.addRow(self.help_button)
        layout.addWidget(keys)

        self.message_label = QLabel("")
        self.message_label.setWordWrap(True)
        self.message_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.message_label)
        layout.addStretch(1)

    def show_message(self, text: str, error: bool = False) -> None:
        self.message_label.setText(text)
        self.message_label.setStyleSheet("QLabel { color: #b71c1c; }" if error else "")


def _combo(items: list[str]) -> QComboBox:
    combo = QComboBox()
    combo.addItems(items)
    return combo


def _row(*widgets: QWidget) -> QHBoxLayout:
    row = QHBoxLayout()
    for w in widgets:
        row.addWidget(w)
    return row


class HelpOverlay(QFrame):
    """The key map over the 3D view's corner; F1, Esc or a click hides it.

    A frameless tool window of its own, not a child widget: the 3D view is a native OpenGL
    window, which would cover any sibling widget drawn over it. It never takes the keyboard
    focus, so the keys keep driving the robot while it is shown.

    Args:
        anchor: the widget it is centred on (the 3D view's holder); its window owns it.
    """

    def __init__(self, anchor: QWidget) -> None:
        super().__init__(anchor.window(), Qt.WindowType.Tool
                         | Qt.WindowType.FramelessWindowHint
                         | Qt.WindowType.WindowDoesNotAcceptFocus)
        self.anchor = anchor
        self.setAttribute(Qt.WidgetAttribute.WA_ShowWithoutActivating)
        self.setObjectName("help")
        self.setStyleSheet("QFrame#help { background: #1e1f28; border: 2px solid #5c6bc0; } "
                           "QLabel { color: white; }")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(18, 14, 18, 14)
        title = QLabel("Keys")
        title.setStyleSheet("QLabel { font-size: 16pt; font-weight: bold; }")
        self.text = QLabel(help_text() + "\nF1           this help")
        font = QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont)
        font.setPointSize(max(font.pointSize(), 11))
        self.text.setFont(font)
        note = QLabel("The teleop keys drive the robot while the source is the keyboard.\n"
                      "F1, Esc or a click closes this help.")
        layout.addWidget(title)
        layout.addWidget(self.text)
        layout.addWidget(note)
        self.hide()

    def place(self) -> None:
        """At the anchor's top-left corner (the robot stays in sight), at the size the text
        needs."""
        self.adjustSize()
        corner = self.anchor.mapToGlobal(QPoint(MARGIN_PX, MARGIN_PX))
        self.move(corner)

    def toggle(self) -> None:
        if self.isVisible():
            self.hide()
        else:
            self.place()
            self.show()
            self.raise_()

    def mousePressEvent(self, event: QMouseEvent | None) -> None:
        self.hide()


class PlaceholderView(QLabel):
    """Stands in for the 3D view (`teleop_app.app.world_view`) where it is missing or fails:
    the same methods, showing the hands' commanded and measured positions as text."""

    def __init__(self, reason: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.reason = reason
        self.frames_rendered = 0
        self.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.setMinimumSize(320, 240)
        self.setStyleSheet("QLabel { background: #263238; color: #eceff1; }")
        font = QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont)
        font.setPointSize(max(font.pointSize(), 11))
        self.setFont(font)
        self._tick = -1
        self.setText(f"3D view unavailable: {reason}")

    def show_snapshot(self, snapshot: Snapshot) -> None:
        if snapshot.tick == self._tick or not self.isVisible():
            return
        self._tick = snapshot.tick
        lines = [f"3D view unavailable: {self.reason}", "", f"tick {snapshot.tick}"]
        for name, hands in (("commanded", None if snapshot.command is None
                             else snapshot.command.hand_pos),
                            ("measured", None if snapshot.obs is None
                             else snapshot.obs.hand_pos)):
            if hands is not None:
                left, right = (", ".join(f"{v:+.3f}" for v in hands[0, i].tolist())
                               for i in (0, 1))
                lines.append(f"{name:>9} hands  L ({left})  R ({right})")
        self.setText("\n".join(lines))

    def fps(self) -> float:
        return 0.0

    def capture(self) -> np.ndarray | None:
        """None: `QWidget.grab` shows this view as it is."""
        return None


ViewFactory = Callable[["mujoco.MjModel", QWidget], QWidget]
"""(model, parent) -> a widget with show_snapshot(snapshot), frames_rendered, fps(), capture()."""


VIEW_MAX_FPS = 20.0


def make_view(model: mujoco.MjModel, parent: QWidget | None = None) -> QWidget:
    """The 3D view of `model`, or a placeholder when the view is missing or fails to build.

    On Qt's windowless platforms (offscreen, minimal) VTK cannot make a GL context inside Qt
    and aborts the process, so the view shows MuJoCo's offscreen frames there.
    """
    try:
        from teleop_app.app.world_view import make_world_view
    except ImportError as exc:
        return PlaceholderView(f"the 3D view is not installed ({exc})", parent)
    windowless = QApplication.platformName() in WINDOWLESS_PLATFORMS
    try:
        # 20 FPS: on 2 cores with software GL, 30 FPS cost the 50 Hz loop about 6 % late ticks
        # and 20 FPS about 3 % (`refine-dp bench app`).
        return make_world_view(model, parent, prefer="mujoco" if windowless else "vtk",
                               max_fps=VIEW_MAX_FPS)
    except Exception as exc:  # a broken view must not keep the app from driving
        log.warning("the 3D view failed; showing a placeholder", exc_info=exc)
        return PlaceholderView(f"the 3D view failed: {exc}", parent)


def placeholder_view(model: mujoco.MjModel, parent: QWidget | None = None) -> QWidget:
    """A `ViewFactory` without 3D (tests of the window's logic, platforms without GL)."""
    return PlaceholderView("disabled", parent)


def compose_screenshot(window: QWidget, view: QWidget, overlay: QWidget | None = None) -> QImage:
    """The whole `window` as shown: its grab, with `view.capture()` (the 3D view's own frame)
    painted into the view's rectangle, since `QWidget.grab` does not see OpenGL content, and
    `overlay` (a window of its own) on top where it is shown."""
    image = window.grab().toImage()
    try:
        frame = view.capture()
    except RuntimeError as exc:  # nothing drawn yet: the grab is all there is
        log.warning("the 3D view has no frame for the screenshot: %s", exc)
        frame = None
    painter = QPainter(image)  # in the window's logical pixels (the image keeps its ratio)
    if frame is not None:
        painter.drawImage(_fit(frame.shape[1], frame.shape[0],
                               QRect(view.mapTo(window, QPoint(0, 0)), view.size())),
                          _qimage(frame))
    if overlay is not None and overlay.isVisible():
        at = overlay.mapToGlobal(QPoint(0, 0)) - window.mapToGlobal(QPoint(0, 0))
        painter.drawImage(at, overlay.grab().toImage())
    painter.end()
    return image


def shutdown_view(view: QWidget) -> None:
    """Stop a view's rendering and free its GL resources (the 3D view has `shutdown`)."""
    shutdown = getattr(view, "shutdown", None)
    if callable(shutdown):
        shutdown()
    view.close()


def _fit(width: int, height: int, rect: QRect) -> QRect:
    """The largest rectangle of aspect width:height centred in `rect` (as a view shows its
    frame: the VTK view's frame fills it exactly)."""
    scale = min(rect.width() / max(width, 1), rect.height() / max(height, 1))
    w, h = round(width * scale), round(height * scale)
    return QRect(rect.x() + (rect.width() - w) // 2, rect.y() + (rect.height() - h) // 2, w, h)


def _qimage(frame: np.ndarray) -> QImage:
    """An (H, W, 3|4) uint8 array as a QImage (copied)."""
    frame = np.ascontiguousarray(frame, dtype=np.uint8)
    h, w, c = frame.shape
    fmt = QImage.Format.Format_RGB888 if c == 3 else QImage.Format.Format_RGBA8888
    return QImage(frame.data, w, h, frame.strides[0], fmt).copy()


__all__ = ["ControlPanel", "ElidedLabel", "HelpOverlay", "PlaceholderView", "StatusFields",
           "StatusTexts", "ViewFactory", "compose_screenshot", "make_view", "placeholder_view",
           "shutdown_view", "status_texts"]
