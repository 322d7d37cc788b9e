"""`EpisodeRecorder`: a `StepObserver` that writes every finished episode to a `Dataset`.

Ticks are buffered for the whole batch at once: each tick costs one copy per field into
preallocated blocks of `BLOCK_TICKS` ticks (no per-world work, no allocation between blocks).
When an episode ends, its world's rows are sliced out of the blocks (on the loop's thread) and
the file is written by one background thread, which runs while MuJoCo steps the worlds (the
physics releases the GIL); blocks that no running episode still needs are dropped. Call `close()`
(or use the recorder as a context manager) to wait for the last files and see any write error.
"""

from __future__ import annotations

import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Self

import numpy as np
import torch

from datasets.dataset import Dataset
from datasets.episode_io import SCHEMA_VERSION, write_episode
from datasets.errors import DatasetError
from robot_io.protocols import EpisodeEnd, EpisodeStart, StepRecord
from robot_io.types import Command

BLOCK_TICKS = 64
MAX_PENDING_WRITES = 256  # episodes assembled but not yet on disk before the loop waits
_OBS_FIELDS = ("joint_pos", "joint_vel", "gripper_pos", "root_pos", "root_quat", "root_lin_vel",
               "root_ang_vel", "projected_gravity", "hand_pos", "hand_quat", "foot_pos",
               "foot_quat")


@dataclass
class _WorldEpisode:
    """What the recorder keeps about the episode a world is running."""

    session_episode_id: int
    start_tick: int
    randomization: dict[str, float]
    initial_state: np.ndarray | None
    model_fields: dict[str, np.ndarray]


def record_fields(record: StepRecord) -> dict[str, np.ndarray]:
    """The flat keys of the format -> (B, ...) numpy views of one tick (no copies)."""
    obs, cmd, sent = record.obs, record.command, record.sent
    out = {"time_s": _np(obs.time_s)}
    for name in _OBS_FIELDS:
        out[f"obs/{name}"] = _np(getattr(obs, name))
    for name in sorted(obs.task):
        out[f"obs/task/{name}"] = _np(obs.task[name])
    for name in Command.field_names():
        out[f"command/{name}"] = _np(getattr(cmd, name))
    out["targets/joint_pos"] = _np(sent.joint_pos)
    out["targets/gripper"] = _np(sent.gripper)
    if sent.harness is not None:
        b = obs.num_worlds
        out["targets/harness_pos"] = np.broadcast_to(_np(sent.harness.pos), (b, 3))
        out["targets/harness_quat"] = np.broadcast_to(_np(sent.harness.quat), (b, 4))
    if record.sim_state is not None:  # a simulator's exact-replay state (a robot has none)
        out["sim/state"] = np.asarray(record.sim_state)
    for name in sorted(record.inputs):  # a teleop device's raw frames, beside the commands
        out[f"inputs/{name}"] = _np(record.inputs[name])
    return out


def _block(key: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """Rows of `BLOCK_TICKS` ticks; raw inputs start as NaN (ticks without them stay NaN)."""
    if key.startswith("inputs/") and np.issubdtype(dtype, np.floating):
        return np.full((BLOCK_TICKS, *shape), np.nan, dtype=dtype)
    return np.empty((BLOCK_TICKS, *shape), dtype=dtype)


def _np(t: torch.Tensor | np.ndarray) -> np.ndarray:
    return t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)


