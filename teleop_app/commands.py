"""The simulation commands of `refine-dp` (tasks, render, bench sim / planners / recorder, demo,
collect, replay, eval): a settings dataclass and a handler each.

The library functions these commands call have keyword defaults of their own; each dataclass's
defaults equal them (tests/test_cli_config.py checks), so a command line without a flag does what
a call without the argument does. Modules that import mujoco are imported inside the handlers,
after `teleop_app.cli` has checked `MUJOCO_GL`.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import tyro

from datasets.bench_recorder import RecorderBenchConfig
from robot_io.control import ControllerChoice
from teleop_app.controller_args import Controller, RecordedController

if TYPE_CHECKING:  # mujoco is imported inside the handlers only
    from robot_io.env import BatchedEnv
    from robot_io.protocols import CommandSource

PlannerName = Literal["heuristic", "scripted"]  # teleop_app.collect.SOURCES, without the import
SamplerName = Literal["ddim", "ddpm"]  # learning.diffusion.policy.SAMPLERS
BackendName = Literal["mujoco", "warp"]  # robot_io.sim.factory.BACKENDS

_EVAL_WHAT = tyro.conf.create_mutex_group(required=True, title="what to evaluate")
_REPLAY_MEDIA = tyro.conf.create_mutex_group(required=False, title="media")


@dataclass(frozen=True)
class TasksConfig:
    """`refine-dp tasks` has no settings."""


def cmd_tasks(cfg: TasksConfig) -> None:
    """Print each registered task with the first paragraph of its module's docstring."""
    from robot_io.tasks import REGISTRY, task_names

    for name in task_names():
        task_cls = REGISTRY[name][0]
        print(f"{name:<14} {_summary(sys.modules[task_cls.__module__].__doc__)}")


def _summary(doc: str | None) -> str:
    """The first paragraph of a docstring, on one line."""
    first = (doc or "").strip().split("\n\n")[0]
    return " ".join(first.split())


@dataclass(frozen=True)
class RenderConfig:
    """Settings of `refine-dp render`.

    Attributes:
        task: a task name (see `refine-dp tasks`).
        out: the PNG file to write.
        seed: randomisation seed of the initial state.
        width: image width in pixels.
        height: image height in pixels.
    """

    task: str
    out: Path
    seed: int = 0
    width: int = 640
    height: int = 480


def cmd_render(cfg: RenderConfig) -> None:
    """Build a one-world env of the task, reset it and write its initial state as a PNG."""
    from robot_io.env import BatchedEnv
    from robot_io.sim.render import render_world, save_png

    env = BatchedEnv(cfg.task, num_worlds=1, seed=cfg.seed)  # the constructor resets
    path = save_png(render_world(env, 0, cfg.width, cfg.height), cfg.out)
    print(f"wrote {path} ({cfg.width}x{cfg.height}, task {cfg.task}, seed {cfg.seed})")


@dataclass(frozen=True)
class BenchSimConfig:
    """Settings of `refine-dp bench sim` (`robot_io.sim.bench.bench_sim`).

    Attributes:
        task: a task name (see `refine-dp tasks`).
        worlds: number of simulated worlds.
        threads: physics threads (0: all CPUs).
        seconds: timed seconds of each measurement.
        seed: the env's seed.
        backend: simulator: mujoco (CPU) or warp (MuJoCo Warp, gpu extra).
        device: warp device: cuda, cuda:N or cpu (None: cuda; cuda:LOCAL_RANK under torchrun).
        json: print one JSON object.
    """

    task: str
    worlds: int
    threads: int = 0
    seconds: float = 5.0
    seed: int = 0
    backend: BackendName = "mujoco"
    device: str | None = None
    json: bool = False


def cmd_bench_sim(cfg: BenchSimConfig) -> None:
    """Benchmark the batched environment against bare mujoco.batch physics."""
    from robot_io.sim.bench import bench_sim, format_bench_line

    result = bench_sim(cfg.task, cfg.worlds, threads=cfg.threads, seconds=cfg.seconds,
                       seed=cfg.seed, backend=cfg.backend, device=cfg.device)
    print(json.dumps(result) if cfg.json else format_bench_line(result))


