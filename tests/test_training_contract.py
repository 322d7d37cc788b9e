"""The training-process contract (`learning.progress`): status.json, metrics.jsonl, SIGTERM.

The progress module's numbers are checked by hand; pretrain is stopped with a real SIGTERM as
a `refine-dp pretrain` subprocess and resumed; finetune and train-controller are stopped through
the job's public `request_stop` (what the SIGTERM handler calls). Toy sizes throughout.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from learning.checkpoint import load_checkpoint
from learning.controller.dagger import DaggerConfig
from learning.controller.ppo import PPOConfig
from learning.controller.train import (ControllerTrainConfig, expected_ppo_iterations,
                                       train_controller)
from learning.data import Windows
from learning.planner import Planner
from learning.pretrain import PretrainConfig, pretrain, with_policy
from learning.progress import (JobStatus, TrainingJob, eta_seconds, json_safe, parse_metrics,
                               pid_alive, progress_fraction, read_metrics, read_status)
from learning.rl.finetune import FinetuneConfig, finetune
from robot_io.errors import SchemaMismatchError
from teleop_app.cli import main
from teleop_app.collect import collect

TINY_FLAGS = ["--batch-size", "8", "--width", "32", "--depth", "1", "--heads", "2",
              "--denoising-steps", "4", "--ddim-steps", "2", "--pred-horizon", "8",
              "--act-steps", "4", "--threads", "1", "--no-progress"]


def quiet(*_: object) -> None:
    """A `log` that drops the progress messages."""


class StopAfter(TrainingJob):
    """A job that asks its loop to stop once step `n` is logged, as SIGTERM would."""

    def __init__(self, run_dir: Path, command: str, n: int) -> None:
        super().__init__(run_dir, command, handle_sigterm=False)
        self.n = n

    def log(self, step: int, **metrics: object) -> None:
        super().log(step, **metrics)
        if step >= self.n:
            self.request_stop()


class FakeClock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


# -- the progress module -----------------------------------------------------------------------
def test_progress_and_eta_hand_computed() -> None:
    assert progress_fraction(25, 100) == 0.25
    assert progress_fraction(150, 100) == 1.0 and progress_fraction(3, 0) == 0.0
    # resumed at 10, 20 steps in 40 s: 0.5 step/s, 70 steps left -> 140 s
    assert eta_seconds(30, 100, 10, 40.0) == 140.0
    assert eta_seconds(100, 100, 0, 10.0) == 0.0
    assert eta_seconds(10, 100, 10, 40.0) is None  # nothing measured yet
    assert eta_seconds(12, 100, 10, 0.0) is None
    # a 120 s budget at 5 s per iteration ends after ceil(24) iterations; 100 s after exactly 20
    assert expected_ppo_iterations(10, 50.0, 1000, 120.0) == 24
    assert expected_ppo_iterations(10, 50.0, 1000, 100.0) == 20
    assert expected_ppo_iterations(10, 50.0, 15, 120.0) == 15  # the iterations end it first
    assert expected_ppo_iterations(10, 50.0, 1000, 30.0) == 10  # never below what was done
    assert expected_ppo_iterations(10, 50.0, 1000, 0.0) == 1000  # no budget


def test_json_safe_writes_strict_json() -> None:
    safe = json_safe({"loss": torch.tensor(0.5), "rate": float("nan"), "n": 3, "phase": "ppo",
                      "inf": float("inf"), "flag": True, "per_arm": [0.25, float("nan")],
                      "terms": {"pos": torch.tensor(1.5)}})
    assert safe == {"loss": 0.5, "rate": None, "n": 3, "phase": "ppo", "inf": None, "flag": True,
                    "per_arm": [0.25, None], "terms": {"pos": 1.5}}
    assert json.loads(json.dumps(safe, allow_nan=False)) == safe
    with pytest.raises(TypeError, match="metric 'net' is a Linear"):
        json_safe({"net": torch.nn.Linear(1, 1)})


def test_job_status_and_metrics_with_a_measured_eta(tmp_path: Path) -> None:
    clock = FakeClock(1000.0)
    run = tmp_path / "run"
    job = TrainingJob(run, "finetune", handle_sigterm=False, status_interval_s=0.0, clock=clock)
    with job:
        status = read_status(run)
        assert status.state == "running" and status.step == 0 and status.eta_s is None
        job.start(10, 110, checkpoint=run / "ckpt-0000010")  # resumed at step 10 of 110
        clock.t = 1020.0
        job.log(15, success_rate=0.5, kl=float("nan"))
        status = read_status(run)
        # 5 steps in 20 s: 4 s per step, 95 left -> 380 s
        assert (status.step, status.total_steps, status.eta_s) == (15, 110, 380.0)
        assert status.progress == pytest.approx(15 / 110)
        assert status.last_checkpoint == str(run / "ckpt-0000010")
        assert (status.pid, status.started_at, status.updated_at) == (os.getpid(), 1000.0,
                                                                       1020.0)
        clock.t = 1030.0
        job.checkpointed(run / "ckpt-0000015")
        job.request_stop()
    status = read_status(run)
    assert status.state == "cancelled" and status.eta_s is None and status.error is None
    assert status.last_checkpoint == str(run / "ckpt-0000015")
    assert read_metrics(run) == [{"step": 15, "time_s": 20.0, "success_rate": 0.5, "kl": None}]
    raw = json.loads((run / "status.json").read_text())
    assert raw["version"] == 1 and raw["command"] == "finetune"
    assert set(raw) == {"version", "command", "state", "progress", "step", "total_steps",
                        "eta_s", "last_checkpoint", "error", "pid", "started_at", "updated_at"}


def test_status_is_written_at_most_every_interval(tmp_path: Path) -> None:
    clock = FakeClock(0.0)
    with TrainingJob(tmp_path, "pretrain", handle_sigterm=False, status_interval_s=1.0,
                     clock=clock) as job:
        job.start(0, 100)
        clock.t = 0.1
        job.log(1)  # the first step is written at once, so a watcher sees the run moving
        clock.t = 0.5
        job.log(2)
        assert read_status(tmp_path).step == 1
        clock.t = 1.2
        job.log(3)
        assert read_status(tmp_path).step == 3
        job.log(100)  # the last step is written at once
        assert read_status(tmp_path).progress == 1.0
    status = read_status(tmp_path)
    assert status.state == "finished" and status.eta_s == 0.0
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2, 3, 100]


def test_status_writes_are_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The status goes to a temporary file that is fsynced before it replaces status.json; a
    write that fails leaves the previous status whole and no temporary file behind."""
    job = TrainingJob(tmp_path, "pretrain", handle_sigterm=False, status_interval_s=0.0)
    events: list[tuple] = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: events.append(("fsync",)) or real_fsync(fd))
    monkeypatch.setattr(os, "replace",
                        lambda a, b: events.append(("replace", Path(a), Path(b)))
                        or real_replace(a, b))
    with job:
        job.start(0, 10)
        before = (tmp_path / "status.json").read_text()
        last = max(i for i, event in enumerate(events) if event[0] == "replace")
        _, tmp, target = events[last]
        assert target == tmp_path / "status.json" and tmp.parent == tmp_path and tmp != target
        # the file is fsynced before the rename, the folder after it
        assert events[last - 1] == ("fsync",) and events[last + 1:] == [("fsync",)]

        def broken(a: str, b: str) -> None:
            raise OSError("disk full")

        monkeypatch.setattr(os, "replace", broken)
        with pytest.raises(OSError, match="disk full"):
            job.checkpointed(tmp_path / "ckpt-0000003")
        assert (tmp_path / "status.json").read_text() == before
        assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.jsonl", "status.json"]
        monkeypatch.setattr(os, "replace", real_replace)