class EpisodeRecorder:
    """Records a session's episodes into `dataset`, one HDF5 file per finished episode.

    Episode ids are the dataset's (`dataset.next_episode_id()` onwards, in the order episodes
    end), not the session's, so that several sessions can add to one dataset.

    Args:
        dataset: where episodes go (from `Dataset.create`).
        task, source, controller: names stored with every episode.
        seed: the env's seed.
        control_dt_s: the control period.
        task_config: the task's config as a JSON-ready dict (`dataclasses.asdict(config)`).
        keep_failures: also write episodes that did not succeed.
        background: write files on a background thread (False: inside `episode_ended`).
    """

    def __init__(self, dataset: Dataset, task: str, source: str, controller: str, seed: int,
                 control_dt_s: float, task_config: dict, keep_failures: bool = False,
                 background: bool = True) -> None:
        if control_dt_s <= 0:
            raise ValueError(f"control_dt_s must be positive, got {control_dt_s}")
        self.dataset = dataset
        self.task, self.source, self.controller = task, source, controller
        self.seed, self.control_dt_s = int(seed), float(control_dt_s)
        self.task_config = dict(task_config)
        self.keep_failures = keep_failures
        self._episodes_written = 0
        self._failures_written = 0
        self.episodes_dropped = 0
        self.time_in_recorder_s = 0.0
        self.written_ids: list[int] = []
        self._next_id = dataset.next_episode_id()
        self._tick = 0  # index of the next tick `step` will see
        self._first_block_tick = 0  # tick of self._blocks[0] row 0
        self._blocks: list[dict[str, np.ndarray]] = []
        self._layout: dict[str, tuple[tuple[int, ...], np.dtype]] | None = None
        self._worlds: dict[int, _WorldEpisode] = {}
        self._writer = ThreadPoolExecutor(1, "episode-writer") if background else None
        self._pending: deque[tuple[Future, bool]] = deque()

    # -- results ----------------------------------------------------------------------------
    @property
    def episodes_written(self) -> int:
        """Episode files complete on disk (failures included)."""
        self._collect(block=False)
        return self._episodes_written

    @property
    def failures_written(self) -> int:
        """Of `episodes_written`, those that did not succeed."""
        self._collect(block=False)
        return self._failures_written

    def close(self) -> None:
        """Wait for every pending file; raises the first write error, if any."""
        t0 = time.perf_counter()
        try:
            self._collect(block=True)
        finally:
            if self._writer is not None:
                self._writer.shutdown(wait=True)
                self._writer = None
            self.time_in_recorder_s += time.perf_counter() - t0

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _collect(self, block: bool, keep: int = 0) -> None:
        """Account for finished writes (all of them when `block`, or down to `keep` pending)."""
        while self._pending and (block or len(self._pending) > keep or self._pending[0][0].done()):
            future, success = self._pending.popleft()
            future.result()  # re-raises the writer's error here, on the loop's thread
            self._episodes_written += 1
            self._failures_written += int(not success)

    # -- StepObserver -----------------------------------------------------------------------
    def episode_started(self, start: EpisodeStart) -> None:
        t0 = time.perf_counter()
        params = {k: _np(v).astype(np.float64) for k, v in start.params.items()}
        for i, world in enumerate(start.world_ids.tolist()):
            self._worlds[world] = _WorldEpisode(
                session_episode_id=int(start.episode_ids[i]), start_tick=self._tick,
                randomization={k: float(v[i]) for k, v in params.items()},
                initial_state=(None if start.sim_state is None
                               else np.array(start.sim_state[i], dtype=np.float64)),
                model_fields={k: np.array(v[i]) for k, v in start.model_fields.items()})
        self.time_in_recorder_s += time.perf_counter() - t0

    def step(self, record: StepRecord) -> None:
        t0 = time.perf_counter()
        views = record_fields(record)
        if self._layout is None:
            self._layout = {k: (v.shape, v.dtype) for k, v in views.items()}
        elif views.keys() != self._layout.keys():
            self._adapt_layout(views)
        row = self._tick - self._first_block_tick
        block, offset = divmod(row, BLOCK_TICKS)
        if block == len(self._blocks):
            self._blocks.append({k: _block(k, s, d) for k, (s, d) in self._layout.items()})
        buffers = self._blocks[block]
        for key, value in views.items():
            buffers[key][offset] = value  # the one copy per field and tick
        if len(views) != len(self._layout):  # a source without the raw inputs recorded so far
            for key in self._layout.keys() - views.keys():
                buffers[key][offset] = np.nan
        self._tick += 1
        self.time_in_recorder_s += time.perf_counter() - t0

    def episode_ended(self, end: EpisodeEnd) -> None:
        t0 = time.perf_counter()
        try:
            for i, world in enumerate(end.world_ids.tolist()):
                ep = self._worlds.pop(world, None)
                if ep is None:
                    continue  # started before this recorder was attached: nothing buffered
                if ep.session_episode_id != int(end.episode_ids[i]):
                    raise DatasetError(f"world {world} ended episode {int(end.episode_ids[i])} "
                                       f"but the recorder saw episode {ep.session_episode_id} "
                                       f"start; attach one recorder per session")
                success, reason = bool(end.success[i]), end.reason(i)
                # An operator's "save as failure" is kept; automatic failures only on request.
                wanted = success or self.keep_failures or reason == "operator"
                if not (end.kept(i) and wanted):
                    self.episodes_dropped += 1
                    continue
                self._write(world, ep, success, reason, int(end.steps[i]))
            self._drop_unneeded_blocks()
        finally:
            self.time_in_recorder_s += time.perf_counter() - t0

    # -- internals --------------------------------------------------------------------------
    def _adapt_layout(self, views: dict[str, np.ndarray]) -> None:
        """Raw operator inputs may come and go with the source (a hand-over between a teleop
        device and a planner): rows without them hold NaN. Any other field must not change."""
        changed = sorted(views.keys() ^ self._layout.keys())
        if any(not k.startswith("inputs/") for k in changed):
            raise DatasetError(f"the recorded fields changed mid-session: {changed}; one "
                               f"recorder records one task with one controller")
        for key in views.keys() - self._layout.keys():
            shape, dtype = views[key].shape, np.result_type(views[key].dtype, np.float32)
            self._layout[key] = (shape, dtype)
            for buffers in self._blocks:
                buffers[key] = _block(key, shape, dtype)

    def _rows(self, world: int, start_tick: int) -> dict[str, np.ndarray]:
        """This world's rows from `start_tick` to the last tick, per field."""
        first = start_tick - self._first_block_tick
        last = self._tick - self._first_block_tick  # exclusive
        pieces: dict[str, list[np.ndarray]] = {k: [] for k in self._layout or {}}
        for b in range(first // BLOCK_TICKS, (last + BLOCK_TICKS - 1) // BLOCK_TICKS):
            lo = max(first - b * BLOCK_TICKS, 0)
            hi = min(last - b * BLOCK_TICKS, BLOCK_TICKS)
            for key, buf in self._blocks[b].items():
                pieces[key].append(buf[lo:hi, world])
        return {k: np.concatenate(v) for k, v in pieces.items()}

    def _write(self, world: int, ep: _WorldEpisode, success: bool, reason: str,
               steps: int) -> None:
        length = self._tick - ep.start_tick
        if length != steps:
            raise DatasetError(f"world {world}: the session reports {steps} steps but the "
                               f"recorder saw {length} ticks; attach the recorder before the "
                               f"session starts")
        arrays = self._rows(world, ep.start_tick) if length else {}
        if ep.initial_state is not None:
            arrays["sim/initial_state"] = ep.initial_state
        for name, value in ep.model_fields.items():
            arrays[f"sim/model_fields/{name}"] = value
        episode_id = self._next_id
        attrs = {"schema_version": SCHEMA_VERSION, "episode_id": episode_id, "task": self.task,
                 "source": self.source, "controller": self.controller, "seed": self.seed,
                 "world": world, "success": success, "end_reason": reason, "length": length,
                 "duration_s": length * self.control_dt_s, "control_dt_s": self.control_dt_s,
                 "randomization": ep.randomization, "task_config": self.task_config,
                 "created_utc": datetime.now(UTC).isoformat(timespec="seconds")}
        path = self.dataset.episode_path(episode_id)
        self._next_id = episode_id + 1
        self.written_ids.append(episode_id)
        if self._writer is None:
            write_episode(path, attrs, arrays)
            self._episodes_written += 1
            self._failures_written += int(not success)
            return
        self._pending.append((self._writer.submit(write_episode, path, attrs, arrays), success))
        self._collect(block=False, keep=MAX_PENDING_WRITES)

    def _drop_unneeded_blocks(self) -> None:
        oldest = min((ep.start_tick for ep in self._worlds.values()), default=self._tick)
        drop = (oldest - self._first_block_tick) // BLOCK_TICKS
        if drop > 0:
            del self._blocks[:drop]
            self._first_block_tick += drop * BLOCK_TICKS


__all__ = ["EpisodeRecorder", "record_fields"]
