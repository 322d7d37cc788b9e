"""The backend protocol: N worlds of one compiled model, state and outputs as torch tensors.

Task code and controllers read and write only these tensors, so they run unchanged on any
backend (MuJoCo `mujoco.batch` on the CPU, MuJoCo Warp on a GPU).
"""

from __future__ import annotations

from typing import Protocol

import mujoco
import numpy as np
from torch import Tensor


class SimBackend(Protocol):
    """N worlds of one model. Tensors are (N, ...) and share memory with the simulator.

    State (writable, the next step starts from them): time, qpos, qvel, ctrl, mocap_pos,
    mocap_quat, eq_active. Outputs (refreshed by `step` / `forward`): xpos, xquat, sensordata,
    qfrc_bias.
    """

    model: mujoco.MjModel
    num_worlds: int
    time: Tensor
    qpos: Tensor
    qvel: Tensor
    ctrl: Tensor
    mocap_pos: Tensor
    mocap_quat: Tensor
    eq_active: Tensor
    xpos: Tensor
    xquat: Tensor
    sensordata: Tensor
    qfrc_bias: Tensor

    def step(self, nstep: int) -> None:
        """Advance every world by nstep physics steps; outputs then describe the new state."""

    def forward(self, ids: Tensor | None = None) -> None:
        """Recompute outputs from the state of the given worlds (all when None)."""

    def reset(self, ids: Tensor | None = None) -> None:
        """Reset the given worlds to the model's defaults; call `forward` after writing state."""

    per_world_fields: set[str]  # names of the model fields that have per-world values

    def model_field(self, name: str) -> Tensor:
        """A per-world (N, ...) writable view of an MjModel field, for domain randomisation."""

    def update_constants(self, ids: Tensor | None = None) -> None:
        """Recompute model constants derived from per-world fields (after randomisation)."""

    def world_model(self, world: int) -> mujoco.MjModel:
        """World `world`'s model with its per-world fields, e.g. for rendering."""

    def world_data(self, world: int) -> mujoco.MjData:
        """World `world`'s state as an MjData with forward kinematics computed."""

    def full_state(self) -> np.ndarray:
        """(N, nstate) the integration state of every world (for exact replay)."""

    def instability_count(self) -> Tensor:
        """(N,) growing count of the times the simulator found a world unstable and reset it."""
