"""The low-level controller commands of the `refine-dp` command line (registered by
`teleop_app.cli`).

    refine-dp eval-controller --mode random|planner [--task NAME] [--worlds N]
                              [--seconds S | --episodes N] [--seed S] [--threads T] [--out DIR]
                              [--json] [--no-progress] [CONTROLLER]

CONTROLLER: `--controller reference|learned [--controller-weights DIR]
[--controller-runtime torch|onnx]` (`teleop_app.controller_args`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from teleop_app.controller_args import add_controller_args, controller_choice

DEFAULT_SECONDS = 20.0
DEFAULT_EPISODES = 20
DEFAULT_TASK = "pick_place"


def cmd_eval_controller(args: argparse.Namespace) -> None:
    """Evaluate a controller under random commands or a planner; write JSON and plots."""
    import torch

    from learning.controller.evaluate import evaluate_controller

    if args.mode == "random" and (args.episodes is not None or args.task is not None):
        raise ValueError("--episodes and --task apply to --mode planner only "
                         "(--mode random runs --seconds on the open floor)")
    if args.mode == "planner" and args.seconds is not None:
        raise ValueError("--seconds applies to --mode random only (--mode planner runs "
                         "--episodes)")
    if args.threads:  # the controller's torch pool too
        torch.set_num_threads(args.threads)
    choice = controller_choice(args)
    task = args.task or DEFAULT_TASK
    label = f"{choice.name}-{args.mode}" + (f"-{task}" if args.mode == "planner" else "")
    out = Path(args.out) if args.out else Path("out") / "eval-controller" / label
    report = evaluate_controller(
        choice, args.mode, task=task, worlds=args.worlds,
        seconds=DEFAULT_SECONDS if args.seconds is None else args.seconds,
        episodes=DEFAULT_EPISODES if args.episodes is None else args.episodes,
        seed=args.seed, threads=args.threads, out_dir=out, progress=not args.no_progress)
    if args.json:
        print(json.dumps(report.to_dict(), indent=1))
        return
    print(report.format())
    print("wrote " + ", ".join(str(out / name) for name in report.files.values()))


def add_controller_parsers(sub: argparse._SubParsersAction) -> None:
    """Add the controller commands (eval-controller) to the parser."""
    p = sub.add_parser("eval-controller",
                       help="evaluate a low-level controller: velocity, foothold and hand "
                            "tracking, falls, latency")
    p.add_argument("--mode", required=True, choices=("random", "planner"),
                   help="random: random commands on the open floor; planner: a task's "
                        "heuristic planner")
    p.add_argument("--task", help=f"planner mode: the task (default {DEFAULT_TASK})")
    p.add_argument("--worlds", type=int, default=8, help="worlds in parallel (default 8)")
    span = p.add_mutually_exclusive_group()
    span.add_argument("--seconds", type=float,
                      help=f"random mode: simulated seconds per world (default "
                           f"{DEFAULT_SECONDS:g})")
    span.add_argument("--episodes", type=int,
                      help=f"planner mode: episodes in all (default {DEFAULT_EPISODES})")
    p.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    p.add_argument("--threads", type=int, default=0,
                   help="physics and torch threads (default: all)")
    p.add_argument("--out", help="output folder (default out/eval-controller/CONTROLLER-MODE)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_controller_args(p)
    p.set_defaults(func=cmd_eval_controller)