def test_a_resumed_job_drops_metrics_after_its_checkpoint(tmp_path: Path) -> None:
    clock = FakeClock(0.0)
    with TrainingJob(tmp_path, "pretrain", handle_sigterm=False, clock=clock) as job:
        job.start(0, 10)
        for step in range(1, 6):
            clock.t = 2.0 * step
            job.log(step, loss=1.0 / step)
    with open(tmp_path / "metrics.jsonl", "a", encoding="utf-8") as f:
        f.write('{"step": 6, "ti')  # killed while writing a line
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2, 3, 4, 5]  # the part is skipped
    clock.t = 100.0
    with TrainingJob(tmp_path, "pretrain", handle_sigterm=False, clock=clock) as job:
        job.start(3, 10)  # the checkpoint was at step 3
        clock.t = 103.0
        job.log(4, loss=0.2)
    records = read_metrics(tmp_path)
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    assert records[2]["time_s"] == 6.0 and records[3]["time_s"] == 9.0  # 6 s before + 3 s

    # a log of another format (fine-tuning's before the contract) is set aside, not fatal
    old = '{"iteration": 1, "success_rate": 0.5}\n'
    (tmp_path / "metrics.jsonl").write_text(old)
    with TrainingJob(tmp_path, "finetune", handle_sigterm=False, clock=clock) as job:
        job.start(1, 10)
        job.log(2, success_rate=0.6)
    assert (tmp_path / "metrics.jsonl.old").read_text() == old
    assert read_metrics(tmp_path) == [{"step": 2, "time_s": 0.0, "success_rate": 0.6}]


