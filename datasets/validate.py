"""`validate(path)`: every problem of a dataset folder, reported rather than raised."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from datasets.dataset import EPISODES_DIR, Dataset, parse_episode_file_name
from datasets.episode_io import PARTIAL_SUFFIX
from datasets.errors import DatasetError, SchemaMismatchError


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a dataset: the file it is in, what is wrong, and how bad it is."""

    file: str
    message: str
    level: str = "error"  # "error": data is unusable or wrong; "warning": harmless leftovers


def validate(path: Path | str) -> list[Problem]:
    """Check dataset.json and every episode file; an empty list means the dataset is sound.

    Checks: dataset.json (format, schema version, robot spec), each episode (opens, attributes,
    schema version, row counts, NaN/inf in numeric arrays, id matches the file name), unknown
    files in episodes/, and leftover .partial files (warnings).
    """
    path = Path(path)
    try:
        dataset = Dataset.open(path)
    except (DatasetError, SchemaMismatchError) as e:
        return [Problem(str(path / "dataset.json"), str(e))]
    problems: list[Problem] = []
    folder = path / EPISODES_DIR
    if not folder.is_dir():
        return [Problem(str(folder), "the episodes/ folder is missing; recreate it (empty) or "
                                     "restore it from a backup")]
    for entry in sorted(folder.iterdir()):
        if entry.name.endswith(PARTIAL_SUFFIX):
            problems.append(Problem(str(entry), "an unfinished episode (the writer stopped); "
                                    "readers ignore it, Dataset.remove_partials() deletes it",
                                    level="warning"))
        elif parse_episode_file_name(entry.name) is None:
            problems.append(Problem(str(entry), "not an episode file name (ep_NNNNNN.h5); "
                                    "move it out of episodes/", level="warning"))
    # A copied or renamed file (a duplicate id) is reported by the id check in Dataset.episode.
    for episode_id in dataset.episode_ids():
        problems += _check_episode(dataset, episode_id)
    return problems


def _check_episode(dataset: Dataset, episode_id: int) -> list[Problem]:
    file = str(dataset.episode_path(episode_id))
    try:
        episode = dataset.episode(episode_id)
    except (DatasetError, SchemaMismatchError) as e:
        return [Problem(file, str(e))]
    out = []
    for key, value in episode.arrays.items():
        if key.startswith("inputs/"):
            continue  # raw device inputs: NaN marks ticks without the device (a hand-over)
        if value.dtype.kind == "f" and not bool(np.isfinite(value).all()):
            rows = np.nonzero(~np.isfinite(value.reshape(len(value), -1)).all(axis=1))[0] \
                if value.ndim else np.array([0])
            out.append(Problem(file, f"array {key!r} holds NaN or inf (first at row "
                                     f"{int(rows[0])}); the recording is broken, delete the "
                                     f"episode"))
    attrs = episode.attrs
    if abs(attrs.duration_s - attrs.length * attrs.control_dt_s) > 1e-6:
        out.append(Problem(file, f"duration_s {attrs.duration_s} != length {attrs.length} x "
                                 f"control_dt_s {attrs.control_dt_s}"))
    return out


def format_problems(problems: list[Problem]) -> str:
    """One line per problem, errors first."""
    order = sorted(problems, key=lambda p: (p.level != "error", p.file))
    return "\n".join(f"{p.level}: {p.file}: {p.message}" for p in order)
