"""Measure the recorder's share of the session loop: `python -m datasets.bench_recorder`.

Runs a `Session` of `--worlds` worlds with the reference controller and a constant walking
command, records every episode (failures included) into a temporary dataset, and prints the
time spent inside the recorder against the loop's total time.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import torch
from torch import Tensor

from datasets.dataset import Dataset
from datasets.recorder import EpisodeRecorder
from robot_io.control.reference import ReferenceController
from robot_io.env import BatchedEnv
from robot_io.session import Session
from robot_io.sim.bench import constant_command
from robot_io.tasks import default_config
from robot_io.types import Command, Observation


class _WalkForward:
    """A command source that walks forward with the hands held where they are."""

    def reset(self, obs: Observation, ids: Tensor | None = None) -> None:
        pass

    def next_command(self, obs: Observation) -> Command:
        return constant_command(obs)


def measure(task: str, worlds: int, episode_s: float, threads: int, folder: Path,
            rounds: int = 3, background: bool = True) -> dict:
    """Run `rounds` episodes per world without, then with, a recorder.

    Returns the loop's seconds without (`bare_s`) and with (`total_s`) the recorder, the seconds
    spent inside the recorder's methods during the loop (`in_loop_s`) and waiting for the last
    files after it (`close_s`, the final batch of episodes, which nothing overlaps).
    """
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="box_pickup")
    parser.add_argument("--worlds", type=int, default=64)
    parser.add_argument("--episode-s", type=float, default=10.0)
    parser.add_argument("--threads", type=int, default=0, help="physics threads (0: all CPUs)")
    parser.add_argument("--rounds", type=int, default=3, help="episodes per world")
    parser.add_argument("--sync", action="store_true", help="write files on the loop's thread")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        r = measure(args.task, args.worlds, args.episode_s, args.threads, Path(tmp) / "ds",
                    rounds=args.rounds, background=not args.sync)
    print(f"{r['worlds']} worlds, {args.rounds} x {r['ticks']} ticks: loop {r['bare_s']:.2f} s "
          f"bare, {r['total_s']:.2f} s recording (+{100 * (r['total_s'] / r['bare_s'] - 1):.1f} %);"
          f" inside the recorder {r['in_loop_s']:.3f} s = {100 * r['share']:.1f} % of the loop, "
          f"then {r['close_s']:.3f} s waiting for the last files; "
          f"{r['episodes_written']} episodes, {r['bytes'] / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
