"""CPU backend: `mujoco.batch.Batch`, all worlds stepped on a thread pool in one call."""

from __future__ import annotations

import mujoco
import numpy as np
import torch
from mujoco.batch import Batch
from torch import Tensor

_STAGE = mujoco.mjtStage.mjSTAGE_VEL.value  # positions, velocities and sensors current
# Warnings of an unstable state (bad qpos, qvel, qacc): consecutive in mjtWarning.
_UNSTABLE_FIRST = int(mujoco.mjtWarning.mjWARN_BADQPOS)
_UNSTABLE_LAST = int(mujoco.mjtWarning.mjWARN_BADQACC)
if _UNSTABLE_LAST - _UNSTABLE_FIRST != 2:
    raise RuntimeError("this mujoco's mjtWarning order differs from the one refine-dp expects")


def _ids(ids: Tensor | None) -> np.ndarray | None:
    if ids is None:
        return None
    return np.asarray(ids.cpu().numpy(), dtype=np.int64)


class MujocoBatchBackend:
    """N worlds on `mujoco.batch`; bit-identical results at any thread count.

    Args:
        model: the compiled scene.
        num_worlds: number of worlds N.
        threads: worker threads (0: all CPUs).
    """

    def __init__(self, model: mujoco.MjModel, num_worlds: int, threads: int = 0) -> None:
        if num_worlds < 1:
            raise ValueError(f"num_worlds must be at least 1, got {num_worlds}")
        if threads < 0:
            raise ValueError(f"threads must be 0 (all CPUs) or positive, got {threads}")
        self.model = model
        self.num_worlds = num_worlds
        self.batch = Batch(model, num_worlds, threads)
        self.per_world_fields: set[str] = set()  # model fields given per-world values
        for name in ("time", "qpos", "qvel", "ctrl", "mocap_pos", "mocap_quat", "eq_active"):
            setattr(self, name, torch.from_numpy(self.batch.bind(name)))
        for name in ("xpos", "xquat", "sensordata", "qfrc_bias"):
            arr = self.batch.bind(name)
            arr.flags.writeable = True  # torch wants writable memory; we only read outputs
            setattr(self, name, torch.from_numpy(arr))

    @property
    def threads(self) -> int:
        return self.batch.nthread

    def step(self, nstep: int) -> None:
        self.batch.step(nstep=nstep, stage=_STAGE)

    def forward(self, ids: Tensor | None = None) -> None:
        self.batch.forward(_ids(ids), stage=_STAGE)

    def reset(self, ids: Tensor | None = None) -> None:
        self.batch.reset(_ids(ids), stage=mujoco.mjtStage.mjSTAGE_NONE.value)

    def model_field(self, name: str) -> Tensor:
        self.per_world_fields.add(name)
        return torch.from_numpy(self.batch.expand(name))

    def update_constants(self, ids: Tensor | None = None) -> None:
        """Recompute the model constants that depend on per-world fields (masses, inertias,
        body positions) for worlds `ids`, as mj_setConst does after a model edit."""
        self.batch.set_const(_ids(ids))

    def world_model(self, world: int) -> mujoco.MjModel:
        return self.batch.get_model(world)

    def world_data(self, world: int) -> mujoco.MjData:
        model = self.world_model(world)
        data = self.batch.get_data(world, mujoco.MjData(model))
        mujoco.mj_forward(model, data)
        return data

    def full_state(self) -> np.ndarray:
        return self.batch.state

    def instability_count(self) -> Tensor:
        """(N,) how many times MuJoCo found each world's state unstable (bad qpos, qvel or qacc)
        and reset it; the counters only grow."""
        counts = self.batch.warning[:, _UNSTABLE_FIRST:_UNSTABLE_LAST + 1, 1].sum(axis=1)
        return torch.from_numpy(counts.astype(np.int64))
