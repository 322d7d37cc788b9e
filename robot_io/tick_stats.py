"""`TickStats`: timing of paced ticks (jitter, lateness, compute time) in ring buffers.

Jitter is a tick's start minus its deadline; a tick is late when it starts more than
`late_after_s` after its deadline. Totals count every tick; percentiles cover the last
`capacity` ticks. One thread records; any thread may read a summary (while ticks are being
recorded a summary may be off by the tick in flight).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LATE_AFTER_S = 0.002
RATE_WINDOW = 50  # ticks over which `TickStats.window_rate_hz` is measured
STATS_CAPACITY = 1 << 16  # ticks kept for the percentiles (22 min at 50 Hz)


@dataclass(frozen=True)
class RunnerStats:
    """Pacing summary. Counts cover every paced tick; percentiles the last `capacity`.

    Attributes:
        ticks, late: paced ticks and those that started more than `late_after_s` late.
        late_fraction: late / ticks (0.0 without ticks).
        jitter_p50_ms, jitter_p99_ms, jitter_max_ms: start minus deadline.
        compute_mean_ms, compute_max_ms: time inside the tick.
        rate_hz: mean tick rate between the first and the last tick.
        target_rate_hz: the rate asked for.
    """

    ticks: int
    late: int
    late_fraction: float
    jitter_p50_ms: float
    jitter_p99_ms: float
    jitter_max_ms: float
    compute_mean_ms: float
    compute_max_ms: float
    rate_hz: float
    target_rate_hz: float


class TickStats:
    """Records paced ticks and summarises them.

    Args:
        target_rate_hz: the rate asked for (reported in the summary).
        late_after_s: lateness bound.
        capacity: ticks kept for the percentiles.
    """

    def __init__(self, target_rate_hz: float, late_after_s: float = LATE_AFTER_S,
                 capacity: int = STATS_CAPACITY) -> None:
        if late_after_s < 0 or capacity < 1:
            raise ValueError(f"need late_after_s >= 0 ({late_after_s}) and capacity >= 1 "
                             f"({capacity})")
        self.target_rate_hz, self.late_after_s, self.capacity = (target_rate_hz, late_after_s,
                                                                 capacity)
        self.count = self.late = 0
        self._first_start_s = 0.0
        self._jitter = np.zeros(capacity)
        self._compute = np.zeros(capacity)
        self._starts = np.zeros(capacity)

    def record(self, deadline_s: float, start_s: float, end_s: float) -> bool:
        """Store one tick (clock seconds); returns whether it was late."""
        i = self.count % self.capacity
        jitter = start_s - deadline_s
        self._jitter[i], self._compute[i], self._starts[i] = jitter, end_s - start_s, start_s
        if self.count == 0:
            self._first_start_s = start_s
        late = jitter > self.late_after_s
        self.late += int(late)
        self.count += 1
        return late

    @property
    def last_jitter_s(self) -> float | None:
        return float(self._jitter[(self.count - 1) % self.capacity]) if self.count else None

    def window_rate_hz(self, window: int = RATE_WINDOW) -> float:
        """Tick rate over the last `window` ticks (0.0 before two ticks)."""
        n = min(self.count, window, self.capacity)
        if n < 2:
            return 0.0
        last = self._starts[(self.count - 1) % self.capacity]
        first = self._starts[(self.count - n) % self.capacity]
        return (n - 1) / (last - first) if last > first else 0.0

    def summary(self) -> RunnerStats:
        n, late = self.count, self.late
        kept = min(n, self.capacity)
        if not kept:
            return RunnerStats(0, 0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, self.target_rate_hz)
        jitter_ms, compute_ms = self._jitter[:kept] * 1e3, self._compute[:kept] * 1e3
        span = self._starts[(n - 1) % self.capacity] - self._first_start_s
        p50, p99 = np.percentile(jitter_ms, [50, 99])
        return RunnerStats(
            ticks=n, late=late, late_fraction=late / n, jitter_p50_ms=float(p50),
            jitter_p99_ms=float(p99), jitter_max_ms=float(jitter_ms.max()),
            compute_mean_ms=float(compute_ms.mean()), compute_max_ms=float(compute_ms.max()),
            rate_hz=(n - 1) / span if span > 0 else 0.0, target_rate_hz=self.target_rate_hz)
