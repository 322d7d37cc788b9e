"""`refine-dp collect`: batched demonstration collection into a crash-safe dataset.

Collection runs the shared session loop on all cores with a recorder and a progress bar
observing it. `--episodes N` is the number of successful episodes the dataset should hold:
running again on the same folder with a larger N continues where the last run stopped (new
episode ids, a seed offset so the new episodes differ), and a run that was killed loses only
the episodes that were in progress.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from datasets.dataset import Dataset
from datasets.recorder import EpisodeRecorder
from planners.scripted import make_scripted_source
from robot_io.control import ControllerChoice
from robot_io.env import BatchedEnv
from robot_io.protocols import CommandSource
from robot_io.protocols import EpisodeEnd, EpisodeStart, StepRecord
from robot_io.session import Session
from robot_io.t1_model import default_robot_spec
from robot_io.tasks import TaskConfig, default_config

SOURCES = ("heuristic", "scripted")


@dataclass(frozen=True)
class CollectReport:
    """What a collection run did."""

    out: Path
    episodes_run: int
    successes_written: int
    failures_written: int
    total_successes: int
    wall_s: float
    recorder_s: float

    @property
    def episodes_per_minute(self) -> float:
        return 60.0 * self.episodes_run / max(self.wall_s, 1e-9)

    @property
    def recorder_share(self) -> float:
        return self.recorder_s / max(self.wall_s, 1e-9)


class SuccessBudget:
    """Passes starts, ticks and ends on to `inner`, but at most `budget` successful ends:
    when several worlds succeed in the same tick, the surplus is not recorded."""

    def __init__(self, inner: EpisodeRecorder, budget: int) -> None:
        self.inner, self.budget, self.successes = inner, budget, 0

    @property
    def spent(self) -> bool:
        return self.successes >= self.budget

    def episode_started(self, start: EpisodeStart) -> None:
        self.inner.episode_started(start)

    def step(self, record: StepRecord) -> None:
        self.inner.step(record)

    def episode_ended(self, end: EpisodeEnd) -> None:
        keep = []
        for i, success in enumerate(end.success.tolist()):
            if success:
                if self.spent:
                    continue
                self.successes += 1
            keep.append(i)
        if keep:
            rows = torch.tensor(keep)
            self.inner.episode_ended(end.select(rows))


class ProgressBar:
    """A `StepObserver` that shows episodes done, success rate and time left."""

    def __init__(self, target: int, already: int, enabled: bool = True) -> None:
        self.bar = tqdm(total=target, initial=already, unit="ep", disable=not enabled,
                        dynamic_ncols=True)
        self.done = self.successes = 0

    def episode_started(self, start: EpisodeStart) -> None:
        """Nothing to show at a start."""

    def step(self, record: StepRecord) -> None:
        """Nothing to show per tick."""

    def episode_ended(self, end: EpisodeEnd) -> None:
        self.done += len(end.world_ids)
        new = int(end.success.sum())
        self.successes += new
        self.bar.update(new)
        self.bar.set_postfix(episodes=self.done, success=f"{self.successes / self.done:.0%}")

    def close(self) -> None:
        self.bar.close()


def make_source(kind: str, task: str, num_worlds: int, seed: int) -> CommandSource:
    """A command source by kind; raises ValueError listing the kinds."""
    if kind == "scripted":
        return make_scripted_source(task)
    if kind == "heuristic":
        from planners.heuristic import make_heuristic_planner
        return make_heuristic_planner(task, num_worlds, seed)
    raise ValueError(f"unknown source {kind!r}; known sources: {', '.join(SOURCES)}")


def collect(task: str, source: str, episodes: int, worlds: int, out: str | Path,
            keep_failures: bool = False, seed: int = 0, threads: int = 0,
            progress: bool = True, controller: ControllerChoice | None = None) -> CollectReport:
    """Collect until the dataset at `out` holds `episodes` successful episodes of `task`.

    `controller` is the low-level controller (default: the reference one); the episodes record
    its name as their `controller` attribute.
    """
    if episodes < 1 or worlds < 1:
        raise ValueError(f"episodes and worlds must be at least 1, got {episodes} and {worlds}")
    dataset = Dataset.create(out, default_robot_spec())
    dataset.remove_partials()
    have = sum(1 for i in dataset.episode_ids() if dataset.attrs(i).success)
    first_id = dataset.next_episode_id()
    run_seed = seed + first_id  # a continued run draws new starts
    config: TaskConfig = default_config(task)
    if source == "scripted":
        config = config.nominal()  # the scripts are written for the nominal start
    command_source = make_source(source, task, worlds, run_seed)
    choice = controller or ControllerChoice()
    started = time.perf_counter()
    env = BatchedEnv(task, num_worlds=worlds, threads=threads, seed=run_seed, task_config=config)
    low_level = choice.build(env)
    recorder = EpisodeRecorder(dataset, task=task, source=source, controller=choice.name,
                               seed=run_seed, control_dt_s=env.control_dt_s,
                               task_config=config.to_dict(), keep_failures=keep_failures)
    budget = SuccessBudget(recorder, max(0, episodes - have))
    bar = ProgressBar(episodes, min(have, episodes), enabled=progress)
    session = Session(env, command_source, low_level, observers=[budget, bar],
                      first_episode_id=first_id)
    try:
        run = len(session.run(done_when=lambda: budget.spent).success) if not budget.spent else 0
    finally:
        bar.close()
        recorder.close()  # waits for the files still being written
    return CollectReport(out=Path(out), episodes_run=run,
                         successes_written=_successes(recorder),
                         failures_written=recorder.failures_written,
                         total_successes=have + _successes(recorder),
                         wall_s=time.perf_counter() - started,
                         recorder_s=recorder.time_in_recorder_s)


def _successes(recorder: EpisodeRecorder) -> int:
    return recorder.episodes_written - recorder.failures_written


def format_report(report: CollectReport) -> str:
    return (f"collected into {report.out}: {report.episodes_run} episodes run, "
            f"{report.successes_written} successful written ({report.failures_written} failures "
            f"kept), {report.total_successes} successful in total; "
            f"{report.episodes_per_minute:.1f} episodes/min; recorder "
            f"{100 * report.recorder_share:.1f} % of the run's time")


__all__ = ["CollectReport", "ProgressBar", "collect", "format_report"]
