"""The learning commands of `refine-dp`: pretrain, finetune and bench policy.

    refine-dp pretrain --data DIR --out RUN [--backbone dit|mlp|mlp-regressor] [--episodes N]
                       [--steps S] [--batch-size B] [--lr LR] [--eval-every N] [--device D]
                       [--width W] [--depth D] [--heads H] [--obs-horizon To] ... [--threads T]
    refine-dp finetune --policy RUN --out RUN2 [--method dppo|mlp-ft|residual] [--task NAME]
                       [--iterations N] [--worlds M] [--widen F] [--curriculum] [--min-std S]
                       [--controller reference|learned] [--controller-weights DIR] ...
    refine-dp bench policy [--policy RUN] [--calls 100] [--sampler ddim|ddpm] [--threads T]

The flags are the fields of `learning.pretrain.PretrainConfig` (its `PolicyConfig` included),
`learning.rl.finetune.FinetuneConfig` and `learning.bench_policy.PolicyBenchConfig`, with their
defaults; `FLAGS` adds the help those dataclasses do not carry and the choices of their `str`
fields. An existing run folder is resumed, so re-running a killed command continues where it
stopped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, ClassVar

import tyro

from learning.bench_policy import PolicyBenchConfig
from learning.diffusion.networks import NET_KINDS
from learning.diffusion.policy import SAMPLERS, PolicyConfig
from learning.pretrain import PretrainConfig, default_net, with_policy
from learning.rl.finetune import METHODS, FinetuneConfig
from robot_io.control import CONTROLLERS, RUNTIMES
from teleop_app.cli_parsing import Flag, Flags
from teleop_app.controller_args import CONTROLLER_HELP, RUNTIME_HELP, WEIGHTS_HELP

PRETRAIN_FLAGS: Flags = {
    PretrainConfig: {
        "backbone": Flag(choices=NET_KINDS),
        "batch_size": Flag(help="batch size (windows per gradient step)"),
        "lr": Flag(help="peak learning rate (after the warm-up, then cosine decay)"),
        "weight_decay": Flag(help="AdamW weight decay"),
        "warmup_steps": Flag(help="steps of the linear learning-rate warm-up"),
        "valid_every": Flag(help="steps between validation losses"),
        "eval_episodes": Flag(help="episodes per simulation evaluation"),
        "eval_worlds": Flag(help="worlds per simulation evaluation"),
        "checkpoint_every": Flag(help="steps between checkpoints"),
        "seed": Flag(help="seed of the weights, the batches and the noise"),
        "device": Flag(help="torch device (e.g. cuda)"),
    },
    # The network follows the backbone (`learning.pretrain.default_net`), with the overrides of
    # PretrainCommand: NetConfig's own defaults are not the ones pretrain uses.
    PolicyConfig: {"net": Flag(suppress=True)},
}

FINETUNE_FLAGS: Flags = {FinetuneConfig: {
    "method": Flag(choices=METHODS),
    "iterations": Flag(help="PPO iterations"),
    "worlds": Flag(help="parallel worlds"),
    "steps_per_iter": Flag(help="chunks per world per iteration"),
    "widen_factor": Flag(help="curriculum: start ranges widened by this factor"),
    "curriculum_success": Flag(help="curriculum: the training success rate that widens"),
    "max_widen": Flag(help="curriculum: the widest start ranges"),
    "min_sampling_std": Flag(help="exploration noise: floor on the sampling std of a denoising "
                                  "step; for mlp-ft, the std of the last transition"),
    "min_logprob_std": Flag(help="floor on the std of a denoising step in its log-probability"),
    "clip_first": Flag(help="PPO clip of the noisiest transition (exponential to --clip-last)"),
    "clip_last": Flag(help="PPO clip of the final transition"),
    "residual_clip": Flag(help="PPO clip of the residual policy"),
    "gamma": Flag(help="discount per executed chunk"),
    "gae_lambda": Flag(help="GAE lambda"),
    "gamma_denoise": Flag(help="discount per denoising transition"),
    "epochs": Flag(help="PPO epochs per iteration"),
    "minibatch": Flag(help="PPO minibatch size in (env step x transition) samples"),
    "critic_epochs": Flag(help="critic epochs per iteration"),
    "critic_minibatch": Flag(help="critic minibatch size"),
    "actor_lr": Flag(help="actor learning rate"),
    "critic_lr": Flag(help="critic learning rate"),
    "target_kl": Flag(help="an iteration's actor epochs stop beyond this KL divergence"),
    "bc_coef": Flag(help="BC regulariser weight"),
    "critic_warmup_iters": Flag(help="first iterations train the critic only"),
    "reward_scaling": Flag(help="divide rewards by a running std of the returns"),
    "mlpft_steps": Flag(help="mlp-ft: denoising steps of the mean-reverting chain"),
    "residual_width": Flag(help="residual: hidden width of the residual policy"),
    "residual_depth": Flag(help="residual: hidden layers of the residual policy"),
    "residual_std": Flag(help="residual: initial std of the residual actions"),
    "seed": Flag(help="seed of the worlds and of the sampling"),
    "threads": Flag(help="physics and torch threads (0: all CPUs, torch's default)"),
    "device": Flag(help="torch device (e.g. cuda)"),
    "controller": Flag(choices=CONTROLLERS, help=CONTROLLER_HELP),
    "controller_weights": Flag(metavar="DIR", help=WEIGHTS_HELP),
    "controller_runtime": Flag(choices=RUNTIMES, help=RUNTIME_HELP),
}}


def _net_hint(name: str) -> str:
    """The backbones' defaults of a network field, for the help."""
    return "(default: " + ", ".join(f"{kind} {getattr(default_net(kind), name)}"
                                    for kind in NET_KINDS) + ")"


