"""One episode file: written atomically, read back with every inconsistency reported clearly.

The layout is documented in docs/dataset_format.md. Every dataset is chunked along time and
carries HDF5's fletcher32 checksum; files are written with the newest HDF5 format, whose
metadata is checksummed too, and string attributes are stored inline (fixed length) rather than
in the unchecksummed global heap. A damaged byte therefore surfaces as `CorruptEpisodeError`
instead of silently wrong numbers.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, fields
from pathlib import Path

import h5py
import numpy as np

from datasets.errors import CorruptEpisodeError, DatasetError, SchemaMismatchError

SCHEMA_VERSION = 1
PARTIAL_SUFFIX = ".partial"
CHUNK_ROWS = 256  # rows per chunk along time: a few tens of kB for the widest field
COMPRESS_MIN_BYTES = 4096  # smaller arrays gain nothing from lzf
STATIC_PREFIXES = ("sim/model_fields/", "sim/initial_state")
REQUIRED_KEYS = ("time_s", "obs/joint_pos", "command/base_vel", "command/hand_pos",
                 "command/hand_quat", "command/gripper", "targets/joint_pos", "targets/gripper")
# Errors h5py and numpy raise on damaged files; only these are turned into CorruptEpisodeError.
_READ_ERRORS = (OSError, KeyError, ValueError, RuntimeError, TypeError, AttributeError,
                IndexError, UnicodeDecodeError, OverflowError)


@dataclass(frozen=True)
class EpisodeAttrs:
    """The root attributes of an episode file (see docs/dataset_format.md)."""

    schema_version: int
    episode_id: int
    task: str
    source: str
    controller: str
    seed: int
    world: int
    success: bool
    end_reason: str  # "success", "timeout" or "unstable"
    length: int  # control steps T
    duration_s: float
    control_dt_s: float
    randomization: dict[str, float]
    task_config: dict
    created_utc: str

    @classmethod
    def from_dict(cls, data: dict) -> EpisodeAttrs:
        """Build and type-check from a plain dict; raises DatasetError naming the bad key."""
        names = [f.name for f in fields(cls)]
        missing = [n for n in names if n not in data]
        unknown = sorted(set(data) - set(names))
        if missing or unknown:
            raise DatasetError(f"episode attributes: missing {missing}, unknown {unknown}; "
                               f"expected exactly {names}")
        kinds = {"schema_version": int, "episode_id": int, "seed": int, "world": int,
                 "length": int, "success": bool, "duration_s": float, "control_dt_s": float,
                 "task": str, "source": str, "controller": str, "end_reason": str,
                 "created_utc": str, "randomization": dict, "task_config": dict}
        out = {}
        for name, kind in kinds.items():
            out[name] = _coerce(name, data[name], kind)
        out["randomization"] = {str(k): _coerce(f"randomization.{k}", v, float)
                                for k, v in out["randomization"].items()}
        if out["length"] < 0:
            raise DatasetError(f"episode attribute length is {out['length']}; it must be >= 0")
        return cls(**out)

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class Episode:
    """An episode read back: its attributes and arrays by flat key (e.g. "obs/joint_pos")."""

    attrs: EpisodeAttrs
    arrays: dict[str, np.ndarray]

    def __getitem__(self, key: str) -> np.ndarray:
        return self.arrays[key]


def is_time_indexed(key: str) -> bool:
    """Whether `key` holds one row per control step (all but the per-episode sim constants)."""
    return not key.startswith(STATIC_PREFIXES)


def partial_path(path: Path) -> Path:
    """Where an episode is written before it is renamed into place."""
    return path.with_name(path.name + PARTIAL_SUFFIX)


def write_episode(path: Path, attrs: dict, arrays: dict[str, np.ndarray]) -> Path:
    """Write an episode atomically: `<path>.partial`, flush, fsync, rename, fsync the folder.

    Args:
        path: the final file name (ep_NNNNNN.h5).
        attrs: the root attributes; checked with `EpisodeAttrs.from_dict`.
        arrays: flat keys -> arrays; time-indexed ones need `attrs["length"]` rows.

    Returns:
        `path`, now complete and visible.

    Raises:
        DatasetError: bad attributes, keys or shapes (nothing is written then).
    """
    path = Path(path)
    meta = EpisodeAttrs.from_dict(attrs)
    _check_arrays(path, meta.length, arrays)
    tmp = partial_path(path)
    try:
        with h5py.File(tmp, "w", libver="latest") as f:
            for name, value in meta.to_dict().items():
                _put_attr(f, name, value)
            for key, value in arrays.items():
                _put_array(f, key, np.asarray(value))
            f.flush()
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def read_episode_attrs(path: Path) -> EpisodeAttrs:
    """The attributes of an episode file.

    Raises:
        DatasetError: the file does not exist.
        CorruptEpisodeError: it is not a readable episode file.
        SchemaMismatchError: it was written with another schema version.
    """
    path = Path(path)
    with _open(path) as f:
        return _read_attrs(path, f)


def read_episode(path: Path, keys: Iterable[str] | None = None) -> Episode:
    """Read an episode (all arrays, or only `keys`), checking every time-indexed shape.

    Raises:
        DatasetError: the file does not exist, or a requested key is not in it.
        CorruptEpisodeError: damaged file, missing required arrays or inconsistent row counts.
        SchemaMismatchError: it was written with another schema version.
    """
    path = Path(path)
    with _open(path) as f:
        meta = _read_attrs(path, f)
        try:
            present = _keys(f)
        except _READ_ERRORS as e:
            raise _corrupt(path, f"its array index cannot be read ({e})") from e
        missing = [k for k in REQUIRED_KEYS if k not in present]
        if missing:
            raise _corrupt(path, f"required arrays {missing} are missing")
        wanted = list(present) if keys is None else list(keys)
        unknown = [k for k in wanted if k not in present]
        if unknown:
            raise DatasetError(f"{path}: no arrays {unknown} in this episode; it holds "
                               f"{sorted(present)}")
        arrays: dict[str, np.ndarray] = {}
        for key in wanted:
            try:
                arrays[key] = f[key][()]
            except _READ_ERRORS as e:
                raise _corrupt(path, f"array {key!r} cannot be read ({e})") from e
        # Shapes are checked on all time-indexed arrays, not only the requested ones.
        for key in present:
            if is_time_indexed(key):
                try:
                    rows = f[key].shape[0] if f[key].shape else None
                except _READ_ERRORS as e:
                    raise _corrupt(path, f"array {key!r} cannot be read ({e})") from e
                if rows != meta.length:
                    raise _corrupt(path, f"array {key!r} has {rows} rows but the episode "
                                         f"length is {meta.length}")
    return Episode(attrs=meta, arrays=arrays)


def fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on directories; the rename is still atomic
    finally:
        os.close(fd)


# -- helpers ------------------------------------------------------------------------------------
def _coerce(name: str, value: object, kind: type) -> object:
    if kind is bool and isinstance(value, bool | np.bool_):
        return bool(value)
    if kind is int and isinstance(value, int | np.integer) and not isinstance(value, bool):
        return int(value)
    if kind is float and isinstance(value, int | float | np.integer | np.floating) \
            and not isinstance(value, bool):
        return float(value)
    if kind in (str, dict) and isinstance(value, kind):
        return value
    raise DatasetError(f"episode attribute {name} = {value!r} should be a {kind.__name__}")


def _check_arrays(path: Path, length: int, arrays: dict[str, np.ndarray]) -> None:
    missing = [k for k in REQUIRED_KEYS if k not in arrays]
    if missing:
        raise DatasetError(f"{path}: cannot write an episode without arrays {missing}")
    for key, value in arrays.items():
        parts = key.split("/")
        if not key or key.startswith("/") or any(not p for p in parts):
            raise DatasetError(f"{path}: bad array key {key!r}; use 'group/name' without a "
                               f"leading or doubled '/'")
        value = np.asarray(value)
        if value.dtype.kind not in "biuf":
            raise DatasetError(f"{path}: array {key!r} has dtype {value.dtype}; only numbers "
                               f"and booleans are stored")
        if is_time_indexed(key) and (value.ndim == 0 or value.shape[0] != length):
            raise DatasetError(f"{path}: array {key!r} has shape {value.shape}, expected "
                               f"{length} rows (the episode length)")


def _put_attr(f: h5py.File, name: str, value: object) -> None:
    if isinstance(value, dict):
        value = json.dumps(value, sort_keys=True, default=_json_default)
    if isinstance(value, str):
        raw = value.encode("utf-8")
        # Fixed-length (inline, checksummed) rather than variable-length (global heap).
        f.attrs.create(name, np.array(raw, dtype=h5py.string_dtype("utf-8", max(len(raw), 1))))
    elif isinstance(value, bool):
        f.attrs[name] = np.bool_(value)
    elif isinstance(value, int):
        f.attrs[name] = np.int64(value)
    else:
        f.attrs[name] = np.float64(value)


def _json_default(obj: object) -> object:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, tuple | set):
        return list(obj)
    raise TypeError(f"task_config value {obj!r} of type {type(obj).__name__} is not JSON; "
                    f"pass numbers, strings, lists and dicts (e.g. dataclasses.asdict(config))")


def _put_array(f: h5py.File, key: str, value: np.ndarray) -> None:
    if value.ndim == 0:
        f.create_dataset(key, data=value)
        return
    chunks = (max(1, min(CHUNK_ROWS, value.shape[0])),) + tuple(max(1, d) for d in value.shape[1:])
    compress = "lzf" if value.nbytes >= COMPRESS_MIN_BYTES else None
    if value.size == 0:  # HDF5 cannot chunk empty data; nothing to protect either
        f.create_dataset(key, data=value)
        return
    f.create_dataset(key, data=value, chunks=chunks, compression=compress, fletcher32=True)


class _open:
    """Context manager opening an episode file read-only with clear errors."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.file: h5py.File | None = None

    def __enter__(self) -> h5py.File:
        if not self.path.exists():
            raise DatasetError(f"episode file {self.path} does not exist")
        if self.path.stat().st_size == 0:
            raise _corrupt(self.path, "it is empty (0 bytes)")
        try:
            self.file = h5py.File(self.path, "r")
        except _READ_ERRORS as e:
            raise _corrupt(self.path, f"it is not a readable HDF5 file ({e})") from e
        return self.file

    def __exit__(self, *exc: object) -> None:
        if self.file is not None:
            try:
                self.file.close()
            except _READ_ERRORS:
                pass  # closing a damaged file may fail too; the error that matters is raised


