"""Export to the LeRobot dataset v3.0 layout (tabular data only; we record no camera streams).

    OUT/
      meta/info.json                              schema, fps, totals, splits, path templates
      meta/stats.json                             min / max / mean / std / count per feature
      meta/tasks.parquet                          task (string) -> task_index
      meta/episodes/chunk-000/file-000.parquet    one row per episode: length, tasks, frame range
      data/chunk-000/file-000.parquet             one row per frame, all episodes concatenated

A frame holds `observation.state` (float32: every `obs/...` array of the episode flattened, in
Observation order then task entries sorted; `info.json` names each entry), `action` (float32,
the 19 command numbers in Command.to_vector order), `timestamp`, `frame_index`,
`episode_index`, `index` and `task_index`. When the dataset has `splits.json`, train episodes
come first so that LeRobot's range splits (`"train": "0:N"`) can express it.

pyarrow is an optional dependency (the `lerobot` extra), imported when an export runs.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from types import ModuleType

import numpy as np

from datasets.dataset import Dataset, write_json_atomic
from datasets.episode_io import fsync_dir
from datasets.errors import DatasetError
from datasets.interop import (
    ACTION_DIM,
    action_names,
    attrs_dict,
    command_matrix,
    flat_obs_name,
    obs_keys,
)
from robot_io.optional import require

CODEBASE_VERSION = "v3.0"
CHUNKS_SIZE = 1000
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
EPISODES_FILE = "meta/episodes/chunk-000/file-000.parquet"
DATA_FILE = DATA_PATH.format(chunk_index=0, file_index=0)
SCALAR_FEATURES = {"timestamp": "float32", "frame_index": "int64", "episode_index": "int64",
                   "index": "int64", "task_index": "int64"}


def export_lerobot(path: str | Path, out_dir: str | Path, fps: int = 50) -> Path:
    """Write the dataset at `path` as a LeRobot v3.0 dataset in the new folder `out_dir`.

    The folder is built under a temporary name and renamed into place when complete.

    Args:
        path: the refine-dp dataset.
        out_dir: a folder that does not exist yet.
        fps: frames per second; must be the dataset's control rate (1 / control_dt_s), since
            frames are exported one per control step.

    Raises:
        DatasetError: `out_dir` exists, the dataset has no episodes, or episodes have different
            observation layouts (e.g. different tasks with different task entries).
        ValueError: `fps` is not the control rate.
        MissingDependencyError: pyarrow is not installed.
    """
    pa = require("pyarrow", purpose="LeRobot export")
    pq = require("pyarrow.parquet", purpose="LeRobot export")
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise DatasetError(f"{out_dir} already exists; choose another --out")
    dataset = Dataset.open(path)
    control_hz = 1.0 / dataset.robot_spec.control_dt_s
    if abs(fps - control_hz) > 1e-6 * control_hz:
        raise ValueError(f"fps={fps} differs from the dataset's control rate {control_hz:g} Hz; "
                         f"frames are exported one per control step")
    ids, n_train = _episode_order(dataset)
    if not ids:
        raise DatasetError(f"{path} has no episodes to export")

    frames, episodes, tasks, state_layout = _collect(dataset, ids, fps)
    tmp = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)  # left over from an interrupted export
    _write_parquet(pa, pq, tmp / DATA_FILE, _frame_table(pa, frames))
    _write_parquet(pa, pq, tmp / EPISODES_FILE, _episode_table(pa, episodes))
    _write_parquet(pa, pq, tmp / "meta/tasks.parquet", _task_table(pa, tasks))
    write_json_atomic(tmp / "meta/stats.json", _stats(frames))
    features = _features(state_layout, dataset.robot_spec.joint_names)
    splits = {"train": f"0:{n_train}"}
    if n_train < len(ids):
        splits["valid"] = f"{n_train}:{len(ids)}"
    write_json_atomic(tmp / "meta/info.json", {
        "codebase_version": CODEBASE_VERSION, "robot_type": dataset.robot_spec.name,
        "total_episodes": len(ids), "total_frames": int(frames["index"].shape[0]),
        "total_tasks": len(tasks), "chunks_size": CHUNKS_SIZE, "fps": fps, "splits": splits,
        "data_path": DATA_PATH, "video_path": None, "features": features})
    os.replace(tmp, out_dir)
    fsync_dir(out_dir.parent)
    return out_dir


def _episode_order(dataset: Dataset) -> tuple[list[int], int]:
    """Episode ids with train first, and the number of train episodes."""
    ids = sorted(dataset.episode_ids())
    splits = dataset.splits()
    if splits is None:
        return ids, len(ids)
    valid = set(splits.valid)
    train = [i for i in ids if i not in valid]
    return train + [i for i in ids if i in valid], len(train)


def _collect(dataset: Dataset, ids: list[int], fps: int
             ) -> tuple[dict[str, np.ndarray], list[dict], list[str], list[tuple[str, tuple]]]:
    """Frame columns, per-episode rows, the task list and the state layout [(name, shape)]."""
    columns: dict[str, list[np.ndarray]] = {k: [] for k in ("observation.state", "action",
                                                             *SCALAR_FEATURES)}
    episodes, tasks, layout, start = [], [], None, 0
    for index, ep_id in enumerate(ids):
        episode = dataset.episode(ep_id)
        attrs, arrays = attrs_dict(episode.attrs), episode.arrays
        keys = obs_keys(arrays)
        this_layout = [(flat_obs_name(k), tuple(arrays[k].shape[1:])) for k in keys]
        if layout is None:
            layout = this_layout
        elif this_layout != layout:
            raise DatasetError(f"episode {ep_id} has observations {this_layout}, unlike the "
                               f"first episode's {layout}; export one task at a time "
                               f"(refine-dp dataset filter --task)")
        actions = command_matrix(arrays)
        length = actions.shape[0]
        state = np.concatenate([np.asarray(arrays[k]).reshape(length, -1) for k in keys], axis=1)
        task = str(attrs["task"])
        if task not in tasks:
            tasks.append(task)
        columns["observation.state"].append(state.astype(np.float32))
        columns["action"].append(actions.astype(np.float32))
        columns["timestamp"].append((np.arange(length) / fps).astype(np.float32))
        columns["frame_index"].append(np.arange(length, dtype=np.int64))
        columns["episode_index"].append(np.full(length, index, dtype=np.int64))
        columns["index"].append(np.arange(start, start + length, dtype=np.int64))
        columns["task_index"].append(np.full(length, tasks.index(task), dtype=np.int64))
        episodes.append({"episode_index": index, "tasks": [task], "length": length,
                         "data/chunk_index": 0, "data/file_index": 0,
                         "dataset_from_index": start, "dataset_to_index": start + length,
                         "meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0,
                         "success": bool(attrs["success"]), "source": str(attrs["source"]),
                         "refine_dp_episode_id": int(ep_id)})
        start += length
    return ({k: np.concatenate(v) for k, v in columns.items()}, episodes, tasks, layout or [])


def _frame_table(pa: ModuleType, frames: dict[str, np.ndarray]) -> object:
    arrays, names = [], []
    for name, values in frames.items():
        if values.ndim == 2:
            flat = pa.array(values.reshape(-1), type=pa.float32())
            arrays.append(pa.FixedSizeListArray.from_arrays(flat, values.shape[1]))
        else:
            arrays.append(pa.array(values))
        names.append(name)
    return pa.Table.from_arrays(arrays, names=names)


def _episode_table(pa: ModuleType, episodes: list[dict]) -> object:
    return pa.Table.from_pylist(episodes)


def _task_table(pa: ModuleType, tasks: list[str]) -> object:
    """Tasks with pandas metadata naming `task` as the index, as LeRobot reads it with pandas."""
    table = pa.table({"task_index": pa.array(range(len(tasks)), type=pa.int64()),
                      "task": pa.array(tasks, type=pa.string())})
    pandas_meta = {"index_columns": ["task"], "column_indexes": [], "columns": [
        {"name": "task_index", "field_name": "task_index", "pandas_type": "int64",
         "numpy_type": "int64", "metadata": None},
        {"name": "task", "field_name": "task", "pandas_type": "unicode", "numpy_type": "object",
         "metadata": None}], "creator": {"library": "refine-dp"}}
    return table.replace_schema_metadata({"pandas": json.dumps(pandas_meta)})


def _write_parquet(pa: ModuleType, pq: ModuleType, file: Path, table: object) -> None:
    file.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, file)


def _stats(frames: dict[str, np.ndarray]) -> dict:
    """Per-feature statistics over all frames, per entry for vector features."""
    out = {}
    for name, values in frames.items():
        v = values.astype(np.float64).reshape(values.shape[0], -1)
        out[name] = {"min": v.min(0).tolist(), "max": v.max(0).tolist(),
                     "mean": v.mean(0).tolist(), "std": v.std(0).tolist(),
                     "count": [int(v.shape[0])]}
    return out


def _features(layout: list[tuple[str, tuple]], joint_names: tuple[str, ...]) -> dict:
    """`info.json` features: dtype, shape and per-entry names."""
    state_names = []
    for name, shape in layout:
        if shape == (len(joint_names),) and name in ("joint_pos", "joint_vel"):
            state_names += [f"{name}.{j}" for j in joint_names]
        else:
            state_names += [f"{name}[{','.join(map(str, i))}]" for i in np.ndindex(*shape)]
    features = {
        "observation.state": {"dtype": "float32", "shape": [len(state_names)],
                              "names": state_names},
        "action": {"dtype": "float32", "shape": [ACTION_DIM], "names": action_names()},
    }
    for name, dtype in SCALAR_FEATURES.items():
        features[name] = {"dtype": dtype, "shape": [1], "names": None}
    return features
