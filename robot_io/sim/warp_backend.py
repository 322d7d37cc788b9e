"""GPU backend: MuJoCo Warp (`mujoco_warp`), N worlds of one model on a CUDA device.

The same compiled `MjModel` as the CPU backend, put on the device with `mujoco_warp.put_model`.
State and outputs are torch tensors that share memory with the Warp arrays (`wp.to_torch`, no
copy): torch cuda tensors on a GPU, CPU tensors on Warp's CPU device (slow; for tests with a few
worlds). All Warp work runs on torch's current stream of the device, so torch reads and writes
between calls are ordered with it.

Differences from `MujocoBatchBackend` (`robot_io.sim.mujoco_batch`), all of them MuJoCo Warp's:
- Everything is float32 (MuJoCo on the CPU: float64), including `time`; `eq_active` is bool.
  Trajectories agree with the CPU backend to float32 rounding at first and drift apart slowly
  where contacts are made or broken (see tests/test_warp_backend.py for the stated tolerance).
- `forward(ids)`, `update_constants(ids)` work on every world: mujoco_warp has no per-world mask
  for them. For the worlds outside `ids` they recompute what is already there (same state, same
  model fields), so the result is the same, at the cost of the extra work.
- Instability (a NaN or a value beyond 1e10 in qpos, qvel or qacc, MuJoCo's test) is looked for
  once per `step` call, after all its substeps, not after each substep; such worlds are reset to
  the model's defaults (as MuJoCo does unless autoreset is disabled) and counted.
- `full_state()` is a float64 snapshot in MuJoCo's mjSTATE_INTEGRATION layout, not a live view:
  writing into it does not change the simulation (exact replay, `BatchedEnv.restore`, needs the
  CPU backend).
- Contacts and constraint rows are preallocated: `nconmax` contacts per world on average (one
  pool for all worlds) and `njmax` constraint rows per world. A world that needs more loses the
  excess (mujoco_warp prints a warning; `overflowed()` says which worlds).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager

import mujoco
import numpy as np
import torch
from torch import Tensor

from robot_io.optional import require

wp = require("warp", "gpu", "the MuJoCo Warp backend")
mjw = require("mujoco_warp", "gpu", "the MuJoCo Warp backend")

PER_WORLD_FIELDS = ("body_mass", "body_inertia", "body_pos", "geom_friction", "dof_damping",
                    "jnt_stiffness", "actuator_gainprm", "actuator_biasprm")
"""Model fields given per-world values at construction: those robot_io's tasks and the controller
training randomise. Other batchable fields get them on their first `model_field` call."""

# What mujoco_warp.set_const derives from the fields above. They get per-world values too, so
# that every world keeps its own constants, as `mujoco.batch.Batch.set_const` does.
_CONST_FIELDS = ("body_subtreemass", "body_invweight0", "dof_invweight0", "tendon_length0",
                 "tendon_invweight0", "actuator_acc0", "eq_data", "cam_pos0", "cam_poscom0",
                 "cam_mat0", "light_pos0", "light_poscom0", "light_dir0")

# mjSTATE_INTEGRATION's components in MuJoCo's order, with the Warp Data field of each; a
# component mujoco_warp does not store must be empty in the model (checked at construction).
_STATE_COMPONENTS = (
    ("mjSTATE_TIME", "time"), ("mjSTATE_QPOS", "qpos"), ("mjSTATE_QVEL", "qvel"),
    ("mjSTATE_ACT", "act"), ("mjSTATE_HISTORY", "history"),
    ("mjSTATE_WARMSTART", "qacc_warmstart"), ("mjSTATE_CTRL", "ctrl"),
    ("mjSTATE_QFRC_APPLIED", "qfrc_applied"), ("mjSTATE_XFRC_APPLIED", "xfrc_applied"),
    ("mjSTATE_EQ_ACTIVE", "eq_active"), ("mjSTATE_MOCAP_POS", "mocap_pos"),
    ("mjSTATE_MOCAP_QUAT", "mocap_quat"), ("mjSTATE_USERDATA", "userdata"),
    ("mjSTATE_PLUGIN", None), ("mjSTATE_PLASTIC", "plastic"),
)
_STATE_FIELDS = ("time", "qpos", "qvel", "ctrl", "mocap_pos", "mocap_quat", "eq_active")
_OUTPUT_FIELDS = ("xpos", "xquat", "sensordata", "qfrc_bias")
UNSTABLE_ABS = 1e10  # mjMAXVAL: MuJoCo's bound on a sane qpos, qvel or qacc entry
DEFAULT_NCONMAX = 96  # contacts per world: 3x the 32 seen in the tasks' scenes on the CPU
DEFAULT_NJMAX = 256  # constraint rows per world: over 2x the 110 seen there


@wp.func
def _is_bad(x: float) -> bool:
    return not wp.isfinite(x) or wp.abs(x) > float(UNSTABLE_ABS)


@wp.kernel
def _find_unstable(qpos: wp.array2d(dtype=float), qvel: wp.array2d(dtype=float),
                   qacc: wp.array2d(dtype=float), unstable: wp.array(dtype=bool),
                   count: wp.array(dtype=wp.int32)):
    """Flag and count the worlds whose qpos, qvel or qacc has a NaN, inf or huge entry."""
    world = wp.tid()
    bad = wp.int32(0)  # a dynamic variable (a plain literal would be a constant to Warp)
    for i in range(qpos.shape[1]):
        if _is_bad(qpos[world, i]):
            bad = 1
    for i in range(qvel.shape[1]):
        if _is_bad(qvel[world, i]) or _is_bad(qacc[world, i]):
            bad = 1
    unstable[world] = bad != 0
    count[world] = count[world] + bad


def batchable_fields() -> list[str]:
    """Names of the mujoco_warp Model fields that can have per-world values."""
    return sorted(f.name for f in dataclasses.fields(mjw.Model)
                  if tuple(getattr(f.type, "shape", ()))[:1] == ("*",))


class WarpBackend:
    """N worlds on MuJoCo Warp; tensors are zero-copy views of the Warp arrays.

    Args:
        model: the compiled scene (the same `MjModel` the CPU backend takes).
        num_worlds: number of worlds N.
        device: a Warp device: "cuda" (the current GPU), "cuda:N" or "cpu".
        per_world_fields: model fields that get per-world values now (others on first use).
        nconmax: contacts per world, on average over the worlds.
        njmax: constraint rows per world.
        cuda_graph: on a GPU, replay each `step(nstep)` as one captured CUDA graph.

    Raises:
        ValueError: num_worlds < 1, a device Warp does not have, or an unknown field.
        NotImplementedError: the model has a feature mujoco_warp does not support.
    """

    def __init__(self, model: mujoco.MjModel, num_worlds: int, device: str = "cuda",
                 per_world_fields: tuple[str, ...] = PER_WORLD_FIELDS,
                 nconmax: int = DEFAULT_NCONMAX, njmax: int = DEFAULT_NJMAX,
                 cuda_graph: bool = True) -> None:
        if num_worlds < 1:
            raise ValueError(f"num_worlds must be at least 1, got {num_worlds}")
        known = batchable_fields()
        unknown = sorted(set(per_world_fields) - set(known))
        if unknown:
            raise ValueError(f"fields {unknown} cannot have per-world values; batchable "
                             f"fields: {known}")
        self.model = model
        self.num_worlds = num_worlds
        self.wp_device = _warp_device(device)
        self.device = torch.device(wp.device_to_torch(self.wp_device))
        self._state_layout = _state_layout(model)
        batched = [*per_world_fields, *(f for f in _CONST_FIELDS if f in known)]
        with self._scope():
            self.wm = mjw.put_model(model, batch_sizes=dict.fromkeys(batched, num_worlds))
            self.wd = mjw.make_data(model, nworld=num_worlds, nconmax=nconmax, njmax=njmax)
            self._unstable = wp.zeros(num_worlds, dtype=bool)
            self._unstable_count = wp.zeros(num_worlds, dtype=wp.int32)
            self._reset_mask = wp.zeros(num_worlds, dtype=bool)
        self.per_world_fields: set[str] = set()  # model fields the user asked for, as on the CPU
        self._batched = set(batched)
        self._fields: dict[str, Tensor] = {}
        for name in (*_STATE_FIELDS, *_OUTPUT_FIELDS):
            setattr(self, name, wp.to_torch(getattr(self.wd, name)))
        self._autoreset = not model.opt.disableflags & mujoco.mjtDisableBit.mjDSBL_AUTORESET
        self._graphs: dict[int, object] = {}
        self.cuda_graph = cuda_graph and self.wp_device.is_cuda
        if self.cuda_graph:
            # Load every kernel a step uses before any capture (loading is not capturable).
            with self._scope():
                self._advance(1)
                self._unstable_count.zero_()
        self.reset()
        self.forward()

    # -- physics ------------------------------------------------------------------------------
    def step(self, nstep: int) -> None:
        """Advance every world by nstep physics steps; outputs then describe the new state."""
        if nstep < 1:
            raise ValueError(f"nstep must be at least 1, got {nstep}")
        with self._scope() as stream:
            if not self.cuda_graph:
                self._advance(nstep)
                return
            if nstep not in self._graphs:
                with wp.ScopedCapture(device=self.wp_device, stream=stream) as capture:
                    self._advance(nstep)
                self._graphs[nstep] = capture.graph
            wp.capture_launch(self._graphs[nstep], stream=stream)

    def _advance(self, nstep: int) -> None:
        for _ in range(nstep):
            mjw.step(self.wm, self.wd)
        d = self.wd
        wp.launch(_find_unstable, dim=self.num_worlds, inputs=[d.qpos, d.qvel, d.qacc],
                  outputs=[self._unstable, self._unstable_count])
        if self._autoreset:
            mjw.reset_data(self.wm, d, reset=self._unstable)
        self._stage_vel()

    def _stage_vel(self) -> None:
        """Positions, velocities and their sensors at the current state (mjSTAGE_VEL, as
        mj_step1), leaving the acceleration sensors of the last step in place."""
        mjw.fwd_position(self.wm, self.wd)
        mjw.sensor_pos(self.wm, self.wd)
        mjw.fwd_velocity(self.wm, self.wd)
        mjw.sensor_vel(self.wm, self.wd)

    def forward(self, ids: Tensor | None = None) -> None:
        """Recompute outputs from the state (of every world: see the module docstring)."""
        with self._scope():
            self._stage_vel()

    def reset(self, ids: Tensor | None = None) -> None:
        """Reset worlds `ids` (all when None) to the model's defaults; call `forward` after
        writing state."""
        with self._scope():
            if ids is None:
                mjw.reset_data(self.wm, self.wd)
                return
            mask = wp.to_torch(self._reset_mask)
            mask.zero_()
            mask[ids.to(self.device)] = True
            mjw.reset_data(self.wm, self.wd, reset=self._reset_mask)

    # -- model fields -------------------------------------------------------------------------
    def model_field(self, name: str) -> Tensor:
        """A per-world (N, ...) writable view of a Warp model field, for domain randomisation.

        Raises:
            ValueError: the field cannot have per-world values in mujoco_warp.
        """
        if name not in self._batched:
            known = batchable_fields()
            if name not in known:
                raise ValueError(f"model field {name!r} cannot have per-world values in "
                                 f"mujoco_warp; batchable fields: {known}")
            self._expand(name)
        self.per_world_fields.add(name)
        if name not in self._fields:
            self._fields[name] = wp.to_torch(getattr(self.wm, name))
        return self._fields[name]

    def _expand(self, name: str) -> None:
        """Give a shared model field per-world values (copies of the shared one)."""
        shared = getattr(self.wm, name)
        with self._scope():
            rows = np.repeat(shared.numpy()[:1], self.num_worlds, axis=0)
            setattr(self.wm, name, wp.array(rows, dtype=shared.dtype))
        self._batched.add(name)
        self._graphs.clear()  # captured graphs hold the old array

    def update_constants(self, ids: Tensor | None = None) -> None:
        """Recompute the model constants that depend on per-world fields (masses, inertias,
        body positions, armature), as mj_setConst does: mujoco_warp's `set_const`, run on every
        world (see the module docstring). It derives body_subtreemass, the inverse weights of
        bodies, dofs and tendons, actuator_acc0, tendon_length0, equality anchors and camera /
        light references; unlike mj_setConst it does not recompute actuator_length0 or tendon
        spring lengths (refine-dp randomises nothing they depend on)."""
        with self._scope():
            mjw.set_const(self.wm, self.wd)

    # -- host copies --------------------------------------------------------------------------
    def world_model(self, world: int) -> mujoco.MjModel:
        """World `world`'s model (float64) with its per-world fields, e.g. for rendering."""
        model = copy.deepcopy(self.model)
        for name in sorted(self._batched):
            values = wp.to_torch(getattr(self.wm, name))
            row = values[world if values.shape[0] > 1 else 0].cpu().numpy()
            target = getattr(model, name, None)
            if target is not None and target.size == row.size:  # skip Warp-only fields
                target[...] = row.reshape(target.shape)
        return model

    def world_data(self, world: int) -> mujoco.MjData:
        """World `world`'s state as an MjData with forward kinematics computed (in float64)."""
        model = self.world_model(world)
        data = mujoco.MjData(model)
        mujoco.mj_setState(model, data, self.full_state()[world],
                           mujoco.mjtState.mjSTATE_INTEGRATION)
        mujoco.mj_forward(model, data)
        return data

    def full_state(self) -> np.ndarray:
        """(N, nstate) float64 copy of every world's mjSTATE_INTEGRATION state (not a view)."""
        with self._scope():
            parts = [wp.to_torch(getattr(self.wd, field)).reshape(self.num_worlds, -1)
                     for field in self._state_layout]
            state = torch.cat([p.to(torch.float64) for p in parts], dim=1).cpu().numpy()
        state.flags.writeable = False  # a snapshot: writing into it would change nothing
        return state

    def instability_count(self) -> Tensor:
        """(N,) how many times each world was found unstable (NaN, inf or beyond 1e10 in qpos,
        qvel or qacc after a `step`) and reset; the counters only grow."""
        return wp.to_torch(self._unstable_count).to(torch.int64)

    def overflowed(self) -> Tensor:
        """(N,) bool: the world ran out of preallocated contacts or constraint rows since its
        last reset (raise `nconmax` / `njmax`)."""
        return wp.to_torch(self.wd.overflow) != 0

    @contextmanager
    def _scope(self) -> Iterator[object | None]:
        """Warp's device and, on a GPU, torch's current stream there (yielded) for the calls
        inside, so that Warp's work is ordered with torch's."""
        with wp.ScopedDevice(self.wp_device):
            if not self.wp_device.is_cuda:
                yield None
                return
            stream = wp.stream_from_torch(self.device)
            with wp.ScopedStream(stream):
                yield stream


