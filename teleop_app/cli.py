"""The `refine-dp` command line.

    refine-dp tasks
    refine-dp render --task NAME --out FILE.png [--seed S] [--width W] [--height H]
    refine-dp bench sim --task NAME --worlds N [--threads T] [--seconds S] [--json]
                        [--backend mujoco|warp] [--device D]
    refine-dp demo [--out DIR]
    refine-dp dataset info DIR | validate DIR | split DIR [--valid-fraction F] [--seed S]
    refine-dp dataset merge DEST SRC [SRC...] | delete DIR ID [ID...]
    refine-dp dataset filter SRC DEST [--task T] [--source S] [--success | --failures]
                             [--min-length N] [--max-length N]
    refine-dp dataset export DIR --format robomimic|lerobot --out PATH [--fps F]
    refine-dp dataset import FILE --format robomimic --out DIR
    refine-dp collect --task NAME --source heuristic|scripted --episodes N --worlds M --out DIR
                      [--keep-failures] [--seed S] [--threads T] [--no-progress] [CONTROLLER]
    refine-dp replay DIR --episode ID [--video FILE.mp4 | --frames DIR] [--mode targets|controller]
                     [CONTROLLER]
    refine-dp bench planners [--tasks T...] [--episodes N] [--worlds M] [--seed S] [CONTROLLER]
    refine-dp pretrain | finetune | bench policy   (see teleop_app/learn_cli.py)
    refine-dp eval-controller ...                  (see teleop_app/controller_cli.py)
    refine-dp eval (--policy RUN | --source heuristic|scripted) --task NAME [--episodes N]
                   [--worlds M] [--seed S] [--out DIR] [--video N] [--threads T]
                   [--sampler ddim|ddpm] [--device D] [--widen F] [--json] [--no-progress]
                   [CONTROLLER]

CONTROLLER: [--controller reference|learned] [--controller-weights DIR]
[--controller-runtime torch|onnx] (`teleop_app.controller_args`): the low-level controller,
reference by default (replay: the recorded one).

`dataset validate` exits with 1 when it finds problems (each printed on its own line).
Bad input (a `RefineDpError` or `ValueError`) ends with `refine-dp: error: <message>` on stderr
and exit status 2; anything else is a bug and keeps its traceback. Modules that import mujoco
are imported inside the handlers, after `check_mujoco_gl()`: MuJoCo refuses a bad `MUJOCO_GL`
while it is being imported, before any error of ours could name the problem.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from robot_io.errors import RefineDpError
from robot_io.sim.gl_setup import check_mujoco_gl
from teleop_app.controller_args import add_controller_args, controller_choice
from teleop_app.controller_cli import add_controller_parsers
from teleop_app.learn_cli import add_learning_parsers

if TYPE_CHECKING:  # mujoco is imported inside the handlers only (see above)
    from robot_io.env import BatchedEnv
    from robot_io.protocols import CommandSource

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

    result = bench_sim(args.task, args.worlds, threads=args.threads, seconds=args.seconds,
                       backend=args.backend, device=args.device)
    print(json.dumps(result) if args.json else format_bench_line(result))


def cmd_demo(args: argparse.Namespace) -> None:
    """Scripted episode and PNG of every task, then one benchmark line."""
    from teleop_app.demo import run_demo

    run_demo(args.out)


def cmd_dataset_info(args: argparse.Namespace) -> None:
    """Print a dataset's summary."""
    from datasets.info import format_info, info

    print(format_info(info(args.dir)))


def cmd_dataset_validate(args: argparse.Namespace) -> int:
    """Print each problem of a dataset; status 1 when there is any."""
    from datasets.validate import format_problems, validate

    problems = validate(args.dir)
    if problems:
        print(format_problems(problems))
    print(f"{args.dir}: {len(problems)} problem(s)" if problems else f"{args.dir}: ok")
    return 1 if problems else 0


def cmd_dataset_split(args: argparse.Namespace) -> None:
    """Write splits.json."""
    from datasets.curation import split

    splits = split(args.dir, valid_fraction=args.valid_fraction, seed=args.seed)
    print(f"{args.dir}: {len(splits['train'])} train, {len(splits['valid'])} valid "
          f"(seed {args.seed})")


def cmd_dataset_merge(args: argparse.Namespace) -> None:
    """Copy the episodes of several datasets into one."""
    from datasets.curation import merge

    ids = merge(args.sources, args.dest)
    print(f"{args.dest}: merged {len(ids)} episodes from {len(args.sources)} datasets")


