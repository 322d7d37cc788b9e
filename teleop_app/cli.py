"""The `refine-dp` command line.

    refine-dp tasks
    refine-dp render --task NAME --out FILE.png [--seed S] [--width W] [--height H]
    refine-dp bench sim --task NAME --worlds N [--threads T] [--seconds S] [--json]
    refine-dp demo [--out DIR]

Bad input (a `RefineDpError` or `ValueError`) ends with `refine-dp: error: <message>` on stderr
and exit status 2; anything else is a bug and keeps its traceback. Modules that import mujoco
are imported inside the handlers, after `check_mujoco_gl()`: MuJoCo refuses a bad `MUJOCO_GL`
while it is being imported, before any error of ours could name the problem.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from robot_io.errors import RefineDpError
from robot_io.sim.gl_setup import check_mujoco_gl

PROG = "refine-dp"


def cmd_tasks(args: argparse.Namespace) -> None:
    """Print each registered task with the first paragraph of its module's docstring."""
    from robot_io.tasks import REGISTRY, task_names

    for name in task_names():
        task_cls = REGISTRY[name][0]
        print(f"{name:<14} {_summary(sys.modules[task_cls.__module__].__doc__)}")


def _summary(doc: str | None) -> str:
    """The first paragraph of a docstring, on one line."""
    first = (doc or "").strip().split("\n\n")[0]
    return " ".join(first.split())


def cmd_render(args: argparse.Namespace) -> None:
    """Build a one-world env of the task, reset it and write its initial state as a PNG."""
    from robot_io.env import BatchedEnv
    from robot_io.sim.render import render_world, save_png

    env = BatchedEnv(args.task, num_worlds=1, seed=args.seed)  # the constructor resets
    path = save_png(render_world(env, 0, args.width, args.height), args.out)
    print(f"wrote {path} ({args.width}x{args.height}, task {args.task}, seed {args.seed})")


def cmd_bench_sim(args: argparse.Namespace) -> None:
    """Benchmark the batched environment against bare mujoco.batch physics."""
    from robot_io.sim.bench import bench_sim, format_bench_line

    result = bench_sim(args.task, args.worlds, threads=args.threads, seconds=args.seconds)
    print(json.dumps(result) if args.json else format_bench_line(result))


def cmd_demo(args: argparse.Namespace) -> None:
    """Scripted episode and PNG of every task, then one benchmark line."""
    from teleop_app.demo import run_demo

    run_demo(args.out)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; each (sub)command stores its handler as `func`."""
    parser = argparse.ArgumentParser(prog=PROG, description="REFINE-DP for the Booster T1.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("tasks", help="list the registered tasks")
    p.set_defaults(func=cmd_tasks)

    p = sub.add_parser("render", help="write a PNG of a task's initial state")
    p.add_argument("--task", required=True, help="a task name (see `refine-dp tasks`)")
    p.add_argument("--out", required=True, help="the PNG file to write")
    p.add_argument("--seed", type=int, default=0, help="randomisation seed (default 0)")
    p.add_argument("--width", type=int, default=640, help="image width in pixels (default 640)")
    p.add_argument("--height", type=int, default=480, help="image height in pixels (default 480)")
    p.set_defaults(func=cmd_render)

    bench = sub.add_parser("bench", help="benchmarks").add_subparsers(
        dest="bench", required=True, metavar="WHAT")
    p = bench.add_parser("sim", help="batched env vs bare mujoco.batch physics, same process")
    p.add_argument("--task", required=True, help="a task name (see `refine-dp tasks`)")
    p.add_argument("--worlds", type=int, required=True, help="number of simulated worlds")
    p.add_argument("--threads", type=int, default=0, help="physics threads (default 0: all CPUs)")
    p.add_argument("--seconds", type=float, default=5.0,
                   help="timed seconds of each measurement (default 5)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_bench_sim)

    p = sub.add_parser("demo", help="what `make demo` runs")
    p.add_argument("--out", default="out/demo", help="output folder (default out/demo)")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (argparse's usage errors exit with 2)."""
    args = build_parser().parse_args(argv)
    try:
        check_mujoco_gl()
        args.func(args)
    except (RefineDpError, ValueError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
