"""The training-process contract: a run folder's `status.json` and `metrics.jsonl`, and SIGTERM.

The app runs `refine-dp pretrain | finetune | train-controller` as a separate process and starts,
watches, cancels and resumes it through this contract only:

    RUN/status.json   one JSON object, replaced atomically (temporary file, fsync, rename) on
                      every change of state or checkpoint and at most every second otherwise:
        version          1
        command          "pretrain" | "finetune" | "train-controller"
        state            "running" | "finished" | "failed" | "cancelled"
        progress         step / total_steps, within [0, 1]
        step             steps done (the loop's unit: gradient steps, PPO iterations, ...)
        total_steps      steps the run ends at
        eta_s            seconds left at the step rate measured since this process started
                         (null until a step has been measured, and once failed or cancelled;
                         0 once finished)
        last_checkpoint  the run's newest checkpoint folder: the one it resumed from until it
                         writes one (null: none yet)
        error            "ExceptionType: message" when failed, else null
        pid              the training process
        started_at       unix time [s] this process started the job
        updated_at       unix time [s] of this write
    RUN/metrics.jsonl  one JSON object per logged step, whatever the loop logs to TensorBoard:
                      {"step": 12, "time_s": 3.4, "train_loss": ..., "lr": ...}. `time_s` is the
                      run's training wall time, continued across resumes; numbers that are not
                      finite are written as null. A run that resumes first drops the lines after
                      its checkpoint, so the file holds one history.

Exit: SIGTERM makes `should_stop` true; the loop finishes its current step, writes a checkpoint
and returns, the state becomes "cancelled" and the command exits with status 0 (status.json tells
a cancelled run from a finished one). Running the same command again resumes from the
checkpoint. An exception sets "failed" with its message and propagates: the command line exits
with 2 for the errors it reports (bad input, `RefineDpError`, `ValueError`) and 1 for others.
Ctrl-C (KeyboardInterrupt) sets "cancelled" without a new checkpoint. A "running" status whose
pid is gone (`pid_alive`) belongs to a run killed outright (SIGKILL, power loss); it resumes
from its latest checkpoint like any other.
"""

from __future__ import annotations

import json
import math
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import TypeVar
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType, TracebackType

# Only the standard library and the error classes: a watcher reads job files without importing
# torch or MuJoCo.
from robot_io.atomic import write_text_atomic
from robot_io.errors import SchemaMismatchError

STATUS_FILE, METRICS_FILE = "status.json", "metrics.jsonl"
STATUS_VERSION = 1
STATES = ("running", "finished", "failed", "cancelled")
COMMANDS = ("pretrain", "finetune", "train-controller")


@dataclass(frozen=True)
class JobStatus:
    """What `status.json` holds (see the module docstring for each field)."""

    command: str
    state: str
    progress: float
    step: int
    total_steps: int
    eta_s: float | None
    last_checkpoint: str | None
    error: str | None
    pid: int
    started_at: float
    updated_at: float

    def __post_init__(self) -> None:
        if self.state not in STATES:
            raise ValueError(f"unknown state {self.state!r}; one of {', '.join(STATES)}")
        if self.command not in COMMANDS:
            raise ValueError(f"unknown command {self.command!r}; one of {', '.join(COMMANDS)}")
        if not 0.0 <= self.progress <= 1.0:
            raise ValueError(f"progress must be within [0, 1], got {self.progress}")

    def to_dict(self) -> dict:
        return {"version": STATUS_VERSION, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict, where: str = "status") -> JobStatus:
        """Raises SchemaMismatchError naming `where` for another version or missing fields."""
        if not isinstance(data, dict) or data.get("version") != STATUS_VERSION:
            raise SchemaMismatchError(f"{where} is not a version-{STATUS_VERSION} job status")
        names = list(cls.__dataclass_fields__)
        missing = [n for n in names if n not in data]
        if missing:
            raise SchemaMismatchError(f"{where} lacks {', '.join(missing)}")
        try:
            return cls(**{n: data[n] for n in names})
        except (TypeError, ValueError) as e:
            raise SchemaMismatchError(f"{where}: {e}") from e


# -- pure functions ----------------------------------------------------------------------------
def progress_fraction(step: int, total_steps: int) -> float:
    """step / total_steps clamped to [0, 1]; 0 while the total is unknown (0)."""
    if total_steps <= 0:
        return 0.0
    return min(1.0, max(0.0, step / total_steps))


def eta_seconds(step: int, total_steps: int, start_step: int, elapsed_s: float) -> float | None:
    """Seconds left at the rate measured since `start_step`: (total - step) * elapsed / done.

    None until a step has been measured (step <= start_step or no time elapsed)."""
    done = step - start_step
    if done <= 0 or elapsed_s <= 0:
        return None
    return max(0, total_steps - step) * elapsed_s / done


