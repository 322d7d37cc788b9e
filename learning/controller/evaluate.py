"""Evaluating a low-level controller in the session loop: `refine-dp eval-controller`.

    report = evaluate_controller(ControllerChoice("reference"), "random", worlds=8,
                                 seconds=20.0, out_dir=Path("out/eval-controller/reference"))
    print(report.format())

Two modes, both through the shared session loop (command source -> command gate -> controller
-> env) with a `ControllerMetrics` observer (what is measured, and how: `eval_metrics`):

- "random": `worlds` robots on the open floor follow a `RandomCommandSource` (random base
  velocities; hand poses from a held-out arm-pose pool, reached by jumps or joint-space moves,
  then held; random grippers) for `seconds` of simulated time each.
- "planner": the heuristic planner of a task for `episodes` episodes: success rate and
  completion time besides the same measurements.

`learning.evaluate.evaluate` takes a controller too, but it cannot end an episode when the robot
falls nor tell settled ticks from moving ones, so this module runs the session itself with the
same per-tick maths (`learning.evaluate.tick_metrics`). A fallen world's episode is ended
through the env's public step counter (the session then sees a time-out and resets the world);
the observer records it as a fall.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from learning.controller.commands import (
    ArmPoses,
    RandomCommandConfig,
    RandomCommandSource,
    sample_arm_poses,
)
from learning.controller.eval_metrics import ControllerMetrics, FallCriteria, summarise
from learning.controller.upper_eval import HELD_OUT_SEED
from learning.evaluate import nan_to_none
from robot_io.control import ControllerChoice
from robot_io.env import BatchedEnv
from robot_io.protocols import CommandSource, Controller, World
from robot_io.session import Session
from robot_io.sim.render import write_bytes_atomic
from robot_io.tasks.open_floor import OpenFloorConfig, OpenFloorTask
from robot_io.types import Command, JointTargets, Observation

MODES = ("random", "planner")
REPORT_FORMAT = "refine-dp-controller-eval"
REPORT_VERSION = 1
POOL_SIZE = 2000  # held-out arm configurations the random commands draw from
TickHook = Callable[[int, World], None]  # called after each tick's measurement


# -- the report -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ControllerEvalReport:
    """What a controller evaluation found.

    Attributes:
        mode: "random" or "planner".
        controller: the `ControllerChoice` as a dict (name, weights, runtime, device).
        task: "open_floor" (random) or the planner's task.
        worlds, seed: worlds in parallel; the seed of the env and of the commands.
        metrics: `ControllerMetrics.summary()` (distributions as median / mean / p90 / samples).
        unstable_resets: episodes the simulator ended as unstable.
        planner: planner mode only: episodes, successes, success_rate, completion_time_s
            (over successes), end_reasons (success, timeout, unstable, fall), per_episode.
        controller_latency: the controller's `latency_summary()`, when it has one.
        seconds_per_world: random mode: the simulated time each world ran.
        files: what was written, by kind, relative to the output folder.
    """

    mode: str
    controller: dict
    task: str
    worlds: int
    seed: int
    wall_s: float
    metrics: dict
    unstable_resets: int
    planner: dict | None = None
    controller_latency: dict | None = None
    seconds_per_world: float | None = None
    files: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        """The JSON document (NaN becomes None); the measurements sit at the top level."""
        head = {"format": REPORT_FORMAT, "version": REPORT_VERSION}
        body = dataclasses.asdict(self)
        metrics = body.pop("metrics")
        return nan_to_none({**head, **body, **metrics})

    def format(self) -> str:
        """A short human-readable summary."""
        m = self.metrics
        where = ("open floor" if self.mode == "random" else f"{self.task} heuristic planner")
        span = (f"{self.seconds_per_world:g} s each" if self.seconds_per_world is not None
                else f"{m['sim_time_s']:.0f} s simulated")
        lines = [(f"controller {self.controller['name']}, mode {self.mode} ({where}, "
                  f"{self.worlds} worlds, {span}, seed {self.seed})")]
        if self.planner is not None:
            p = self.planner
            reasons = ", ".join(f"{k} {v}" for k, v in p["end_reasons"].items())
            lines.append(f"success {p['success_rate']:.1%} ({p['successes']}/{p['episodes']} "
                         f"episodes; {reasons}); completion time median "
                         f"{_fmt(p['completion_time_s']['median'])} s, p90 "
                         f"{_fmt(p['completion_time_s']['p90'])} s")
        v = m["base_velocity_error"]
        lines.append("base velocity error (>= 1 s after a change), median / p90: "
                     f"vx {_dist(v['vx_mps'])} m/s, vy {_dist(v['vy_mps'])} m/s, "
                     f"yaw rate {_dist(v['yaw_rate_rps'])} rad/s")
        feet = m["foot_placement_error"]
        lines.append("foot placement error: " + (
            f"position {_dist(feet['position_m'])} m, yaw {_dist(feet['yaw_rad'])} rad "
            f"({feet['position_m']['samples']} touchdowns)" if feet is not None
            else f"n/a ({m['foot_placement_note']})"))
        for key, name, unit in (("hand_position_error_m", "hand position", "m"),
                                ("hand_orientation_error_rad", "hand orientation", "rad")):
            lines.append(f"{name} error, median / p90: all ticks {_dist(m[key]['all'])} {unit}, "
                         f"settled {_dist(m[key]['settled'])} {unit}")
        lines.append(f"end-effector speed: mean {_fmt(m['ee_speed_mps']['mean'])} m/s")
        falls = m["falls"]
        lines.append(f"falls: {falls['count']} ({_fmt(falls['per_hour'])} per hour simulated); "
                     f"unstable resets {self.unstable_resets}")
        if self.controller_latency:
            lines.append("controller latency per tick: " + ", ".join(
                f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
                for k, v in self.controller_latency.items()))
        lines.append(f"wall time {self.wall_s:.1f} s")
        return "\n".join(lines)


def _fmt(value: float) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.3g}"


def _dist(d: dict) -> str:
    return f"{_fmt(d['median'])} / {_fmt(d['p90'])}"


# -- running the session --------------------------------------------------------------------------
def _on_step(session: Session, metrics: ControllerMetrics, hook: TickHook | None
             ) -> Callable[[int, Observation, Command, JointTargets], None]:
    """The session's `on_step`: measure the tick, end fallen worlds' episodes, call `hook`."""
    def on_step(tick: int, obs: Observation, cmd: Command, sent: JointTargets) -> None:
        fell = metrics.after_tick(tick, obs, cmd, sent)
        if bool(fell.any()):
            session.end_episode(torch.nonzero(fell).squeeze(1), success=False, reason="fell")
        if hook is not None:
            hook(tick, session.world)
    return on_step


def run_random(env: World, source: CommandSource, controller: Controller, seconds: float,
               metrics: ControllerMetrics, hook: TickHook | None = None,
               progress: bool = False) -> None:
    """Run every world for `seconds` of simulated time (fallen worlds are reset and go on)."""
    ticks = round(seconds / env.control_dt_s)
    if ticks < 1:
        raise ValueError(f"seconds must cover at least one control tick, got {seconds}")
    bar = tqdm(total=round(ticks * env.control_dt_s, 2), unit="sim s", disable=not progress,
               dynamic_ncols=True)
    session = Session(env, source, controller, observers=[metrics], stop_on_success=False)
    measure = _on_step(session, metrics, hook)
    finished = False

    def on_step(tick: int, *args: Any) -> None:
        nonlocal finished
        measure(tick, *args)
        if tick + 1 >= ticks:  # every world's episode ends here, so the session stops
            session.end_episode(torch.arange(env.num_worlds), success=False, reason="timeout",
                                restart=False)
            finished = True
        if (tick + 1) % 50 == 0 or finished:
            bar.update(round((tick + 1) * env.control_dt_s, 2) - bar.n)

    try:
        session.run(None, on_step=on_step, done_when=lambda: finished)
    finally:
        bar.close()


def run_planner(env: World, source: CommandSource, controller: Controller, episodes: int,
                metrics: ControllerMetrics, hook: TickHook | None = None) -> None:
    """Run `episodes` episodes, each ending at success, time-out, instability or a fall."""
    session = Session(env, source, controller, observers=[metrics])
    session.run(episodes, on_step=_on_step(session, metrics, hook))


def planner_summary(episodes: list[dict]) -> dict:
    """Success rate, completion time over successes and end reasons of per-episode records."""
    per_episode = sorted(episodes, key=lambda e: e["episode"])
    wins = [e for e in per_episode if e["success"]]
    n = len(per_episode)
    return {"episodes": n, "successes": len(wins), "success_rate": len(wins) / n if n else 0.0,
            "completion_time_s": summarise(np.array([e["time_s"] for e in wins])),
            "end_reasons": {r: sum(e["end_reason"] == r for e in per_episode)
                            for r in ("success", "timeout", "unstable", "fall")},
            "per_episode": per_episode}


def evaluate_controller(controller: ControllerChoice, mode: str, task: str = "pick_place",
                        worlds: int = 8, seconds: float = 20.0, episodes: int = 20,
                        seed: int = 0, threads: int = 0, out_dir: Path | None = None,
                        progress: bool = True, pool: ArmPoses | None = None,
                        commands: RandomCommandConfig | None = None,
                        falls: FallCriteria | None = None) -> ControllerEvalReport:
    """Evaluate a low-level controller; write controller_eval.json and plots into `out_dir`.

    Args:
        controller: which controller (`ControllerChoice`).
        mode: "random" (open floor, random commands) or "planner" (a task's heuristic planner).
        task: the planner's task (planner mode).
        worlds: worlds in parallel (planner mode: at most `episodes`).
        seconds: simulated time per world (random mode).
        episodes: episodes in all (planner mode).
        seed: seed of the env's randomisation and of the commands.
        threads: physics threads (0: all CPUs).
        out_dir: where to write the report and plots (nothing written when None).
        progress: show a progress bar.
        pool: the arm configurations random hand commands are drawn from (default: a
            held-out pool of `POOL_SIZE` drawn with `HELD_OUT_SEED`, which training never uses).
        commands: how random commands are drawn (random mode).
        falls: when a robot counts as fallen.

    Raises:
        ValueError: an unknown mode or task, or worlds / episodes / seconds out of range.
        PolicySpecError: the learned controller's weights are missing, damaged or unfit.
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; known modes: {', '.join(MODES)}")
    if worlds < 1:
        raise ValueError(f"worlds must be at least 1, got {worlds}")
    if mode == "random" and not (math.isfinite(seconds) and seconds > 0):
        raise ValueError(f"seconds must be a positive number, got {seconds}")
    if mode == "planner" and episodes < 1:
        raise ValueError(f"episodes must be at least 1, got {episodes}")
    started = time.perf_counter()
    if mode == "random":
        task = "open_floor"
        # No time-out within the run: an episode ends by a fall or at the run's end.
        env = BatchedEnv(OpenFloorTask(OpenFloorConfig(time_limit_s=seconds + 1.0)), worlds,
                         threads, seed)
    else:
        from planners.heuristic import PLANNERS, make_heuristic_planner

        if task not in PLANNERS:  # before any work
            raise ValueError(f"no heuristic planner for task {task!r}; known tasks: "
                             f"{', '.join(sorted(PLANNERS))}")
        env = BatchedEnv(task, min(worlds, episodes), threads, seed)
    low_level = controller.build(env)
    metrics = ControllerMetrics(env, low_level, falls=falls)
    summary = None
    if mode == "random":
        if pool is None:
            pool = sample_arm_poses(env.robot, POOL_SIZE, HELD_OUT_SEED)
        source = RandomCommandSource(env, pool, seed=seed, cfg=commands)
        run_random(env, source, low_level, seconds, metrics, progress=progress)
    else:
        source = make_heuristic_planner(task, env.num_worlds, seed)
        bar = tqdm(total=episodes, unit="ep", disable=not progress, dynamic_ncols=True)
        metrics.on_end = lambda m: bar.update(len(m.episodes) - bar.n)
        try:
            run_planner(env, source, low_level, episodes, metrics)
        finally:
            bar.close()
        summary = planner_summary(metrics.episodes)
    latency = getattr(low_level, "latency_summary", None)
    report = ControllerEvalReport(
        mode=mode, controller=controller.to_dict(), task=task, worlds=env.num_worlds, seed=seed,
        wall_s=time.perf_counter() - started, metrics=metrics.summary(),
        unstable_resets=sum(e["end_reason"] == "unstable" for e in metrics.episodes),
        planner=summary, controller_latency=latency() if callable(latency) else None,
        seconds_per_world=seconds if mode == "random" else None)
    if out_dir is None:
        return report
    out_dir = Path(out_dir)
    files = write_plots(metrics, report, out_dir)
    files["report"] = "controller_eval.json"
    report = dataclasses.replace(report, files=files)
    write_bytes_atomic(out_dir / files["report"],
                       json.dumps(report.to_dict(), indent=1).encode() + b"\n")
    return report


# -- plots ----------------------------------------------------------------------------------------
def write_plots(metrics: ControllerMetrics, report: ControllerEvalReport,
                out_dir: Path) -> dict[str, str]:
    """hand_errors.png, base_velocity.png and (with footholds) foot_placement.png, written
    atomically into `out_dir`; returns their names by kind."""
    # The Agg canvas directly, not pyplot: no global backend switch (see learning.evaluate).
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    def save(fig: Figure, name: str) -> str:
        fig.tight_layout()
        buf = io.BytesIO()
        FigureCanvasAgg(fig).print_png(buf)
        write_bytes_atomic(out_dir / name, buf.getvalue())
        return name

    title = f"{report.controller['name']} controller, {report.mode}"
    fig = Figure(figsize=(9, 3.5))
    for i, (key, xlabel, scale) in enumerate((("hand_pos", "hand position error [cm]", 100.0),
                                              ("hand_rot", "hand orientation error [deg]",
                                               180.0 / math.pi))):
        ax = fig.add_subplot(1, 2, i + 1)
        for suffix, label, color in (("", "all ticks", "tab:gray"),
                                     ("_settled", "settled", "tab:purple")):
            values = metrics.pooled(key + suffix) * scale
            if len(values):
                ax.hist(values, bins=40, range=(0, max(1e-9, np.percentile(values, 99))),
                        alpha=0.6, color=color, label=label)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("hand ticks")
        ax.legend()
    fig.suptitle(title)
    files = {"hand_errors_plot": save(fig, "hand_errors.png")}

    fig = Figure(figsize=(8, 6))
    trace = metrics.trace
    t = np.asarray(trace["time_s"])
    cmd, got = np.asarray(trace["command"]).reshape(-1, 3), np.asarray(trace["achieved"])
    for i, label in enumerate(("vx [m/s]", "vy [m/s]", "yaw rate [rad/s]")):
        ax = fig.add_subplot(3, 1, i + 1)
        if len(t):
            ax.plot(t, got.reshape(-1, 3)[:, i], color="tab:blue", lw=1, label="achieved")
            ax.plot(t, cmd[:, i], color="tab:orange", lw=1.5, ls="--", label="commanded")
        for reset in trace["resets"]:
            ax.axvline(reset, color="tab:red", lw=0.8)
        ax.set_ylabel(label)
    fig.axes[0].legend(loc="upper right")
    fig.axes[-1].set_xlabel(f"simulated time of world {metrics.trace_world} [s] "
                            f"(red lines: resets)")
    fig.suptitle(f"{title}: base velocity (heading frame)")
    files["base_velocity_plot"] = save(fig, "base_velocity.png")

    if metrics.feet is not None and len(metrics.pooled("foot_pos")):
        fig = Figure(figsize=(9, 3.5))
        for i, (key, xlabel, scale) in enumerate((("foot_pos", "foothold position error [cm]",
                                                   100.0),
                                                  ("foot_yaw", "foothold yaw error [deg]",
                                                   180.0 / math.pi))):
            ax = fig.add_subplot(1, 2, i + 1)
            ax.hist(metrics.pooled(key) * scale, bins=40, color="tab:green")
            ax.set_xlabel(xlabel)
            ax.set_ylabel("touchdowns")
        fig.suptitle(title)
        files["foot_placement_plot"] = save(fig, "foot_placement.png")
    return files


__all__ = ["MODES", "POOL_SIZE", "ControllerEvalReport", "end_episodes", "evaluate_controller",
           "planner_summary", "run_planner", "run_random", "write_plots"]