@dataclass(frozen=True)
class BenchPlannersConfig:
    """Settings of `refine-dp bench planners` (`planners.heuristic.bench.bench_planners`).

    Attributes:
        tasks: the tasks (None: all).
        episodes: episodes per task.
        worlds: worlds in parallel.
        seed: seed of the randomisation and of the planners.
        threads: physics threads (0: all CPUs).
        json: print JSON.
        controller: the low-level controller.
    """

    tasks: tuple[str, ...] | None = None
    episodes: int = 200
    worlds: int = 50
    seed: int = 0
    threads: int = 0
    json: bool = False
    controller: Controller = ControllerChoice()


def cmd_bench_planners(cfg: BenchPlannersConfig) -> None:
    """The heuristic planners' success rates."""
    from planners.heuristic.bench import bench_planners

    result = bench_planners(cfg.tasks, episodes=cfg.episodes, worlds=cfg.worlds, seed=cfg.seed,
                            threads=cfg.threads, controller=cfg.controller)
    print(json.dumps(result, indent=1) if cfg.json else _planner_lines(result))


def _planner_lines(result: dict) -> str:
    lines = []
    for task, r in result.items():
        lines.append(f"{task}: success {r['success_rate']:.1%} over {r['episodes']} episodes"
                     + "".join(f", {k} {v}" for k, v in r.items()
                               if k not in ("success_rate", "episodes")))
    return "\n".join(lines)


@dataclass(frozen=True)
class BenchRecorderCommand:
    """Settings of `refine-dp bench recorder`."""

    bench: Annotated[RecorderBenchConfig, tyro.conf.arg(name="")]


def cmd_bench_recorder(cfg: BenchRecorderCommand) -> None:
    """The recorder's share of the session loop, on one line."""
    import tempfile

    import torch

    from datasets.bench_recorder import format_measurement, measure

    torch.set_num_threads(1)  # the session's torch work is tiny: no idle pool competing
    b = cfg.bench
    with tempfile.TemporaryDirectory() as tmp:
        result = measure(b.task, b.worlds, b.episode_s, b.threads, Path(tmp) / "ds",
                         rounds=b.rounds, background=not b.sync)
    print(format_measurement(result, b.rounds))


@dataclass(frozen=True)
class BenchRunnerConfig:
    """Settings of `refine-dp bench runner` (`robot_io.sim.bench_runner.bench_runner`).

    Attributes:
        task: a task name (see `refine-dp tasks`).
        seconds: how long the real-time runner is timed.
        rate_hz: the tick rate.
        source: scripted (the task's scripted demonstration, episode after episode) or constant
            (walk forward at 0.2 m/s, hands held, episodes cut to 1.5 s).
        threads: physics threads of the one world.
        spin_ms: the runner's busy wait before each deadline.
        rt_priority: run the loop under SCHED_FIFO at this priority, 1..99 (None: normal).
        seed: the world's seed.
        json: print one JSON object.
    """

    task: str = "box_pickup"
    seconds: float = 120.0
    rate_hz: float = 50.0
    source: Literal["scripted", "constant"] = "scripted"
    threads: int = 1
    spin_ms: float = 0.5
    rt_priority: int | None = None
    seed: int = 0
    json: bool = False


def cmd_bench_runner(cfg: BenchRunnerConfig) -> None:
    """One world paced by the real-time runner: late ticks and jitter, on one line."""
    from robot_io.sim.bench_runner import bench_runner, format_runner_line

    source: object = cfg.source
    if cfg.source == "scripted":
        from planners.scripted import make_scripted_source

        source = make_scripted_source(cfg.task)
    result = bench_runner(cfg.task, cfg.seconds, cfg.rate_hz, source, cfg.threads,
                          spin_s=cfg.spin_ms / 1e3, rt_priority=cfg.rt_priority, seed=cfg.seed)
    print(json.dumps(result) if cfg.json else format_runner_line(result))


