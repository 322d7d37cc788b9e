"""`LiveWorld`: one built live world (env, controller, session, runner, sources) and the requests
that run on its loop thread: hand-overs, attaching and detaching the recorder, operator labels,
planner runs. `teleop_app.live.LiveSession` is the thread-facing side; this module holds what
must happen between two ticks. Methods marked "loop thread" are called through `submit`.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
import torch

from datasets.dataset import Dataset
from datasets.recorder import EpisodeRecorder
from robot_io.env import BatchedEnv
from robot_io.protocols import CommandSource, EpisodeEnd, EpisodeStart, StepRecord
from robot_io.runner import RealtimeRunner
from robot_io.session import Session
from teleop_app.live_config import LiveConfig
from teleop_app.live_sources import SourceFactory, make_source
from teleop_app.live_status import PlannerProgress

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Recording:
    """An open recording: the dataset, its recorder, and the dataset's counts when it opened."""

    dataset: Dataset
    recorder: EpisodeRecorder
    first_id: int  # the id the first saved episode gets
    existing: int  # episodes in the dataset before

    @property
    def saved(self) -> int:
        """Episodes saved by this recording (written, or queued for the writer)."""
        return len(self.recorder.written_ids)


@dataclass(eq=False)
class _Run:
    """A planner run in progress."""

    previous: str  # the source to hand back to
    progress: PlannerProgress
    done: Future
    finishing: bool = False


class _Tracker:
    """The session's first observer: which sources drove the running episode (the recorder's
    `source` attribute is set from it just before the recorder sees the end), and the counts
    of a planner run."""

    def __init__(self, live: LiveWorld) -> None:
        self.live = live
        self.sources: list[str] = []

    def episode_started(self, start: EpisodeStart) -> None:
        self.sources = [self.live.source_name]

    def step(self, record: StepRecord) -> None:
        """Nothing per tick."""

    def episode_ended(self, end: EpisodeEnd) -> None:
        live = self.live
        if live.recording is not None:
            live.recording.recorder.source = "+".join(self.sources)
        run = live.run
        if run is None or run.finishing:
            return
        kept = [i for i in range(len(end.world_ids)) if end.kept(i)]
        if not kept:
            return  # a discarded episode runs again
        p = run.progress
        run.progress = live.progress = dataclasses.replace(
            p, done=p.done + len(kept),
            successes=p.successes + sum(bool(end.success[i]) for i in kept))
        if run.progress.done >= p.episodes:
            run.finishing = True  # hand back before the next tick
            live.submit(lambda session: live.finish_run(run))


