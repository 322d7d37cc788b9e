"""The low-level controller commands of `refine-dp`: eval-, train-, export-controller and
bench controller-env.

    refine-dp eval-controller --mode random|planner [--task NAME] [--worlds N]
                              [--seconds S | --episodes N] [--seed S] [--threads T] [--out DIR]
                              [--json] [--no-progress] [CONTROLLER]
    refine-dp train-controller --part upper|lower --out RUN [--worlds N] [--backend mujoco|warp]
                               [--device D] [--minutes M] [--iterations N]
                               [--dagger-iterations N] [--seed S] [--threads T] [--no-progress]
                               [--ppo.FIELD V] [--dagger.FIELD V]
    refine-dp export-controller --run RUN --out DIR [--no-onnx]
    refine-dp bench controller-env [--part upper|lower] [--worlds N] [--threads T]
                                   [--seconds S] [--json]

CONTROLLER: `--controller reference|learned [--controller-weights DIR]
[--controller-runtime torch|onnx]` (`teleop_app.controller_args`).

train-controller's flags are the fields of `learning.controller.train.ControllerTrainConfig`
(`--ppo.*` and `--dagger.*` its nested configs) with their defaults; `--minutes` sets its
`time_budget_s`, `--iterations` and `--dagger-iterations` are the older spellings of
`--ppo.iterations` and `--dagger.iterations`.
"""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, ClassVar, Literal

import tyro

from learning.controller.bench import bench_controller_env
from learning.controller.dagger import DaggerConfig
from learning.controller.evaluate import evaluate_controller
from learning.controller.ppo import PPOConfig
from learning.controller.train import PARTS, ControllerTrainConfig
from robot_io.control import ControllerChoice
from teleop_app.cli_parsing import Flag, Flags
from teleop_app.controller_args import Controller

PartName = Literal[PARTS]  # type: ignore[valid-type]
_SPAN = tyro.conf.create_mutex_group(required=False, title="span")
_EVAL_DEFAULTS = {name: p.default
                  for name, p in inspect.signature(evaluate_controller).parameters.items()}


def _eval_hint(name: str) -> str:
    """The default `evaluate_controller` uses when the flag is not given, for the help."""
    value = _EVAL_DEFAULTS[name]
    return f"(default: {value:g})" if isinstance(value, float) else f"(default: {value})"


@dataclass(frozen=True)
class EvalControllerConfig:
    """Settings of `refine-dp eval-controller` (`learning.controller.evaluate`).

    The mode's own settings are None unless given: the other mode refuses them, and
    `evaluate_controller` supplies their defaults.

    Attributes:
        mode: random: random commands on the open floor; planner: a task's heuristic planner.
        task: planner mode: the task.
        worlds: worlds in parallel.
        seconds: random mode: simulated seconds per world.
        episodes: planner mode: episodes in all.
        seed: seed of the randomisation and of the commands.
        threads: physics and torch threads (0: all CPUs, torch's default).
        out: output folder (None: out/eval-controller/CONTROLLER-MODE[-TASK]).
        json: print the report as JSON.
        progress: show a progress bar.
        controller: the low-level controller.
    """

    mode: Literal["random", "planner"]
    task: Annotated[str | None, tyro.conf.arg(help_behavior_hint=_eval_hint("task"))] = None
    worlds: int = 8
    seconds: Annotated[float | None, _SPAN,
                       tyro.conf.arg(help_behavior_hint=_eval_hint("seconds"))] = None
    episodes: Annotated[int | None, _SPAN,
                        tyro.conf.arg(help_behavior_hint=_eval_hint("episodes"))] = None
    seed: int = 0
    threads: int = 0
    out: Path | None = None
    json: bool = False
    progress: bool = True
    controller: Controller = ControllerChoice()


def cmd_eval_controller(cfg: EvalControllerConfig) -> None:
    """Evaluate a controller under random commands or a planner; write JSON and plots."""
    import torch

    if cfg.mode == "random" and (cfg.episodes is not None or cfg.task is not None):
        raise ValueError("--episodes and --task apply to --mode planner only "
                         "(--mode random runs --seconds on the open floor)")
    if cfg.mode == "planner" and cfg.seconds is not None:
        raise ValueError("--seconds applies to --mode random only (--mode planner runs "
                         "--episodes)")
    if cfg.threads:  # the controller's torch pool too
        torch.set_num_threads(cfg.threads)
    given = {k: v for k, v in (("task", cfg.task), ("seconds", cfg.seconds),
                               ("episodes", cfg.episodes)) if v is not None}
    task = given.get("task", _EVAL_DEFAULTS["task"])
    label = f"{cfg.controller.name}-{cfg.mode}" + (f"-{task}" if cfg.mode == "planner" else "")
    out = cfg.out if cfg.out is not None else Path("out") / "eval-controller" / label
    report = evaluate_controller(cfg.controller, cfg.mode, worlds=cfg.worlds, seed=cfg.seed,
                                 threads=cfg.threads, out_dir=out, progress=cfg.progress,
                                 **given)
    if cfg.json:
        print(json.dumps(report.to_dict(), indent=1))
        return
    print(report.format())
    print("wrote " + ", ".join(str(out / name) for name in report.files.values()))