def test_reading_damaged_files_names_them(tmp_path: Path) -> None:
    assert read_status(tmp_path) is None and read_metrics(tmp_path) == []
    assert parse_metrics('{"step": 1}\n\n{"step": 2}\n{"st') == [{"step": 1}, {"step": 2}]
    with pytest.raises(SchemaMismatchError, match="line 2 is not JSON"):
        parse_metrics('{"step": 1}\nnot json\n')
    with pytest.raises(SchemaMismatchError, match="line 1 is not an object with a step"):
        parse_metrics('{"loss": 1}\n')
    (tmp_path / "status.json").write_text('{"version": 1, "state": "running"}')
    with pytest.raises(SchemaMismatchError, match="status.json lacks command"):
        read_status(tmp_path)
    (tmp_path / "status.json").write_text("{")
    with pytest.raises(SchemaMismatchError, match="status.json is not JSON"):
        read_status(tmp_path)
    with pytest.raises(SchemaMismatchError, match="unknown state 'paused'"):
        JobStatus.from_dict({**_status_dict(), "state": "paused"})
    assert pid_alive(os.getpid())


def _status_dict() -> dict:
    return {"version": 1, "command": "pretrain", "state": "running", "progress": 0.0, "step": 0,
            "total_steps": 1, "eta_s": None, "last_checkpoint": None, "error": None, "pid": 1,
            "started_at": 0.0, "updated_at": 0.0}


def test_sigterm_asks_to_stop_and_the_handler_is_restored(tmp_path: Path) -> None:
    before = signal.getsignal(signal.SIGTERM)
    with TrainingJob(tmp_path, "pretrain") as job:
        assert signal.getsignal(signal.SIGTERM) != before
        assert not job.should_stop
        signal.raise_signal(signal.SIGTERM)  # the handler runs before this call returns
        assert job.should_stop
    assert signal.getsignal(signal.SIGTERM) == before
    assert read_status(tmp_path).state == "cancelled"

    seen = []

    def in_a_thread() -> None:
        with TrainingJob(tmp_path / "t", "pretrain"):
            seen.append(signal.getsignal(signal.SIGTERM))

    thread = threading.Thread(target=in_a_thread)
    thread.start()
    thread.join()
    assert seen == [before]  # only the main thread may install a handler


def test_an_exception_fails_the_job_and_propagates(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="disk gone"):
        with TrainingJob(tmp_path, "train-controller", handle_sigterm=False) as job:
            job.start(0, 5)
            job.log(1)
            raise RuntimeError("disk gone")
    status = read_status(tmp_path)
    assert (status.state, status.error, status.step) == ("failed", "RuntimeError: disk gone", 1)
    with pytest.raises(KeyboardInterrupt):
        with TrainingJob(tmp_path, "train-controller", handle_sigterm=False):
            raise KeyboardInterrupt
    assert read_status(tmp_path).state == "cancelled"


# -- pretrain: a real process, SIGTERM, resume ---------------------------------------------------
@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("data") / "box"
    report = collect("box_pickup", "heuristic", episodes=2, worlds=2, out=out, threads=1,
                     progress=False)
    assert report.total_successes == 2
    return out


REPO_ROOT = Path(__file__).resolve().parents[1]
ENDLESS = 1_000_000  # steps far beyond what the test waits for: only SIGTERM ends these runs


