"""`refine-dp collect` end to end: real processes, real HDF5 files, a real SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from datasets.dataset import Dataset
from datasets.validate import validate
from teleop_app.collect import collect

CLI = [sys.executable, "-c", "from teleop_app.cli import main; raise SystemExit(main())"]


def _collect_cmd(out: Path, episodes: int) -> list[str]:
    return CLI + ["collect", "--task", "box_pickup", "--source", "scripted", "--episodes",
                  str(episodes), "--worlds", "2", "--threads", "1", "--out", str(out),
                  "--no-progress"]


def test_collect_writes_successes_and_continues(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    first = collect("box_pickup", "scripted", episodes=2, worlds=2, out=out, threads=1,
                    progress=False)
    assert first.total_successes == 2 and first.successes_written == 2
    ids = Dataset.open(out).episode_ids()
    assert len(ids) == 2
    again = collect("box_pickup", "scripted", episodes=3, worlds=2, out=out, threads=1,
                    progress=False)
    assert again.total_successes == 3
    new_ids = Dataset.open(out).episode_ids()
    assert new_ids[:2] == ids and len(new_ids) == 3 and new_ids[2] > max(ids)
    assert collect("box_pickup", "scripted", episodes=3, worlds=2, out=out, threads=1,
                   progress=False).episodes_run == 0


def test_sigkill_mid_collect_keeps_finished_episodes(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    proc = subprocess.Popen(_collect_cmd(out, 40), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    episodes = out / "episodes"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if episodes.is_dir() and len(list(episodes.glob("*.h5"))) >= 3:
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.stderr.read().decode()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    errors = [p for p in validate(out) if p.level == "error"]
    assert errors == [], errors
    dataset = Dataset.open(out)
    kept = dataset.episode_ids()
    assert len(kept) >= 3
    for episode_id in kept:  # every finished episode is whole and readable
        episode = dataset.episode(episode_id)
        assert episode.attrs.success
        assert episode.arrays["obs/joint_pos"].shape == (episode.attrs.length, 29)
    done = subprocess.run(_collect_cmd(out, len(kept) + 1), capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode()
    after = Dataset.open(out).episode_ids()
    assert after[:len(kept)] == kept and len(after) == len(kept) + 1
    assert validate(out) == []


def test_replay_reproduces_a_recorded_episode_exactly(tmp_path: Path) -> None:
    from datasets.replay import replay_episode

    out = tmp_path / "ds"
    collect("box_pickup", "scripted", episodes=2, worlds=2, out=out, threads=1, progress=False)
    episode_id = Dataset.open(out).episode_ids()[1]
    report = replay_episode(out, episode_id)
    assert report.steps > 100
    assert report.max_obs_divergence <= 1e-6 and report.max_state_divergence <= 1e-6
    assert report.recorded_success and report.replayed_success
