"""Closed-loop evaluation of a command source: success, completion time, hand tracking, plots.

    report = evaluate("box_pickup", lambda env: make_heuristic_planner("box_pickup",
                      env.num_worlds), episodes=100, worlds=16, out_dir=Path("out/eval/box"))
    print(report.format())

The source (a heuristic planner, a scripted source, the deployed diffusion policy) runs through
a low-level controller (the reference one by default, or the learned one: `ControllerChoice`)
in the shared session loop. An `EvalMetrics` observer accumulates, per episode and batched over
worlds, how closely the achieved hand poses follow the commanded ones and how fast the hands
move. Tracking is judged one tick late: the command of tick t is compared with the observation
that opens tick t+1, which the observer sees in the next `StepRecord`. A world whose episode
ended was reset before that observation, so the final tick of every episode is dropped rather
than compared with a fresh episode's start.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from robot_io.control import ControllerChoice
from robot_io.env import BatchedEnv
from robot_io.math3d import quat_angle, quat_rotate
from robot_io.protocols import CommandSource, EpisodeEnd, EpisodeStart, StepRecord, World
from robot_io.session import Session
from robot_io.sim.render import WorldRenderer, write_bytes_atomic
from robot_io.tasks import TaskConfig

SourceFactory = Callable[[World], CommandSource]
END_REASONS = ("success", "timeout", "unstable")
VIDEO_RENDER_EVERY = 2  # ticks per video frame: 25 fps at the 50 Hz control rate
VIDEO_SIZE = (320, 240)


# -- per-tick maths -----------------------------------------------------------------------------
@dataclass(frozen=True)
class HandState:
    """Where the hands are: root pose in the world, hands in the root frame.

    Attributes:
        root_pos, root_quat: (B, 3), (B, 4) trunk pose in the world (wxyz).
        hand_pos, hand_quat: (B, 2, 3), (B, 2, 4) left/right hand poses in the root frame.
    """

    root_pos: Tensor
    root_quat: Tensor
    hand_pos: Tensor
    hand_quat: Tensor

    @classmethod
    def of(cls, obs: Any) -> HandState:
        """The hand state of an `Observation`."""
        return cls(obs.root_pos, obs.root_quat, obs.hand_pos, obs.hand_quat)

    def hand_pos_world(self) -> Tensor:
        """(B, 2, 3) hand positions in the world: root_pos + R(root_quat) hand_pos."""
        quat = self.root_quat.unsqueeze(1).expand(-1, self.hand_pos.shape[1], -1)
        return self.root_pos.unsqueeze(1) + quat_rotate(quat, self.hand_pos)


@dataclass(frozen=True)
class TickMetrics:
    """(B, 2) per-hand metrics of one tick."""

    hand_pos_err_m: Tensor
    hand_rot_err_rad: Tensor
    ee_speed_mps: Tensor


def tick_metrics(cmd_hand_pos: Tensor, cmd_hand_quat: Tensor, before: HandState,
                 after: HandState, control_dt_s: float) -> TickMetrics:
    """Tracking errors and hand speeds of one tick.

    Args:
        cmd_hand_pos, cmd_hand_quat: (B, 2, 3), (B, 2, 4) the applied command (root frame).
        before: the hands when the command was computed.
        after: the hands one tick later.
        control_dt_s: the tick's duration.

    Returns:
        position error || cmd - after || [m], orientation error angle(cmd, after) [rad], and the
        world-frame hand speed || after - before || / dt [m/s], each (B, 2).
    """
    pos_err = (cmd_hand_pos - after.hand_pos).norm(dim=-1)
    rot_err = quat_angle(cmd_hand_quat, after.hand_quat)
    moved = after.hand_pos_world() - before.hand_pos_world()
    return TickMetrics(hand_pos_err_m=pos_err, hand_rot_err_rad=rot_err,
                       ee_speed_mps=moved.norm(dim=-1) / control_dt_s)


# -- the observer -------------------------------------------------------------------------------
class EvalMetrics:
    """A `StepObserver` that accumulates per-episode metrics, batched over worlds.

    Each `step` finishes the previous tick with the new record's observation. Worlds whose
    episode ended in between have been reset, so their pending tick is dropped.

    Args:
        num_worlds: B.
        control_dt_s: duration of a tick.
        on_end: called with each `EpisodeEnd` after it is recorded (e.g. a progress bar).
    """

    def __init__(self, num_worlds: int, control_dt_s: float,
                 on_end: Callable[[EvalMetrics], None] | None = None) -> None:
        self.control_dt_s = control_dt_s
        self.on_end = on_end
        f64 = torch.float64
        self.sum_pos = torch.zeros(num_worlds, dtype=f64)
        self.sum_rot = torch.zeros(num_worlds, dtype=f64)
        self.sum_speed = torch.zeros(num_worlds, dtype=f64)
        self.ticks = torch.zeros(num_worlds, dtype=torch.long)
        self.active = torch.zeros(num_worlds, dtype=torch.bool)  # in an episode we will report
        self.pending: StepRecord | None = None
        self.pending_valid = torch.zeros(num_worlds, dtype=torch.bool)
        self.pooled_pos: list[Tensor] = []  # per tick: (n,) errors of valid worlds and hands
        self.pooled_rot: list[Tensor] = []
        self.episodes: list[dict] = []

    def episode_started(self, start: EpisodeStart) -> None:
        ids = start.world_ids
        for acc in (self.sum_pos, self.sum_rot, self.sum_speed, self.ticks):
            acc[ids] = 0
        self.active[ids] = True

    def step(self, record: StepRecord) -> None:
        if self.pending is not None:
            self._finish(self.pending, record, self.pending_valid)
        self.pending = record
        self.pending_valid = self.active.clone()

    def _finish(self, prev: StepRecord, record: StepRecord, valid: Tensor) -> None:
        """Add the metrics of tick `prev` (its next observation is `record.obs`) where valid."""
        m = tick_metrics(prev.command.hand_pos, prev.command.hand_quat, HandState.of(prev.obs),
                         HandState.of(record.obs), self.control_dt_s)
        zero = torch.zeros((), dtype=torch.float64)
        self.sum_pos += torch.where(valid, m.hand_pos_err_m.mean(1), zero)
        self.sum_rot += torch.where(valid, m.hand_rot_err_rad.mean(1), zero)
        self.sum_speed += torch.where(valid, m.ee_speed_mps.mean(1), zero)
        self.ticks += valid
        self.pooled_pos.append(m.hand_pos_err_m[valid].reshape(-1))
        self.pooled_rot.append(m.hand_rot_err_rad[valid].reshape(-1))

    def episode_ended(self, end: EpisodeEnd) -> None:
        ids = end.world_ids
        self.pending_valid[ids] = False  # the next observation is of a new episode
        self.active[ids] = False
        ticks = self.ticks[ids].to(torch.float64)
        # An episode with no finished tick has no tracking numbers (NaN), not zero.
        per_tick = ticks.where(ticks > 0, torch.full_like(ticks, math.nan))
        means = [(acc[ids] / per_tick).tolist()
                 for acc in (self.sum_pos, self.sum_rot, self.sum_speed)]
        reasons = np.where(end.success.numpy(), "success",
                           np.where(end.unstable.numpy(), "unstable", "timeout"))
        for i, (episode, world, steps) in enumerate(zip(end.episode_ids.tolist(), ids.tolist(),
                                                        end.steps.tolist())):
            self.episodes.append({
                "episode": episode, "world": world, "success": bool(end.success[i]),
                "end_reason": str(reasons[i]), "steps": steps,
                "time_s": steps * self.control_dt_s, "hand_pos_err_m": means[0][i],
                "hand_rot_err_rad": means[1][i], "ee_speed_mps": means[2][i]})
        if self.on_end is not None:
            self.on_end(self)

    def pooled(self) -> tuple[np.ndarray, np.ndarray]:
        """Every finished tick's per-hand position [m] and orientation [rad] errors."""
        return _cat(self.pooled_pos), _cat(self.pooled_rot)


