"""The app's settings that persist between runs: last dataset folder, task, controller, command
source and the window's geometry and layout, in one JSON file.

    loaded = load_settings()               # never raises on a bad file: defaults + messages
    for message in loaded.messages: show(message)
    save_settings(dataclasses.replace(loaded.settings, task="door"))

Where: `settings_path()`: $REFINE_DP_CONFIG_DIR/app.json, else $XDG_CONFIG_HOME/refine-dp/app.json,
else ~/.config/refine-dp/app.json; every function takes an explicit path too. The file is
written atomically (a reader or a crash sees the old file or the new one). A damaged file, an
unknown version or values of the wrong type give the defaults (for the fields concerned) and a
message, never an error; so do a task or controller this build does not know. The command
source is not checked here: teleop devices register their sources at run time, so the app
checks it when it builds the source. Window geometry and state are Qt's opaque bytes
(`saveGeometry()`, `saveState()`), stored base64-encoded.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from robot_io.atomic import write_text_atomic

SETTINGS_VERSION = 1
CONFIG_DIR_ENV = "REFINE_DP_CONFIG_DIR"
SETTINGS_FILE = "app.json"
DEFAULT_TASK = "open_floor"
DEFAULT_CONTROLLER = "reference"
DEFAULT_SOURCE = "hold"


@dataclass(frozen=True)
class AppSettings:
    """What the app remembers.

    Attributes:
        dataset_folder: the dataset recorded into last (None: never).
        task: a registered task or "open_floor".
        controller: "reference" or "learned".
        controller_weights: the learned controller's weights folder (None: the shipped ones).
        source: the command source's name (a device or a planner).
        window_geometry, window_state: Qt's saveGeometry() / saveState() bytes, base64.
    """

    dataset_folder: str | None = None
    task: str = DEFAULT_TASK
    controller: str = DEFAULT_CONTROLLER
    controller_weights: str | None = None
    source: str = DEFAULT_SOURCE
    window_geometry: str = ""
    window_state: str = ""

    def geometry_bytes(self) -> bytes:
        """`window_geometry` decoded (b"" when absent or damaged)."""
        return _b64decode(self.window_geometry)

    def state_bytes(self) -> bytes:
        return _b64decode(self.window_state)

    def with_window(self, geometry: bytes, state: bytes = b"") -> AppSettings:
        """A copy with the window's geometry and state bytes."""
        return dataclasses.replace(self, window_geometry=base64.b64encode(geometry).decode(),
                                   window_state=base64.b64encode(state).decode())


@dataclass(frozen=True)
class LoadedSettings:
    """Settings read from `path`, with a message for everything that fell back to a default."""

    settings: AppSettings
    messages: tuple[str, ...]
    path: Path


def settings_path(config_dir: str | os.PathLike[str] | None = None) -> Path:
    """The settings file: in `config_dir`, else $REFINE_DP_CONFIG_DIR, else
    $XDG_CONFIG_HOME/refine-dp, else ~/.config/refine-dp."""
    if config_dir is None:
        config_dir = os.environ.get(CONFIG_DIR_ENV) or None
    if config_dir is None:
        xdg = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
        config_dir = Path(xdg) / "refine-dp"
    return Path(config_dir) / SETTINGS_FILE


def load_settings(path: str | os.PathLike[str] | None = None,
                  tasks: Iterable[str] | None = None,
                  controllers: Iterable[str] | None = None) -> LoadedSettings:
    """Read the settings (defaults when there is no file). Never raises on the file's content.

    Args:
        path: the settings file (default: `settings_path()`).
        tasks, controllers: the names known to this build (default: the registries).
    """
    path = Path(path) if path is not None else settings_path()
    if not path.exists():
        return LoadedSettings(AppSettings(), (), path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return _defaults(path, f"the settings file {path} could not be read ({exc}); using "
                               f"the defaults (it is replaced when the app saves)")
    if not isinstance(data, dict):
        return _defaults(path, f"the settings file {path} holds no JSON object; using the "
                               f"defaults")
    version = data.get("version")
    if version != SETTINGS_VERSION:
        return _defaults(path, f"the settings file {path} has version {version!r}, this build "
                               f"reads version {SETTINGS_VERSION}; using the defaults")
    settings, messages = _from_dict(data, path)
    settings, more = _check_names(settings, tasks, controllers)
    return LoadedSettings(settings, tuple(messages + more), path)


def save_settings(settings: AppSettings, path: str | os.PathLike[str] | None = None) -> Path:
    """Write the settings atomically (creates the folder); returns the file's path."""
    path = Path(path) if path is not None else settings_path()
    data = {"version": SETTINGS_VERSION, **dataclasses.asdict(settings)}
    return write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def _defaults(path: Path, message: str) -> LoadedSettings:
    return LoadedSettings(AppSettings(), (message,), path)


def _from_dict(data: dict, path: Path) -> tuple[AppSettings, list[str]]:
    """The known fields of the right type; a message for each one that is not."""
    defaults, values, messages = AppSettings(), {}, []
    for f in dataclasses.fields(AppSettings):
        if f.name not in data:
            continue
        value, default = data[f.name], getattr(defaults, f.name)
        optional = default is None
        if isinstance(value, str) or (optional and value is None):
            values[f.name] = value
        else:
            messages.append(f"settings {path}: {f.name} should be a string, got {value!r}; "
                            f"using {default!r}")
    unknown = sorted(set(data) - {f.name for f in dataclasses.fields(AppSettings)} - {"version"})
    if unknown:
        messages.append(f"settings {path}: ignoring unknown keys {unknown}")
    return AppSettings(**values), messages


def _check_names(settings: AppSettings, tasks: Iterable[str] | None,
                 controllers: Iterable[str] | None) -> tuple[AppSettings, list[str]]:
    if tasks is None:
        from robot_io.tasks import task_names
        tasks = [*task_names(), DEFAULT_TASK]
    if controllers is None:
        from robot_io.control import CONTROLLERS
        controllers = CONTROLLERS
    tasks, controllers = sorted(tasks), sorted(controllers)
    messages, changes = [], {}
    if settings.task not in tasks:
        messages.append(f"the saved task {settings.task!r} is unknown (known: "
                        f"{', '.join(tasks)}); using {DEFAULT_TASK!r}")
        changes["task"] = DEFAULT_TASK
    if settings.controller not in controllers:
        messages.append(f"the saved controller {settings.controller!r} is unknown (known: "
                        f"{', '.join(controllers)}); using {DEFAULT_CONTROLLER!r}")
        changes["controller"], changes["controller_weights"] = DEFAULT_CONTROLLER, None
    return dataclasses.replace(settings, **changes), messages


def _b64decode(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return b""


__all__ = ["CONFIG_DIR_ENV", "SETTINGS_VERSION", "AppSettings", "LoadedSettings",
           "load_settings", "save_settings", "settings_path"]
