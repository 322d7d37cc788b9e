"""Export to and import from the robomimic / Isaac Lab HDF5 layout.

One file holds the whole dataset:

    data/                      attrs: total (steps), env_args (JSON)
      demo_0/                  attrs: num_samples (T), success, and our episode attributes
        obs/<name>             (T, ...) e.g. joint_pos (T, 29), hand_pos (T, 2, 3), task_object_pos
        actions                (T, 19) the command in Command.to_vector order
        states                 (T, nstate) MuJoCo integration state, when recorded
        time_s, targets/<name> our time stamps and applied controller targets (robomimic ignores
                               them; they make the file importable back)
    mask/train, mask/valid     demo names (bytes), from splits.json (all in train without one);
                               attr seed: the split's seed

`env_args` is `{"env_name": task, "type": 2, "env_kwargs": {"robot_spec": ..., "control_dt_s":
...}}`; type 2 is robomimic's gym-style environment type, which Isaac Lab's exports also use.

Importing keeps observations, commands, targets, the split and the episode attributes. It does
not bring back simulator state: `states` alone (without the per-world model fields) cannot
reproduce a recording, so imported episodes have no `sim/state` and replay refuses them with
that reason. Our episode files require the applied targets, so a file without
`targets/joint_pos` and `targets/gripper` (one not written by refine-dp) cannot be imported.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path

import h5py
import numpy as np

from datasets.dataset import Dataset
from datasets.episode_io import SCHEMA_VERSION, fsync_dir, partial_path, write_episode
from datasets.errors import DatasetError
from datasets.interop import (
    attrs_dict,
    command_arrays,
    command_matrix,
    flat_obs_name,
    obs_key,
    obs_keys,
)
from robot_io.robot_spec import RobotSpec

GYM_ENV_TYPE = 2
# Episode attributes carried through a round trip as demo attributes (JSON text for objects).
EPISODE_ATTRS = ("episode_id", "task", "source", "controller", "seed", "world", "success",
                 "end_reason", "duration_s", "control_dt_s", "randomization", "task_config",
                 "created_utc")
TARGET_KEYS = ("targets/joint_pos", "targets/gripper")


def export_robomimic(path: str | Path, out_file: str | Path) -> Path:
    """Write the dataset at `path` as one robomimic HDF5 file (written atomically).

    Returns:
        The file written.

    Raises:
        DatasetError: the dataset has no episodes, or `out_file` exists.
    """
    out_file = Path(out_file)
    if out_file.exists():
        raise DatasetError(f"{out_file} already exists; choose another --out")
    dataset = Dataset.open(path)
    ids = sorted(dataset.episode_ids())
    if not ids:
        raise DatasetError(f"{path} has no episodes to export")
    names = {ep_id: f"demo_{i}" for i, ep_id in enumerate(ids)}
    out_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_path(out_file)
    tasks, total = set(), 0
    with h5py.File(tmp, "w") as f:
        data = f.create_group("data")
        for ep_id in ids:
            episode = dataset.episode(ep_id)
            attrs = attrs_dict(episode.attrs)
            tasks.add(str(attrs["task"]))
            total += _write_demo(data.create_group(names[ep_id]), attrs, episode.arrays)
        spec = dataset.robot_spec
        data.attrs["total"] = total
        data.attrs["env_args"] = json.dumps({
            "env_name": "+".join(sorted(tasks)), "type": GYM_ENV_TYPE,
            "env_kwargs": {"robot_spec": spec.to_dict(), "control_dt_s": spec.control_dt_s,
                           "format": "refine-dp", "schema_version": SCHEMA_VERSION}})
        splits = dataset.splits()
        parts = {"train": ids, "valid": []} if splits is None else {
            "train": splits.train, "valid": splits.valid}
        for key, part in parts.items():
            demos = [names[i].encode() for i in part if i in names]
            f.create_dataset(f"mask/{key}", data=np.array(demos, dtype="S"))
        f["mask"].attrs["seed"] = 0 if splits is None else splits.seed
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, out_file)
    fsync_dir(out_file.parent)
    return out_file


def _write_demo(group: h5py.Group, attrs: dict, arrays: Mapping[str, np.ndarray]) -> int:
    """Fill one `demo_N` group; returns its number of steps."""
    actions = command_matrix(arrays)
    length = actions.shape[0]
    for key in obs_keys(arrays):
        group.create_dataset(f"obs/{flat_obs_name(key)}", data=np.asarray(arrays[key]))
    group.create_dataset("actions", data=actions)
    if "sim/state" in arrays:
        group.create_dataset("states", data=np.asarray(arrays["sim/state"]))
    for key in ("time_s", *(k for k in arrays if k.startswith("targets/"))):
        group.create_dataset(key, data=np.asarray(arrays[key]))
    group.attrs["num_samples"] = length
    for name in EPISODE_ATTRS:
        if name in attrs:
            value = attrs[name]
            group.attrs[name] = json.dumps(value) if isinstance(value, dict | list) else value
    return length


def import_robomimic(in_file: str | Path, dest: str | Path,
                     robot_spec: RobotSpec | None = None) -> list[int]:
    """Build a refine-dp dataset at `dest` from a robomimic HDF5 file.

    Args:
        in_file: the robomimic file.
        dest: a folder that does not exist yet.
        robot_spec: the robot spec to store; when None it is read from
            `data.attrs["env_args"]["env_kwargs"]["robot_spec"]`.

    Returns:
        The new episode ids, in demo order (demo_0, demo_1, ...).

    Raises:
        DatasetError: `dest` exists, the file has no `data` group, or no robot spec is known.
        ValueError: a demo's actions are not (T, 19) or its observations disagree in length.
    """
    dest = Path(dest)
    if dest.exists():
        raise DatasetError(f"{dest} already exists; import writes a new dataset")
    # Built under a temporary name and renamed when complete: a failed import leaves nothing.
    tmp = partial_path(dest)
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        ids = _import_into(in_file, tmp, robot_spec)
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_dir(dest.parent)
    return ids


def _import_into(in_file: str | Path, folder: Path, robot_spec: RobotSpec | None) -> list[int]:
    with h5py.File(in_file, "r") as f:
        if "data" not in f:
            raise DatasetError(f"{in_file} has no 'data' group: not a robomimic file")
        env_args = json.loads(f["data"].attrs.get("env_args", "{}"))
        spec = robot_spec or _spec_from_env_args(env_args, in_file)
        dataset = Dataset.create(folder, spec)
        demo_ids: dict[str, int] = {}
        for name in sorted(f["data"], key=_demo_number):
            new_id = dataset.next_episode_id()
            attrs, arrays = _read_demo(f["data"][name], name, env_args, spec, new_id)
            write_episode(dataset.episode_path(new_id), attrs, arrays)
            demo_ids[name] = new_id
        if "mask" in f and ("train" in f["mask"] or "valid" in f["mask"]):
            dataset.write_splits(_mask_ids(f, "train", demo_ids), _mask_ids(f, "valid", demo_ids),
                                 int(f["mask"].attrs.get("seed", 0)))
    return list(demo_ids.values())


def _read_demo(group: h5py.Group, name: str, env_args: dict, spec: RobotSpec,
               new_id: int) -> tuple[dict, dict[str, np.ndarray]]:
    arrays = command_arrays(np.asarray(group["actions"], dtype=np.float64))
    length = next(iter(arrays.values())).shape[0]
    missing = [k for k in TARGET_KEYS if k not in group]
    if missing:
        raise DatasetError(f"{name} has no {missing}: refine-dp episodes need the controller's "
                           f"applied targets, which only files exported by refine-dp carry")
    extra = {f"obs/{n}": v for n, v in group.get("obs", {}).items()}
    extra.update({f"targets/{n}": v for n, v in group["targets"].items()})
    for key, value in extra.items():
        if value.shape[0] != length:
            raise ValueError(f"{name}/{key} has {value.shape[0]} steps but actions has {length}")
        new_key = obs_key(key[len("obs/"):]) if key.startswith("obs/") else key
        arrays[new_key] = np.asarray(value, dtype=np.float64)
    dt = float(group.attrs.get("control_dt_s", spec.control_dt_s))
    arrays["time_s"] = (np.asarray(group["time_s"], dtype=np.float64) if "time_s" in group
                        else np.arange(length, dtype=np.float64) * dt)
    stored = {k: _plain(v) for k, v in group.attrs.items()}
    success = bool(stored.get("success", False))
    attrs = {
        "schema_version": SCHEMA_VERSION, "episode_id": new_id,
        "task": stored.get("task", env_args.get("env_name", "unknown")),
        "source": stored.get("source", "robomimic"), "controller": stored.get("controller", ""),
        "seed": int(stored.get("seed", 0)), "world": int(stored.get("world", 0)),
        "success": success, "length": length,
        "end_reason": stored.get("end_reason", "success" if success else "timeout"),
        "duration_s": length * dt, "control_dt_s": dt,
        "randomization": json.loads(stored.get("randomization", "{}")),
        "task_config": json.loads(stored.get("task_config", "{}")),
        "created_utc": stored.get("created_utc", ""),
    }
    return attrs, arrays


def _spec_from_env_args(env_args: dict, in_file: str | Path) -> RobotSpec:
    data = env_args.get("env_kwargs", {}).get("robot_spec")
    if data is None:
        raise DatasetError(f"{in_file} does not store a robot spec in data/env_args; pass the "
                           f"robot spec to import it")
    return RobotSpec.from_dict(data)


def _mask_ids(f: h5py.File, key: str, demo_ids: dict[str, int]) -> list[int]:
    if key not in f["mask"]:
        return []
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in f["mask"][key][()]]
    return sorted(demo_ids[n] for n in names if n in demo_ids)


def _demo_number(name: str) -> tuple[int, str]:
    """Sort key: demo_2 before demo_10; other names after, alphabetically."""
    number = name.rpartition("_")[2]
    return (int(number), name) if number.isdigit() else (1 << 62, name)


def _plain(value: object) -> object:
    """An HDF5 attribute as a plain Python value."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    return value