def _cat(parts: list[Tensor]) -> np.ndarray:
    return torch.cat(parts).numpy() if parts else np.zeros(0, dtype=np.float64)


# -- the report ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class EvalReport:
    """What an evaluation found.

    Tracking means are over episodes (each episode's mean over its ticks and both hands);
    tracking medians are over all ticks and hands of all episodes pooled. Completion times are
    over successful episodes (NaN when there is none; null in JSON).

    Attributes:
        per_episode: one dict per episode, by episode number: success, end_reason, steps,
            time_s and the episode's hand_pos_err_m, hand_rot_err_rad, ee_speed_mps.
        end_reasons: episodes per end reason (success, timeout, unstable).
        policy_latency: the source's `latency_summary()`, when it has one.
        controller: the low-level controller's name ("reference" or "learned").
        controller_latency: the controller's `latency_summary()`, when it has one.
        files: what was written, by kind, as names relative to the output folder.
    """

    task: str
    label: str
    episodes: int
    successes: int
    success_rate: float
    completion_time_s_mean: float
    completion_time_s_median: float
    hand_pos_err_m_mean: float
    hand_pos_err_m_median: float
    hand_rot_err_rad_mean: float
    hand_rot_err_rad_median: float
    ee_speed_mps_mean: float
    end_reasons: dict[str, int]
    per_episode: list[dict]
    wall_s: float
    seed: int
    worlds: int
    policy_latency: dict | None = None
    controller: str = "reference"
    controller_latency: dict | None = None
    files: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        """A JSON-ready dict (NaN becomes None)."""
        return nan_to_none(dataclasses.asdict(self))

    def format(self) -> str:
        """A short human-readable summary."""
        name = f"{self.task} [{self.label}]" if self.label else self.task
        reasons = ", ".join(f"{k} {v}" for k, v in self.end_reasons.items())
        pos = (f"position mean {self.hand_pos_err_m_mean:.4f} m "
               f"(median {self.hand_pos_err_m_median:.4f} m)")
        rot = (f"orientation mean {self.hand_rot_err_rad_mean:.4f} rad "
               f"(median {self.hand_rot_err_rad_median:.4f} rad)")
        lines = [
            (f"{name}: success {self.success_rate:.1%} ({self.successes}/{self.episodes} "
             f"episodes; {reasons})"),
            (f"completion time: mean {self.completion_time_s_mean:.2f} s, "
             f"median {self.completion_time_s_median:.2f} s"),
            f"hand tracking: {pos}, {rot}",
            f"end-effector speed: mean {self.ee_speed_mps_mean:.3f} m/s",
        ]
        if self.policy_latency:
            lines.append("policy latency: " + _format_latency(self.policy_latency))
        if self.controller != "reference":
            lines.append(f"controller {self.controller}" + (
                f", latency per tick: {_format_latency(self.controller_latency)}"
                if self.controller_latency else ""))
        lines.append(f"wall time {self.wall_s:.1f} s; worlds in parallel {self.worlds}, "
                     f"seed {self.seed}")
        return "\n".join(lines)


