"""The `refine-dp dataset` commands: inspect, curate and convert datasets.

    refine-dp dataset info DIR | validate DIR | split DIR [--valid-fraction F] [--seed S]
    refine-dp dataset merge DEST SRC [SRC...] | delete DIR ID [ID...]
    refine-dp dataset filter SRC DEST [--task T] [--source S] [--success | --failures]
                             [--min-length N] [--max-length N]
    refine-dp dataset export DIR --format robomimic|lerobot --out PATH [--fps F]
    refine-dp dataset import FILE --format robomimic --out DIR

A settings dataclass and a handler each; the defaults equal those of the `datasets` functions
the handlers call (tests/test_cli_config.py checks).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import tyro

_OUTCOME = tyro.conf.create_mutex_group(required=False, title="outcome")


Folder = Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="DIR")]


@dataclass(frozen=True)
class DatasetInfoConfig:
    """Settings of `refine-dp dataset info`.

    Attributes:
        dir: the dataset folder.
    """

    dir: Folder


def cmd_dataset_info(cfg: DatasetInfoConfig) -> None:
    """Print a dataset's summary."""
    from datasets.info import format_info, info

    print(format_info(info(cfg.dir)))


@dataclass(frozen=True)
class DatasetValidateConfig:
    """Settings of `refine-dp dataset validate`.

    Attributes:
        dir: the dataset folder.
    """

    dir: Folder


def cmd_dataset_validate(cfg: DatasetValidateConfig) -> int:
    """Print each problem of a dataset; status 1 when there is any."""
    from datasets.validate import format_problems, validate

    problems = validate(cfg.dir)
    if problems:
        print(format_problems(problems))
    print(f"{cfg.dir}: {len(problems)} problem(s)" if problems else f"{cfg.dir}: ok")
    return 1 if problems else 0


@dataclass(frozen=True)
class DatasetSplitConfig:
    """Settings of `refine-dp dataset split` (`datasets.curation.split`).

    Attributes:
        dir: the dataset folder.
        valid_fraction: share of episodes in valid.
        seed: shuffle seed.
    """

    dir: Folder
    valid_fraction: float = 0.1
    seed: int = 0


def cmd_dataset_split(cfg: DatasetSplitConfig) -> None:
    """Write splits.json."""
    from datasets.curation import split

    splits = split(cfg.dir, valid_fraction=cfg.valid_fraction, seed=cfg.seed)
    print(f"{cfg.dir}: {len(splits['train'])} train, {len(splits['valid'])} valid "
          f"(seed {cfg.seed})")


@dataclass(frozen=True)
class DatasetMergeConfig:
    """Settings of `refine-dp dataset merge`.

    Attributes:
        dest: the dataset to create or extend.
        sources: the datasets to copy from.
    """

    dest: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="DEST")]
    sources: Annotated[tuple[Path, ...], tyro.conf.Positional, tyro.conf.arg(metavar="SRC")]

    def __post_init__(self) -> None:
        if not self.sources:
            raise ValueError("dataset merge needs at least one SRC dataset")


def cmd_dataset_merge(cfg: DatasetMergeConfig) -> None:
    """Copy the episodes of several datasets into one."""
    from datasets.curation import merge

    ids = merge(cfg.sources, cfg.dest)
    print(f"{cfg.dest}: merged {len(ids)} episodes from {len(cfg.sources)} datasets")


@dataclass(frozen=True)
class DatasetFilterConfig:
    """Settings of `refine-dp dataset filter` (`datasets.curation.filter_dataset`).

    Attributes:
        src: the dataset to read.
        dest: the new dataset folder.
        task: keep this task only.
        source: keep this source only (e.g. teleop device, planner).
        success: keep successes only.
        failures: keep failures only.
        min_length: keep episodes of at least N steps.
        max_length: keep episodes of at most N steps.
    """

    src: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="SRC")]
    dest: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="DEST")]
    task: str | None = None
    source: str | None = None
    success: Annotated[bool, _OUTCOME, tyro.conf.FlagCreatePairsOff] = False
    failures: Annotated[bool, _OUTCOME, tyro.conf.FlagCreatePairsOff] = False
    min_length: Annotated[int | None, tyro.conf.arg(metavar="N")] = None
    max_length: Annotated[int | None, tyro.conf.arg(metavar="N")] = None


def cmd_dataset_filter(cfg: DatasetFilterConfig) -> None:
    """Write a new dataset with the matching episodes."""
    from datasets.curation import filter_dataset

    success = True if cfg.success else False if cfg.failures else None
    ids = filter_dataset(cfg.src, cfg.dest, task=cfg.task, source=cfg.source, success=success,
                         min_length=cfg.min_length, max_length=cfg.max_length)
    print(f"{cfg.dest}: {len(ids)} episodes")


@dataclass(frozen=True)
class DatasetDeleteConfig:
    """Settings of `refine-dp dataset delete`.

    Attributes:
        dir: the dataset folder.
        ids: the episode ids.
    """

    dir: Folder
    ids: Annotated[tuple[int, ...], tyro.conf.Positional, tyro.conf.arg(metavar="ID")]

    def __post_init__(self) -> None:
        if not self.ids:
            raise ValueError("dataset delete needs at least one episode ID")


def cmd_dataset_delete(cfg: DatasetDeleteConfig) -> None:
    """Remove episodes by id."""
    from datasets.curation import delete

    delete(cfg.dir, cfg.ids)
    print(f"{cfg.dir}: deleted {len(set(cfg.ids))} episodes")


@dataclass(frozen=True)
class DatasetExportConfig:
    """Settings of `refine-dp dataset export` (`datasets.lerobot.export_lerobot`,
    `datasets.robomimic.export_robomimic`).

    Attributes:
        dir: the dataset folder.
        format: robomimic (one HDF5 file) or lerobot (a LeRobot v3 folder).
        out: the file (robomimic) or folder (lerobot) to write.
        fps: lerobot frame rate, the control rate.
    """

    dir: Folder
    format: Literal["robomimic", "lerobot"]
    out: Path
    fps: int = 50


def cmd_dataset_export(cfg: DatasetExportConfig) -> None:
    """Export to robomimic HDF5 or LeRobot v3."""
    if cfg.format == "robomimic":
        from datasets.robomimic import export_robomimic
        out = export_robomimic(cfg.dir, cfg.out)
    else:
        from datasets.lerobot import export_lerobot
        out = export_lerobot(cfg.dir, cfg.out, fps=cfg.fps)
    print(f"wrote {out} ({cfg.format})")


@dataclass(frozen=True)
class DatasetImportConfig:
    """Settings of `refine-dp dataset import`.

    Attributes:
        file: the robomimic HDF5 file.
        format: the file's format.
        out: the new dataset folder.
    """

    file: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="FILE")]
    format: Literal["robomimic"]
    out: Path


def cmd_dataset_import(cfg: DatasetImportConfig) -> None:
    """Import a robomimic HDF5 file as a new dataset."""
    from datasets.robomimic import import_robomimic

    ids = import_robomimic(cfg.file, cfg.out)
    print(f"{cfg.out}: imported {len(ids)} episodes (no simulator state: not replayable)")
