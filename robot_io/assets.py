"""The Booster T1 model files: fetched once from the published wheel, verified, cached.

The official 29-DoF MJCF and meshes ship (Apache-2.0) inside the ``holosoma==0.0.3`` wheel.
We never install that package: the wheel is downloaded without dependencies by the user's own
``pip`` (so whatever index pip is configured with is used), its sha256 is checked, and only
``holosoma/data/robots/t1/`` is extracted into a user cache together with a licence notice taken
from the wheel's metadata and a manifest of file hashes that is checked on every load.

Environment variables:
    REFINE_DP_T1_DIR: a local folder holding ``t1_29dof.xml`` and ``meshes/``; used as is.
    REFINE_DP_CACHE_DIR: the cache root (default ``$XDG_CACHE_HOME/refine-dp`` or
        ``~/.cache/refine-dp``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

from robot_io.errors import AssetError

WHEEL_NAME = "holosoma"
WHEEL_VERSION = "0.0.3"
WHEEL_FILE = f"{WHEEL_NAME}-{WHEEL_VERSION}-py3-none-any.whl"
WHEEL_SHA256 = "1c007c27dbf130c04533af6052649d88da32eaa9b54e69c6d39009e979a2312f"
WHEEL_ROBOT_DIR = "holosoma/data/robots/t1/"
MJCF_NAME = "t1_29dof.xml"
MANIFEST_NAME = "manifest.json"
NOTICE_NAME = "LICENSE-NOTICE.txt"

ENV_T1_DIR = "REFINE_DP_T1_DIR"
ENV_CACHE_DIR = "REFINE_DP_CACHE_DIR"

Downloader = Callable[[Path], Path]
"""Downloads the wheel into the given folder and returns the wheel's path."""

_verified: set[Path] = set()


