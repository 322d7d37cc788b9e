"""`refine-dp bench app`: the live app measured as an operator uses it.

One simulated world runs at its control rate on the runner's thread while the real main window
shows it in the 3D view, for `seconds`. Every `key_period_s` a W key press goes through Qt to the
window (the keyboard device is the source), is held for a few ticks and released. Reported:

- the loop: ticks, late ticks (started more than 2 ms after their deadline) and their share,
  jitter p50 / p99 / max, mean tick compute time (`robot_io.runner.RealtimeRunner.stats`);
- the 3D view: frames rendered per second over the run;
- key press to applied command: from the moment the key event is delivered to the window to the
  end of the first tick whose applied command moved the hand (median, p90, max), seen by a step
  observer on the loop thread (no polling that would load the GUI thread).

The window runs its own Qt event loop meanwhile, as it does for an operator.

Run it on a display (Xvfb with software GL on a server: `xvfb-run -s "-screen 0 1400x900x24"
refine-dp bench app --json`); it refuses to run without one, since the point is the real view.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class AppBenchConfig:
    """Settings of `refine-dp bench app`.

    Attributes:
        task: the task shown (see `refine-dp tasks`; open_floor is the empty floor).
        seconds: how long the app is measured.
        key_period_s: seconds between two key presses (each held for `hold_s`).
        hold_s: how long each press is held.
        width, height: the window's size.
        json: print one JSON object.
    """

    task: str = "box_pickup"
    seconds: float = 120.0
    key_period_s: float = 1.0
    hold_s: float = 0.2
    width: int = 1280
    height: int = 800
    json: bool = False


class _KeyProbe:
    """A step observer on the loop thread: when the first applied command after a key press
    moved the right hand (the keyboard's default hand), the latency since the press."""

    def __init__(self) -> None:
        self.pressed_at: float | None = None
        self.before = 0.0
        self.latencies_s: list[float] = []

    def arm(self, pressed_at: float, before: float) -> None:
        self.before, self.pressed_at = before, pressed_at

    def episode_started(self, start: object) -> None:
        pass

    def step(self, record: object) -> None:
        if self.pressed_at is None:
            return
        if float(record.command.hand_pos[0, 1, 0]) > self.before + 1e-9:
            self.latencies_s.append(time.monotonic() - self.pressed_at)
            self.pressed_at = None

    def episode_ended(self, end: object) -> None:
        pass


def bench_app(cfg: AppBenchConfig) -> dict[str, object]:
    """Run the app for `cfg.seconds` and measure it (see the module docstring).

    Raises:
        RefineDpError: no display to open the window on.
    """
    from PyQt6.QtCore import Qt, QTimer
    from PyQt6.QtTest import QTest
    from PyQt6.QtWidgets import QApplication

    from teleop_app.app.main_window import MainWindow
    from teleop_app.app_cli import check_display
    from teleop_app.live import LiveConfig, LiveSession

    check_display()
    app = QApplication.instance() or QApplication([])
    load_before = os.getloadavg()[0]
    probe = _KeyProbe()
    with LiveSession(LiveConfig(task=cfg.task, source="keyboard")) as live:
        window = MainWindow(live, save_on_close=False)
        window.resize(cfg.width, cfg.height)
        window.show()
        window.activateWindow()
        _pump(app, 1.0)  # the window is up and the view has drawn its first frames
        live.world.session.observers.append(probe)  # list append: safe beside the loop
        frames_start, t_start = window.view.frames_rendered, time.monotonic()
        stats_start = live.world.runner.stats()

        def press() -> None:
            snapshot = live.snapshot()
            before = float("-inf") if snapshot.command is None else \
                float(snapshot.command.hand_pos[0, 1, 0])
            probe.arm(time.monotonic(), before)
            QTest.keyPress(window, Qt.Key.Key_W)  # delivered now: the window forwards it
            QTimer.singleShot(round(1e3 * cfg.hold_s),
                              lambda: QTest.keyRelease(window, Qt.Key.Key_W))

        presses = QTimer()
        presses.timeout.connect(press)
        presses.start(round(1e3 * cfg.key_period_s))
        QTimer.singleShot(round(1e3 * cfg.seconds), app.quit)
        app.exec()  # the app's own event loop: timers render the view and update the status
        presses.stop()
        elapsed = time.monotonic() - t_start
        frames = window.view.frames_rendered - frames_start
        stats = live.world.runner.stats()
        view_name = type(window.view).__name__
        window.close()
        _pump(app, 0.2)
    lat_ms = np.asarray(probe.latencies_s) * 1e3
    return {
        "task": cfg.task, "seconds": elapsed, "width": cfg.width, "height": cfg.height,
        "view": view_name, "view_fps": frames / elapsed,
        "ticks": stats.ticks - stats_start.ticks, "late": stats.late - stats_start.late,
        "late_fraction": (stats.late - stats_start.late) / max(1, stats.ticks - stats_start.ticks),
        "jitter_p50_ms": stats.jitter_p50_ms, "jitter_p99_ms": stats.jitter_p99_ms,
        "jitter_max_ms": stats.jitter_max_ms, "compute_mean_ms": stats.compute_mean_ms,
        "rate_hz": float(stats.rate_hz), "key_presses": len(lat_ms),
        "key_to_command_median_ms": float(np.median(lat_ms)) if len(lat_ms) else None,
        "key_to_command_p90_ms": float(np.percentile(lat_ms, 90)) if len(lat_ms) else None,
        "key_to_command_max_ms": float(lat_ms.max()) if len(lat_ms) else None,
        "load_1m_before": load_before, "load_1m_after": os.getloadavg()[0],
        "cpus": os.cpu_count(),
    }


def format_app_line(result: dict[str, object]) -> str:
    """One line for people."""
    r = result
    return (f"bench app {r['task']} ({r['view']}, {r['width']}x{r['height']}, {r['seconds']:.0f} s):"
            f" loop {r['ticks']} ticks at {r['rate_hz']:.2f} Hz, late (> 2 ms) {r['late']} = "
            f"{100 * r['late_fraction']:.2f} %, jitter p50 {r['jitter_p50_ms']:.3f} ms, p99 "
            f"{r['jitter_p99_ms']:.3f} ms; 3D view {r['view_fps']:.1f} FPS; key press to "
            f"applied command median {_ms(r['key_to_command_median_ms'])}, p90 "
            f"{_ms(r['key_to_command_p90_ms'])} ({r['key_presses']} presses); load "
            f"{r['load_1m_before']:.2f} -> {r['load_1m_after']:.2f} on {r['cpus']} CPUs")


def _ms(value: object) -> str:
    return "-" if value is None else f"{value:.1f} ms"


def _pump(app: object, seconds: float) -> None:
    """Run the Qt event loop for `seconds` (timers fire: the view renders, the status updates)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        app.processEvents()
        time.sleep(0.002)




def cmd_bench_app(cfg: AppBenchConfig) -> None:
    """The live app measured under scripted key presses, on one line (or JSON)."""
    import json

    result = bench_app(cfg)
    print(json.dumps(result) if cfg.json else format_app_line(result))