def nan_to_none(value: Any) -> Any:
    """NaN and inf floats (also inside dicts, lists and tuples) -> None, for strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: nan_to_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [nan_to_none(v) for v in value]
    return value


def _mean(values: list[float] | np.ndarray) -> float:
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    return float(values.mean()) if len(values) else math.nan


def _median(values: list[float] | np.ndarray) -> float:
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    return float(np.median(values)) if len(values) else math.nan


def build_report(metrics: EvalMetrics, task: str, label: str, wall_s: float, seed: int,
                 worlds: int, policy_latency: dict | None = None) -> EvalReport:
    """Summarise the episodes an `EvalMetrics` observer recorded."""
    per_episode = sorted(metrics.episodes, key=lambda e: e["episode"])
    successes = [e for e in per_episode if e["success"]]
    times = [e["time_s"] for e in successes]
    pos, rot = metrics.pooled()
    n = len(per_episode)
    return EvalReport(
        task=task, label=label, episodes=n, successes=len(successes),
        success_rate=len(successes) / n if n else 0.0,
        completion_time_s_mean=_mean(times), completion_time_s_median=_median(times),
        hand_pos_err_m_mean=_mean([e["hand_pos_err_m"] for e in per_episode]),
        hand_pos_err_m_median=_median(pos),
        hand_rot_err_rad_mean=_mean([e["hand_rot_err_rad"] for e in per_episode]),
        hand_rot_err_rad_median=_median(rot),
        ee_speed_mps_mean=_mean([e["ee_speed_mps"] for e in per_episode]),
        end_reasons={r: sum(e["end_reason"] == r for e in per_episode) for r in END_REASONS},
        per_episode=per_episode, wall_s=wall_s, seed=seed, worlds=worlds,
        policy_latency=policy_latency)


def _format_latency(summary: dict) -> str:
    return ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
                     for k, v in summary.items())


# -- evaluation ---------------------------------------------------------------------------------
def evaluate(task: str, make_source: SourceFactory, episodes: int = 100, worlds: int = 16,
             seed: int = 0, task_config: TaskConfig | None = None, threads: int = 0,
             out_dir: Path | None = None, video_episodes: int = 0, progress: bool = True,
             label: str = "", controller: ControllerChoice | None = None) -> EvalReport:
    """Run `episodes` episodes of `task` with the source `make_source(env)` and a low-level
    controller, `worlds` at a time (at most `episodes`), each ending at its first success.

    Args:
        task: a registered task name.
        make_source: builds the command source for an env (called once per env built).
        episodes, worlds: episodes to run in all; worlds in parallel.
        seed: seed of the env's randomisation.
        task_config: overrides the task's default config.
        threads: physics threads (0: all CPUs).
        out_dir: where to write eval.json, the plots and the video (nothing written when None).
        video_episodes: also record this many episodes of one world as out_dir/episodes.mp4.
        progress: show a progress bar.
        label: names the evaluated source in the report.
        controller: the low-level controller (default: the reference controller).

    Raises:
        ValueError: episodes or worlds < 1, video_episodes < 0 or without out_dir, unknown task.
        PolicySpecError: the learned controller's weights are missing, damaged or unfit.
    """
    if episodes < 1:
        raise ValueError(f"episodes must be at least 1, got {episodes}")
    if worlds < 1:
        raise ValueError(f"worlds must be at least 1, got {worlds}")
    if video_episodes < 0:
        raise ValueError(f"video_episodes must be 0 or more, got {video_episodes}")
    if video_episodes and out_dir is None:
        raise ValueError("a video needs an output folder: give out_dir")
    controller = controller or ControllerChoice()
    started = time.perf_counter()
    env = BatchedEnv(task, min(worlds, episodes), threads, seed, task_config)
    low_level = controller.build(env)
    source = make_source(env)
    bar = tqdm(total=episodes, unit="ep", disable=not progress, dynamic_ncols=True)

    def show(m: EvalMetrics) -> None:
        bar.update(len(m.episodes) - bar.n)
        bar.set_postfix(success=f"{sum(e['success'] for e in m.episodes) / len(m.episodes):.0%}")

    metrics = EvalMetrics(env.num_worlds, env.control_dt_s, on_end=show)
    session = Session(env, source, low_level, observers=[metrics])
    try:
        session.run(episodes, stop_on_success=True)
    finally:
        bar.close()
    latency = getattr(source, "latency_summary", None)
    report = build_report(metrics, task, label, time.perf_counter() - started, seed,
                          env.num_worlds, latency() if callable(latency) else None)
    ctrl_latency = getattr(low_level, "latency_summary", None)
    report = dataclasses.replace(report, controller=controller.name,
                                 controller_latency=ctrl_latency() if callable(ctrl_latency)
                                 else None)
    if out_dir is None:
        return report
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = write_plots(report, out_dir)
    if video_episodes:
        record_video(task, make_source, video_episodes, out_dir / "episodes.mp4", seed=seed,
                     task_config=task_config, threads=threads, controller=controller)
        files["video"] = "episodes.mp4"
    files["report"] = "eval.json"
    report = dataclasses.replace(report, files=files)
    write_bytes_atomic(out_dir / "eval.json",
                  json.dumps(report.to_dict(), indent=1).encode() + b"\n")
    return report


# -- files --------------------------------------------------------------------------------------
def write_plots(report: EvalReport, out_dir: Path) -> dict[str, str]:
    """success.png, completion_time.png and tracking.png in `out_dir`; returns their names."""
    # The Agg canvas directly, not pyplot: no global backend switch in a process that may
    # also run a Qt app.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    def save(fig: Figure, name: str) -> str:
        fig.tight_layout()
        buf = _png_bytes(FigureCanvasAgg(fig))
        write_bytes_atomic(out_dir / name, buf)
        return name

    title = f"{report.task} {report.label}".strip()
    fig = Figure(figsize=(5, 3.5))
    ax = fig.add_subplot()
    counts = [report.end_reasons.get(r, 0) for r in END_REASONS]
    ax.bar(END_REASONS, counts, color=["tab:green", "tab:orange", "tab:red"])
    ax.set_ylabel("episodes")
    ax.set_title(f"{title}: success {report.success_rate:.1%} of {report.episodes}")
    files = {"success_plot": save(fig, "success.png")}

    fig = Figure(figsize=(5, 3.5))
    ax = fig.add_subplot()
    times = [e["time_s"] for e in report.per_episode if e["success"]]
    if times:
        ax.hist(times, bins=min(30, max(5, len(times) // 3)), color="tab:blue")
    else:
        ax.text(0.5, 0.5, "no successful episode", ha="center", va="center",
                transform=ax.transAxes)
    ax.set_xlabel("completion time [s]")
    ax.set_ylabel("successful episodes")
    ax.set_title(title)
    files["completion_time_plot"] = save(fig, "completion_time.png")

    fig = Figure(figsize=(9, 3.5))
    for i, (key, xlabel) in enumerate((("hand_pos_err_m", "hand position error [m]"),
                                       ("hand_rot_err_rad", "hand orientation error [rad]"))):
        ax = fig.add_subplot(1, 2, i + 1)
        values = [e[key] for e in report.per_episode if math.isfinite(e[key])]
        ax.hist(values, bins=min(30, max(5, len(values) // 3)), color="tab:purple")
        ax.set_xlabel(f"{xlabel}, episode mean")
        ax.set_ylabel("episodes")
    fig.suptitle(title)
    files["tracking_plot"] = save(fig, "tracking.png")
    return files


def _png_bytes(canvas: Any) -> bytes:
    import io

    buf = io.BytesIO()
    canvas.print_png(buf)
    return buf.getvalue()


def record_video(task: str, make_source: SourceFactory, episodes: int, path: Path,
                 seed: int = 0, task_config: TaskConfig | None = None, threads: int = 0,
                 size: tuple[int, int] = VIDEO_SIZE,
                 controller: ControllerChoice | None = None) -> Path:
    """Run `episodes` episodes in one fresh world and write them as an MP4 (every 2nd tick).

    Raises:
        RefineDpError: no OpenGL context for offscreen rendering.
    """
    import imageio.v2 as imageio

    env = BatchedEnv(task, 1, threads, seed, task_config)
    low_level = (controller or ControllerChoice()).build(env)
    source = make_source(env)
    session = Session(env, source, low_level)
    fps = round(1.0 / (env.control_dt_s * VIDEO_RENDER_EVERY))
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.partial.mp4")
    try:
        with WorldRenderer(env, *size) as renderer:
            writer = imageio.get_writer(tmp, fps=fps, codec="libx264", macro_block_size=8)
            try:
                writer.append_data(renderer.render(0))

                def frame(tick: int, *_: Any) -> None:
                    # Called before an ended episode's reset: its last state is shown.
                    if tick % VIDEO_RENDER_EVERY == VIDEO_RENDER_EVERY - 1:
                        writer.append_data(renderer.render(0))

                session.run(episodes, stop_on_success=True, on_step=frame)
            finally:
                writer.close()
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


__all__ = ["EvalMetrics", "EvalReport", "HandState", "TickMetrics", "build_report", "evaluate",
           "record_video", "tick_metrics", "write_plots"]
