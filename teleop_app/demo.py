"""What `make demo` runs: every task driven by its scripted commands, one PNG each, one benchmark.

Each task runs one world at its nominal start (`config.nominal()`: every random range at its
centre) under the reference controller; the PNG shows the world when the episode ended, which
is the moment of success when it succeeded (`run_episode` stops there).
"""

from __future__ import annotations

from pathlib import Path

from planners.scripted import make_scripted_source
from robot_io.control.reference import ReferenceController
from robot_io.env import BatchedEnv
from robot_io.session import run_episode
from robot_io.sim.bench import bench_sim, format_bench_line
from robot_io.sim.render import render_world, save_png
from robot_io.tasks import default_config, task_names

BENCH_TASK = "box_pickup"
BENCH_WORLDS = 64
BENCH_SECONDS = 3.0
DEMO_EPISODES = 20
DEMO_WORLDS = 10


def demo_task(task: str, out_dir: Path) -> str:
    """Run one scripted episode of `task`, write `out_dir/<task>.png`; returns the report line.

    A task that `planners.scripted` has no script for yet gives a "no script" line.
    """
    try:
        source = make_scripted_source(task)
    except ValueError as exc:  # the scripted planner does not cover this task (yet)
        return f"{task}: no script ({exc})"
    env = BatchedEnv(task, num_worlds=1, task_config=default_config(task).nominal())
    result = run_episode(env, source, ReferenceController(env))
    png = save_png(render_world(env), out_dir / f"{task}.png")
    if bool(result.success[0]):
        outcome = f"success yes, time to success {int(result.steps[0]) * env.control_dt_s:.2f} s"
    else:
        outcome = f"success no (time limit {env.task.config.time_limit_s:.1f} s)"
    return f"{task}: {outcome}, image {png}"


def demo_dataset(out_dir: Path) -> str:
    """Collect a small box-pickup dataset (continuing it if present); return its `info`."""
    from datasets.info import format_info, info
    from teleop_app.collect import collect, format_report

    report = collect(BENCH_TASK, "heuristic", DEMO_EPISODES, DEMO_WORLDS, out_dir / "dataset",
                     progress=False)
    return format_report(report) + "\n" + format_info(info(out_dir / "dataset"))


def run_demo(out_dir: str | Path) -> None:
    """Every registered task (one line each), one simulation benchmark line, then a small
    collected dataset and its info."""
    out = Path(out_dir)
    for task in task_names():
        print(demo_task(task, out), flush=True)
    result = bench_sim(BENCH_TASK, BENCH_WORLDS, seconds=BENCH_SECONDS)
    print(format_bench_line(result), flush=True)
    print(demo_dataset(out), flush=True)
