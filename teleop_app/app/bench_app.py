"""`refine-dp bench app`: the live app measured as an operator uses it.

One simulated world runs at its control rate on the runner's thread while the real main window
shows it in the 3D view, for `seconds`. Every `key_period_s` a W key press goes through Qt to the
window (the keyboard device is the source), is held for a few ticks and released. Reported:

- the loop: ticks, late ticks (started more than 2 ms after their deadline) and their share,
  jitter p50 / p99 / max, mean tick compute time (`robot_io.runner.RealtimeRunner.stats`);
- the 3D view: frames rendered per second over the run;
- key press to applied command: from the moment the key event is delivered to the window to the
  first published tick whose applied command moved the hand (median, p90, max), polled every
  millisecond on the GUI thread.

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


def bench_app(cfg: AppBenchConfig) -> dict[str, object]:
    """Run the app for `cfg.seconds` and measure it (see the module docstring).

    Raises:
        RefineDpError: no display to open the window on.
    """
    from PyQt6.QtCore import QElapsedTimer, Qt
    from PyQt6.QtTest import QTest
    from PyQt6.QtWidgets import QApplication

    from teleop_app.app.main_window import MainWindow
    from teleop_app.app_cli import check_display
    from teleop_app.live import LiveConfig, LiveSession

    check_display()
    app = QApplication.instance() or QApplication([])
    load_before = os.getloadavg()[0]
    with LiveSession(LiveConfig(task=cfg.task, source="keyboard")) as live:
        window = MainWindow(live, save_on_close=False)
        window.resize(cfg.width, cfg.height)
        window.show()
        window.activateWindow()
        _pump(app, 1.0)  # the window is up and the view has drawn its first frames
        frames_start, t_start = window.view.frames_rendered, time.monotonic()
        latencies: list[float] = []
        clock = QElapsedTimer()
        next_press = time.monotonic()
        while time.monotonic() - t_start < cfg.seconds:
            if time.monotonic() < next_press:
                _pump(app, min(0.01, next_press - time.monotonic()))
                continue
            next_press += cfg.key_period_s
            before = _right_hand_x(live.snapshot())
            pressed_at = time.monotonic()
            QTest.keyPress(window, Qt.Key.Key_W)
            clock.start()
            latency = None
            while clock.elapsed() < 1000 * cfg.hold_s:
                snap = live.snapshot()
                if latency is None and snap.time_s >= pressed_at and \
                        _right_hand_x(snap) > before + 1e-9:
                    latency = snap.time_s - pressed_at
                app.processEvents()
                time.sleep(0.001)
            QTest.keyRelease(window, Qt.Key.Key_W)
            if latency is not None:
                latencies.append(latency)
        elapsed = time.monotonic() - t_start
        frames = window.view.frames_rendered - frames_start
        stats = live.world.runner.stats()
        window.close()
        _pump(app, 0.2)
    lat_ms = np.asarray(latencies) * 1e3
    return {
        "task": cfg.task, "seconds": elapsed, "width": cfg.width, "height": cfg.height,
        "view": type(window.view).__name__, "view_fps": frames / elapsed,
        "ticks": stats.count, "late": stats.late, "late_fraction": stats.late_fraction,
        "jitter_p50_ms": stats.jitter_p50_ms, "jitter_p99_ms": stats.jitter_p99_ms,
        "jitter_max_ms": stats.jitter_max_ms, "compute_mean_ms": stats.compute_mean_ms,
        "rate_hz": float(stats.rate_hz_measured), "key_presses": len(latencies),
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


def _right_hand_x(snapshot: object) -> float:
    """The commanded right hand's x (the keyboard moves the right hand by default)."""
    command = getattr(snapshot, "command", None)
    return float("-inf") if command is None else float(command.hand_pos[0, 1, 0])


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
