"""A dataset folder: dataset.json (format, schema version, robot spec) and episode files."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from datasets.episode_io import (
    PARTIAL_SUFFIX,
    SCHEMA_VERSION,
    Episode,
    EpisodeAttrs,
    fsync_dir,
    read_episode,
    read_episode_attrs,
)
from datasets.errors import CorruptEpisodeError, DatasetError, SchemaMismatchError
from robot_io.robot_spec import RobotSpec

FORMAT = "refine-dp-dataset"
META_FILE = "dataset.json"
SPLITS_FILE = "splits.json"
EPISODES_DIR = "episodes"
EPISODE_RE = re.compile(r"^ep_(\d{6,})\.h5$")


def episode_file_name(episode_id: int) -> str:
    return f"ep_{episode_id:06d}.h5"


def parse_episode_file_name(name: str) -> int | None:
    """The id of a canonical episode file name (ep_000012.h5 -> 12), else None."""
    match = EPISODE_RE.match(name)
    if match is None or episode_file_name(int(match.group(1))) != name:
        return None  # e.g. ep_0000012.h5 would collide with ep_000012.h5
    return int(match.group(1))


@dataclass(frozen=True)
class Splits:
    """The train / validation split of a dataset (splits.json)."""

    seed: int
    train: tuple[int, ...]
    valid: tuple[int, ...]


class Dataset:
    """A dataset folder (see docs/dataset_format.md). Use `create` to record, `open` to read."""

    def __init__(self, path: Path, robot_spec: RobotSpec, schema_version: int) -> None:
        self._path = Path(path)
        self._robot_spec = robot_spec
        self._schema_version = schema_version

    # -- construction -----------------------------------------------------------------------
    @classmethod
    def create(cls, path: Path | str, robot_spec: RobotSpec) -> Dataset:
        """Create a dataset (or reopen an existing one for recording, removing its .partial files).

        Raises:
            DatasetError: `path` is a file, or a non-empty folder that is not a dataset.
            SchemaMismatchError: the existing dataset has another schema or robot spec.
        """
        path = Path(path)
        if (path / META_FILE).exists():
            dataset = cls.open(path, robot_spec)
            dataset.remove_partials()
            return dataset
        if path.exists() and not path.is_dir():
            raise DatasetError(f"cannot create a dataset at {path}: it is a file; choose a folder")
        if path.is_dir() and any(path.iterdir()):
            raise DatasetError(f"cannot create a dataset in {path}: the folder is not empty and "
                               f"has no {META_FILE}; choose a new or empty folder")
        (path / EPISODES_DIR).mkdir(parents=True, exist_ok=True)
        meta = {"format": FORMAT, "schema_version": SCHEMA_VERSION,
                "robot_spec": robot_spec.to_dict(),
                "created_utc": datetime.now(UTC).isoformat(timespec="seconds")}
        write_json_atomic(path / META_FILE, meta)
        return cls(path, robot_spec, SCHEMA_VERSION)

    @classmethod
    def open(cls, path: Path | str, robot_spec: RobotSpec | None = None) -> Dataset:
        """Open a dataset, checking its format, schema version and (if given) robot spec.

        Raises:
            DatasetError: no such folder, or dataset.json is missing or unreadable.
            SchemaMismatchError: newer/unknown schema version or a different robot spec.
        """
        path = Path(path)
        if not path.is_dir():
            raise DatasetError(f"no dataset at {path}: the folder does not exist; create one "
                               f"with Dataset.create or check the path")
        meta_path = path / META_FILE
        if not meta_path.is_file():
            raise DatasetError(f"{path} is not a dataset: {META_FILE} is missing; record into it "
                               f"with Dataset.create or point at the dataset's folder")
        meta = _read_meta(meta_path)
        version = meta["schema_version"]
        if version != SCHEMA_VERSION:
            newer = isinstance(version, int) and version > SCHEMA_VERSION
            hint = ("it was written by a newer refine-dp; upgrade to read it" if newer else
                    "convert it or use the refine-dp version that wrote it")
            raise SchemaMismatchError(f"{meta_path}: schema version {version!r}, this code reads "
                                      f"version {SCHEMA_VERSION}; {hint}")
        try:
            stored = RobotSpec.from_dict(meta["robot_spec"])
        except (TypeError, ValueError) as e:
            raise DatasetError(f"{meta_path}: robot_spec is invalid ({e}); the file is damaged, "
                               f"restore it from a backup") from e
        if robot_spec is not None:
            diffs = stored.differences(robot_spec)
            if diffs:
                raise SchemaMismatchError(
                    f"{path} was recorded with another robot spec (stored vs given): "
                    + "; ".join(diffs) + ". Use the robot the dataset was recorded with, or "
                    "record a new dataset")
        return cls(path, stored, version)

    # -- properties -------------------------------------------------------------------------
    @property
    def path(self) -> Path:
        return self._path

    @property
    def robot_spec(self) -> RobotSpec:
        return self._robot_spec

    @property
    def schema_version(self) -> int:
        return self._schema_version

    @property
    def episodes_dir(self) -> Path:
        return self._path / EPISODES_DIR

    # -- episodes ---------------------------------------------------------------------------
    def episode_ids(self) -> list[int]:
        """Sorted ids of the finished episodes (.partial files are not episodes)."""
        if not self.episodes_dir.is_dir():
            return []
        ids = []
        for entry in os.scandir(self.episodes_dir):
            episode_id = parse_episode_file_name(entry.name)
            if episode_id is not None:
                ids.append(episode_id)
        return sorted(ids)

    def __len__(self) -> int:
        return len(self.episode_ids())

    def episode_path(self, episode_id: int) -> Path:
        if episode_id < 0:
            raise DatasetError(f"episode ids are >= 0, got {episode_id}")
        return self.episodes_dir / episode_file_name(episode_id)

    def next_episode_id(self) -> int:
        """One more than the largest id in use (finished or being written)."""
        largest = -1
        if self.episodes_dir.is_dir():
            for entry in os.scandir(self.episodes_dir):
                name = entry.name.removesuffix(PARTIAL_SUFFIX)
                match = EPISODE_RE.match(name)
                if match:
                    largest = max(largest, int(match.group(1)))
        return largest + 1

    def _existing(self, episode_id: int) -> Path:
        path = self.episode_path(episode_id)
        if not path.is_file():
            ids = self.episode_ids()
            span = f"{ids[0]}..{ids[-1]} ({len(ids)} episodes)" if ids else "none"
            raise DatasetError(f"{self._path} has no episode {episode_id}; its ids: {span}")
        return path

    def attrs(self, episode_id: int) -> EpisodeAttrs:
        """The attributes of one episode (see `read_episode_attrs` for the errors)."""
        return self._checked(episode_id, read_episode_attrs(self._existing(episode_id)))

    def episode(self, episode_id: int, keys: Iterable[str] | None = None) -> Episode:
        """One episode's attributes and arrays (all, or `keys`); see `read_episode`."""
        episode = read_episode(self._existing(episode_id), keys)
        self._checked(episode_id, episode.attrs)
        return episode

    def _checked(self, episode_id: int, attrs: EpisodeAttrs) -> EpisodeAttrs:
        if attrs.episode_id != episode_id:
            raise CorruptEpisodeError(
                f"{self.episode_path(episode_id)} says it is episode {attrs.episode_id}; a file "
                f"was renamed or copied by hand. Rename it to {episode_file_name(attrs.episode_id)}"
                f" if that id is free, or delete it")
        return attrs

    def remove_partials(self) -> list[Path]:
        """Delete leftover .partial files (episodes a killed writer never finished)."""
        if not self.episodes_dir.is_dir():
            return []
        removed = sorted(p for p in self.episodes_dir.iterdir() if p.name.endswith(PARTIAL_SUFFIX))
        for p in removed:
            p.unlink(missing_ok=True)
        return removed

    # -- splits -----------------------------------------------------------------------------
    def splits(self) -> Splits | None:
        """The train/valid split from splits.json, or None when there is none."""
        path = self._path / SPLITS_FILE
        if not path.exists():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            split = Splits(seed=int(data["seed"]), train=tuple(int(i) for i in data["train"]),
                           valid=tuple(int(i) for i in data["valid"]))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise DatasetError(f"{path} is not a valid split file ({e}); expected "
                               f'{{"seed": S, "train": [ids], "valid": [ids]}}; rewrite it '
                               f"with Dataset.write_splits") from e
        overlap = sorted(set(split.train) & set(split.valid))
        if overlap:
            raise DatasetError(f"{path}: episodes {overlap[:10]} are in both train and valid")
        return split

    def write_splits(self, train: Iterable[int], valid: Iterable[int], seed: int) -> Splits:
        """Write splits.json atomically (ids must exist and not overlap)."""
        split = Splits(seed=int(seed), train=tuple(sorted(train)), valid=tuple(sorted(valid)))
        known = set(self.episode_ids())
        unknown = sorted((set(split.train) | set(split.valid)) - known)
        if unknown:
            raise DatasetError(f"cannot split {self._path}: episodes {unknown[:10]} do not exist")
        overlap = sorted(set(split.train) & set(split.valid))
        if overlap:
            raise DatasetError(f"episodes {overlap[:10]} cannot be in both train and valid")
        write_json_atomic(self._path / SPLITS_FILE, {"seed": split.seed, "train": list(split.train),
                                                     "valid": list(split.valid)})
        return split


def write_json_atomic(path: Path, data: dict) -> None:
    """Write JSON to `path` through a temporary file, fsync and rename."""
    tmp = path.with_name(path.name + PARTIAL_SUFFIX)
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def _read_meta(meta_path: Path) -> dict:
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise DatasetError(f"{meta_path} cannot be read as JSON ({e}); the file is damaged, "
                           f"restore it from a backup") from e
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        got = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise DatasetError(f"{meta_path}: format is {got!r}, expected {FORMAT!r}; this folder is "
                           f"not a refine-dp dataset")
    missing = [k for k in ("schema_version", "robot_spec") if k not in meta]
    if missing:
        raise DatasetError(f"{meta_path} lacks {missing}; the file is damaged, restore it")
    return meta
