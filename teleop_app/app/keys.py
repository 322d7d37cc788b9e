"""The app's keyboard: LeRobot's episode keys, STOP on Space, and the teleop keys forwarded to
the `KeyboardDevice`.

    router = KeyRouter(window, on_action=window.do, device=live_keyboard)
    QApplication.instance().installEventFilter(router)

Why an application-wide event filter (not shortcuts, not `keyPressEvent`): a focused button
takes Space (it would click itself), a combo box takes the arrow keys, the 3D view's VTK
interactor has letter keys of its own (Q and E end its loop) and a modal dialog takes every
key; the filter sees each key event before any of them. It decides:

- Space is STOP from every widget of the application (held down or repeated: once), except
  while a text field of another window (a file dialog's name field) has the focus.
- In the main window, unless one of its text fields has the focus: Right saves the episode as
  a success, Shift+Right as a failure, Left discards it, Esc ends the recording session (each
  on the press, auto-repeats ignored); every key the device binds (`KEY_NAMES`) belongs to the
  device and never reaches a widget: it is forwarded (press and release, auto-repeats
  ignored) while the keyboard is the command source, and swallowed otherwise. Ctrl, Alt and
  Meta chords are left to the window's shortcuts.
- Releases of keys the device holds are forwarded wherever they happen, so a key cannot stick.

Widgets hold no logic: the router only translates Qt events into `AppAction`s and key names.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable

from PyQt6.QtCore import QEvent, QObject, Qt
from PyQt6.QtGui import QKeyEvent
from PyQt6.QtWidgets import (QAbstractSpinBox, QApplication, QLineEdit, QPlainTextEdit,
                             QTextEdit, QWidget)

from teleop_app.devices.keyboard import KEY_NAMES, RESERVED_KEYS, KeyboardDevice

K = Qt.Key


class AppAction(enum.Enum):
    """What an app key asks the window to do."""

    STOP = "stop"
    SAVE_SUCCESS = "save_success"
    SAVE_FAILURE = "save_failure"
    DISCARD = "discard"
    END_RECORDING = "end_recording"


QT_KEY_NAMES: dict[int, str] = {
    **{getattr(K, f"Key_{c}").value: c.lower() for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ"},
    **{getattr(K, f"Key_{d}").value: d for d in "0123456789"},
    K.Key_Up.value: "up", K.Key_Down.value: "down", K.Key_Left.value: "left",
    K.Key_Right.value: "right", K.Key_Escape.value: "escape", K.Key_Space.value: "space",
}
"""Qt key codes -> the device's key names (lowercase letters, digits, arrows)."""

_DEVICE_KEYS = frozenset(KEY_NAMES)
_CHORDS = (Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.AltModifier
           | Qt.KeyboardModifier.MetaModifier)
_TEXT_ENTRY = (QLineEdit, QTextEdit, QPlainTextEdit, QAbstractSpinBox)


def key_name(key: int) -> str | None:
    """The device's name for Qt key code `key` ("w", "up", ...), None for other keys."""
    return QT_KEY_NAMES.get(int(key))


def app_action(key: int, modifiers: Qt.KeyboardModifier) -> AppAction | None:
    """The app key `key` with `modifiers` is, or None (Space: STOP with any modifier)."""
    name = key_name(key)
    if name == "space":
        return AppAction.STOP
    if name not in RESERVED_KEYS or modifiers & _CHORDS:
        return None
    shift = bool(modifiers & Qt.KeyboardModifier.ShiftModifier)
    if name == "right":
        return AppAction.SAVE_FAILURE if shift else AppAction.SAVE_SUCCESS
    if name == "left":
        return AppAction.DISCARD
    return AppAction.END_RECORDING  # escape


def is_text_entry(widget: QWidget | None) -> bool:
    """Whether `widget` is a field the user types into (it keeps its keys)."""
    return isinstance(widget, _TEXT_ENTRY)


class KeyRouter(QObject):
    """The application-wide key event filter of one window (see the module docstring).

    Args:
        window: the main window; keys other than Space count only inside it.
        on_action: called with each app action (on the GUI thread).
        device: the keyboard device to forward keys to, or None when the keyboard is not the
            command source (asked at each event: the source and the world can change).
        clock: the session's clock for the key times.
    """

    def __init__(self, window: QWidget, on_action: Callable[[AppAction], None],
                 device: Callable[[], KeyboardDevice | None],
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(window)
        self.window, self.on_action, self.device, self.clock = window, on_action, device, clock
        self.held: set[str] = set()  # device keys forwarded as pressed and not yet released
        self._held_by: KeyboardDevice | None = None

    def eventFilter(self, obj: QObject | None, event: QEvent | None) -> bool:
        if event is None or event.type() not in (QEvent.Type.KeyPress, QEvent.Type.KeyRelease):
            return False
        if not isinstance(obj, QWidget) or not isinstance(event, QKeyEvent):
            return False  # the QWindow sees it first; its widget gets it next
        return self._route(obj, event, event.type() == QEvent.Type.KeyPress)

    def _route(self, receiver: QWidget, event: QKeyEvent, press: bool) -> bool:
        name = key_name(event.key())
        if name is None:
            return False
        if not press and name in self.held and not event.isAutoRepeat():
            self._release(name)  # wherever it happens: a key cannot stick
        focus = QApplication.focusWidget()
        ours = receiver.window() is self.window
        if name == "space":
            if not ours and is_text_entry(focus):
                return False  # typing a name in a dialog
            if press and not event.isAutoRepeat():
                self.on_action(AppAction.STOP)
            return True
        if not ours or (is_text_entry(focus) and focus.window() is self.window):
            return False
        action = app_action(event.key(), event.modifiers())
        if action is not None:
            if press and not event.isAutoRepeat():
                self.on_action(action)
            return True
        if name not in _DEVICE_KEYS or (press and event.modifiers() & _CHORDS):
            return False
        if press and not event.isAutoRepeat():
            self._press(name)
        return True

    def _press(self, name: str) -> None:
        device = self.device()
        if device is None:
            return  # not the source: the key is swallowed
        if device is not self._held_by:
            self.release_all()  # a new device (a rebuilt world) starts with no keys
            self._held_by = device
        self.held.add(name)
        device.press(name, self.clock())

    def _release(self, name: str) -> None:
        self.held.discard(name)
        if self._held_by is not None:
            self._held_by.release(name, self.clock())

    def release_all(self) -> None:
        """Release every key (focus lost, source changed, window closing)."""
        device, self._held_by = self._held_by, None
        self.held.clear()
        if device is not None:
            device.set_keys(set(), self.clock())

    def heartbeat(self) -> None:
        """The window still has the focus: held keys are still held (call on a timer)."""
        device = self.device()
        if device is not None:
            device.heartbeat(self.clock())


__all__ = ["QT_KEY_NAMES", "AppAction", "KeyRouter", "app_action", "is_text_entry", "key_name"]
