"""The low-level controller commands of the `refine-dp` command line (registered by
`teleop_app.cli`).

    refine-dp eval-controller --mode random|planner [--task NAME] [--worlds N]
                              [--seconds S | --episodes N] [--seed S] [--threads T] [--out DIR]
                              [--json] [--no-progress] [CONTROLLER]
    refine-dp train-controller --part upper|lower --out RUN [--worlds N] [--backend mujoco|warp]
                               [--device D] [--minutes M] [--iterations N] [--seed S]
                               [--threads T] [--no-progress]
    refine-dp export-controller --run RUN --out DIR [--no-onnx]
    refine-dp bench controller-env [--part upper|lower] [--worlds N] [--threads T] [--json]

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


def cmd_train_controller(args: argparse.Namespace) -> None:
    """Train a low-level policy (resumes a killed run), export the best, print the metrics."""
    from dataclasses import replace

    import torch

    from learning.controller.train import ControllerTrainConfig, train_controller
    from robot_io.sim.distributed import rank_info, warp_device

    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device
    if args.backend == "warp" and device is None:
        device = warp_device()  # cuda:LOCAL_RANK under torchrun
    cfg = ControllerTrainConfig(part=args.part, out=args.out, worlds=args.worlds,
                                backend=args.backend, device=device or "cpu",
                                threads=args.threads, seed=args.seed + rank_info().rank,
                                time_budget_s=args.minutes * 60.0)
    if args.iterations is not None:
        cfg = replace(cfg, ppo=replace(cfg.ppo, iterations=args.iterations))
    if args.dagger_iterations is not None:
        cfg = replace(cfg, dagger=replace(
            cfg.dagger, iterations=args.dagger_iterations,
            teacher_decay_iterations=max(1, args.dagger_iterations // 2)))
    metrics = train_controller(cfg, progress=not args.no_progress)
    print(json.dumps(metrics, indent=1))


def cmd_export_controller(args: argparse.Namespace) -> None:
    """Export a run's latest PPO actor (the training command already exports its best one)."""
    from learning.controller.export import export_policy
    from learning.controller.train import load_run_actor

    policy = load_run_actor(Path(args.run))
    for path in export_policy(policy, Path(args.out), onnx=not args.no_onnx):
        print(f"wrote {path}")


def cmd_bench_controller_env(args: argparse.Namespace) -> None:
    from learning.controller.bench import bench_controller_env, format_bench

    result = bench_controller_env(args.part, worlds=args.worlds, threads=args.threads,
                                  seconds=args.seconds)
    print(json.dumps(result) if args.json else format_bench(result))


def add_controller_parsers(sub: argparse._SubParsersAction,
                           bench: argparse._SubParsersAction | None = None) -> None:
    """Add the controller commands (eval-, train-, export-controller, bench controller-env)."""
    p = sub.add_parser("train-controller",
                       help="train a low-level policy with PPO (upper: hand poses; lower: "
                            "locomotion), export the best")
    p.add_argument("--part", required=True, choices=("upper", "lower"))
    p.add_argument("--out", required=True, help="run folder (re-run to resume)")
    p.add_argument("--worlds", type=int, default=256, help="worlds per process (default 256)")
    p.add_argument("--backend", choices=("mujoco", "warp"), default="mujoco",
                   help="simulator: mujoco (CPU, default) or warp (MuJoCo Warp; GPU)")
    p.add_argument("--device", help="warp device (default cuda:LOCAL_RANK under torchrun)")
    p.add_argument("--minutes", type=float, default=35.0,
                   help="PPO time budget in minutes (default 35; the warm start, about 16 "
                        "minutes on 2 cores for the upper part, comes first)")
    p.add_argument("--iterations", type=int, help="PPO iterations at most (default 3000)")
    p.add_argument("--dagger-iterations", type=int,
                   help="warm-start iterations (upper part; default 200, 0: none)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="physics and torch threads")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_train_controller)

    p = sub.add_parser("export-controller",
                       help="export a training run's latest actor (JSON + safetensors + ONNX)")
    p.add_argument("--run", required=True, help="a train-controller run folder")
    p.add_argument("--out", required=True, help="the export folder")
    p.add_argument("--no-onnx", action="store_true", help="skip the ONNX file")
    p.set_defaults(func=cmd_export_controller)

    if bench is not None:
        p = bench.add_parser("controller-env",
                             help="controller-training env vs bare physics, same process")
        p.add_argument("--part", choices=("upper", "lower"), default="upper")
        p.add_argument("--worlds", type=int, default=256)
        p.add_argument("--threads", type=int, default=0)
        p.add_argument("--seconds", type=float, default=10.0)
        p.add_argument("--json", action="store_true")
        p.set_defaults(func=cmd_bench_controller_env)

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