class LiveWorld:
    """One built live world; see `build`."""

    def __init__(self, config: LiveConfig, env: BatchedEnv,
                 factories: dict[str, SourceFactory]) -> None:
        self.config, self.env = config, env
        self.task_config = env.task.config
        self.all_worlds = torch.arange(env.num_worlds)
        self.tracker = _Tracker(self)
        self.source_name = config.source
        self.recording: Recording | None = None
        self.run: _Run | None = None
        self.progress: PlannerProgress | None = None  # the latest run's, for the status bar
        self._factories = factories
        self._sources: dict[str, CommandSource] = {}
        self._sources_lock = threading.Lock()
        self._pending: list[Future] = []
        self._pending_lock = threading.Lock()
        self.session: Session
        self.runner: RealtimeRunner

    @classmethod
    def build(cls, config: LiveConfig, env: BatchedEnv,
              factories: dict[str, SourceFactory]) -> LiveWorld:
        """Controller, source, a session whose first episode has started, an unstarted runner."""
        live = cls(config, env, factories)
        controller = config.controller.build(env)
        source = live.source(config.source)
        live.session = Session(env, source, controller, observers=[live.tracker],
                               safety=config.safety, auto_restart=True, stop_on_success=True)
        live.session.start_episodes()
        live.runner = RealtimeRunner(live.session, rate_hz=config.rate_hz,
                                     rt_priority=config.rt_priority)
        return live

    # -- any thread --------------------------------------------------------------------------
    def source(self, name: str) -> CommandSource:
        """Source `name` for this world, built on first use (on the calling thread)."""
        with self._sources_lock:
            if name not in self._sources:
                self._sources[name] = make_source(name, self.env, self.config.seed,
                                                  self._factories)
            return self._sources[name]

    def submit(self, fn: Callable[[Session], object]) -> Future:
        """`runner.submit`, remembering the future so that `shutdown` can cancel it."""
        future = self.runner.submit(fn)
        with self._pending_lock:
            self._pending = [f for f in self._pending if not f.done()]
            self._pending.append(future)
        return future

    def shutdown(self) -> None:
        """Close the runner (STOP, safe tick, join), cancel what is queued, close the recorder
        (waits for its files; raises its error). Not on the loop thread."""
        self.runner.close()
        if self.runner.alive:
            log.warning("the live loop did not end; its recorder is closed all the same")
        with self._pending_lock:
            pending, self._pending = self._pending, []
        for future in pending:
            future.cancel()  # a request the closed loop will never run
        if self.run is not None:
            self._cancel(self.run)
        rec, self.recording = self.recording, None
        if rec is not None:
            self.session.observers.remove(rec.recorder)
            rec.recorder.close()

    # -- loop thread -------------------------------------------------------------------------
    def hand_over(self, name: str, cancel_run: bool) -> None:
        """Give the running episode to source `name` (built already) without a reset."""
        if cancel_run and self.run is not None:
            self._cancel(self.run)
        self.session.set_source(self._sources[name])
        self.source_name = name
        fresh = not bool(self.session.active.any()) or int(self.session.episode_steps.max()) == 0
        if fresh:
            self.tracker.sources = [name]
        elif name not in self.tracker.sources:
            self.tracker.sources.append(name)

    def attach(self, rec: Recording) -> int:
        """Start recording with a fresh episode (the running one is not kept); returns the
        session's new episode id."""
        if self.recording is not None:
            rec.recorder.close()  # nothing written yet: quick
            raise RuntimeError(f"already recording into {self.recording.dataset.path}; "
                               f"end_recording first")
        session = self.session
        session.end_episode(self.all_worlds, False, reason="operator", keep=False,
                            restart=False)
        session.observers.append(rec.recorder)
        self.recording = rec
        session.start_episodes(torch.nonzero(~session.active).squeeze(1))
        if self.run is not None:
            self.run.progress = self.progress = dataclasses.replace(self.run.progress,
                                                                    recording=True)
        return int(session.episode_ids[0])

    def detach(self) -> Recording | None:
        """Stop recording; the episode in progress is not kept (the world is not reset)."""
        rec, self.recording = self.recording, None
        if rec is not None:
            self.session.observers.remove(rec.recorder)
        return rec

    def end_labelled(self, success: bool) -> EpisodeEnd | None:
        """Save the running episode with the operator's label; a new one begins."""
        if self.recording is None:
            raise RuntimeError("not recording: start a recording before saving episodes")
        return self.session.end_episode(self.all_worlds, success, reason="operator", keep=True)

    def start_run(self, name: str, episodes: int, record: bool | None) -> Future:
        """Queue the start of a planner run (see `LiveSession.run_planner`)."""
        done: Future = Future()

        def start(session: Session) -> PlannerProgress:
            recording = self.recording is not None
            if record is True and not recording:
                raise RuntimeError("record=True needs an open recording: start_recording first")
            if record is False and recording:
                raise RuntimeError("a recording is open and records every episode: pass "
                                   "record=None or True, or end_recording first")
            if self.run is not None:
                raise RuntimeError(f"a {self.run.progress.name} run is in progress; "
                                   f"cancel_planner first")
            run = _Run(self.source_name, PlannerProgress(name, episodes, recording=recording),
                       done)
            self.hand_over(name, cancel_run=False)
            self.run, self.progress = run, run.progress
            # Planner episodes start from a reset: the one running now is not kept.
            session.end_episode(self.all_worlds, False, reason="operator", keep=False)
            return run.progress

        def failed(started: Future) -> None:
            if started.cancelled():
                done.cancel()
            elif started.exception() is not None:
                done.set_exception(started.exception())
        self.submit(start).add_done_callback(failed)
        return done

    def finish_run(self, run: _Run) -> None:
        """The run's episodes are done: back to the previous source (before the next tick)."""
        if self.run is not run:
            return  # cancelled meanwhile
        self.hand_over(run.previous, cancel_run=False)
        self.run = None
        run.progress = self.progress = dataclasses.replace(run.progress, finished=True)
        run.done.set_result(run.progress)

    def cancel_run(self) -> PlannerProgress | None:
        """Cancel the planner run: the previous source takes the running episode over."""
        run = self.run
        if run is None:
            return None
        self._cancel(run)
        self.hand_over(run.previous, cancel_run=False)
        return run.progress

    def _cancel(self, run: _Run) -> None:
        self.run = None
        run.progress = self.progress = dataclasses.replace(run.progress, cancelled=True)
        run.done.cancel()


__all__ = ["LiveWorld", "Recording"]