def cmd_dataset_filter(args: argparse.Namespace) -> None:
    """Write a new dataset with the matching episodes."""
    from datasets.curation import filter_dataset

    ids = filter_dataset(args.src, args.dest, task=args.task, source=args.source,
                         success=args.success, min_length=args.min_length,
                         max_length=args.max_length)
    print(f"{args.dest}: {len(ids)} episodes")


def cmd_dataset_delete(args: argparse.Namespace) -> None:
    """Remove episodes by id."""
    from datasets.curation import delete

    delete(args.dir, args.ids)
    print(f"{args.dir}: deleted {len(set(args.ids))} episodes")


def cmd_dataset_export(args: argparse.Namespace) -> None:
    """Export to robomimic HDF5 or LeRobot v3."""
    if args.format == "robomimic":
        from datasets.robomimic import export_robomimic
        out = export_robomimic(args.dir, args.out)
    else:
        from datasets.lerobot import export_lerobot
        out = export_lerobot(args.dir, args.out, fps=args.fps)
    print(f"wrote {out} ({args.format})")


def cmd_dataset_import(args: argparse.Namespace) -> None:
    """Import a robomimic HDF5 file as a new dataset."""
    from datasets.robomimic import import_robomimic

    ids = import_robomimic(args.file, args.out)
    print(f"{args.out}: imported {len(ids)} episodes (no simulator state: not replayable)")


def cmd_collect(args: argparse.Namespace) -> None:
    from teleop_app.collect import collect, format_report

    report = collect(args.task, args.source, args.episodes, args.worlds, args.out,
                     keep_failures=args.keep_failures, seed=args.seed, threads=args.threads,
                     progress=not args.no_progress, controller=controller_choice(args))
    print(format_report(report))


def cmd_replay(args: argparse.Namespace) -> None:
    from teleop_app.replay_video import replay_to_media

    choice = controller_choice(args)
    if choice is not None and args.mode != "controller":
        raise ValueError("--controller applies to --mode controller only")
    report = replay_to_media(args.dir, args.episode, video=args.video, frames=args.frames,
                             mode=args.mode, controller=choice)
    how = f"{args.mode}, {report.controller}" if report.controller else args.mode
    print(f"episode {report.episode_id}: {report.steps} ticks re-simulated ({how}); "
          f"largest divergence from the recording: observation {report.max_obs_divergence:.3g}"
          f" ({report.worst_field or '-'}), simulator state {report.max_state_divergence:.3g}; "
          f"success recorded {report.recorded_success}, replayed {report.replayed_success}")


def cmd_bench_planners(args: argparse.Namespace) -> None:
    from planners.heuristic.bench import bench_planners

    result = bench_planners(args.tasks, episodes=args.episodes, worlds=args.worlds,
                            seed=args.seed, controller=controller_choice(args))
    print(json.dumps(result, indent=1) if args.json else _planner_lines(result))


def cmd_eval(args: argparse.Namespace) -> None:
    """Evaluate a trained policy or a planner in closed loop; write eval.json and plots."""
    from pathlib import Path

    import torch

    from learning.evaluate import evaluate
    from robot_io.tasks import default_config

    if args.threads:  # the policy's torch pool too: idle spinning threads inflate its latency
        torch.set_num_threads(args.threads)
    if args.source is not None and (args.sampler is not None or args.device is not None):
        raise ValueError("--sampler and --device apply to --policy only")
    if args.widen is not None and not args.widen > 0:
        raise ValueError(f"--widen must be a positive factor, got {args.widen}")
    if args.source == "scripted" and args.widen is not None:
        raise ValueError("--widen does not apply to --source scripted: the scripts are written "
                         "for the nominal start")
    config = default_config(args.task)  # the unknown-task error, before any work
    controller = controller_choice(args)
    if args.widen is not None:
        config = config.widened(args.widen)
    if args.source == "scripted":
        config = config.nominal()
    label, make_source = _eval_source(args)
    out = Path(args.out) if args.out else Path("out") / "eval" / f"{args.task}-{label}"
    report = evaluate(args.task, make_source, episodes=args.episodes, worlds=args.worlds,
                      seed=args.seed, task_config=config, threads=args.threads, out_dir=out,
                      video_episodes=args.video, progress=not args.no_progress, label=label,
                      controller=controller)
    if args.json:
        print(json.dumps(report.to_dict(), indent=1))
        return
    print(report.format())
    print("wrote " + ", ".join(str(out / name) for name in report.files.values()))


