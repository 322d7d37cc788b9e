"""`info(path)`: counts, success rate, durations and per-field statistics of a dataset."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from datasets.dataset import Dataset

STAT_PREFIXES = ("obs/", "command/", "targets/")


def info(path: Path | str) -> dict:
    """Summary of a dataset (raises DatasetError / SchemaMismatchError on a bad one).

    Returns:
        dict with episodes, successes, success_rate, total_steps, total_duration_s, by_source,
        by_task (episode counts) and fields: {key: {mean, std, min, max}} (lists, one entry per
        flattened column) over all steps of all episodes, for the obs/command/targets arrays.
    """
    dataset = Dataset.open(path)
    ids = dataset.episode_ids()
    by_source: Counter[str] = Counter()
    by_task: Counter[str] = Counter()
    successes = steps = 0
    duration = 0.0
    # Running sums in float64 per field: one pass, one episode in memory at a time.
    sums: dict[str, list[np.ndarray]] = {}
    for episode_id in ids:
        episode = dataset.episode(episode_id)
        a = episode.attrs
        by_source[a.source] += 1
        by_task[a.task] += 1
        successes += int(a.success)
        steps += a.length
        duration += a.duration_s
        for key, value in episode.arrays.items():
            if not key.startswith(STAT_PREFIXES) or a.length == 0:
                continue
            flat = value.reshape(a.length, -1).astype(np.float64)
            acc = sums.get(key)
            part = [flat.sum(0), (flat ** 2).sum(0), flat.min(0), flat.max(0), np.array(len(flat))]
            if acc is None:
                sums[key] = part
            else:
                sums[key] = [acc[0] + part[0], acc[1] + part[1], np.minimum(acc[2], part[2]),
                             np.maximum(acc[3], part[3]), acc[4] + part[4]]
    fields = {}
    for key, (s, s2, lo, hi, n) in sorted(sums.items()):
        mean = s / n
        std = np.sqrt(np.maximum(s2 / n - mean ** 2, 0.0))
        fields[key] = {"mean": mean.tolist(), "std": std.tolist(), "min": lo.tolist(),
                       "max": hi.tolist()}
    return {"path": str(dataset.path), "schema_version": dataset.schema_version,
            "robot": dataset.robot_spec.name, "episodes": len(ids), "successes": successes,
            "success_rate": successes / len(ids) if ids else 0.0, "total_steps": steps,
            "total_duration_s": duration, "by_source": dict(sorted(by_source.items())),
            "by_task": dict(sorted(by_task.items())), "fields": fields}


def format_info(summary: dict) -> str:
    """A human-readable report of `info`'s dict."""
    lines = [(f"dataset {summary['path']} (schema {summary['schema_version']}, robot "
              f"{summary['robot']})"),
             (f"episodes {summary['episodes']}, successes {summary['successes']} "
              f"({100 * summary['success_rate']:.1f} %), steps {summary['total_steps']}, "
              f"duration {summary['total_duration_s'] / 60:.1f} min")]
    for name in ("by_source", "by_task"):
        counts = ", ".join(f"{k}: {v}" for k, v in summary[name].items()) or "none"
        lines.append(f"{name.replace('_', ' ')}: {counts}")
    lines.append(f"{'field':<28} {'cols':>4} {'mean':>9} {'std':>9} {'min':>9} {'max':>9}")
    for key, s in summary["fields"].items():
        # Per-field overview: the range over its columns (full vectors are in the dict).
        lines.append(f"{key:<28} {len(s['mean']):>4} {np.mean(s['mean']):>9.3f} "
                     f"{np.mean(s['std']):>9.3f} {min(s['min']):>9.3f} {max(s['max']):>9.3f}")
    return "\n".join(lines)