def cache_root() -> Path:
    """The user cache folder of this project."""
    if os.environ.get(ENV_CACHE_DIR):
        return Path(os.environ[ENV_CACHE_DIR]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "refine-dp"


def pip_download(dest: Path) -> Path:
    """Download the T1 wheel with the running interpreter's pip, without dependencies."""
    cmd = [sys.executable, "-m", "pip", "download", f"{WHEEL_NAME}=={WHEEL_VERSION}",
           "--no-deps", "--only-binary=:all:", "--disable-pip-version-check", "-q", "-d", str(dest)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise AssetError(_no_network_message(str(exc))) from exc
    wheel = dest / WHEEL_FILE
    if proc.returncode != 0 or not wheel.exists():
        last = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["(no output)"]
        raise AssetError(_no_network_message(last[0]))
    return wheel


def _no_network_message(detail: str) -> str:
    return (f"could not download the Booster T1 model ({WHEEL_NAME}=={WHEEL_VERSION} wheel) and no "
            f"cached copy exists in {cache_root()}: {detail}. Fix: connect to your package index "
            f"once and retry, or copy a folder with {MJCF_NAME} and meshes/ from that wheel "
            f"(holosoma/data/robots/t1) and set {ENV_T1_DIR} to it.")


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def t1_model_dir(downloader: Downloader = pip_download) -> Path:
    """The folder holding ``t1_29dof.xml`` and ``meshes/``, fetching it on first use.

    Raises:
        AssetError: the override folder is incomplete, the cache is corrupt, the download failed
            or the wheel's hash is wrong. The message names the cause and the fix.
    """
    override = os.environ.get(ENV_T1_DIR)
    if override:
        path = Path(override).expanduser()
        if not (path / MJCF_NAME).is_file() or not (path / "meshes").is_dir():
            raise AssetError(f"{ENV_T1_DIR}={path} does not hold {MJCF_NAME} and meshes/. Fix: "
                             f"point it at a copy of holosoma/data/robots/t1 or unset it to use "
                             f"the cache.")
        return path
    target = cache_root() / f"t1-{WHEEL_NAME}-{WHEEL_VERSION}"
    if target.exists():
        verify_cache(target)
        return target
    _fetch_into(target, downloader)
    verify_cache(target)
    return target


def verify_cache(target: Path) -> None:
    """Check every cached file against the manifest written at extraction."""
    if target in _verified:
        return
    fix = f"Fix: delete {target} and run again to fetch a fresh copy."
    manifest_path = target / MANIFEST_NAME
    try:
        manifest = json.loads(manifest_path.read_text())
        files = manifest["files"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise AssetError(f"the T1 model cache {target} is corrupt: unreadable {MANIFEST_NAME} "
                         f"({exc}). {fix}") from exc
    for rel, digest in files.items():
        path = target / rel
        if not path.is_file():
            raise AssetError(f"the T1 model cache {target} is corrupt: {rel} is missing. {fix}")
        if sha256_file(path) != digest:
            raise AssetError(f"the T1 model cache {target} is corrupt: {rel} does not match its "
                             f"recorded sha256. {fix}")
    _verified.add(target)


def _fetch_into(target: Path, downloader: Downloader) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".fetch-") as tmp:
        tmp_path = Path(tmp)
        wheel = downloader(tmp_path)
        actual = sha256_file(wheel)
        if actual != WHEEL_SHA256:
            raise AssetError(f"the downloaded {WHEEL_FILE} has sha256 {actual}, expected "
                             f"{WHEEL_SHA256}: the download is corrupt or the index serves a "
                             f"different file. Fix: retry; if it persists, set {ENV_T1_DIR} to a "
                             f"verified copy of holosoma/data/robots/t1.")
        staging = tmp_path / "t1"
        try:
            _extract(wheel, staging)
        except (zipfile.BadZipFile, OSError, KeyError) as exc:
            raise AssetError(f"could not extract the T1 model from {WHEEL_FILE}: {exc}. "
                             f"Fix: retry the download.") from exc
        # Atomic publish: a reader never sees a half-extracted cache.
        try:
            os.rename(staging, target)
        except OSError:
            if not target.exists():
                raise
            shutil.rmtree(staging, ignore_errors=True)  # another process won the race


def _extract(wheel: Path, dest: Path) -> None:
    files: dict[str, str] = {}
    with zipfile.ZipFile(wheel) as zf:
        meta = zf.read(f"{WHEEL_NAME}-{WHEEL_VERSION}.dist-info/METADATA").decode()
        for name in zf.namelist():
            if not name.startswith(WHEEL_ROBOT_DIR) or name.endswith("/"):
                continue
            rel = name[len(WHEEL_ROBOT_DIR):]
            out = dest / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            data = zf.read(name)
            out.write_bytes(data)
            files[rel] = hashlib.sha256(data).hexdigest()
    if MJCF_NAME not in files:
        raise KeyError(f"{WHEEL_ROBOT_DIR}{MJCF_NAME} not in the wheel")
    (dest / NOTICE_NAME).write_text(_notice(meta))
    (dest / MANIFEST_NAME).write_text(json.dumps(
        {"source": WHEEL_FILE, "sha256": WHEEL_SHA256, "files": files}, indent=1, sort_keys=True))


def _notice(metadata: str) -> str:
    fields = {}
    for line in metadata.splitlines():
        if not line.strip():
            break  # the long description starts after the first blank line
        key, _, value = line.partition(": ")
        if key in ("Name", "Version", "Author", "License", "Home-page", "Project-URL"):
            fields.setdefault(key, value)
    lines = [f"{k}: {v}" for k, v in fields.items()]
    return ("These files (the Booster T1 MJCF and meshes) were extracted unmodified from the "
            f"{WHEEL_FILE} wheel, whose metadata reads:\n\n" + "\n".join(lines) +
            "\n\nThey are distributed under the Apache License, Version 2.0, as that metadata "
            "states. The robot built from them by refine-dp adds its own parts on top with "
            "mujoco.MjSpec and never edits these files.\n")