def _eval_source(args: argparse.Namespace) -> tuple[str, Callable[[BatchedEnv], CommandSource]]:
    """The label and the source factory `eval` asks for (a policy run or a planner)."""
    from pathlib import Path

    task, seed = args.task, args.seed
    if args.policy is not None:
        from learning.deploy import make_policy_source

        run, sampler, device = Path(args.policy), args.sampler, args.device or "cpu"
        return run.resolve().name, lambda env: make_policy_source(
            run, env.num_worlds, seed=seed, sampler=sampler, device=device, task=task,
            robot=env.robot)
    if args.source == "heuristic":
        from planners.heuristic import make_heuristic_planner

        return "heuristic", lambda env: make_heuristic_planner(task, env.num_worlds, seed)
    from planners.scripted import make_scripted_source

    return "scripted", lambda env: make_scripted_source(task)


def _planner_lines(result: dict) -> str:
    lines = []
    for task, r in result.items():
        lines.append(f"{task}: success {r['success_rate']:.1%} over {r['episodes']} episodes"
                     + "".join(f", {k} {v}" for k, v in r.items()
                               if k not in ("success_rate", "episodes")))
    return "\n".join(lines)


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
    p.add_argument("--backend", choices=["mujoco", "warp"], default="mujoco",
                   help="simulator: mujoco (CPU, default) or warp (MuJoCo Warp, gpu extra)")
    p.add_argument("--device", default=None,
                   help="warp device: cuda (default; cuda:LOCAL_RANK under torchrun), cuda:N "
                        "or cpu")
    p.set_defaults(func=cmd_bench_sim)

    p = bench.add_parser("planners", help="heuristic planners' success rate (reference ctrl)")
    add_controller_args(p)
    p.add_argument("--tasks", nargs="+", default=None, help="tasks (default: all)")
    p.add_argument("--episodes", type=int, default=200, help="episodes per task (default 200)")
    p.add_argument("--worlds", type=int, default=50, help="worlds in parallel (default 50)")
    p.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_bench_planners)

    _add_eval_parser(sub)

    p = sub.add_parser("collect", help="record demonstrations into a dataset")
    p.add_argument("--task", required=True, help="a task name (see `refine-dp tasks`)")
    p.add_argument("--source", default="heuristic", help="heuristic (default) or scripted")
    p.add_argument("--episodes", type=int, required=True,
                   help="successful episodes the dataset should hold")
    p.add_argument("--worlds", type=int, default=16, help="worlds in parallel (default 16)")
    p.add_argument("--out", required=True, help="the dataset folder (created or continued)")
    p.add_argument("--keep-failures", action="store_true",
                   help="also store failed episodes (marked success=False)")
    p.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    p.add_argument("--threads", type=int, default=0, help="physics threads (default: all)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_controller_args(p)
    p.set_defaults(func=cmd_collect)

    p = sub.add_parser("replay", help="re-simulate a recorded episode, report the divergence")
    p.add_argument("dir", help="the dataset folder")
    p.add_argument("--episode", type=int, required=True, help="the episode id")
    media = p.add_mutually_exclusive_group()
    media.add_argument("--video", help="write an MP4 video of the replay")
    media.add_argument("--frames", help="write one PNG per rendered tick into this folder")
    p.add_argument("--mode", default="targets", choices=("targets", "controller"),
                   help="replay the recorded joint targets (exact, default) or the commands "
                        "through the controller")
    add_controller_args(p, default=None)
    p.set_defaults(func=cmd_replay)

    add_learning_parsers(sub, bench)
    add_controller_parsers(sub, bench)

    p = sub.add_parser("demo", help="what `make demo` runs")
    p.add_argument("--out", default="out/demo", help="output folder (default out/demo)")
    p.set_defaults(func=cmd_demo)

    _add_dataset_parsers(sub.add_parser("dataset", help="inspect, curate and convert datasets")
                         .add_subparsers(dest="dataset", required=True, metavar="ACTION"))
    return parser


def _add_eval_parser(sub: argparse._SubParsersAction) -> None:
    """The `eval` command."""
    p = sub.add_parser("eval", help="evaluate a policy or planner: success, tracking, plots")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--policy", metavar="RUN", help="a training run or checkpoint folder")
    what.add_argument("--source", choices=("heuristic", "scripted"), help="a planner instead")
    p.add_argument("--task", required=True, help="a task name (see `refine-dp tasks`)")
    p.add_argument("--episodes", type=int, default=100, help="episodes in all (default 100)")
    p.add_argument("--worlds", type=int, default=16, help="worlds in parallel (default 16)")
    p.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    p.add_argument("--out", help="output folder (default out/eval/TASK-LABEL)")
    p.add_argument("--video", type=int, default=0, metavar="N",
                   help="also record N episodes of one world as episodes.mp4 (default 0)")
    p.add_argument("--threads", type=int, default=0,
                   help="physics and torch threads (default: all)")
    p.add_argument("--sampler", choices=("ddim", "ddpm"),
                   help="denoising sampler of the policy (default: the checkpoint's)")
    p.add_argument("--device", help="torch device of the policy (default cpu)")
    p.add_argument("--widen", type=float, metavar="FACTOR",
                   help="scale the task's start ranges by FACTOR (curriculum)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_controller_args(p)
    p.set_defaults(func=cmd_eval)


def _add_dataset_parsers(ds: argparse._SubParsersAction) -> None:
    """The `dataset` subcommands."""
    p = ds.add_parser("info", help="episodes, steps, tasks, sources and success rate")
    p.add_argument("dir", help="the dataset folder")
    p.set_defaults(func=cmd_dataset_info)

    p = ds.add_parser("validate", help="check every file; exit 1 when there are problems")
    p.add_argument("dir", help="the dataset folder")
    p.set_defaults(func=cmd_dataset_validate)

    p = ds.add_parser("split", help="write a seeded train/valid split (splits.json)")
    p.add_argument("dir", help="the dataset folder")
    p.add_argument("--valid-fraction", type=float, default=0.1,
                   help="share of episodes in valid (default 0.1)")
    p.add_argument("--seed", type=int, default=0, help="shuffle seed (default 0)")
    p.set_defaults(func=cmd_dataset_split)

    p = ds.add_parser("merge", help="copy the episodes of SRC... into DEST (same robot spec)")
    p.add_argument("dest", help="the dataset to create or extend")
    p.add_argument("sources", nargs="+", metavar="SRC", help="datasets to copy from")
    p.set_defaults(func=cmd_dataset_merge)

    p = ds.add_parser("filter", help="write a new dataset with the matching episodes")
    p.add_argument("src", help="the dataset to read")
    p.add_argument("dest", help="the new dataset folder")
    p.add_argument("--task", help="keep this task only")
    p.add_argument("--source", help="keep this source only (e.g. teleop device, planner)")
    outcome = p.add_mutually_exclusive_group()
    outcome.add_argument("--success", dest="success", action="store_const", const=True,
                         help="keep successes only")
    outcome.add_argument("--failures", dest="success", action="store_const", const=False,
                         help="keep failures only")
    p.add_argument("--min-length", type=int, help="keep episodes of at least N steps")
    p.add_argument("--max-length", type=int, help="keep episodes of at most N steps")
    p.set_defaults(func=cmd_dataset_filter)

    p = ds.add_parser("delete", help="remove episodes by id")
    p.add_argument("dir", help="the dataset folder")
    p.add_argument("ids", nargs="+", type=int, metavar="ID", help="episode ids")
    p.set_defaults(func=cmd_dataset_delete)

    p = ds.add_parser("export", help="write a robomimic HDF5 file or a LeRobot v3 folder")
    p.add_argument("dir", help="the dataset folder")
    p.add_argument("--format", required=True, choices=("robomimic", "lerobot"))
    p.add_argument("--out", required=True, help="the file (robomimic) or folder (lerobot)")
    p.add_argument("--fps", type=int, default=50,
                   help="lerobot frame rate, the control rate (default 50)")
    p.set_defaults(func=cmd_dataset_export)

    p = ds.add_parser("import", help="build a dataset from a robomimic HDF5 file")
    p.add_argument("file", help="the robomimic file")
    p.add_argument("--format", required=True, choices=("robomimic",))
    p.add_argument("--out", required=True, help="the new dataset folder")
    p.set_defaults(func=cmd_dataset_import)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (argparse's usage errors exit with 2)."""
    args = build_parser().parse_args(argv)
    try:
        check_mujoco_gl()
        status = args.func(args)
    except (RefineDpError, ValueError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    return status or 0


if __name__ == "__main__":
    sys.exit(main())
