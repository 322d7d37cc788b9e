"""The status bar of the live session: one frozen `StatusModel` made from the runner's latest
snapshot, its pacing stats and the recorder's counts, and `format_status` for a one-line view.

Pure functions of immutable inputs: the GUI calls `LiveSession.status()` on a timer and shows
what it returns; nothing here touches the loop or Qt.
"""

from __future__ import annotations

from dataclasses import dataclass

from robot_io.runner import Snapshot
from robot_io.safety import SafetyCounters
from robot_io.tick_stats import RunnerStats


@dataclass(frozen=True)
class PlannerProgress:
    """A planner run (`LiveSession.run_planner`): N episodes, then back to the previous source.

    Attributes:
        name: the planner's source name ("heuristic", "scripted", ...).
        episodes: episodes asked for.
        done: episodes that ended and were kept (success, time-out, or an operator's label);
            a discarded episode is run again and not counted.
        successes: of `done`, those labelled successful.
        recording: the run's episodes go into the open dataset.
        finished: all `episodes` are done and the previous source has taken over again.
        cancelled: the run was cancelled (`cancel_planner`, `set_source`, a rebuild).
    """

    name: str
    episodes: int
    done: int = 0
    successes: int = 0
    recording: bool = False
    finished: bool = False
    cancelled: bool = False

    @property
    def active(self) -> bool:
        return not (self.finished or self.cancelled)


@dataclass(frozen=True)
class RecordingStatus:
    """An open recording.

    Attributes:
        dataset: the dataset folder.
        episode_id: the id the running episode gets if it is saved.
        saved: episodes saved since the recording started (files written or being written).
        dataset_episodes: episodes in the dataset, those being written included.
    """

    dataset: str
    episode_id: int
    saved: int
    dataset_episodes: int


@dataclass(frozen=True)
class StatusModel:
    """What the status bar shows.

    Attributes:
        task, controller, source: names of the running task, controller and command source.
        rate_hz, target_rate_hz: measured tick rate (last 50 ticks; 0.0 before two) and the
            rate asked for.
        ticks, late_ticks: paced ticks so far and how many started late (over 2 ms).
        jitter_p99_ms: p99 of tick start minus deadline (None before the first stats).
        command_age_s: age of the newest operator input (None: the source is not an operator
            stream, e.g. a planner).
        applied: the latest tick sent a command (False under STOP or a safe mode).
        running, paused: the loop is ticking; it is paused.
        safety: "ok", "hold", "safe mode" or "stopped".
        safety_reason: why it is stopped or in safe mode ("" otherwise).
        interventions: the safety filter's counters in a few words.
        episode_id: the session's running episode (None between episodes).
        episode_time_s: how long the running episode has run.
        recording: the open recording, or None.
        planner: the latest planner run (running, finished or cancelled), or None.
        error: the runner's latest error, or None.
    """

    task: str
    controller: str
    source: str
    rate_hz: float
    target_rate_hz: float
    ticks: int
    late_ticks: int
    jitter_p99_ms: float | None
    command_age_s: float | None
    applied: bool
    running: bool
    paused: bool
    safety: str
    safety_reason: str
    interventions: str
    episode_id: int | None
    episode_time_s: float
    recording: RecordingStatus | None
    planner: PlannerProgress | None
    error: str | None


def summarize_interventions(c: SafetyCounters) -> str:
    """The safety counters that are not zero, e.g. "clamps: base 3, joint step 12; stops 1"."""
    clamps = [(n, v) for n, v in (("base", c.base_clamped), ("hands", c.hand_clamped),
                                  ("joint band", c.joint_band_clamped),
                                  ("joint step", c.joint_step_clamped)) if v]
    parts = ["clamps: " + ", ".join(f"{n} {v}" for n, v in clamps)] if clamps else []
    parts += [f"{n} {v}" for n, v in (("watchdog holds", c.watchdog_holds),
                                      ("safe modes", c.safe_mode_entries),
                                      ("invalid commands", c.invalid_commands),
                                      ("invalid targets", c.invalid_targets),
                                      ("stops", c.stops)) if v]
    return "; ".join(parts) if parts else "no interventions"


def make_status(snapshot: Snapshot, *, task: str, controller: str, source: str,
                control_dt_s: float, target_rate_hz: float, stats: RunnerStats | None = None,
                recording: RecordingStatus | None = None,
                planner: PlannerProgress | None = None) -> StatusModel:
    """The status bar's model from the latest snapshot, the runner's stats and the recorder."""
    safety = snapshot.safety
    steps = snapshot.episode_steps[0] if snapshot.episode_steps else 0
    return StatusModel(
        task=task, controller=controller, source=source, rate_hz=snapshot.rate_hz,
        target_rate_hz=target_rate_hz, ticks=snapshot.paced_ticks,
        late_ticks=snapshot.late_ticks,
        jitter_p99_ms=stats.jitter_p99_ms if stats is not None and stats.ticks else None,
        command_age_s=snapshot.input_age_s, applied=snapshot.applied, running=snapshot.running,
        paused=snapshot.paused, safety=safety.state.value, safety_reason=safety.reason,
        interventions=summarize_interventions(safety.counters),
        episode_id=snapshot.episode_ids[0] if snapshot.episode_ids else None,
        episode_time_s=steps * control_dt_s, recording=recording, planner=planner,
        error=snapshot.error)


def format_status(status: StatusModel) -> str:
    """One line for a status bar, e.g.
    "50.0/50 Hz, late 0/1500 | input 12 ms | reference | keyboard | ok | REC ep 3 (12.4 s),
    5 in /data/pick | heuristic 1/2 (1 ok)"."""
    s = status
    parts = [f"{s.rate_hz:.1f}/{s.target_rate_hz:g} Hz, late {s.late_ticks}/{s.ticks}"]
    parts.append("input -" if s.command_age_s is None
                 else f"input {1e3 * s.command_age_s:.0f} ms")
    parts += [s.controller, s.source]
    safety = s.safety if not s.safety_reason else f"{s.safety} ({s.safety_reason})"
    if s.interventions != "no interventions":
        safety += f" [{s.interventions}]"
    parts.append(safety.upper() if s.safety == "stopped" else safety)
    if s.recording is not None:
        r = s.recording
        parts.append(f"REC ep {r.episode_id} ({s.episode_time_s:.1f} s), {r.dataset_episodes} "
                     f"in {r.dataset}")
    else:
        parts.append(f"not recording ({s.episode_time_s:.1f} s)")
    if s.planner is not None and s.planner.active:
        p = s.planner
        parts.append(f"{p.name} {p.done}/{p.episodes} ({p.successes} ok)")
    if s.paused:
        parts.append("paused")
    if s.error:
        parts.append(f"error: {s.error}")
    return " | ".join(parts)


__all__ = ["PlannerProgress", "RecordingStatus", "StatusModel", "format_status", "make_status",
           "summarize_interventions"]