def json_safe(metrics: dict) -> dict:
    """`metrics` as strict JSON: numbers as plain floats / ints (0-d tensors and numpy scalars
    too), non-finite ones as None; lists and dicts of those likewise.

    Raises:
        TypeError: a value is none of these (the message names its key).
    """
    return {key: _json_value(value, key) for key, value in metrics.items()}


def _json_value(value: object, key: str) -> object:
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, dict):
        return {str(k): _json_value(v, key) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_value(v, key) for v in value]
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"metric {key!r} is a {type(value).__name__}, not a number, string, "
                        f"list or dict") from None
    return number if math.isfinite(number) else None


def parse_metrics(text: str, where: str = "metrics") -> list[dict]:
    """The records of metrics.jsonl text; a last line without its newline is still being
    written and is left out.

    Raises:
        SchemaMismatchError: a complete line is not a JSON object with a "step".
    """
    lines = text.split("\n")[:-1]  # the part after the last newline is incomplete (or empty)
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as e:
            raise SchemaMismatchError(f"{where} line {number} is not JSON ({e})") from e
        if not isinstance(record, dict) or not isinstance(record.get("step"), int):
            raise SchemaMismatchError(f"{where} line {number} is not an object with a step")
        records.append(record)
    return records


def read_status(run_dir: Path | str) -> JobStatus | None:
    """The job status of `run_dir`, or None when no job has written one yet.

    Raises:
        SchemaMismatchError: status.json is not a job status of this version.
    """
    path = Path(run_dir) / STATUS_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        data = json.loads(text)
    except ValueError as e:
        raise SchemaMismatchError(f"{path} is not JSON ({e})") from e
    return JobStatus.from_dict(data, str(path))


def read_metrics(run_dir: Path | str, skip: int = 0) -> list[dict]:
    """The records of `run_dir`/metrics.jsonl from the `skip`-th on ([] when there is none)."""
    path = Path(run_dir) / METRICS_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    return parse_metrics(text, str(path))[skip:]