@dataclass(frozen=True)
class PretrainCommand:
    """Settings of `refine-dp pretrain`: the run's `PretrainConfig` and the process's own.

    Attributes:
        train: the run (every field is a flag, without prefix).
        width: network width: DiT token width, MLP hidden width (None: the backbone's, from
            `learning.pretrain.default_net`).
        depth: network blocks (None: the backbone's).
        heads: DiT attention heads (None: the backbone's).
        threads: torch threads (0: torch's default).
        progress: show a progress bar.
    """

    FLAGS: ClassVar[Flags] = PRETRAIN_FLAGS

    train: Annotated[PretrainConfig, tyro.conf.OmitArgPrefixes]
    width: Annotated[int | None, tyro.conf.arg(help_behavior_hint=_net_hint("width"))] = None
    depth: Annotated[int | None, tyro.conf.arg(help_behavior_hint=_net_hint("depth"))] = None
    heads: Annotated[int | None, tyro.conf.arg(help_behavior_hint=_net_hint("heads"))] = None
    threads: int = 0
    progress: bool = True

    def config(self) -> PretrainConfig:
        """`train` with its network chosen from the backbone and the overrides."""
        return with_policy(self.train, width=self.width, depth=self.depth, heads=self.heads)


def cmd_pretrain(cmd: PretrainCommand) -> None:
    """Pre-train a planner policy on a dataset (resumes an existing run)."""
    import torch

    from learning.pretrain import pretrain

    if cmd.threads:
        torch.set_num_threads(cmd.threads)
    cfg = cmd.config()
    planner = pretrain(cfg, progress=cmd.progress)
    metrics = planner.meta.get("metrics", {})
    print(f"{cfg.out}: {cfg.backbone} trained to step {metrics.get('step')}; "
          + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()
                      if k in ("train_loss", "valid_loss", "success_rate")))


@dataclass(frozen=True)
class FinetuneCommand:
    """Settings of `refine-dp finetune`: the run's `FinetuneConfig` and the process's own.

    Attributes:
        tune: the run (every field is a flag, without prefix).
        min_std: sets both --min-sampling-std and --min-logprob-std (None: theirs).
        progress: show a progress bar.
    """

    FLAGS: ClassVar[Flags] = FINETUNE_FLAGS

    tune: Annotated[FinetuneConfig, tyro.conf.OmitArgPrefixes]
    min_std: float | None = None
    progress: bool = True

    def config(self) -> FinetuneConfig:
        """`tune` with --min-std applied."""
        if self.min_std is None:
            return self.tune
        return replace(self.tune, min_sampling_std=self.min_std, min_logprob_std=self.min_std)


def cmd_finetune(cmd: FinetuneCommand) -> None:
    """Fine-tune a planner with RL in simulation (resumes an existing run)."""
    import torch

    from learning.rl.finetune import finetune

    cfg = cmd.config()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    planner = finetune(cfg, progress=cmd.progress)
    m = planner.meta.get("metrics", {})
    print(f"{cfg.out}: {cfg.method} after {m.get('iteration')} iterations: training success "
          f"{m.get('success_rate', float('nan')):.2f}, start ranges x{m.get('widen', 1.0):.2f}; "
          f"curve in {Path(cfg.out) / 'success_curve.png'}")


@dataclass(frozen=True)
class BenchPolicyCommand:
    """Settings of `refine-dp bench policy`.

    Attributes:
        bench: what is measured (every field is a flag, without prefix).
        threads: torch threads (0: torch's default).
        json: print JSON.
    """

    FLAGS: ClassVar[Flags] = {PolicyBenchConfig: {"sampler": Flag(choices=SAMPLERS)}}

    bench: Annotated[PolicyBenchConfig, tyro.conf.arg(name="")]
    threads: int = 0
    json: bool = False


def cmd_bench_policy(cmd: BenchPolicyCommand) -> None:
    """Planner latency per chunk at batch 1."""
    import torch

    from learning.bench_policy import bench_policy, format_bench

    if cmd.threads:
        torch.set_num_threads(cmd.threads)
    b = cmd.bench
    result = bench_policy(b.policy, calls=b.calls, sampler=b.sampler)
    print(json.dumps(result, indent=1) if cmd.json else format_bench(result))
