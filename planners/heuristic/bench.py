"""How well the heuristic planners solve their tasks: success rate and time to success over many
episodes, each planner driving the reference controller (or the learned one: `ControllerChoice`)
at its task's default randomisation.

`bench_planners` is the body of the `refine-dp bench planners` command: it returns a plain,
JSON-ready dict and prints nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import torch

from planners.heuristic import PLANNERS, make_heuristic_planner
from robot_io.control import ControllerChoice
from robot_io.env import BatchedEnv
from robot_io.session import Session

ProgressFn = Callable[[str, dict[str, float | None]], None]


def bench_planners(tasks: Sequence[str] | None = None, episodes: int = 200, worlds: int = 50,
                   seed: int = 0, threads: int = 0, progress: ProgressFn | None = None,
                   controller: ControllerChoice | None = None
                   ) -> dict[str, dict[str, float | None]]:
    """Run each task's heuristic planner for `episodes` episodes on `worlds` parallel worlds.

    Worlds restart as soon as their episode ends (success, time limit or an unstable
    simulation), until `episodes` episodes have ended. The environment's randomisation and the
    planner's parameters are both seeded from `seed`.

    Args:
        tasks: task names (None: every task with a planner).
        episodes: episodes per task.
        worlds: worlds simulated at once (at most `episodes` are used).
        seed: seed of the environment and of the planner.
        threads: physics threads (0: all CPUs).
        progress: called with (task, result) after each task.
        controller: the low-level controller (default: the reference one).

    Returns:
        {task: {"success_rate", "mean_time_to_success_s" (None when none succeeded),
        "episodes", "successes", "wall_s"}}: plain numbers, ready for `json.dumps`.

    Raises:
        ValueError: an unknown task (lists the known ones), episodes or worlds < 1,
            threads < 0.
        PolicySpecError: the learned controller's weights are missing, damaged or unfit.
    """
    names = sorted(PLANNERS) if tasks is None else list(tasks)
    for name in names:
        if name not in PLANNERS:
            raise ValueError(f"no heuristic planner for task {name!r}; known tasks: "
                             f"{', '.join(sorted(PLANNERS))}")
    for label, value, least in (("episodes", episodes, 1), ("worlds", worlds, 1),
                                ("threads", threads, 0)):
        if not isinstance(value, int) or isinstance(value, bool) or value < least:
            raise ValueError(f"{label} must be an integer of at least {least}, got {value!r}")
    results = {}
    for name in names:
        results[name] = bench_planner(name, episodes, worlds, seed, threads, controller)
        if progress is not None:
            progress(name, results[name])
    return results


def bench_planner(task: str, episodes: int, worlds: int, seed: int, threads: int = 0,
                  controller: ControllerChoice | None = None) -> dict[str, float | None]:
    """One task's entry of `bench_planners`."""
    n = min(worlds, episodes)
    start = time.perf_counter()
    env = BatchedEnv(task, num_worlds=n, threads=threads, seed=seed)
    low_level = (controller or ControllerChoice()).build(env)
    planner = make_heuristic_planner(task, n, seed=seed)
    result = Session(env, planner, low_level).run(episodes)
    wall_s = time.perf_counter() - start
    success = result.success[:episodes]
    steps = result.steps[:episodes].to(torch.float64)
    done = int(success.sum())
    mean_s = float(steps[success].mean()) * env.control_dt_s if done else None
    return {"success_rate": done / len(success), "mean_time_to_success_s": mean_s,
            "episodes": len(success), "successes": done, "wall_s": wall_s}
