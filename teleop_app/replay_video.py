"""Replay an episode into a video file or a folder of PNG frames."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from datasets.replay import ReplayReport, replay_episode
from robot_io.control import ControllerChoice
from robot_io.sim.render import save_png

VIDEO_FPS = 25  # every other 50 Hz tick


def replay_to_media(path: str | Path, episode_id: int, video: str | None = None,
                    frames: str | None = None, mode: str = "targets",
                    controller: ControllerChoice | None = None) -> ReplayReport:
    """Replay, writing frames to `video` (MP4) or `frames` (PNGs), or neither.

    `controller` overrides the recorded controller kind in "controller" mode."""
    if video is None and frames is None:
        return replay_episode(path, episode_id, mode=mode, controller=controller)
    if frames is not None:
        folder = Path(frames)
        folder.mkdir(parents=True, exist_ok=True)
        return replay_episode(path, episode_id, mode=mode, render_every=2,
                              frame_sink=lambda t, img: save_png(img, folder / f"{t:05d}.png"),
                              controller=controller)
    import imageio.v2 as imageio

    out = Path(video)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".partial.mp4")
    writer = imageio.get_writer(tmp, fps=VIDEO_FPS, codec="libx264", macro_block_size=8)
    try:
        report = replay_episode(path, episode_id, mode=mode, render_every=2,
                                frame_sink=lambda t, img: writer.append_data(np.asarray(img)),
                                controller=controller)
    finally:
        writer.close()
    tmp.replace(out)
    return report
