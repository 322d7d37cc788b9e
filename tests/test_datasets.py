"""Datasets: recorder -> reader round trip, validate, info, loader windows, and bad files."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from datasets.dataset import Dataset
from datasets.episode_io import SCHEMA_VERSION, read_episode, write_episode
from datasets.errors import CorruptEpisodeError, DatasetError, SchemaMismatchError
from datasets.info import format_info, info
from datasets.loader import WindowDataset, column_names, compute_stats
from datasets.recorder import EpisodeRecorder
from datasets.validate import validate
from planners.scripted import make_scripted_source
from robot_io.control.reference import ReferenceController
from robot_io.env import BatchedEnv
from robot_io.robot_spec import RobotSpec
from robot_io.session import Session
from robot_io.t1_model import default_robot_spec
from robot_io.tasks import default_config

TIME_LIMIT_S = 0.3  # 15 ticks: every episode ends by time-out, quickly


class ObsLog:
    """An observer that keeps what the session observed, per session episode id."""

    def __init__(self) -> None:
        self.rows: dict[int, list[np.ndarray]] = {}
        self.world_episode: dict[int, int] = {}

    def episode_started(self, start) -> None:
        for w, e in zip(start.world_ids.tolist(), start.episode_ids.tolist()):
            self.world_episode[w] = e
            self.rows[e] = []

    def step(self, record) -> None:
        for w, e in self.world_episode.items():
            self.rows[e].append(record.obs.joint_pos[w].numpy().copy())

    def episode_ended(self, end) -> None:
        for w in end.world_ids.tolist():
            del self.world_episode[w]


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ObsLog, EpisodeRecorder]:
    config = dataclasses.replace(default_config("box_pickup").nominal(), time_limit_s=TIME_LIMIT_S)
    env = BatchedEnv("box_pickup", num_worlds=3, threads=1, task_config=config)
    dataset = Dataset.create(tmp_path_factory.mktemp("ds") / "box", env.robot)
    recorder = EpisodeRecorder(dataset, task="box_pickup", source="scripted",
                               controller="reference", seed=env.seed,
                               control_dt_s=env.control_dt_s,
                               task_config=dataclasses.asdict(config), keep_failures=True)
    log = ObsLog()
    with recorder:
        Session(env, make_scripted_source("box_pickup"), ReferenceController(env),
                observers=[log, recorder]).run(episodes=4)
    return dataset.path, log, recorder


def test_recorded_episodes_round_trip(recorded) -> None:
    path, log, recorder = recorded
    dataset = Dataset.open(path, default_robot_spec())
    assert dataset.episode_ids() == [0, 1, 2, 3]
    assert recorder.episodes_written == 4 and recorder.failures_written == 4
    steps = round(TIME_LIMIT_S / 0.02)
    # Dataset ids follow the order episodes ended, as do session ids here (0, 1, 2 then 3).
    for episode_id in range(4):
        ep = dataset.episode(episode_id)
        a = ep.attrs
        assert (a.length, a.success, a.end_reason) == (steps, False, "timeout")
        assert a.task == "box_pickup"
        assert a.duration_s == pytest.approx(steps * 0.02)
        np.testing.assert_array_equal(ep["obs/joint_pos"], np.stack(log.rows[episode_id]))
        assert ep["obs/hand_pos"].shape == (steps, 2, 3)
        assert ep["sim/state"].shape[0] == steps
        np.testing.assert_array_equal(ep["sim/state"][0], ep["sim/initial_state"])
        assert set(a.randomization) >= {"box_dx_m", "object_mass_kg"}
        assert a.task_config["time_limit_s"] == TIME_LIMIT_S
        assert "sim/model_fields/body_mass" in ep.arrays
    # World 0 ran episodes 0 and 3: different rows, same world.
    assert dataset.attrs(3).world == 0


def test_validate_and_info_of_a_recorded_dataset(recorded) -> None:
    path, log, _ = recorded
    assert validate(path) == []
    summary = info(path)
    steps = round(TIME_LIMIT_S / 0.02)
    assert (summary["episodes"], summary["successes"], summary["success_rate"]) == (4, 0, 0.0)
    assert summary["total_steps"] == 4 * steps
    assert summary["total_duration_s"] == pytest.approx(4 * steps * 0.02)
    assert summary["by_source"] == {"scripted": 4} and summary["by_task"] == {"box_pickup": 4}
    every = np.concatenate([np.stack(rows) for rows in log.rows.values()])
    stats = summary["fields"]["obs/joint_pos"]
    np.testing.assert_allclose(stats["mean"], every.mean(0), atol=1e-9)
    np.testing.assert_allclose(stats["std"], every.std(0), atol=1e-6)
    np.testing.assert_array_equal(stats["max"], every.max(0))
    assert "success" in format_info(summary) and "obs/joint_pos" in format_info(summary)


def test_compute_stats_matches_numpy(recorded) -> None:
    path, log, _ = recorded
    stats = compute_stats(Dataset.open(path), ["obs/joint_pos"])["obs/joint_pos"]
    every = np.concatenate([np.stack(rows) for rows in log.rows.values()])
    np.testing.assert_allclose(stats.mean, every.mean(0), atol=1e-9)
    np.testing.assert_array_equal(stats.min, every.min(0))


# -- synthetic episodes ---------------------------------------------------------------------
def _attrs(episode_id: int, length: int, **over) -> dict:
    attrs = {"schema_version": SCHEMA_VERSION, "episode_id": episode_id, "task": "box_pickup",
                 "source": "synthetic", "controller": "none", "seed": 0, "world": 0,
                 "success": True,
                 "end_reason": "success", "length": length, "duration_s": length * 0.02,
                 "control_dt_s": 0.02, "randomization": {"a": 1.0}, "task_config": {"x": 1},
                 "created_utc": "2026-01-01T00:00:00+00:00"}
    attrs.update(over)
    return attrs


def _arrays(length: int, offset: float = 0.0) -> dict[str, np.ndarray]:
    t = np.arange(length, dtype=np.float64) + offset
    col = t[:, None]
    return {"time_s": t * 0.02, "obs/joint_pos": np.repeat(col, 29, 1),
            "obs/hand_pos": col[:, :, None] * np.ones((1, 2, 3)) + np.arange(6).reshape(1, 2, 3),
            "command/base_vel": np.repeat(col, 3, 1) * 10,
            "command/hand_pos": np.zeros((length, 2, 3)),
            "command/hand_quat": np.zeros((length, 2, 4)), "command/gripper": np.zeros((length, 2)),
            "targets/joint_pos": np.zeros((length, 29)), "targets/gripper": np.zeros((length, 2))}


def _synthetic(tmp_path: Path, lengths: list[int]) -> Dataset:
    dataset = Dataset.create(tmp_path / "syn", default_robot_spec())
    for i, length in enumerate(lengths):
        write_episode(dataset.episode_path(i), _attrs(i, length), _arrays(length, 100 * i))
    return dataset


def test_window_items_against_hand_computed_indices(tmp_path: Path) -> None:
    dataset = _synthetic(tmp_path, [4, 3])
    windows = WindowDataset(dataset, ["obs/joint_pos", "obs/hand_pos"], ["command/base_vel"],
                            obs_horizon=2, pred_horizon=3)
    assert len(windows) == 7
    assert windows.locate(5) == (1, 1)
    obs, action, mask = windows[0]  # episode 0, t=0: history padded with row 0
    assert obs.shape == (2, 35) and obs.dtype == torch.float32
    assert obs[:, 0].tolist() == [0.0, 0.0]
    assert action[:, 0].tolist() == [0.0, 10.0, 20.0] and mask.tolist() == [True] * 3
    obs, action, mask = windows[3]  # episode 0, t=3 (last step): rows 2, 3; actions 3, 3, 3
    assert obs[:, 0].tolist() == [2.0, 3.0]
    assert action[:, 0].tolist() == [30.0, 30.0, 30.0]
    assert mask.tolist() == [True, False, False]
    obs, action, mask = windows[5]  # episode 1 (offset 100), t=1
    assert obs[:, 0].tolist() == [100.0, 101.0]
    assert action[:, 0].tolist() == [1010.0, 1020.0, 1020.0]
    assert mask.tolist() == [True, True, False]
    # hand_pos (T, 2, 3) flattens row-major after joint_pos's 29 columns.
    assert obs[1, 29:].tolist() == [101.0 + k for k in range(6)]
    names = column_names(dataset, ["obs/hand_pos"])
    assert names[:4] == ["obs/hand_pos[0,0]", "obs/hand_pos[0,1]", "obs/hand_pos[0,2]",
                         "obs/hand_pos[1,0]"]


def test_partials_are_ignored_and_removed(tmp_path: Path) -> None:
    dataset = _synthetic(tmp_path, [3])
    partial = dataset.episodes_dir / "ep_000001.h5.partial"
    partial.write_bytes(b"half an episode")
    assert dataset.episode_ids() == [0] and dataset.next_episode_id() == 2
    problems = validate(dataset.path)
    assert [p.level for p in problems] == ["warning"] and "unfinished" in problems[0].message
    Dataset.create(dataset.path, default_robot_spec())  # reopening to record cleans up
    assert not partial.exists() and validate(dataset.path) == []


def test_write_rejects_bad_shapes(tmp_path: Path) -> None:
    arrays = _arrays(4)
    arrays["obs/joint_vel"] = np.zeros((3, 29))
    with pytest.raises(DatasetError, match="obs/joint_vel.*4 rows"):
        write_episode(tmp_path / "ep_000000.h5", _attrs(0, 4), arrays)
    assert list(tmp_path.iterdir()) == []


def test_nan_is_reported(tmp_path: Path) -> None:
    dataset = Dataset.create(tmp_path / "nan", default_robot_spec())
    arrays = _arrays(5)
    arrays["obs/joint_pos"][2, 4] = np.nan
    write_episode(dataset.episode_path(0), _attrs(0, 5), arrays)
    problems = validate(dataset.path)
    assert len(problems) == 1 and "NaN" in problems[0].message and "row 2" in problems[0].message


def test_splits_round_trip(tmp_path: Path) -> None:
    dataset = _synthetic(tmp_path, [2, 2, 2])
    assert dataset.splits() is None
    dataset.write_splits([0, 2], [1], seed=7)
    assert dataset.splits() == dataset.splits().__class__(seed=7, train=(0, 2), valid=(1,))
    with pytest.raises(DatasetError, match="both"):
        dataset.write_splits([0, 1], [1], seed=7)


# -- bad inputs ------------------------------------------------------------------------------
def test_dataset_level_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        Dataset.open(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="dataset.json is missing"):
        Dataset.open(tmp_path / "empty")
    assert "missing" in validate(tmp_path / "empty")[0].message
    dataset = _synthetic(tmp_path, [2])
    meta_path = dataset.path / "dataset.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "schema_version": SCHEMA_VERSION + 1}))
    with pytest.raises(SchemaMismatchError, match="newer"):
        Dataset.open(dataset.path)
    assert "newer" in validate(dataset.path)[0].message
    meta_path.write_text("{not json")
    with pytest.raises(DatasetError, match="JSON"):
        Dataset.open(dataset.path)
    assert "JSON" in validate(dataset.path)[0].message
    with pytest.raises(DatasetError, match="no episode 5"):
        _synthetic(tmp_path / "b", [2]).episode(5)


def test_wrong_robot_spec_lists_differences(tmp_path: Path) -> None:
    dataset = _synthetic(tmp_path, [2])
    spec = default_robot_spec()
    other = dataclasses.replace(spec, kp=(spec.kp[0] + 1,) + spec.kp[1:], control_dt_s=0.01)
    for make in (Dataset.open, Dataset.create):
        with pytest.raises(SchemaMismatchError, match=r"kp: 1 entries differ.*control_dt_s"):
            make(dataset.path, other)
    assert isinstance(RobotSpec.from_dict(spec.to_dict()), RobotSpec)


def test_episode_with_wrong_schema_version(tmp_path: Path) -> None:
    dataset = _synthetic(tmp_path, [2])
    with h5py.File(dataset.episode_path(0), "r+") as f:
        f.attrs["schema_version"] = np.int64(SCHEMA_VERSION + 1)
    with pytest.raises(SchemaMismatchError, match="schema version"):
        dataset.episode(0)
    assert "schema version" in validate(dataset.path)[0].message


def test_renamed_episode_is_refused(tmp_path: Path) -> None:
    dataset = _synthetic(tmp_path, [2])
    shutil.copy(dataset.episode_path(0), dataset.episode_path(1))  # a duplicate id 0
    with pytest.raises(CorruptEpisodeError, match="says it is episode 0"):
        dataset.episode(1)
    assert [p.file for p in validate(dataset.path)] == [str(dataset.episode_path(1))]


@pytest.fixture(scope="module")
def good_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, dict]:
    dataset = _synthetic(tmp_path_factory.mktemp("good"), [6])
    data = dataset.episode_path(0).read_bytes()
    return data, read_episode(dataset.episode_path(0)).arrays


def _damaged(tmp_path: Path, data: bytes) -> Dataset:
    folder = tmp_path / "bad"
    if folder.exists():
        shutil.rmtree(folder)
    dataset = Dataset.create(folder, default_robot_spec())
    dataset.episode_path(0).write_bytes(data)
    return dataset


_settings = settings(max_examples=60, deadline=None,
                     suppress_health_check=[HealthCheck.function_scoped_fixture])


@_settings
@given(cut=st.floats(0.0, 0.999))
def test_truncated_files_give_corrupt_episode_error(tmp_path: Path, good_file, cut: float) -> None:
    data, _ = good_file
    dataset = _damaged(tmp_path, data[:int(len(data) * cut)])
    with pytest.raises(CorruptEpisodeError):
        dataset.episode(0)
    problems = validate(dataset.path)
    assert len(problems) == 1 and "damaged" in problems[0].message


@_settings
@given(data=st.data())
def test_bit_flips_are_detected_or_harmless(tmp_path: Path, good_file, data) -> None:
    raw, arrays = good_file
    position = data.draw(st.integers(0, len(raw) - 1))
    bit = data.draw(st.integers(0, 7))
    flipped = bytearray(raw)
    flipped[position] ^= 1 << bit
    dataset = _damaged(tmp_path, bytes(flipped))
    try:
        episode = dataset.episode(0)
    except (CorruptEpisodeError, SchemaMismatchError):
        assert validate(dataset.path) != []
        return
    # Unused bytes may flip without harm; the data read back must then be exactly right.
    assert episode.arrays.keys() == arrays.keys()
    for key, value in arrays.items():
        np.testing.assert_array_equal(episode.arrays[key], value)
    assert validate(dataset.path) == []


@pytest.mark.parametrize("content", [b"", b"\x89HDF\r\n\x1a\n", b"not an hdf5 file at all"])
def test_empty_or_foreign_files(tmp_path: Path, content: bytes) -> None:
    dataset = _damaged(tmp_path, content)
    with pytest.raises(CorruptEpisodeError, match="ep_000000.h5 is damaged"):
        dataset.episode(0)
    with pytest.raises(CorruptEpisodeError):
        dataset.attrs(0)
    assert "damaged" in validate(dataset.path)[0].message