def _start_pretrain(data: Path, out: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "teleop_app.cli", "pretrain", "--data", str(data), "--out",
           str(out), "--steps", str(ENDLESS), "--checkpoint-every", str(ENDLESS), *TINY_FLAGS]
    return subprocess.Popen(cmd, cwd=REPO_ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _same_as_the_command(data: Path, out: Path) -> PretrainConfig:
    """The config `_start_pretrain`'s command line builds."""
    cfg = PretrainConfig(data=data, out=out, steps=ENDLESS, batch_size=8,
                         checkpoint_every=ENDLESS)
    return with_policy(cfg, width=32, depth=1, heads=2, denoising_steps=4, ddim_steps=2,
                       pred_horizon=8, act_steps=4)


def _wait_for_step(run: Path, proc: subprocess.Popen, step: int, timeout_s: float = 180.0
                   ) -> JobStatus:
    """Poll run/status.json until `proc` reports running at `step` or beyond."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = read_status(run)
        if status is not None and status.pid == proc.pid and status.state == "running" \
                and status.step >= step:
            return status
        if proc.poll() is not None:
            pytest.fail(f"pretrain exited with {proc.returncode}: {proc.stderr.read()[-2000:]}")
        time.sleep(0.02)
    pytest.fail(f"{run} did not reach step {step} within {timeout_s} s")


def _terminate(proc: subprocess.Popen) -> str:
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    return out


def test_sigterm_checkpoints_pretrain_and_a_rerun_continues_the_same_run(
        dataset: Path, tmp_path: Path) -> None:
    """`refine-dp pretrain` stopped by SIGTERM twice and run again ends where the same run
    without interruption does, bit for bit: the data order, noise, optimiser, EMA and smoothed
    loss all continue from the checkpoint it wrote on the signal."""
    cut = tmp_path / "cut"
    procs: list[subprocess.Popen] = []
    try:
        procs.append(_start_pretrain(dataset, cut))
        _wait_for_step(cut, procs[-1], 1)
        _terminate(procs[-1])
        status = read_status(cut)
        k1 = status.step
        assert status.state == "cancelled" and k1 >= 1 and status.error is None
        assert status.last_checkpoint == str(cut / f"ckpt-{k1:07d}")
        assert Planner.load(status.last_checkpoint).meta["metrics"]["step"] == k1
        assert [r["step"] for r in read_metrics(cut)] == list(range(1, k1 + 1))

        procs.append(_start_pretrain(dataset, cut))
        _wait_for_step(cut, procs[-1], k1 + 3)
        assert f"resuming {cut} from step {k1} of {ENDLESS}" in _terminate(procs[-1])
        status = read_status(cut)
        k2 = status.step
        assert status.state == "cancelled" and k2 >= k1 + 3
        assert status.last_checkpoint == str(cut / f"ckpt-{k2:07d}")
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()

    full = tmp_path / "full"  # the same run without interruption, stopped at k2 here
    with StopAfter(full, "pretrain", k2) as job:
        pretrain(_same_as_the_command(dataset, full), progress=False, log=quiet, job=job)
    for name in ("policy.safetensors", "train.safetensors"):
        want = load_file(str(full / f"ckpt-{k2:07d}" / name))
        got = load_file(str(cut / f"ckpt-{k2:07d}" / name))
        assert want.keys() == got.keys()
        assert all(torch.equal(want[k], got[k]) for k in want), name
    got, want = read_metrics(cut), read_metrics(full)
    assert [r["step"] for r in got] == [r["step"] for r in want] == list(range(1, k2 + 1))
    keys = ("train_loss", "train_loss_avg", "lr")
    assert [[r[k] for k in keys] for r in got] == [[r[k] for k in keys] for r in want]
    times = [r["time_s"] for r in got]
    assert times == sorted(times)  # the clock of the run continues across the restarts


def test_an_error_during_pretraining_fails_the_run(dataset: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"n": 0}
    real_batch = Windows.batch

    def breaking(self: Windows, *args: object) -> object:
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("the dataset's disk went away")
        return real_batch(self, *args)

    monkeypatch.setattr(Windows, "batch", breaking)
    cfg = with_policy(PretrainConfig(data=dataset, out=tmp_path / "run", steps=10, batch_size=8,
                                     warmup_steps=2, valid_episodes=1, checkpoint_every=5),
                      width=32, depth=1, heads=2, denoising_steps=4, ddim_steps=2,
                      pred_horizon=8, act_steps=4)
    with pytest.raises(OSError, match="disk went away"):
        pretrain(cfg, progress=False, log=quiet)
    status = read_status(tmp_path / "run")
    assert status.state == "failed" and status.step == 2
    assert status.error == "OSError: the dataset's disk went away"
    assert status.last_checkpoint is None
    assert [r["step"] for r in read_metrics(tmp_path / "run")] == [1, 2]


def test_cli_pretrain_on_a_missing_dataset_writes_failed(tmp_path: Path,
                                                         capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    assert main(["pretrain", "--data", str(tmp_path / "nowhere"), "--out", str(out),
                 *TINY_FLAGS]) == 2
    status = read_status(out)
    assert status.state == "failed" and status.command == "pretrain"
    assert status.error.startswith("DatasetError: no dataset at ")
    assert "no dataset at" in capsys.readouterr().err


# -- finetune ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def policy_run(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "dit"
    cfg = with_policy(PretrainConfig(data=dataset, out=run, steps=4, batch_size=8,
                                     warmup_steps=2, valid_episodes=1, checkpoint_every=4),
                      width=32, depth=1, heads=2, denoising_steps=6, ddim_steps=3,
                      pred_horizon=8, act_steps=4)
    pretrain(cfg, progress=False, log=quiet)
    status = read_status(run)
    assert (status.state, status.step, status.progress, status.eta_s) == ("finished", 4, 1.0,
                                                                          0.0)
    assert status.last_checkpoint == str(run / "ckpt-0000004")
    records = read_metrics(run)
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    assert {"train_loss", "train_loss_avg", "lr", "time_s"} <= set(records[0])
    assert "valid_loss" in records[-1]
    return run


def test_finetune_stops_with_a_checkpoint_and_resumes_to_the_end(policy_run: Path,
                                                                 tmp_path: Path) -> None:
    out = tmp_path / "ft"
    cfg = FinetuneConfig(policy=policy_run, out=out, iterations=2, worlds=2, steps_per_iter=1,
                         ft_steps=2, critic_warmup_iters=0, epochs=1, minibatch=64, threads=1)
    with StopAfter(out, "finetune", 1) as job:
        finetune(cfg, progress=False, log=quiet, job=job)
    status = read_status(out)
    assert (status.state, status.step, status.total_steps) == ("cancelled", 1, 2)
    assert status.last_checkpoint == str(out / "ckpt-0000001")
    assert Planner.load(status.last_checkpoint).meta["finetune"]["iterations"] == 1
    messages: list[str] = []
    finetune(cfg, progress=False, log=messages.append)
    assert messages == [f"resuming {out} at iteration 1 of 2"]
    status = read_status(out)
    assert (status.state, status.step, status.progress) == ("finished", 2, 1.0)
    assert status.last_checkpoint == str(out / "ckpt-0000002")
    records = read_metrics(out)
    assert [r["step"] for r in records] == [1, 2]
    assert {"success_rate", "episodes", "v_loss", "widen"} <= set(records[0])
    assert "iteration" not in records[0] and "wall_s" not in records[0]


# -- train-controller ----------------------------------------------------------------------------
def _controller_cfg(out: Path, part: str, dagger_iterations: int) -> ControllerTrainConfig:
    return ControllerTrainConfig(
        part=part, out=str(out), worlds=2, threads=1, eval_worlds=2, eval_every=1,
        dagger=DaggerConfig(iterations=dagger_iterations, horizon=4, buffer_size=256,
                            batch_size=8, max_steps=2),
        ppo=PPOConfig(iterations=3, horizon=4, epochs=1, minibatches=1, actor_hidden=(8,),
                      critic_hidden=(8,)))


def test_train_controller_stops_in_ppo_with_a_checkpoint_and_resumes(tmp_path: Path) -> None:
    out = tmp_path / "run"
    cfg = _controller_cfg(out, "lower", 0)
    with StopAfter(out, "train-controller", 1) as job:
        result = train_controller(cfg, progress=False, log=quiet, job=job)
    assert result == {"part": "lower", "state": "cancelled", "ppo_iterations": 1}
    status = read_status(out)
    assert (status.state, status.step, status.total_steps) == ("cancelled", 1, 3)
    assert status.last_checkpoint == str(out / "ppo" / "ckpt-0000001")
    assert load_checkpoint(status.last_checkpoint, train=True).train_meta["state"][
        "iteration"] == 1
    metrics = train_controller(cfg, progress=False, log=quiet)
    assert metrics["ppo_iterations"] == 3
    status = read_status(out)
    assert (status.state, status.step, status.progress) == ("finished", 3, 1.0)
    assert status.last_checkpoint == str(out / "ppo" / "ckpt-0000003")
    records = read_metrics(out)
    assert [(r["step"], r["phase"]) for r in records] == [(1, "ppo"), (2, "ppo"), (3, "ppo")]
    assert {"reward_per_step", "env_steps", "lr"} <= set(records[0])


def test_train_controller_stopped_in_dagger_starts_it_over(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with StopAfter(out, "train-controller", 1) as job:
        result = train_controller(_controller_cfg(out, "upper", 3), progress=False, log=quiet,
                                  job=job)
    assert result["state"] == "cancelled"
    status = read_status(out)
    assert (status.state, status.step, status.total_steps) == ("cancelled", 1, 6)
    assert status.last_checkpoint is None and not (out / "warm_start").exists()
    assert [(r["step"], r["phase"]) for r in read_metrics(out)] == [(1, "dagger")]
