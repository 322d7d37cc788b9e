"""Dataset curation (split, merge, filter, delete), robomimic and LeRobot conversion, and the
`refine-dp dataset` commands, on small synthetic datasets written without the simulator."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from datasets.curation import delete, filter_dataset, merge, split
from datasets.dataset import Dataset
from datasets.episode_io import write_episode
from datasets.errors import DatasetError, SchemaMismatchError
from datasets.interop import command_arrays, command_matrix
from datasets.robomimic import export_robomimic, import_robomimic
from robot_io.robot_spec import RobotSpec
from robot_io.t1_model import default_robot_spec
from robot_io.types import Command
from teleop_app.cli import main

STEPS = 12
# (task, source, success, length) of the five fixture episodes.
EPISODES = [("box_pickup", "scripted", True, STEPS), ("box_pickup", "teleop_vr", False, STEPS),
            ("door_open", "scripted", True, STEPS), ("door_open", "heuristic", True, 8),
            ("box_pickup", "heuristic", False, 20)]
COMMAND_KEYS = ("command/base_vel", "command/hand_pos", "command/hand_quat", "command/gripper")


def episode_arrays(rng: np.random.Generator, length: int, task: str) -> dict[str, np.ndarray]:
    """Random arrays with the shapes of docs/dataset_format.md (a small sim state)."""
    shapes = {"obs/joint_pos": (29,), "obs/joint_vel": (29,), "obs/gripper_pos": (2,),
              "obs/root_pos": (3,), "obs/root_quat": (4,), "obs/root_lin_vel": (3,),
              "obs/root_ang_vel": (3,), "obs/projected_gravity": (3,), "obs/hand_pos": (2, 3),
              "obs/hand_quat": (2, 4), "obs/foot_pos": (2, 3), "obs/foot_quat": (2, 4),
              f"obs/task/{task}_pos": (3,), "command/base_vel": (3,),
              "command/hand_pos": (2, 3), "command/hand_quat": (2, 4), "command/gripper": (2,),
              "targets/joint_pos": (29,), "targets/gripper": (2,), "sim/state": (40,)}
    arrays = {key: rng.standard_normal((length, *shape)) for key, shape in shapes.items()}
    arrays["time_s"] = np.arange(length) * 0.02
    return arrays


def episode_attrs(ep_id: int, task: str, source: str, success: bool, length: int) -> dict:
    return {"schema_version": 1, "episode_id": ep_id, "task": task, "source": source,
            "controller": "reference", "seed": 100 + ep_id, "world": 0, "success": success,
            "end_reason": "success" if success else "timeout", "length": length,
            "duration_s": length * 0.02, "control_dt_s": 0.02,
            "randomization": {"box_x": 0.1 * ep_id}, "task_config": {"steps": length},
            "created_utc": "2025-01-01T00:00:00Z"}


def make_dataset(path: Path, episodes: list[tuple] = EPISODES, seed: int = 0,
                 spec: object | None = None) -> Dataset:
    dataset = Dataset.create(path, spec or default_robot_spec())
    rng = np.random.default_rng(seed)
    for task, source, success, length in episodes:
        ep_id = dataset.next_episode_id()
        write_episode(dataset.episode_path(ep_id), episode_attrs(ep_id, task, source, success,
                                                                 length),
                      episode_arrays(rng, length, task))
    return Dataset.open(path)


def attr(dataset: Dataset, ep_id: int, name: str) -> object:
    return getattr(dataset.attrs(ep_id), name)


def read_splits(path: Path) -> dict | None:
    """splits.json as written."""
    file = path / "splits.json"
    return json.loads(file.read_text()) if file.exists() else None


@pytest.fixture
def ds_path(tmp_path: Path) -> Path:
    make_dataset(tmp_path / "ds")
    return tmp_path / "ds"


# --- split -------------------------------------------------------------------------------------

def test_split_is_seeded_disjoint_and_written(ds_path: Path) -> None:
    splits = split(ds_path, valid_fraction=0.4, seed=3)
    assert len(splits["valid"]) == 2 and len(splits["train"]) == 3
    assert sorted(splits["train"] + splits["valid"]) == [0, 1, 2, 3, 4]
    assert json.loads((ds_path / "splits.json").read_text()) == splits == read_splits(ds_path)
    assert split(ds_path, valid_fraction=0.4, seed=3) == splits
    assert {tuple(split(ds_path, valid_fraction=0.4, seed=s)["valid"]) for s in range(8)} != {
        tuple(splits["valid"])}  # other seeds give other splits
    assert not list(ds_path.glob("*.tmp"))


def test_split_keeps_one_in_each_part_and_rejects_bad_fractions(ds_path: Path) -> None:
    assert len(split(ds_path, valid_fraction=0.01)["valid"]) == 1
    assert len(split(ds_path, valid_fraction=0.99)["train"]) == 1
    assert split(ds_path, valid_fraction=0.0)["valid"] == []
    with pytest.raises(ValueError, match=r"valid_fraction must be in \[0, 1\), got 1.5"):
        split(ds_path, valid_fraction=1.5)


# --- merge -------------------------------------------------------------------------------------

def test_merge_copies_all_episodes_with_new_ids(tmp_path: Path) -> None:
    a = make_dataset(tmp_path / "a", EPISODES[:2], seed=1)
    b = make_dataset(tmp_path / "b", EPISODES[2:], seed=2)
    ids = merge([tmp_path / "a", tmp_path / "b"], tmp_path / "m")
    assert ids == [0, 1, 2, 3, 4]
    merged = Dataset.open(tmp_path / "m")
    assert len(merged) == 5 and sorted(merged.episode_ids()) == ids
    for new_id, (src, old_id) in zip(ids, [(a, 0), (a, 1), (b, 0), (b, 1), (b, 2)]):
        assert attr(merged, new_id, "episode_id") == new_id
        assert attr(merged, new_id, "task") == attr(src, old_id, "task")
        np.testing.assert_array_equal(merged.episode(new_id).arrays["obs/joint_pos"],
                                      src.episode(old_id).arrays["obs/joint_pos"])
    assert not list((tmp_path / "m").rglob("*.partial"))


def test_merge_refuses_different_robot_specs_naming_the_field(tmp_path: Path) -> None:
    make_dataset(tmp_path / "a", EPISODES[:1])
    other = dataclasses.replace(default_robot_spec(), control_dt_s=0.01)
    make_dataset(tmp_path / "b", EPISODES[:1], spec=other)
    with pytest.raises(SchemaMismatchError, match=r"robot specs differ: control_dt_s: 0.02 vs "
                                                  r"0.01"):
        merge([tmp_path / "a", tmp_path / "b"], tmp_path / "m")
    assert not (tmp_path / "m").exists()


# --- filter ------------------------------------------------------------------------------------

@pytest.mark.parametrize("criteria,expected", [
    ({"task": "box_pickup"}, [0, 1, 4]),
    ({"source": "heuristic"}, [3, 4]),
    ({"success": True}, [0, 2, 3]),
    ({"success": False, "task": "box_pickup"}, [1, 4]),
    ({"min_length": 12}, [0, 1, 2, 4]),
    ({"max_length": 12}, [0, 1, 2, 3]),
    ({"task": "no_such_task"}, []),
])
def test_filter_keeps_matching_episodes(ds_path: Path, tmp_path: Path, criteria: dict,
                                        expected: list[int]) -> None:
    src = Dataset.open(ds_path)
    ids = filter_dataset(ds_path, tmp_path / "f", **criteria)
    assert ids == list(range(len(expected)))
    out = Dataset.open(tmp_path / "f")
    for new_id, old_id in zip(ids, expected):
        assert attr(out, new_id, "seed") == attr(src, old_id, "seed")


def test_filter_refuses_an_existing_destination(ds_path: Path) -> None:
    with pytest.raises(DatasetError, match="already exists"):
        filter_dataset(ds_path, ds_path, task="box_pickup")


# --- delete ------------------------------------------------------------------------------------

def test_delete_removes_files_and_split_entries(ds_path: Path) -> None:
    split(ds_path, valid_fraction=0.4, seed=0)
    delete(ds_path, [1, 3])
    assert sorted(Dataset.open(ds_path).episode_ids()) == [0, 2, 4]
    splits = read_splits(ds_path)
    assert sorted(splits["train"] + splits["valid"]) == [0, 2, 4]


def test_delete_of_unknown_ids_lists_them_and_deletes_nothing(ds_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"no episodes \[7, 9\]"):
        delete(ds_path, [0, 7, 9])
    assert len(Dataset.open(ds_path)) == 5


# --- robomimic ---------------------------------------------------------------------------------

def test_command_matrix_matches_command_to_vector() -> None:
    rng = np.random.default_rng(0)
    arrays = {key: rng.standard_normal(shape) for key, shape in zip(
        COMMAND_KEYS, [(4, 3), (4, 2, 3), (4, 2, 4), (4, 2)])}
    cmd = Command(*(torch.from_numpy(arrays[k]) for k in COMMAND_KEYS))
    np.testing.assert_array_equal(command_matrix(arrays), cmd.to_vector().numpy())
    back = command_arrays(command_matrix(arrays))
    for key in COMMAND_KEYS:
        np.testing.assert_array_equal(back[key], arrays[key])
    with pytest.raises(ValueError, match=r"shape \(T, 19\).*got \(4, 18\)"):
        command_arrays(np.zeros((4, 18)))


def test_robomimic_export_layout(ds_path: Path, tmp_path: Path) -> None:
    split(ds_path, valid_fraction=0.4, seed=1)
    out = export_robomimic(ds_path, tmp_path / "rm.hdf5")
    src = Dataset.open(ds_path)
    with h5py.File(out, "r") as f:
        assert sorted(f["data"]) == [f"demo_{i}" for i in range(5)]
        assert f["data"].attrs["total"] == sum(e[3] for e in EPISODES)
        env_args = json.loads(f["data"].attrs["env_args"])
        assert env_args["env_name"] == "box_pickup+door_open" and env_args["type"] == 2
        stored = RobotSpec.from_dict(env_args["env_kwargs"]["robot_spec"])
        assert stored.differences(src.robot_spec) == []
        assert env_args["env_kwargs"]["control_dt_s"] == 0.02
        demo = f["data/demo_3"]
        assert demo.attrs["num_samples"] == 8 and bool(demo.attrs["success"])
        assert demo["actions"].shape == (8, 19)
        assert demo["obs/joint_pos"].shape == (8, 29) and demo["obs/hand_pos"].shape == (8, 2, 3)
        assert "obs/task_door_open_pos" in demo and demo["states"].shape == (8, 40)
        arrays = src.episode(3).arrays
        np.testing.assert_array_equal(demo["actions"][:, 3:9],
                                      arrays["command/hand_pos"].reshape(8, 6))
        splits = read_splits(ds_path)
        for key in ("train", "valid"):
            assert sorted(f[f"mask/{key}"][()]) == sorted(f"demo_{i}".encode()
                                                           for i in splits[key])


def test_robomimic_without_splits_puts_every_demo_in_train(ds_path: Path,
                                                           tmp_path: Path) -> None:
    with h5py.File(export_robomimic(ds_path, tmp_path / "rm.hdf5"), "r") as f:
        assert len(f["mask/train"]) == 5 and len(f["mask/valid"]) == 0


def test_robomimic_round_trip_keeps_obs_commands_and_attributes(ds_path: Path,
                                                                tmp_path: Path) -> None:
    split(ds_path, valid_fraction=0.4, seed=2)
    export_robomimic(ds_path, tmp_path / "rm.hdf5")
    ids = import_robomimic(tmp_path / "rm.hdf5", tmp_path / "back")
    src, back = Dataset.open(ds_path), Dataset.open(tmp_path / "back", default_robot_spec())
    assert ids == [0, 1, 2, 3, 4]
    for ep_id in ids:
        a, b = src.episode(ep_id).arrays, back.episode(ep_id).arrays
        for key in [k for k in a if k.startswith(("obs/", "command/", "targets/"))] + ["time_s"]:
            np.testing.assert_allclose(b[key], a[key], rtol=0, atol=1e-12, err_msg=key)
        assert "sim/state" not in b
        assert back.attrs(ep_id).to_dict() == src.attrs(ep_id).to_dict()
    theirs, ours = read_splits(tmp_path / "back"), read_splits(ds_path)
    assert (theirs["train"], theirs["valid"]) == (ours["train"], ours["valid"])


def test_imported_episodes_cannot_be_replayed_and_say_why(ds_path: Path,
                                                           tmp_path: Path) -> None:
    from datasets.replay import replay_episode

    export_robomimic(ds_path, tmp_path / "rm.hdf5")
    import_robomimic(tmp_path / "rm.hdf5", tmp_path / "back")
    with pytest.raises(DatasetError, match="has no sim/state .* cannot be re-simulated"):
        replay_episode(tmp_path / "back", 0)


def test_robomimic_import_of_foreign_files_fails_clearly_and_leaves_nothing(
        tmp_path: Path) -> None:
    file = tmp_path / "foreign.hdf5"
    with h5py.File(file, "w") as f:
        f.create_dataset("data/demo_0/actions", data=np.zeros((5, 7)))
        f.create_dataset("data/demo_0/obs/robot0_eef_pos", data=np.zeros((5, 3)))
    with pytest.raises(DatasetError, match="does not store a robot spec"):
        import_robomimic(file, tmp_path / "a")
    with pytest.raises(ValueError, match=r"\(T, 19\).*got \(5, 7\)"):
        import_robomimic(file, tmp_path / "b", robot_spec=default_robot_spec())
    with h5py.File(file, "a") as f:
        del f["data/demo_0/actions"]
        f.create_dataset("data/demo_0/actions", data=np.zeros((5, 19)))
    with pytest.raises(DatasetError, match=r"demo_0 has no \['targets/joint_pos', "
                                           r"'targets/gripper'\]"):
        import_robomimic(file, tmp_path / "c", robot_spec=default_robot_spec())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["foreign.hdf5"]


# --- LeRobot -----------------------------------------------------------------------------------

def test_lerobot_export_reads_back_with_pyarrow(ds_path: Path, tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet",
                             reason="pyarrow is not installed (pip install 'refine-dp[lerobot]')")
    from datasets.lerobot import export_lerobot

    single = tmp_path / "box"
    filter_dataset(ds_path, single, task="box_pickup")  # one observation layout
    split(single, valid_fraction=0.34, seed=0)
    out = export_lerobot(single, tmp_path / "lr", fps=50)
    info = json.loads((out / "meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["fps"] == 50
    assert info["total_episodes"] == 3 and info["total_frames"] == 12 + 12 + 20
    assert info["splits"] == {"train": "0:2", "valid": "2:3"}
    state_dim = 2 * 29 + 2 + 3 + 4 + 3 + 3 + 3 + 6 + 8 + 6 + 8 + 3
    assert info["features"]["observation.state"]["shape"] == [state_dim]
    assert len(info["features"]["observation.state"]["names"]) == state_dim
    action = info["features"]["action"]
    assert action["dtype"] == "float32" and action["shape"] == [19]
    assert action["names"][:3] == ["base_vel.vx", "base_vel.vy", "base_vel.yaw_rate"]
    assert action["names"][-1] == "gripper.right" and len(action["names"]) == 19

    data = pq.read_table(out / info["data_path"].format(chunk_index=0, file_index=0))
    assert set(data.column_names) == {"observation.state", "action", "timestamp",
                                      "frame_index", "episode_index", "index", "task_index"}
    assert data.num_rows == 44 and data.column("index").to_pylist() == list(range(44))
    episodes = pq.read_table(out / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    assert [e["length"] for e in episodes] == [e["dataset_to_index"] - e["dataset_from_index"]
                                               for e in episodes]
    src = Dataset.open(single)
    for ep in episodes:
        rows = slice(ep["dataset_from_index"], ep["dataset_to_index"])
        arrays = src.episode(ep["refine_dp_episode_id"]).arrays
        action = np.array(data.column("action").to_pylist()[rows])
        np.testing.assert_allclose(action, command_matrix(arrays), rtol=1e-6, atol=1e-6)
        state = np.array(data.column("observation.state").to_pylist()[rows])
        np.testing.assert_allclose(state[:, :29], arrays["obs/joint_pos"], rtol=1e-6, atol=1e-6)
        assert data.column("frame_index").to_pylist()[rows] == list(range(ep["length"]))
    tasks = pq.read_table(out / "meta/tasks.parquet").to_pylist()
    assert tasks == [{"task_index": 0, "task": "box_pickup"}]
    stats = json.loads((out / "meta/stats.json").read_text())
    assert len(stats["action"]["mean"]) == 19 and stats["index"]["max"] == [43.0]


def test_lerobot_export_refuses_a_wrong_fps_and_mixed_layouts(ds_path: Path,
                                                              tmp_path: Path) -> None:
    pytest.importorskip("pyarrow", reason="pyarrow is not installed")
    from datasets.lerobot import export_lerobot

    with pytest.raises(ValueError, match="fps=30 differs from the dataset's control rate 50"):
        export_lerobot(ds_path, tmp_path / "a", fps=30)
    with pytest.raises(DatasetError, match="export one task at a time"):
        export_lerobot(ds_path, tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


# --- command line ------------------------------------------------------------------------------

def test_cli_split_filter_delete_export_import(ds_path: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dataset", "split", str(ds_path), "--valid-fraction", "0.2", "--seed", "1"]) == 0
    assert "4 train, 1 valid" in capsys.readouterr().out
    assert main(["dataset", "filter", str(ds_path), str(tmp_path / "f"), "--failures"]) == 0
    assert len(Dataset.open(tmp_path / "f")) == 2
    assert main(["dataset", "merge", str(tmp_path / "m"), str(ds_path), str(tmp_path / "f")]) == 0
    assert len(Dataset.open(tmp_path / "m")) == 7
    assert main(["dataset", "delete", str(tmp_path / "m"), "0", "6"]) == 0
    assert sorted(Dataset.open(tmp_path / "m").episode_ids()) == [1, 2, 3, 4, 5]
    rm = tmp_path / "x.hdf5"
    assert main(["dataset", "export", str(ds_path), "--format", "robomimic", "--out", str(rm)]) == 0
    assert main(["dataset", "import", str(rm), "--format", "robomimic",
                 "--out", str(tmp_path / "i")]) == 0
    assert len(Dataset.open(tmp_path / "i")) == 5


def test_cli_errors_are_one_line_with_status_2(ds_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dataset", "delete", str(ds_path), "42"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("refine-dp: error: no episodes [42]") and err.count("\n") == 1


def test_cli_info_and_validate(ds_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dataset", "info", str(ds_path)]) == 0
    assert "box_pickup" in capsys.readouterr().out
    assert main(["dataset", "validate", str(ds_path)]) == 0
    assert capsys.readouterr().out.strip().endswith("ok")
    bad = Dataset.open(ds_path).episode_path(2)
    bad.write_bytes(bad.read_bytes()[:200])  # a truncated episode file
    assert main(["dataset", "validate", str(ds_path)]) == 1
    out = capsys.readouterr().out
    assert bad.name in out and "1 problem(s)" in out