TRAIN_FLAGS: Flags = {
    ControllerTrainConfig: {
        # Required as before: a default run folder would be shared by both parts.
        "part": Flag(choices=PARTS, required=True,
                     help="upper: hand poses (DAgger warm start, then PPO); lower: locomotion"),
        "out": Flag(required=True, help="run folder (re-run to resume)"),
        "worlds": Flag(help="worlds per process"),
        "backend": Flag(choices=("mujoco", "warp"),
                        help="simulator: mujoco (CPU) or warp (MuJoCo Warp; GPU)"),
        "device": Flag(suppress=True),  # TrainControllerCommand.device: its default depends
        "threads": Flag(help="physics and torch threads (0: all CPUs, torch's default)"),
        "seed": Flag(help="seed (each torchrun rank adds its rank)"),
        "time_budget_s": Flag(
            name="minutes", scale=60.0, help="PPO time budget in minutes (the warm start, about "
            "16 minutes on 2 cores for the upper part, comes first)"),
        "eval_every": Flag(help="PPO iterations between held-out evaluations"),
        "eval_worlds": Flag(help="worlds of a held-out evaluation"),
        "dagger": Flag(help="the DAgger warm start (upper part)"),
        "ppo": Flag(help="PPO"),
    },
    PPOConfig: {
        "iterations": Flag(aliases=("--iterations",), help="PPO iterations at most"),
        "time_budget_s": Flag(suppress=True),  # --minutes sets it
    },
    DaggerConfig: {
        "iterations": Flag(aliases=("--dagger-iterations",),
                           help="warm-start iterations (upper part; 0: none)"),
    },
}


@dataclass(frozen=True)
class TrainControllerCommand:
    """Settings of `refine-dp train-controller`: the run's `ControllerTrainConfig` and the
    process's own.

    Attributes:
        train: the run (every field is a flag; --ppo.* and --dagger.* its nested configs).
        device: torch / Warp device (None: cpu with --backend mujoco; cuda:LOCAL_RANK under
            torchrun, else cuda, with --backend warp).
        progress: show progress.
    """

    FLAGS: ClassVar[Flags] = TRAIN_FLAGS

    train: Annotated[ControllerTrainConfig, tyro.conf.arg(name="")]
    device: str | None = None
    progress: bool = True

    def config(self, rank: int) -> ControllerTrainConfig:
        """`train` for torchrun rank `rank`: its device and seed resolved."""
        from robot_io.sim.distributed import warp_device

        device = self.device
        if device is None:
            device = warp_device() if self.train.backend == "warp" else self.train.device
        return replace(self.train, device=device, seed=self.train.seed + rank)


def cmd_train_controller(cmd: TrainControllerCommand) -> None:
    """Train a low-level policy (resumes a killed run), export the best, print the metrics."""
    import torch

    from learning.controller.train import train_controller
    from robot_io.sim.distributed import rank_info

    cfg = cmd.config(rank_info().rank)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    metrics = train_controller(cfg, progress=cmd.progress)
    print(json.dumps(metrics, indent=1))


@dataclass(frozen=True)
class ExportControllerConfig:
    """Settings of `refine-dp export-controller` (`learning.controller.export.export_policy`).

    Attributes:
        run: a train-controller run folder.
        out: the export folder.
        onnx: also write the ONNX file.
    """

    run: Path
    out: Path
    onnx: bool = True


def cmd_export_controller(cfg: ExportControllerConfig) -> None:
    """Export a run's latest PPO actor (the training command already exports its best one)."""
    from learning.controller.export import export_policy
    from learning.controller.train import load_run_actor

    policy = load_run_actor(cfg.run)
    for path in export_policy(policy, cfg.out, onnx=cfg.onnx):
        print(f"wrote {path}")


@dataclass(frozen=True)
class BenchControllerEnvConfig:
    """Settings of `refine-dp bench controller-env` (`learning.controller.bench`).

    Attributes:
        part: the training environment: upper or lower body.
        worlds: number of worlds.
        threads: physics threads (0: all CPUs).
        seconds: timed seconds of each measurement.
        json: print one JSON object.
    """

    part: PartName = "upper"
    worlds: int = 256
    threads: int = 0
    seconds: float = 10.0
    json: bool = False


def cmd_bench_controller_env(cfg: BenchControllerEnvConfig) -> None:
    """The controller-training env against bare physics, in the same process."""
    from learning.controller.bench import format_bench

    result = bench_controller_env(cfg.part, worlds=cfg.worlds, threads=cfg.threads,
                                  seconds=cfg.seconds)
    print(json.dumps(result) if cfg.json else format_bench(result))
