"""`LiveSession`: the Qt-free service behind the desktop app's live world (widgets hold no logic).

    live = LiveSession(LiveConfig(task="box_pickup", source="hold")).start()
    live.snapshot()                       # the runner's latest Snapshot (never blocks)
    live.stop(); live.reset_stop()        # STOP latches until the explicit reset
    live.set_source("heuristic")          # hand-over without a reset
    live.start_recording("data/pick")     # Record: a fresh episode starts, recorded from its start
    live.save_success()                   # Right          live.save_failure()   # Shift+Right
    live.discard()                        # Left: the world resets and a new episode begins
    live.end_recording()                  # Esc
    live.run_planner("heuristic", episodes=5)   # then back to the previous source
    format_status(live.status())          # the status bar
    live.close()

Threads. One simulated world (a `BatchedEnv` of one world), the controller and the safety filter
run in a `Session` that a `RealtimeRunner` ticks on its own thread. Every method the GUI calls
returns at once: requests go through the runner's queue (`runner.submit`) and run on the loop
thread between ticks, and return a `Future` the GUI may poll; `stop()` is the runner's direct
STOP (one attribute write). Two things do not run on the loop thread: command sources are built
on the calling thread (so an unknown name or a task without a planner raises there, at once),
and files are closed off it (`end_recording` waits for the recorder's writer on a helper
thread, so the loop never waits for the disk). `set_task` / `set_controller` / `reconfigure`
rebuild the world on a worker thread while the old one keeps running, then swap: a build that
fails leaves the old world running, and a STOP that holds at the swap holds in the new world.
`start()` builds on the calling thread (so a bad config raises there) and `close()` joins.

Episodes. The session restarts a world as soon as its episode ends (success, time-out, an
unstable simulation, the operator's label), so the operator always has a running episode.

Recording writes the format `refine-dp collect` writes (an `EpisodeRecorder` into a `Dataset`;
attributes task, source, controller, seed, task config), with these choices:
- the recorder must see an episode from its start, so `start_recording` ends the running episode
  without keeping it and starts a fresh one (the world resets) with the recorder attached; it is
  attached only while recording;
- episodes that end by themselves while recording are recorded too: successes labelled by the
  task, and failures (time-out, unstable) kept as failures with their end reason, because the
  operator is present and a failure is what curation and DAgger-style fixes need; `refine-dp
  dataset filter --success` drops them;
- an episode's `source` attribute names the sources that drove it, joined by "+" in the order
  they took over ("keyboard", or "keyboard+heuristic" after a hand-over);
- `end_recording` (Esc) does not keep the episode in progress (it has no label: press Right or
  Shift+Right first) and does not reset the world; it closes the recorder, whose writer finishes
  the files already queued. Killing the process loses at most the episode in progress.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
from concurrent import futures
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Self

from datasets.dataset import Dataset
from datasets.recorder import EpisodeRecorder
from robot_io.control import ControllerChoice
from robot_io.protocols import CommandSource
from robot_io.runner import Snapshot
from robot_io.tick_stats import RunnerStats
from teleop_app.live_config import OPEN_FLOOR, LiveConfig, build_world, live_tasks
from teleop_app.live_sources import SOURCES, SourceFactory, register_source
from teleop_app.live_status import (PlannerProgress, RecordingStatus, StatusModel, format_status,
                                    make_status)
from teleop_app.live_world import LiveWorld, Recording

log = logging.getLogger(__name__)

STATS_EVERY_S = 1.0  # the stats' percentiles cost about a millisecond: recomputed this often


class LiveSession:
    """The live world and everything the GUI asks of it (see the module docstring).

    Args:
        config: what to run.
        sources: the source registry (default: the module's `SOURCES`, read when a source is
            first built, so sources registered later are found).

    Raises (from `start`): ValueError for an unknown source, the controller's errors (e.g.
    `PolicySpecError` for missing learned weights).
    """

    def __init__(self, config: LiveConfig,
                 sources: dict[str, SourceFactory] | None = None) -> None:
        self.config = config
        self._factories = SOURCES if sources is None else sources
        self._lock = threading.Lock()  # guards the swap of `_world` against stop(), `_closing`
        self._world: LiveWorld | None = None
        self._rebuilder = ThreadPoolExecutor(1, "live-rebuild")
        self._stats: tuple[float, object, RunnerStats | None] = (-math.inf, None, None)
        self._closed = False
        self._closing: list[Future] = []  # end_recording futures whose files may be pending

    # -- life cycle --------------------------------------------------------------------------
    def start(self) -> Self:
        """Build the world, controller and source here, and start the loop thread."""
        if self._world is not None or self._closed:
            raise RuntimeError("the live session was started already; make a new one")
        self._world = self._build(self.config)
        self._world.runner.start()
        return self

    def close(self) -> None:
        """STOP, end the loop (the world in its safe mode), close the recorder (the files
        already queued are written; the episode in progress is not kept). Blocks; idempotent.

        Raises:
            DatasetError / OSError: the recorder's writer failed on a queued file.
        """
        if self._closed:
            return
        self._closed = True
        self._rebuilder.shutdown(wait=True, cancel_futures=True)
        if self._world is not None:
            self._world.shutdown()
        futures.wait(self._closing)  # recordings ended just before

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def world(self) -> LiveWorld:
        """The running world's bundle (world, session, runner, sources)."""
        if self._world is None:
            raise RuntimeError("start the live session first")
        return self._world

    def _live(self) -> LiveWorld:
        if self._closed:
            raise RuntimeError("the live session is closed")
        return self.world

    # -- reading (any thread, never blocks) --------------------------------------------------
    def snapshot(self) -> Snapshot:
        """The runner's latest snapshot."""
        return self.world.runner.latest()

    @property
    def source_name(self) -> str:
        return self.world.source_name

    def source(self, name: str | None = None) -> CommandSource:
        """The instance of source `name` (default: the running one), built if needed; a
        keyboard widget forwards key states to it. Rebuilding the world builds new ones."""
        live = self.world
        return live.source(live.source_name if name is None else name)

    def current_config(self) -> LiveConfig:
        """`config` (what the world was built with) with the source running now (the one a
        planner run hands back to, during a run): what a rebuild or the settings should keep."""
        live = self.world
        run = live.run
        return dataclasses.replace(live.config, source=run.previous if run is not None
                                   else live.source_name)

    @property
    def recording(self) -> Recording | None:
        return self.world.recording

    def status(self) -> StatusModel:
        """The status bar's model (see `teleop_app.live_status`)."""
        live = self.world
        now = time.monotonic()
        when, runner, _ = self._stats
        if now - when >= STATS_EVERY_S or runner is not live.runner:
            self._stats = (now, live.runner, live.runner.stats())
        rec = live.recording
        rec_status = None if rec is None else RecordingStatus(
            dataset=str(rec.dataset.path), episode_id=rec.first_id + rec.saved,
            saved=rec.saved, dataset_episodes=rec.existing + rec.saved)
        return make_status(live.runner.latest(), task=live.config.task,
                           controller=live.config.controller.name, source=live.source_name,
                           control_dt_s=live.env.control_dt_s,
                           target_rate_hz=live.runner.rate_hz, stats=self._stats[2],
                           recording=rec_status, planner=live.progress)

    # -- STOP and sources --------------------------------------------------------------------
    def stop(self, reason: str = "STOP") -> None:
        """STOP: latched at the next tick, until `reset_stop` (not queued: always honoured)."""
        with self._lock:  # a rebuild's swap sees it, or it lands on the new runner
            if self._world is not None:
                self._world.runner.stop(reason)

    def reset_stop(self) -> Future:
        """Clear STOP (a STOP pressed after this call still wins); result: whether applied."""
        return self._live().runner.reset_stop()

    def set_source(self, name: str) -> Future:
        """Hand the running episode to source `name` without a reset (cancels a planner run).

        Raises:
            ValueError: unknown name (lists the known ones), or the source does not fit the
                world (e.g. no heuristic planner for the open floor).
        """
        live = self._live()
        live.source(name)  # build here: errors raise at once
        return live.submit(lambda session: live.hand_over(name, cancel_run=True))

    def reconfigure(self, config: LiveConfig) -> Future:
        """Rebuild with `config` on a worker thread, then swap (see the module docstring). An
        open recording ends (its queued files are written). Result: the config."""
        self._live()
        return self._rebuilder.submit(self._rebuild, config)

    def set_task(self, task: str) -> Future:
        """Rebuild with `task` (same controller and current source)."""
        return self.reconfigure(dataclasses.replace(self.current_config(), task=task))

    def set_controller(self, controller: ControllerChoice) -> Future:
        """Rebuild with `controller` (same task and current source)."""
        return self.reconfigure(dataclasses.replace(self.current_config(), controller=controller))

    # -- recording ---------------------------------------------------------------------------
    def start_recording(self, folder: str | Path) -> Future:
        """Record into the dataset at `folder` (created, or continued): a fresh episode starts.

        The dataset is opened here, so a folder that is not a dataset raises at once; a
        recording that is still closing (its last files being written) is waited for first,
        since the new one numbers its episodes after the files on disk.

        Raises:
            DatasetError: a file, or a non-empty folder without dataset.json.
            SchemaMismatchError: a dataset of another schema or robot.
        """
        live = self._live()
        with self._lock:
            closing, self._closing = self._closing, []
        futures.wait(closing)  # errors are reported by end_recording's future
        dataset = Dataset.create(folder, live.env.robot)
        cfg = live.config
        recorder = EpisodeRecorder(dataset, task=cfg.task, source=live.source_name,
                                   controller=cfg.controller.name, seed=cfg.seed,
                                   control_dt_s=live.env.control_dt_s,
                                   task_config=live.task_config.to_dict(), keep_failures=True)
        rec = Recording(dataset=dataset, recorder=recorder, first_id=dataset.next_episode_id(),
                        existing=len(dataset))
        return live.submit(lambda session: live.attach(rec))

    def save_success(self) -> Future:
        """Right arrow: save the running episode as a success; a new one begins."""
        return self._label(True)

    def save_failure(self) -> Future:
        """Shift+Right: save the running episode as a failure; a new one begins."""
        return self._label(False)

    def _label(self, success: bool) -> Future:
        live = self._live()
        return live.submit(lambda session: live.end_labelled(success))

    def discard(self) -> Future:
        """Left arrow: drop the running episode; the world resets and a new one begins (also
        when not recording: a reset). Result: the session's `EpisodeEnd`."""
        live = self._live()
        return live.submit(lambda session: session.end_episode(
            live.all_worlds, False, reason="operator", keep=False))

    def end_recording(self) -> Future:
        """Esc: detach the recorder (the episode in progress is not kept) and close it on a
        helper thread. Result: episodes saved by this recording (0 when none was open); an
        exception if the writer failed."""
        live = self._live()
        done: Future = Future()
        with self._lock:
            self._closing = [f for f in self._closing if not f.done()] + [done]
        detached = live.submit(lambda session: live.detach())

        def close(future: Future) -> None:
            try:
                rec = future.result()
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's future
                done.set_exception(exc)
                return
            if rec is None:
                done.set_result(0)
                return
            threading.Thread(target=_close_into, args=(rec, done), name="live-recorder-close",
                             daemon=False).start()
        detached.add_done_callback(close)
        return done

    # -- planner runs ------------------------------------------------------------------------
    def run_planner(self, name: str, episodes: int = 1, record: bool | None = None) -> Future:
        """Hand over to planner `name` for `episodes` fresh episodes, then back to the current
        source (progress: `status().planner`). The running episode is not kept: each planner
        episode starts from a reset.

        Args:
            record: True: into the open recording (which must exist); False: no recording may
                be open; None: recorded if a recording is open.

        Returns:
            A future that resolves with the final `PlannerProgress` when the run ends (or is
            cancelled: then it is cancelled), or holds the error if the run could not start.
        """
        if episodes < 1:
            raise ValueError(f"episodes must be at least 1, got {episodes}")
        live = self._live()
        live.source(name)
        return live.start_run(name, episodes, record)

    def cancel_planner(self) -> Future:
        """Hand the running episode back to the source before the run, without a reset."""
        live = self._live()
        return live.submit(lambda session: live.cancel_run())

    # -- internals ---------------------------------------------------------------------------
    def _build(self, config: LiveConfig) -> LiveWorld:
        return LiveWorld.build(config, build_world(config), self._factories)

    def _rebuild(self, config: LiveConfig) -> LiveConfig:
        new = self._build(config)  # the old world keeps running meanwhile
        with self._lock:
            if self._closed:  # closed while building: never start the new one
                new.shutdown()
                raise RuntimeError("the live session was closed during the rebuild")
            old, self._world = self._world, new
            if old is not None and old.session.stopped:
                new.session.request_stop(old.session.safety.snapshot().reason or "STOP")
            self.config = config
        try:
            if old is not None:
                old.shutdown()
        finally:
            new.runner.start()
        return config


def _close_into(rec: Recording, done: Future) -> None:
    try:
        rec.recorder.close()
    except BaseException as exc:  # noqa: BLE001 - handed to the caller's future
        log.error("the recorder failed to write an episode", exc_info=exc)
        done.set_exception(exc)
    else:
        done.set_result(rec.saved)


__all__ = ["OPEN_FLOOR", "SOURCES", "LiveConfig", "LiveSession", "PlannerProgress",
           "RecordingStatus", "SourceFactory", "StatusModel", "build_world", "format_status",
           "live_tasks", "register_source"]

