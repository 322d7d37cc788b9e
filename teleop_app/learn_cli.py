"""The learning commands of the `refine-dp` command line (registered by `teleop_app.cli`).

    refine-dp pretrain --data DIR --backbone dit|mlp|mlp-regressor --out RUN [--episodes N]
                       [--steps S] [--batch-size B] [--lr LR] [--eval-every N] [--device D] ...
    refine-dp finetune --policy RUN --method dppo|mlp-ft|residual --out RUN2 [--task NAME]
                       [--iterations N] [--worlds M] [--widen F] [--curriculum]
                       [--controller reference|learned] [--controller-weights DIR] ...
    refine-dp bench policy [--policy RUN] [--calls 100] [--sampler ddim|ddpm]

An existing run folder is resumed, so re-running a killed command continues where it stopped.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from teleop_app.controller_args import add_controller_args, controller_choice


def cmd_pretrain(args: argparse.Namespace) -> None:
    import torch

    from learning.pretrain import PretrainConfig, pretrain, with_policy

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = PretrainConfig(data=Path(args.data), out=Path(args.out), backbone=args.backbone,
                         episodes=args.episodes, steps=args.steps, batch_size=args.batch_size,
                         lr=args.lr, eval_every=args.eval_every,
                         eval_episodes=args.eval_episodes, eval_worlds=args.eval_worlds,
                         checkpoint_every=args.checkpoint_every, seed=args.seed,
                         device=args.device)
    cfg = with_policy(cfg, width=args.width, depth=args.depth, heads=args.heads,
                      obs_horizon=args.obs_horizon, pred_horizon=args.pred_horizon,
                      act_steps=args.act_steps, denoising_steps=args.denoising_steps,
                      ddim_steps=args.ddim_steps)
    planner = pretrain(cfg, progress=not args.no_progress)
    metrics = planner.meta.get("metrics", {})
    print(f"{args.out}: {cfg.backbone} trained to step {metrics.get('step')}; "
          + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()
                      if k in ("train_loss", "valid_loss", "success_rate")))


def cmd_finetune(args: argparse.Namespace) -> None:
    import torch

    from learning.rl.finetune import FinetuneConfig, finetune, with_overrides

    if args.threads:
        torch.set_num_threads(args.threads)
    choice = controller_choice(args)
    cfg = FinetuneConfig(policy=Path(args.policy), out=Path(args.out), method=args.method,
                         task=args.task, curriculum=args.curriculum, seed=args.seed,
                         threads=args.threads, device=args.device, controller=choice.name,
                         controller_weights=choice.weights, controller_runtime=choice.runtime)
    cfg = with_overrides(cfg, iterations=args.iterations, worlds=args.worlds,
                         steps_per_iter=args.steps_per_iter, widen=args.widen,
                         ft_steps=args.ft_steps, bc_coef=args.bc_coef, epochs=args.epochs,
                         minibatch=args.minibatch, actor_lr=args.actor_lr,
                         min_sampling_std=args.min_std, min_logprob_std=args.min_std)
    planner = finetune(cfg, progress=not args.no_progress)
    m = planner.meta.get("metrics", {})
    print(f"{args.out}: {cfg.method} after {m.get('iteration')} iterations: training success "
          f"{m.get('success_rate', float('nan')):.2f}, start ranges x{m.get('widen', 1.0):.2f}; "
          f"curve in {Path(args.out) / 'success_curve.png'}")


def cmd_bench_policy(args: argparse.Namespace) -> None:
    from learning.bench_policy import bench_policy, format_bench

    result = bench_policy(Path(args.policy) if args.policy else None, calls=args.calls,
                          sampler=args.sampler, threads=args.threads)
    print(json.dumps(result, indent=1) if args.json else format_bench(result))


def add_learning_parsers(sub: argparse._SubParsersAction,
                         bench: argparse._SubParsersAction) -> None:
    """Add pretrain, finetune and bench policy to the parser."""
    p = sub.add_parser("pretrain", help="pre-train a planner policy on a dataset")
    p.add_argument("--data", required=True, help="the dataset folder")
    p.add_argument("--backbone", default="dit", help="dit (default), mlp or mlp-regressor")
    p.add_argument("--out", required=True, help="the run folder (resumed when it exists)")
    p.add_argument("--episodes", type=int, help="train on the first N successful episodes")
    p.add_argument("--steps", type=int, default=4000, help="gradient steps (default 4000)")
    p.add_argument("--batch-size", type=int, default=256, help="batch size (default 256)")
    p.add_argument("--lr", type=float, default=3e-4, help="peak learning rate (default 3e-4)")
    p.add_argument("--eval-every", type=int, default=0,
                   help="evaluate in simulation every N steps (default: never)")
    p.add_argument("--eval-episodes", type=int, default=20, help="episodes per evaluation")
    p.add_argument("--eval-worlds", type=int, default=10, help="worlds per evaluation")
    p.add_argument("--checkpoint-every", type=int, default=500, help="steps between checkpoints")
    p.add_argument("--width", type=int, help="network width (DiT 96, MLP 512)")
    p.add_argument("--depth", type=int, help="blocks (default 3)")
    p.add_argument("--heads", type=int, help="DiT attention heads (default 4)")
    p.add_argument("--obs-horizon", type=int, help="To, observations in the history (default 2)")
    p.add_argument("--pred-horizon", type=int, help="Tp, commands per chunk (default 12)")
    p.add_argument("--act-steps", type=int, help="Ta, commands executed per chunk (default 8)")
    p.add_argument("--denoising-steps", type=int, help="K, DDPM steps (default 20)")
    p.add_argument("--ddim-steps", type=int, help="DDIM steps for deployment (default 5)")
    p.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu; e.g. cuda)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser("finetune", help="fine-tune a planner with RL in simulation")
    p.add_argument("--policy", required=True, help="the pre-trained run folder")
    p.add_argument("--method", default="dppo", help="dppo (default), mlp-ft or residual")
    p.add_argument("--out", required=True, help="the run folder (resumed when it exists)")
    p.add_argument("--task", help="task (default: the policy's)")
    p.add_argument("--iterations", type=int, help="PPO iterations (default 60)")
    p.add_argument("--worlds", type=int, help="parallel worlds (default 50)")
    p.add_argument("--steps-per-iter", type=int, help="chunks per world per iteration (20)")
    p.add_argument("--widen", type=float, help="start ranges scaled by this factor (default 1)")
    p.add_argument("--curriculum", action="store_true",
                   help="widen the start ranges by 10%% whenever success reaches 90%%")
    p.add_argument("--ft-steps", type=int, help="K', fine-tuned denoising steps (default 10)")
    p.add_argument("--bc-coef", type=float, help="BC regulariser weight (default 0)")
    p.add_argument("--min-std", type=float,
                   help="exploration noise: floor on the sampling and log-prob std of a denoising step; "
                        "for mlp-ft, the std of the last transition (default 0.1)")
    p.add_argument("--epochs", type=int, help="PPO epochs per iteration (default 4)")
    p.add_argument("--minibatch", type=int, help="PPO minibatch size in (env step x transition) samples (default 5000)")
    p.add_argument("--actor-lr", type=float, help="actor learning rate (default 1e-4)")
    p.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu; e.g. cuda)")
    p.add_argument("--threads", type=int, default=0, help="physics and torch threads")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_controller_args(p)
    p.set_defaults(func=cmd_finetune)

    p = bench.add_parser("policy", help="planner latency per chunk at batch 1 (CPU)")
    p.add_argument("--policy", help="a run folder (default: an untrained default-size DiT)")
    p.add_argument("--calls", type=int, default=100, help="timed calls (default 100)")
    p.add_argument("--sampler", help="ddim or ddpm (default: the policy's)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_bench_policy)