@dataclass(frozen=True)
class DemoConfig:
    """Settings of `refine-dp demo` (`teleop_app.demo.run_demo`).

    Attributes:
        out: output folder.
        progress: show progress bars.
    """

    out: Path = Path("out/demo")
    progress: bool = True


def cmd_demo(cfg: DemoConfig) -> None:
    """Scripted episode and PNG of every task, then one benchmark line."""
    from teleop_app.demo import run_demo

    run_demo(cfg.out, progress=cfg.progress)


@dataclass(frozen=True)
class CollectConfig:
    """Settings of `refine-dp collect` (`teleop_app.collect.collect`).

    Attributes:
        task: a task name (see `refine-dp tasks`).
        episodes: successful episodes the dataset should hold.
        out: the dataset folder (created or continued).
        source: the planner that drives the robot.
        worlds: worlds in parallel.
        keep_failures: also store failed episodes (marked success=False).
        seed: seed of the randomisation and of the planner.
        threads: physics threads (0: all CPUs).
        progress: show a progress bar.
        controller: the low-level controller.
    """

    task: str
    episodes: int
    out: Path
    source: PlannerName = "heuristic"
    worlds: int = 16
    keep_failures: bool = False
    seed: int = 0
    threads: int = 0
    progress: bool = True
    controller: Controller = ControllerChoice()


def cmd_collect(cfg: CollectConfig) -> None:
    """Record demonstrations into a dataset."""
    from teleop_app.collect import collect, format_report

    report = collect(cfg.task, cfg.source, cfg.episodes, cfg.worlds, cfg.out,
                     keep_failures=cfg.keep_failures, seed=cfg.seed, threads=cfg.threads,
                     progress=cfg.progress, controller=cfg.controller)
    print(format_report(report))


@dataclass(frozen=True)
class ReplayConfig:
    """Settings of `refine-dp replay` (`teleop_app.replay_video.replay_to_media`).

    Attributes:
        dir: the dataset folder.
        episode: the episode id.
        video: write an MP4 video of the replay.
        frames: write one PNG per rendered tick into this folder.
        mode: replay the recorded joint targets (exact) or the commands through the controller.
        controller: the low-level controller of --mode controller (None: the recorded one).
    """

    dir: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="DIR")]
    episode: int
    video: Annotated[Path | None, _REPLAY_MEDIA, tyro.conf.arg(metavar="FILE.mp4")] = None
    frames: Annotated[Path | None, _REPLAY_MEDIA, tyro.conf.arg(metavar="DIR")] = None
    mode: Literal["targets", "controller"] = "targets"
    controller: RecordedController = None


def cmd_replay(cfg: ReplayConfig) -> None:
    """Re-simulate a recorded episode and report how far it diverges from the recording."""
    from teleop_app.replay_video import replay_to_media

    if cfg.controller is not None and cfg.mode != "controller":
        raise ValueError("--controller applies to --mode controller only")
    report = replay_to_media(cfg.dir, cfg.episode,
                             video=None if cfg.video is None else str(cfg.video),
                             frames=None if cfg.frames is None else str(cfg.frames),
                             mode=cfg.mode, controller=cfg.controller)
    how = f"{cfg.mode}, {report.controller}" if report.controller else cfg.mode
    print(f"episode {report.episode_id}: {report.steps} ticks re-simulated ({how}); "
          f"largest divergence from the recording: observation {report.max_obs_divergence:.3g}"
          f" ({report.worst_field or '-'}), simulator state {report.max_state_divergence:.3g}; "
          f"success recorded {report.recorded_success}, replayed {report.replayed_success}")


