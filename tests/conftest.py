"""Shared fixtures: the T1 model is fetched once into the user cache (the one network use)."""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(scope="session", autouse=True)
def t1_assets() -> None:
    """Fetch (or verify) the T1 model before any test builds a robot."""
    from robot_io.assets import t1_model_dir
    t1_model_dir()
