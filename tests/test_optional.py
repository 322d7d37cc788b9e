"""Tests of robot_io.optional: lazy imports of optional dependencies."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from robot_io.errors import MissingDependencyError, RefineDpError
from robot_io.optional import OPTIONAL_MODULES, install_hint, require

ABSENT = "refine_dp_surely_absent_module"


def test_present_module_is_returned() -> None:
    assert require("json", "export", "a test") is json


def test_missing_module_names_module_purpose_and_extra() -> None:
    with pytest.raises(MissingDependencyError) as info:
        require(ABSENT, "gpu", "the GPU backend")
    msg = str(info.value)
    assert msg == (f"{ABSENT} is needed for the GPU backend; "
                   "install it with `pip install 'refine-dp[gpu]'`")
    assert info.value.name == ABSENT
    assert isinstance(info.value, ImportError) and isinstance(info.value, RefineDpError)
    assert isinstance(info.value.__cause__, ModuleNotFoundError)


def test_missing_submodule_of_missing_package() -> None:
    with pytest.raises(MissingDependencyError, match=r"refine-dp\[export\]"):
        require(f"{ABSENT}.sub", "export", "ONNX export")


@pytest.mark.parametrize("module,extra", sorted(OPTIONAL_MODULES.items()))
def test_extra_is_looked_up_from_the_known_map(monkeypatch: pytest.MonkeyPatch, module: str,
                                               extra: str) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # makes the import fail even when installed
    with pytest.raises(MissingDependencyError) as info:
        require(module, purpose="a test")
    assert str(info.value).startswith(f"{module} is needed for a test; ")
    assert str(info.value).endswith(install_hint(extra))


def test_non_pip_sources_say_where_to_get_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "isaaclab", None)
    with pytest.raises(MissingDependencyError) as info:
        require("isaaclab", purpose="the Isaac Lab backend")
    assert "Python 3.12" in str(info.value) and "pip install 'refine-dp" not in str(info.value)
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(MissingDependencyError, match="NVIDIA's own channel"):
        require("tensorrt", purpose="TensorRT export")


def test_installed_but_broken_module_is_reported_as_broken(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "refine_dp_broken_mod.py").write_text(f"import {ABSENT}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(MissingDependencyError) as info:
        require("refine_dp_broken_mod", "vr", "VR teleoperation")
    msg = str(info.value)
    assert "is installed but could not be imported" in msg and ABSENT in msg
    assert "refine-dp[vr]" in msg


def test_unknown_extra_and_unknown_module_are_value_errors() -> None:
    with pytest.raises(ValueError, match=r"unknown extra 'gpus'.*'gpu'"):
        require("json", "gpus", "a test")  # a typo fails even though json is installed
    with pytest.raises(ValueError, match="no extra is known"):
        require(ABSENT)
