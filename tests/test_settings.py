"""App settings: a JSON round trip, bad files give defaults and a message, atomic writes."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest

from teleop_app.settings import (CONFIG_DIR_ENV, SETTINGS_VERSION, AppSettings, load_settings,
                                 save_settings, settings_path)


def test_round_trip_including_window_bytes(tmp_path: Path) -> None:
    path = tmp_path / "cfg" / "app.json"
    saved = AppSettings(dataset_folder="/data/pick", task="box_pickup", controller="learned",
                        controller_weights="/w/ctrl", source="keyboard"
                        ).with_window(b"\x01\xd9\xd0\xcb\x00geometry", b"\x00state\xff")
    assert save_settings(saved, path) == path
    loaded = load_settings(path)
    assert loaded.settings == saved and loaded.messages == () and loaded.path == path
    assert loaded.settings.geometry_bytes() == b"\x01\xd9\xd0\xcb\x00geometry"
    assert loaded.settings.state_bytes() == b"\x00state\xff"
    assert json.loads(path.read_text())["version"] == SETTINGS_VERSION


def test_no_file_gives_the_defaults_silently(tmp_path: Path) -> None:
    loaded = load_settings(tmp_path / "app.json")
    assert loaded.settings == AppSettings() and loaded.messages == ()
    assert AppSettings().task == "open_floor" and AppSettings().geometry_bytes() == b""


@pytest.mark.parametrize("content, words", [
    (b'{"version": 1, "task": "door"', "could not be read"),   # truncated
    (b"\xff\xfe\x00garbage", "could not be read"),              # not UTF-8
    (b"[1, 2, 3]", "no JSON object"),
    (b'{"version": 99, "task": "door"}', "version 99"),
    (b'{"task": "door"}', "version None"),
])
def test_a_damaged_or_unknown_version_file_gives_defaults_and_a_message(
        tmp_path: Path, content: bytes, words: str) -> None:
    path = tmp_path / "app.json"
    path.write_bytes(content)
    loaded = load_settings(path)
    assert loaded.settings == AppSettings()
    assert len(loaded.messages) == 1 and words in loaded.messages[0]


def test_unknown_names_and_wrong_types_fall_back_field_by_field(tmp_path: Path) -> None:
    path = tmp_path / "app.json"
    path.write_text(json.dumps({"version": 1, "task": "moon", "controller": "magic",
                                "controller_weights": "/w", "source": "gamepad",
                                "dataset_folder": 5, "window_geometry": "!!not base64",
                                "colour": "blue"}))
    loaded = load_settings(path)
    s = loaded.settings
    assert (s.task, s.controller, s.controller_weights) == ("open_floor", "reference", None)
    assert s.source == "gamepad"  # sources register at run time: not checked here
    assert s.dataset_folder is None and s.geometry_bytes() == b""
    text = "\n".join(loaded.messages)
    for words in ("'moon' is unknown", "'magic' is unknown", "dataset_folder should be a string",
                  "unknown keys ['colour']"):
        assert words in text
    assert len(loaded.messages) == 4


def test_the_folder_comes_from_the_env_then_xdg_then_home(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CONFIG_DIR_ENV, str(tmp_path / "mine"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert settings_path() == tmp_path / "mine" / "app.json"
    assert settings_path(tmp_path / "arg") == tmp_path / "arg" / "app.json"
    monkeypatch.delenv(CONFIG_DIR_ENV)
    assert settings_path() == tmp_path / "xdg" / "refine-dp" / "app.json"
    monkeypatch.delenv("XDG_CONFIG_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert settings_path() == tmp_path / "home" / ".config" / "refine-dp" / "app.json"
    monkeypatch.setenv(CONFIG_DIR_ENV, str(tmp_path / "mine"))
    save_settings(AppSettings(task="door"))
    assert load_settings().settings.task == "door"


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "app.json"
    save_settings(AppSettings(task="door"), path)
    before = path.read_bytes()

    def fail(src: object, dst: object) -> None:
        raise OSError("disk full")
    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        save_settings(dataclasses.replace(AppSettings(), task="stair"), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["app.json"]