@dataclass(frozen=True)
class EvalConfig:
    """Settings of `refine-dp eval` (`learning.evaluate.evaluate`).

    Attributes:
        task: a task name (see `refine-dp tasks`).
        policy: a training run or checkpoint folder to evaluate.
        source: a planner to evaluate instead of a policy.
        episodes: episodes in all.
        worlds: worlds in parallel.
        seed: seed of the randomisation (and of the policy's sampling).
        out: output folder (None: out/eval/TASK-LABEL).
        video: also record N episodes of one world as episodes.mp4.
        threads: physics and torch threads (0: all CPUs, torch's default).
        sampler: denoising sampler of the policy (None: the checkpoint's).
        device: torch device of the policy (None: `make_policy_source`'s, the CPU).
        widen: scale the task's start ranges by FACTOR (curriculum; None: the task's ranges).
        json: print the report as JSON.
        progress: show a progress bar.
        controller: the low-level controller.
    """

    task: str
    policy: Annotated[Path | None, _EVAL_WHAT, tyro.conf.arg(metavar="RUN")] = None
    source: Annotated[PlannerName | None, _EVAL_WHAT,
                      tyro.conf.arg(metavar="{heuristic,scripted}")] = None
    episodes: int = 100
    worlds: int = 16
    seed: int = 0
    out: Path | None = None
    video: Annotated[int, tyro.conf.arg(metavar="N")] = 0
    threads: int = 0
    sampler: SamplerName | None = None
    device: str | None = None
    widen: Annotated[float | None, tyro.conf.arg(metavar="FACTOR")] = None
    json: bool = False
    progress: bool = True
    controller: Controller = ControllerChoice()


def cmd_eval(cfg: EvalConfig) -> None:
    """Evaluate a trained policy or a planner in closed loop; write eval.json and plots."""
    import torch

    from learning.evaluate import evaluate
    from robot_io.tasks import default_config

    if cfg.threads:  # the policy's torch pool too: idle spinning threads inflate its latency
        torch.set_num_threads(cfg.threads)
    if cfg.source is not None and (cfg.sampler is not None or cfg.device is not None):
        raise ValueError("--sampler and --device apply to --policy only")
    if cfg.widen is not None and not cfg.widen > 0:
        raise ValueError(f"--widen must be a positive factor, got {cfg.widen}")
    if cfg.source == "scripted" and cfg.widen is not None:
        raise ValueError("--widen does not apply to --source scripted: the scripts are written "
                         "for the nominal start")
    config = default_config(cfg.task)  # the unknown-task error, before any work
    if cfg.widen is not None:
        config = config.widened(cfg.widen)
    if cfg.source == "scripted":
        config = config.nominal()
    label, make_source = _eval_source(cfg)
    out = cfg.out if cfg.out is not None else Path("out") / "eval" / f"{cfg.task}-{label}"
    report = evaluate(cfg.task, make_source, episodes=cfg.episodes, worlds=cfg.worlds,
                      seed=cfg.seed, task_config=config, threads=cfg.threads, out_dir=out,
                      video_episodes=cfg.video, progress=cfg.progress, label=label,
                      controller=cfg.controller)
    if cfg.json:
        print(json.dumps(report.to_dict(), indent=1))
        return
    print(report.format())
    print("wrote " + ", ".join(str(out / name) for name in report.files.values()))


def _eval_source(cfg: EvalConfig) -> tuple[str, Callable[[BatchedEnv], CommandSource]]:
    """The label and the source factory `eval` asks for (a policy run or a planner)."""
    task, seed = cfg.task, cfg.seed
    if cfg.policy is not None:
        from learning.deploy import make_policy_source

        run, sampler = cfg.policy, cfg.sampler
        device = {} if cfg.device is None else {"device": cfg.device}  # None: the function's
        return run.resolve().name, lambda env: make_policy_source(
            run, env.num_worlds, seed=seed, sampler=sampler, task=task, robot=env.robot,
            **device)
    if cfg.source == "heuristic":
        from planners.heuristic import make_heuristic_planner

        return "heuristic", lambda env: make_heuristic_planner(task, env.num_worlds, seed)
    from planners.scripted import make_scripted_source

    return "scripted", lambda env: make_scripted_source(task)