def pid_alive(pid: int) -> bool:
    """Whether process `pid` exists (a "running" status with a dead pid was killed)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def write_json_atomic(path: Path, data: dict) -> None:
    """Replace `path` with `data` as strict JSON (`write_text_atomic`)."""
    write_text_atomic(path, json.dumps(data, indent=1, allow_nan=False) + "\n")


T = TypeVar("T")


# -- the job -----------------------------------------------------------------------------------
def within_job(job: TrainingJob | None, run_dir: Path, command: str,
               body: Callable[[TrainingJob], T], write: bool = True) -> T:
    """`body(job)` in the caller's entered job, or in a job of its own for `run_dir` (which
    handles SIGTERM and writes the final status)."""
    if job is not None:
        return body(job)
    with TrainingJob(run_dir, command, write=write) as own:
        return body(own)


class TrainingJob:
    """A training loop's side of the contract, as a context manager.

        with TrainingJob(out, "pretrain") as job:
            ...                                  # set up, resume: failures here count too
            job.start(step, total_steps, resumed_checkpoint)
            while step < total_steps and not job.should_stop:
                ...                              # one step
                job.log(step, train_loss=loss)
                if saved:
                    job.checkpointed(path)
            ...                                  # checkpoint the step it stopped at

    Leaving the block normally sets "cancelled" if a stop was asked for, else "finished"; an
    exception sets "failed" (KeyboardInterrupt: "cancelled") and propagates.

    Args:
        run_dir: the run folder (created).
        command: one of `COMMANDS`.
        handle_sigterm: install a SIGTERM handler that asks the loop to stop (only in the main
            thread; the previous handler is restored on exit).
        write: False writes nothing (the other ranks of a distributed run) but still stops.
        status_interval_s: least time between two status writes for progress alone.
        clock: unix time in seconds (tests pass a fake one).
    """

    def __init__(self, run_dir: Path | str, command: str, *, handle_sigterm: bool = True,
                 write: bool = True, status_interval_s: float = 1.0,
                 clock: Callable[[], float] = time.time) -> None:
        if command not in COMMANDS:
            raise ValueError(f"unknown command {command!r}; one of {', '.join(COMMANDS)}")
        if status_interval_s < 0:
            raise ValueError(f"status_interval_s must be >= 0, got {status_interval_s}")
        self.run_dir = Path(run_dir)
        self.command = command
        self._handle_sigterm, self._write = handle_sigterm, write
        self._interval_s, self._clock = status_interval_s, clock
        self._stop = threading.Event()
        self._previous_handler: object = None
        self._installed = False
        self._metrics_file = None
        self.state = "running"
        self.step = self.total_steps = self._start_step = 0
        self.last_checkpoint: str | None = None
        self.error: str | None = None
        self._started_at = self._t0 = self._last_write = 0.0
        self._time_offset_s = 0.0
        self._logged_since_start = False

    # -- stopping ------------------------------------------------------------------------------
    @property
    def should_stop(self) -> bool:
        """True once SIGTERM arrived or `request_stop` was called: end after this step."""
        return self._stop.is_set()

    def request_stop(self) -> None:
        """Ask the loop to stop after its current step (what SIGTERM does); thread-safe."""
        self._stop.set()

    def _on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        self._stop.set()

    # -- the loop's calls ----------------------------------------------------------------------
    def start(self, step: int, total_steps: int, checkpoint: Path | str | None = None) -> None:
        """The loop begins at `step` (0, or that of `checkpoint` when resuming) of
        `total_steps`: metrics.jsonl loses the lines after `step`, and the step rate is measured
        from here."""
        self.step = self._start_step = step
        self.total_steps = total_steps
        if checkpoint is not None:
            self.last_checkpoint = str(checkpoint)
        if self._write:
            self._time_offset_s = self._trim_metrics(step)
            self._metrics_file = open(self.run_dir / METRICS_FILE, "a", encoding="utf-8")
        self._t0 = self._clock()
        self._write_status(force=True)

    def set_total_steps(self, total_steps: int) -> None:
        """A new estimate of the steps the run ends at (e.g. a time budget ends it earlier)."""
        self.total_steps = total_steps

    def log(self, step: int, **metrics: object) -> None:
        """Record step `step`: a metrics.jsonl line, and the status when it is due."""
        if "time_s" in metrics:
            raise ValueError("time_s is the job's own field of every metrics record")
        self.step = step
        if self._metrics_file is not None:
            record = {"step": step, "time_s": round(self.elapsed_s, 3), **json_safe(metrics)}
            self._metrics_file.write(json.dumps(record, allow_nan=False) + "\n")
            self._metrics_file.flush()
        first = not self._logged_since_start
        self._logged_since_start = True
        self._write_status(force=first or step >= self.total_steps)

    def checkpointed(self, path: Path | str) -> None:
        """A checkpoint of the current step was written to `path`."""
        self.last_checkpoint = str(path)
        self._write_status(force=True)

    @property
    def elapsed_s(self) -> float:
        """The run's training wall time: earlier sessions' plus this one's since `start`."""
        return self._time_offset_s + max(0.0, self._clock() - self._t0)

    def status(self) -> JobStatus:
        """The status as it stands."""
        now = self._clock()
        eta = eta_seconds(self.step, self.total_steps, self._start_step, now - self._t0)
        if self.state != "running":
            eta = 0.0 if self.state == "finished" else None
        return JobStatus(command=self.command, state=self.state,
                         progress=progress_fraction(self.step, self.total_steps),
                         step=self.step, total_steps=self.total_steps,
                         eta_s=None if eta is None else round(eta, 1),
                         last_checkpoint=self.last_checkpoint, error=self.error,
                         pid=os.getpid(), started_at=self._started_at, updated_at=now)

    # -- context -----------------------------------------------------------------------------
    def __enter__(self) -> TrainingJob:
        if self._write:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        self._started_at = self._t0 = self._clock()
        if self._handle_sigterm and threading.current_thread() is threading.main_thread():
            self._previous_handler = signal.signal(signal.SIGTERM, self._on_sigterm)
            self._installed = True
        self._write_status(force=True)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> bool:
        try:
            if self._metrics_file is not None:
                self._metrics_file.close()
                self._metrics_file = None
            if exc is None:
                self.state = "cancelled" if self.should_stop else "finished"
            elif isinstance(exc, KeyboardInterrupt):
                self.state = "cancelled"
            else:
                self.state, self.error = "failed", f"{type(exc).__name__}: {exc}"
            self._write_status(force=True)
        finally:
            # After the last write: a SIGTERM now must not kill the process before it.
            if self._installed:
                # None: the previous handler was not installed from Python; the default is
                # the closest to it.
                previous = self._previous_handler
                signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
                self._installed = False
        return False

    # -- files -------------------------------------------------------------------------------
    def _write_status(self, force: bool) -> None:
        if not self._write:
            return
        now = self._clock()
        if not force and now - self._last_write < self._interval_s:
            return
        write_json_atomic(self.run_dir / STATUS_FILE, self.status().to_dict())
        self._last_write = now

    def _trim_metrics(self, step: int) -> float:
        """Drop the records after `step`; the time_s of the last one kept (0.0: none).

        A file this module cannot read (damaged, or written before the contract) is kept as
        metrics.jsonl.old and a new one begins: a log must not stop a run from resuming."""
        path = self.run_dir / METRICS_FILE
        if not path.is_file():
            return 0.0
        text = path.read_text(encoding="utf-8")
        try:
            records = parse_metrics(text, str(path))
        except SchemaMismatchError:
            path.replace(path.with_name(METRICS_FILE + ".old"))
            return 0.0
        kept = [r for r in records if r["step"] <= step]
        if len(kept) != len(records) or (text and not text.endswith("\n")):
            write_text_atomic(path, "".join(json.dumps(r, allow_nan=False) + "\n" for r in kept))
        times = [r["time_s"] for r in kept if isinstance(r.get("time_s"), (int, float))]
        return float(times[-1]) if times else 0.0