def _warp_device(device: str):
    """The Warp device named `device`, or a ValueError listing the ones Warp has."""
    if not isinstance(device, str) or not (device == "cpu" or device.startswith("cuda")):
        raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    try:
        return wp.get_device(device)
    except (RuntimeError, ValueError) as exc:
        available = [str(d) for d in wp.get_devices()]
        raise ValueError(f"Warp has no device {device!r} (available: {available})") from exc


def _state_layout(model: mujoco.MjModel) -> list[str]:
    """The Warp Data fields that make up mjSTATE_INTEGRATION, in MuJoCo's order.

    Raises:
        NotImplementedError: the model has state (e.g. plugin state) mujoco_warp does not keep.
    """
    fields = []
    for component, field in _STATE_COMPONENTS:
        size = mujoco.mj_stateSize(model, getattr(mujoco.mjtState, component))
        if size == 0:
            continue
        if field is None:
            raise NotImplementedError(f"the model has {component} state, which mujoco_warp "
                                      f"does not keep")
        fields.append(field)
    if sum(mujoco.mj_stateSize(model, getattr(mujoco.mjtState, c)) for c, _ in
           _STATE_COMPONENTS) != mujoco.mj_stateSize(model, mujoco.mjtState.mjSTATE_INTEGRATION):
        raise NotImplementedError("this mujoco's mjSTATE_INTEGRATION has components "
                                  "refine-dp does not know")
    return fields
