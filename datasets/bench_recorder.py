"""Measure the recorder's share of the session loop: `refine-dp bench recorder`.

Runs a `Session` of `worlds` worlds with the reference controller and a constant walking
command, records every episode (failures included) into a temporary dataset, and prints the
time spent inside the recorder against the loop's total time.

Importing this module stays light (no torch, no MuJoCo): the command line reads
`RecorderBenchConfig` without loading the simulator.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import Tensor

    from robot_io.types import Command, Observation


@dataclass(frozen=True)
class RecorderBenchConfig:
    """What `measure` runs.

    Attributes:
        task: the task whose scene the worlds simulate.
        worlds: worlds in parallel.
        episode_s: simulated seconds of each episode.
        threads: physics threads (0: all CPUs).
        rounds: episodes per world.
        sync: write the episode files on the loop's thread (default: the recorder's own).
    """

    task: str = "box_pickup"
    worlds: int = 64
    episode_s: float = 10.0
    threads: int = 0
    rounds: int = 3
    sync: bool = False


class _WalkForward:
    """A command source that walks forward with the hands held where they are."""

    def reset(self, obs: Observation, ids: Tensor | None = None) -> None:
        pass

    def next_command(self, obs: Observation) -> Command:
        from robot_io.sim.bench import constant_command

        return constant_command(obs)


def measure(task: str, worlds: int, episode_s: float, threads: int, folder: Path,
            rounds: int, background: bool) -> dict:
    """Run `rounds` episodes per world without, then with, a recorder writing into `folder`.

    Returns the loop's seconds without (`bare_s`) and with (`total_s`) the recorder, the seconds
    spent inside the recorder's methods during the loop (`in_loop_s`) and waiting for the last
    files after it (`close_s`, the final batch of episodes, which nothing overlaps).
    """
    from datasets.dataset import Dataset
    from datasets.recorder import EpisodeRecorder
    from robot_io.control.reference import ReferenceController
    from robot_io.env import BatchedEnv
    from robot_io.session import Session
    from robot_io.tasks import default_config

    in_loop = [0.0]
    config = dataclasses.replace(default_config(task), time_limit_s=episode_s)

    def run(observers: list) -> tuple[float, int]:
        env = BatchedEnv(task, num_worlds=worlds, threads=threads, task_config=config)
        session = Session(env, _WalkForward(), ReferenceController(env), observers=observers)
        t0 = time.perf_counter()
        result = session.run(episodes=rounds * worlds, stop_on_success=False)
        for observer in observers:
            in_loop[0] = observer.time_in_recorder_s
            observer.close()
        return time.perf_counter() - t0, int(result.steps.max())

    bare_s, _ = run([])
    dataset = Dataset.create(folder, BatchedEnv(task, 1, task_config=config).robot)
    recorder = EpisodeRecorder(dataset, task=task, source="walk_forward",
                               controller="reference", seed=0, control_dt_s=0.02,
                               task_config=dataclasses.asdict(config), keep_failures=True,
                               background=background)
    total_s, ticks = run([recorder])
    return {"worlds": worlds, "ticks": ticks, "bare_s": bare_s, "total_s": total_s,
            "in_loop_s": in_loop[0], "close_s": recorder.time_in_recorder_s - in_loop[0],
            "share": in_loop[0] / total_s,
            "episodes_written": recorder.episodes_written,
            "bytes": sum(p.stat().st_size for p in dataset.episodes_dir.iterdir())}


def format_measurement(r: dict, rounds: int) -> str:
    """One line for a `measure` result of `rounds` episodes per world."""
    return (f"{r['worlds']} worlds, {rounds} x {r['ticks']} ticks: loop {r['bare_s']:.2f} s "
            f"bare, {r['total_s']:.2f} s recording (+{100 * (r['total_s'] / r['bare_s'] - 1):.1f}"
            f" %); inside the recorder {r['in_loop_s']:.3f} s = {100 * r['share']:.1f} % of the "
            f"loop, then {r['close_s']:.3f} s waiting for the last files; "
            f"{r['episodes_written']} episodes, {r['bytes'] / 1e6:.1f} MB")
