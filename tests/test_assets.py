"""Tests of robot_io.assets: fetching, verifying and overriding the Booster T1 model files.

Every test runs against a cache in ``tmp_path``. The real model is fetched once per session into
the user's default cache (the one network access the tests allow) and copied from there.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from robot_io import assets
from robot_io.errors import AssetError

CACHE_NAME = f"t1-{assets.WHEEL_NAME}-{assets.WHEEL_VERSION}"


@pytest.fixture(scope="session")
def real_t1_dir() -> Path:
    """The verified model in the user's cache, fetched on first use."""
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv(assets.ENV_T1_DIR, raising=False)  # we need the cache, with its manifest
        return assets.t1_model_dir()


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty cache root in tmp_path, no override, and a fresh per-process verified set."""
    root = tmp_path / "cache"
    monkeypatch.setenv(assets.ENV_CACHE_DIR, str(root))
    monkeypatch.delenv(assets.ENV_T1_DIR, raising=False)
    monkeypatch.setattr(assets, "_verified", set())
    yield root


def _must_not_download(dest: Path) -> Path:
    raise AssertionError(f"an existing cache or override must not trigger a download ({dest})")


def _copy_into_cache(real_t1_dir: Path, cache_root: Path) -> Path:
    target = cache_root / CACHE_NAME
    shutil.copytree(real_t1_dir, target)
    return target


def _assert_nothing_left(cache_root: Path) -> None:
    """A failed fetch leaves neither a cache folder nor a half-extracted temporary one."""
    leftovers = list(cache_root.iterdir()) if cache_root.exists() else []
    assert leftovers == [], leftovers


@pytest.mark.timeout(120)
def test_no_index_and_no_cache_says_how_to_fix(isolated_cache: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    # Cut the real pip off from every index it might be configured with, so it fails at once.
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_INDEX_URL", "file:///nonexistent")
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", "")
    monkeypatch.setenv("PIP_FIND_LINKS", "")
    with pytest.raises(AssetError) as info:
        assets.t1_model_dir()  # the default downloader: pip_download
    msg = str(info.value)
    assert "could not download the Booster T1 model" in msg
    assert assets.ENV_T1_DIR in msg and str(isolated_cache) in msg
    _assert_nothing_left(isolated_cache)


def test_wrong_wheel_bytes_are_rejected_by_sha256(isolated_cache: Path) -> None:
    def bad_download(dest: Path) -> Path:
        wheel = dest / assets.WHEEL_FILE
        wheel.write_bytes(b"not the wheel")
        return wheel

    with pytest.raises(AssetError) as info:
        assets.t1_model_dir(bad_download)
    msg = str(info.value)
    assert "sha256" in msg and hashlib.sha256(b"not the wheel").hexdigest() in msg
    assert assets.WHEEL_SHA256 in msg
    _assert_nothing_left(isolated_cache)


def test_truncated_mesh_is_named_with_the_fix(real_t1_dir: Path, isolated_cache: Path) -> None:
    target = _copy_into_cache(real_t1_dir, isolated_cache)
    mesh = sorted((target / "meshes").glob("*.STL"))[0]
    size = mesh.stat().st_size
    with open(mesh, "r+b") as fh:
        fh.truncate(size // 2)
    with pytest.raises(AssetError) as info:
        assets.t1_model_dir(_must_not_download)
    msg = str(info.value)
    assert f"meshes/{mesh.name}" in msg and "sha256" in msg
    assert f"delete {target}" in msg


def test_missing_mesh_is_named(real_t1_dir: Path, isolated_cache: Path) -> None:
    target = _copy_into_cache(real_t1_dir, isolated_cache)
    mesh = sorted((target / "meshes").glob("*.STL"))[-1]
    mesh.unlink()
    with pytest.raises(AssetError, match=rf"meshes/{mesh.name} is missing.*delete"):
        assets.t1_model_dir(_must_not_download)


def test_missing_manifest_is_reported(real_t1_dir: Path, isolated_cache: Path) -> None:
    target = _copy_into_cache(real_t1_dir, isolated_cache)
    (target / assets.MANIFEST_NAME).unlink()
    with pytest.raises(AssetError) as info:
        assets.t1_model_dir(_must_not_download)
    assert assets.MANIFEST_NAME in str(info.value) and f"delete {target}" in str(info.value)


def test_override_pointing_at_an_empty_folder(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv(assets.ENV_T1_DIR, str(empty))
    with pytest.raises(AssetError) as info:
        assets.t1_model_dir(_must_not_download)
    assert assets.ENV_T1_DIR in str(info.value) and assets.MJCF_NAME in str(info.value)


def test_override_pointing_at_a_valid_copy(real_t1_dir: Path, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    copy = tmp_path / "my-t1"
    shutil.copytree(real_t1_dir, copy)
    monkeypatch.setenv(assets.ENV_T1_DIR, str(copy))
    assert assets.t1_model_dir(_must_not_download) == copy


def test_real_model_has_mjcf_and_licence(real_t1_dir: Path, isolated_cache: Path) -> None:
    assert (real_t1_dir / assets.MJCF_NAME).is_file()
    assert any((real_t1_dir / "meshes").iterdir())
    assert "Apache" in (real_t1_dir / assets.NOTICE_NAME).read_text()
    target = _copy_into_cache(real_t1_dir, isolated_cache)
    assert assets.t1_model_dir(_must_not_download) == target  # a good cache is used as is


def _fake_wheel(dest: Path, with_mjcf: bool = True) -> Path:
    """A small wheel laid out like the real one."""
    wheel = dest / assets.WHEEL_FILE
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(f"{assets.WHEEL_NAME}-{assets.WHEEL_VERSION}.dist-info/METADATA",
                    "Name: holosoma\nVersion: 0.0.3\nLicense: Apache-2.0\n\nlong text\n")
        if with_mjcf:
            zf.writestr(assets.WHEEL_ROBOT_DIR + assets.MJCF_NAME, "<mujoco/>")
        zf.writestr(assets.WHEEL_ROBOT_DIR + "meshes/a.STL", b"\x00" * 84)
        zf.writestr("holosoma/other.py", "unrelated = True\n")
    return wheel


def test_fetch_extracts_only_the_robot_with_manifest_and_notice(
        tmp_path: Path, isolated_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "src").mkdir()
    wheel = _fake_wheel(tmp_path / "src")
    monkeypatch.setattr(assets, "WHEEL_SHA256", assets.sha256_file(wheel))

    def download(dest: Path) -> Path:
        return Path(shutil.copy(wheel, dest))

    target = assets.t1_model_dir(download)
    assert target == isolated_cache / CACHE_NAME
    assert sorted(p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file()) == [
        assets.NOTICE_NAME, assets.MANIFEST_NAME, "meshes/a.STL", assets.MJCF_NAME]
    manifest = json.loads((target / assets.MANIFEST_NAME).read_text())
    assert manifest["files"]["meshes/a.STL"] == hashlib.sha256(b"\x00" * 84).hexdigest()
    notice = (target / assets.NOTICE_NAME).read_text()
    assert "License: Apache-2.0" in notice and "long text" not in notice
    assert [p.name for p in isolated_cache.iterdir()] == [CACHE_NAME]  # temporary folder removed


def test_wheel_without_the_mjcf_is_rejected(tmp_path: Path, isolated_cache: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "src").mkdir()
    wheel = _fake_wheel(tmp_path / "src", with_mjcf=False)
    monkeypatch.setattr(assets, "WHEEL_SHA256", assets.sha256_file(wheel))
    with pytest.raises(AssetError, match=rf"could not extract.*{assets.MJCF_NAME}"):
        assets.t1_model_dir(lambda dest: Path(shutil.copy(wheel, dest)))
    _assert_nothing_left(isolated_cache)
