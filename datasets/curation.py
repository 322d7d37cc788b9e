"""Curation of datasets: train/valid splits, merging, filtering and deleting episodes.

Every change is crash-safe in the way recording is: `splits.json` is replaced atomically, and a
copied episode file appears under its final name only once it is complete (copy to
`ep_NNNNNN.h5.partial`, fsync, rename), so an interrupted merge or filter leaves a readable
dataset holding a prefix of the episodes.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path

import h5py
import numpy as np

from datasets.dataset import Dataset
from datasets.episode_io import fsync_dir, partial_path
from datasets.errors import DatasetError, SchemaMismatchError
from datasets.interop import attrs_dict


def split(path: str | Path, valid_fraction: float = 0.1, seed: int = 0) -> dict:
    """Assign every episode to train or valid at random and write `splits.json`.

    The assignment depends only on the sorted episode ids and `seed`. When the dataset has at
    least two episodes and `valid_fraction` > 0, valid gets at least one and train keeps at
    least one.

    Returns:
        `{"seed": seed, "train": [ids...], "valid": [ids...]}` (ids sorted), as written
        atomically by `Dataset.write_splits`.

    Raises:
        ValueError: `valid_fraction` is outside [0, 1).
    """
    if not 0.0 <= valid_fraction < 1.0:
        raise ValueError(f"valid_fraction must be in [0, 1), got {valid_fraction}")
    dataset = Dataset.open(path)
    ids = sorted(dataset.episode_ids())
    n_valid = round(valid_fraction * len(ids))
    if valid_fraction > 0 and len(ids) >= 2:
        n_valid = min(max(n_valid, 1), len(ids) - 1)
    order = np.random.default_rng(seed).permutation(len(ids))
    valid = [ids[i] for i in order[:n_valid]]
    written = dataset.write_splits(sorted(set(ids) - set(valid)), valid, seed)
    return {"seed": written.seed, "train": list(written.train), "valid": list(written.valid)}


def merge(sources: Sequence[str | Path], dest: str | Path) -> list[int]:
    """Copy every episode of `sources` into `dest` under new ids, in source order.

    `dest` is created with the sources' robot spec when it does not exist; an existing `dest`
    must have the same spec. Splits are not merged: run `split` on the result.

    Returns:
        The new episode ids in `dest`.

    Raises:
        ValueError: no sources, or `dest` is one of them.
        SchemaMismatchError: the robot specs differ; the message names the dataset and fields.
    """
    if not sources:
        raise ValueError("merge needs at least one source dataset")
    if any(Path(src).resolve() == Path(dest).resolve() for src in sources):
        raise ValueError(f"merge destination {dest} is also a source; choose a new folder")
    datasets = [Dataset.open(src) for src in sources]
    spec = datasets[0].robot_spec
    for src, ds in zip(sources[1:], datasets[1:]):
        diff = spec.differences(ds.robot_spec)
        if diff:
            raise SchemaMismatchError(f"cannot merge {src} with {sources[0]}: their robot specs "
                                      f"differ: {'; '.join(diff)}")
    target = Dataset.create(dest, spec)  # an existing dest is reopened and its spec checked
    new_ids: list[int] = []
    for ds in datasets:
        new_ids += copy_episodes(ds, ds.episode_ids(), target)
    return new_ids


def filter_dataset(src: str | Path, dest: str | Path, task: str | None = None,
                   source: str | None = None, success: bool | None = None,
                   min_length: int | None = None, max_length: int | None = None) -> list[int]:
    """Create the dataset `dest` holding the episodes of `src` that match every given criterion.

    Args:
        src: the dataset to read.
        dest: a folder that does not exist yet.
        task, source: keep episodes with exactly this task / source attribute.
        success: keep only successes (True) or only failures (False).
        min_length, max_length: keep episodes with min_length <= length <= max_length steps.

    Returns:
        The new episode ids in `dest` (0, 1, ... in the order of the source ids).

    Raises:
        DatasetError: `dest` already exists.
    """
    if Path(dest).exists():
        raise DatasetError(f"{dest} already exists; filter writes a new dataset")
    dataset = Dataset.open(src)
    keep = []
    for ep_id in dataset.episode_ids():
        attrs = attrs_dict(dataset.attrs(ep_id))
        length = int(attrs["length"])
        if ((task is None or attrs["task"] == task)
                and (source is None or attrs["source"] == source)
                and (success is None or bool(attrs["success"]) == success)
                and (min_length is None or length >= min_length)
                and (max_length is None or length <= max_length)):
            keep.append(ep_id)
    target = Dataset.create(dest, dataset.robot_spec)
    return copy_episodes(dataset, keep, target)


def delete(path: str | Path, ids: Iterable[int]) -> None:
    """Remove episodes from the dataset at `path`, and from its `splits.json` when present.

    Raises:
        DatasetError: some ids are not in the dataset (nothing is deleted then); lists them.
    """
    dataset = Dataset.open(path)
    ids = sorted({int(i) for i in ids})
    unknown = sorted(set(ids) - set(dataset.episode_ids()))
    if unknown:
        raise DatasetError(f"no episodes {unknown} in {path}; nothing was deleted")
    splits = dataset.splits()
    if splits is not None:
        # Splits first: a crash between the two steps leaves splits naming fewer episodes than
        # exist, which is harmless, never ids without a file.
        gone = set(ids)
        dataset.write_splits([i for i in splits.train if i not in gone],
                             [i for i in splits.valid if i not in gone], splits.seed)
    for ep_id in ids:
        dataset.episode_path(ep_id).unlink()
    fsync_dir(dataset.episodes_dir)


def copy_episodes(src: Dataset, ids: Iterable[int], dest: Dataset) -> list[int]:
    """Copy episode files of `src` into `dest` with new ids; returns the new ids."""
    new_ids = []
    for ep_id in ids:
        new_id = dest.next_episode_id()
        _copy_episode_file(src.episode_path(ep_id), dest.episode_path(new_id), new_id)
        new_ids.append(new_id)
    return new_ids


def _copy_episode_file(src: Path, dest: Path, new_id: int) -> None:
    """Copy one episode file, set its new id, and rename it into place once it is on disk."""
    if dest.exists():
        raise DatasetError(f"{dest} already exists; refusing to overwrite an episode")
    tmp = partial_path(dest)
    try:
        shutil.copyfile(src, tmp)
        with h5py.File(tmp, "r+") as f:
            f.attrs["episode_id"] = np.int64(new_id)  # the reader checks it against the name
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(dest.parent)