def _get_attr(path: Path, f: h5py.File, name: str) -> object:
    try:
        value = f.attrs[name]
    except _READ_ERRORS as e:
        raise _corrupt(path, f"attribute {name!r} is missing or unreadable ({e})") from e
    if isinstance(value, bytes | np.bytes_):
        value = bytes(value).rstrip(b"\0").decode("utf-8")
    elif isinstance(value, np.ndarray) and value.shape == () and value.dtype.kind == "S":
        value = bytes(value[()]).rstrip(b"\0").decode("utf-8")
    elif isinstance(value, np.generic):
        value = value.item()
    return value


def _read_attrs(path: Path, f: h5py.File) -> EpisodeAttrs:
    try:
        version = _get_attr(path, f, "schema_version")
    except UnicodeDecodeError as e:
        raise _corrupt(path, f"attribute 'schema_version' is unreadable ({e})") from e
    if version != SCHEMA_VERSION:
        raise SchemaMismatchError(
            f"{path}: episode schema version {version!r}, this code reads version "
            f"{SCHEMA_VERSION}; use the refine-dp version that wrote it or convert the dataset")
    data: dict[str, object] = {}
    try:
        for item in fields(EpisodeAttrs):
            data[item.name] = _get_attr(path, f, item.name)
        for name in ("randomization", "task_config"):
            data[name] = json.loads(data[name]) if isinstance(data[name], str) else data[name]
        return EpisodeAttrs.from_dict(data)
    except CorruptEpisodeError:
        raise
    except (DatasetError, *_READ_ERRORS) as e:  # json.JSONDecodeError is a ValueError
        raise _corrupt(path, f"its attributes are invalid ({e})") from e


def _keys(f: h5py.File) -> list[str]:
    out: list[str] = []
    f.visititems(lambda name, obj: out.append(name) if isinstance(obj, h5py.Dataset) else None)
    return out


def _corrupt(path: Path, what: str) -> CorruptEpisodeError:
    return CorruptEpisodeError(f"episode file {path} is damaged: {what}. Delete it (or restore "
                               f"it from a backup) and run `validate` on the dataset again")
