"""`refine-dp app`: the desktop app (PyQt6) on the simulated T1.

    refine-dp app [--task NAME] [--source keyboard|gamepad|heuristic|scripted|hold]
                  [--dataset DIR] [--seed S] [--threads T] [CONTROLLER]
    refine-dp app --screenshot FILE.png --exit-after SECONDS    # docs and scripted checks

A setting left out is the one saved when the app last closed (`teleop_app.settings`), else the
default. Where the saved source or controller cannot start (a gamepad that is unplugged, learned
weights that are gone) the app starts with the defaults for them and says so; what the command
line asked for is never replaced. A run with `--exit-after` does not save the settings, so
scripted runs leave the user's settings as they were.

Qt is imported inside `cmd_app`: this module stays importable without the app extra, and the
command line checks its settings before anything starts.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import tyro

from robot_io.control import ControllerChoice
from robot_io.errors import RefineDpError
from teleop_app.controller_args import (CONTROLLER_HELP, RUNTIME_HELP, WEIGHTS_HELP, ControllerName,
                                        RuntimeName, recorded_or_flags)

if TYPE_CHECKING:  # mujoco and Qt are imported inside the handler only
    from teleop_app.live import LiveConfig, LiveSession
    from teleop_app.settings import AppSettings

NO_DISPLAY_HINT = ("run under Xvfb (xvfb-run refine-dp app) or set QT_QPA_PLATFORM=offscreen "
                   "for a window nobody sees")
HEADLESS_PLATFORMS = frozenset({"offscreen", "minimal", "minimalegl", "eglfs", "linuxfb", "vnc",
                                "vkkhrdisplay"})
_DEFAULT = ControllerChoice()


def _hint(default: str) -> str:
    return f"(default: {default})"


_SavedName = Annotated[ControllerName | None, tyro.conf.arg(
    help=CONTROLLER_HELP + "; None: the one used last", help_behavior_hint=_hint,
    metavar="{reference,learned}")]
_Weights = Annotated[Path | None, tyro.conf.arg(metavar="DIR", help=WEIGHTS_HELP,
                                                help_behavior_hint=_hint)]
_Runtime = Annotated[RuntimeName, tyro.conf.arg(help=RUNTIME_HELP, help_behavior_hint=_hint)]


def saved_or_flags(controller: _SavedName = None, controller_weights: _Weights = None,
                   controller_runtime: _Runtime = _DEFAULT.runtime) -> ControllerChoice | None:
    """The `ControllerChoice` the flags ask for, or None: the one saved in the settings.

    Raises:
        ValueError: weights or a runtime given without `--controller learned`.
    """
    return recorded_or_flags(controller, controller_weights, controller_runtime)  # same rules


SavedController = Annotated[ControllerChoice | None,
                            tyro.conf.arg(name="", constructor=saved_or_flags)]


@dataclass(frozen=True)
class AppConfig:
    """Settings of `refine-dp app`. Left out: the value saved when the app last closed.

    Attributes:
        task: a task or open_floor, the empty floor (None: the one used last, else open_floor).
        controller: the low-level controller (None: the one used last, else reference).
        source: the command source at start: keyboard, gamepad, heuristic, scripted or hold
            (None: the one used last, else hold).
        dataset: the dataset folder Record writes into (None: the one used last).
        screenshot: write a PNG of the whole window, 3D view included, when --exit-after ends
            the app.
        exit_after: quit after this many seconds (None: run until the window is closed).
        record: start recording into `dataset` at once (as if Record were pressed).
        seed: the world's randomisation seed.
        threads: physics threads (1 leaves the other cores to the window and the 3D view).
    """

    task: str | None = None
    controller: SavedController = None
    source: str | None = None
    dataset: Path | None = None
    screenshot: Path | None = None
    exit_after: float | None = None
    record: bool = False
    seed: int = 0
    threads: int = 1

    def __post_init__(self) -> None:
        if self.task is not None:
            from teleop_app.live_config import live_tasks
            if self.task not in live_tasks():
                raise ValueError(f"unknown task {self.task!r}; known: {', '.join(live_tasks())}")
        if self.source is not None and not self.source:
            raise ValueError("source must be a source name, got an empty string")
        if self.exit_after is not None and not self.exit_after > 0:
            raise ValueError(f"exit_after must be positive seconds, got {self.exit_after}")
        if self.screenshot is not None:
            if self.exit_after is None:
                raise ValueError("--screenshot is taken when the app exits: give --exit-after "
                                 "SECONDS too")
            if Path(self.screenshot).suffix.lower() != ".png":
                raise ValueError(f"the screenshot is a PNG: give a .png file, got "
                                 f"{self.screenshot}")
        if self.record and self.dataset is None:
            raise ValueError("--record needs the dataset folder to record into: give --dataset DIR")
        if self.threads < 0:
            raise ValueError(f"threads must be >= 0 (0: all CPUs), got {self.threads}")


def live_config(cfg: AppConfig, saved: AppSettings) -> LiveConfig:
    """The live world's config: the command line's values, else the saved ones."""
    from teleop_app.live_config import LiveConfig

    controller = cfg.controller or saved_controller(saved)
    return LiveConfig(task=cfg.task or saved.task, controller=controller,
                      source=cfg.source or saved.source, seed=cfg.seed, threads=cfg.threads)


def saved_controller(saved: AppSettings) -> ControllerChoice:
    """The saved controller (its weights apply to the learned one only)."""
    weights = saved.controller_weights if saved.controller == "learned" else None
    return ControllerChoice(saved.controller, None if weights is None else Path(weights))


def start_live(cfg: AppConfig, saved: AppSettings) -> tuple[LiveSession, list[str]]:
    """Start the live session of `cfg` over the saved settings; where the saved source or
    controller fails to start, start with the defaults for them (returned: a message why).

    Raises:
        RefineDpError / ValueError: what the command line asked for cannot start.
    """
    from teleop_app.live import LiveSession
    from teleop_app.settings import DEFAULT_SOURCE

    config = live_config(cfg, saved)
    try:
        return LiveSession(config).start(), []
    except (RefineDpError, ValueError) as exc:
        fallback = dataclasses.replace(config, source=cfg.source or DEFAULT_SOURCE,
                                       controller=cfg.controller or ControllerChoice())
        if fallback == config:
            raise
        message = (f"could not start the saved settings (source {config.source}, controller "
                   f"{config.controller.name}): {exc}; started with source {fallback.source} "
                   f"and the {fallback.controller.name} controller")
        return LiveSession(fallback).start(), [message]


def check_display(environ: Mapping[str, str] | None = None,
                  platform: str | None = None) -> None:
    """Raise a clear error where Qt would abort the process for want of a display (Linux).

    Raises:
        RefineDpError: no display to open a window on (the message says what to do).
    """
    environ = os.environ if environ is None else environ
    platform = sys.platform if platform is None else platform
    if not platform.startswith("linux"):
        return
    wanted = [p.split(":")[0] for p in environ.get("QT_QPA_PLATFORM", "").split(";") if p]
    if any(p in HEADLESS_PLATFORMS for p in wanted):
        return
    display, wayland = environ.get("DISPLAY", ""), environ.get("WAYLAND_DISPLAY", "")
    if wayland and (not wanted or any(p.startswith("wayland") for p in wanted)):
        return
    if display and (not wanted or "xcb" in wanted):
        if not _x_display_reachable(display):
            raise RefineDpError(f"no display: cannot connect to the X display {display!r}; "
                                f"{NO_DISPLAY_HINT}")
        return
    what = f"QT_QPA_PLATFORM={environ['QT_QPA_PLATFORM']} but " if wanted else ""
    raise RefineDpError(f"no display: {what}neither DISPLAY nor WAYLAND_DISPLAY is set; "
                        f"{NO_DISPLAY_HINT}")


def _x_display_reachable(display: str) -> bool:
    """Whether a local X display (":N") has its socket; True for remote displays (not checked)."""
    host, _, number = display.rpartition(":")
    number = number.split(".")[0]
    if host not in ("", "unix") or not number.isdigit():
        return True
    path = f"/tmp/.X11-unix/X{number}"
    for address in (path, "\0" + path):  # the file, then Linux's abstract socket
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(1.0)
            try:
                s.connect(address)
                return True
            except OSError:
                continue
    return False


def cmd_app(cfg: AppConfig) -> int:
    """Open the app's window on a live session and run until it is closed (or `exit_after`).

    Raises:
        MissingDependencyError: PyQt6 is not installed (the app extra).
        RefineDpError: no display; the screenshot could not be written.
        ValueError: a setting the live world rejects (e.g. an unknown source).
    """
    from robot_io.optional import require

    require("PyQt6", extra="app", purpose="the desktop app")
    check_display()
    from PyQt6.QtCore import QTimer
    from PyQt6.QtWidgets import QApplication

    from teleop_app.app.main_window import MainWindow
    from teleop_app.settings import load_settings

    app = QApplication.instance() or QApplication([sys.argv[0] if sys.argv else "refine-dp"])
    app.setApplicationName("refine-dp")
    loaded = load_settings()
    settings = loaded.settings
    if cfg.dataset is not None:
        settings = dataclasses.replace(settings, dataset_folder=str(cfg.dataset))
    live, messages = start_live(cfg, settings)
    failures: list[str] = []
    try:
        window = MainWindow(live, settings, messages=[*loaded.messages, *messages],
                            settings_path=loaded.path, save_on_close=cfg.exit_after is None)

        def finish() -> None:
            if cfg.screenshot is not None:
                try:
                    window.save_screenshot(cfg.screenshot)
                except OSError as exc:
                    failures.append(f"could not write the screenshot {cfg.screenshot}: {exc}")
            window.close()
            app.quit()

        previous = sys.excepthook, signal.getsignal(signal.SIGINT)
        sys.excepthook = window.handle_unexpected_error
        signal.signal(signal.SIGINT, lambda *_: window.close())  # Ctrl+C closes cleanly
        try:
            window.show()
            window.activateWindow()  # the keyboard's heartbeat needs the focus
            if cfg.record:
                window.record()
            if cfg.exit_after is not None:
                QTimer.singleShot(round(1e3 * cfg.exit_after), finish)
            app.exec()
        finally:
            sys.excepthook = previous[0]
            signal.signal(signal.SIGINT, previous[1])
            window.close()
    finally:
        live.close()  # STOP, the world's safe mode, the recorder's queued files written
    if failures:
        raise RefineDpError(failures[0])
    if cfg.screenshot is not None:
        print(f"wrote {cfg.screenshot}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m teleop_app.app_cli ARGS` runs `refine-dp app ARGS`."""
    from teleop_app.cli import COMMANDS
    from teleop_app.cli import main as cli_main

    argv = list(sys.argv[1:] if argv is None else argv)
    if "app" in COMMANDS:
        return cli_main(["app", *argv])
    from robot_io.sim.gl_setup import check_mujoco_gl
    from teleop_app.cli_parsing import PROG, parse

    try:  # the same handling as teleop_app.cli.main, until `app` is registered there
        check_mujoco_gl()
        return cmd_app(parse(AppConfig, argv, prog=f"{PROG} app")) or 0
    except (RefineDpError, ValueError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["AppConfig", "check_display", "cmd_app", "live_config", "saved_controller",
           "start_live"]
