"""`BatchedEnv`: N worlds of one task, observed and commanded as batched torch tensors.

One control tick (50 Hz by default) is one batched call of `substeps` physics steps on all
cores. The env is the simulated `World` of the session loop (robot_io.protocols): `observe()`
returns an `Observation`, `apply(targets)` writes a controller's `JointTargets` and steps the
physics, and returns what was applied. It keeps only physics: limits, the joint-step clamp, the
watchdog and STOP live in `robot_io.safety.SafetyFilter`, for every world alike. It also offers
what only a simulator can: exact-replay state and per-world model fields (`ReplayableWorld`)
and privileged quantities for the reference controller (`PrivilegedSim`).
"""

from __future__ import annotations

import mujoco
import numpy as np
import torch
from torch import Tensor

from robot_io.math3d import Frame
from robot_io.protocols import StepOutcome
from robot_io.robot_spec import RobotSpec
from robot_io.sim.factory import make_backend
from robot_io.t1_model import (HARNESS_BODY, HARNESS_EQ, ROOT_BODY, build_robot,
                               default_robot_spec)
from robot_io.tasks import make_task
from robot_io.tasks.base import Task, TaskConfig
from robot_io.types import SIDES, JointTargets, Observation

class BatchedEnv:
    """N worlds of a task on a simulator backend (default: the CPU MuJoCo batch).

    Tensors live on the backend's device (`self.device`): the CPU for "mujoco", the Warp device
    for "warp" (a GPU, or Warp's CPU device). Observations are float64 on every backend; the
    randomisation generator stays on the CPU, so a seed samples the same episodes everywhere.

    Args:
        task: a registered task name or a `Task` instance.
        num_worlds: number of worlds N.
        threads: physics threads of the mujoco backend (0: all CPUs). Results do not depend
            on it.
        seed: seed of the randomisation generator; same seed, same trajectories.
        task_config: overrides the task's `default_config()`.
        robot: the robot spec (default: `default_robot_spec()`).
        backend: "mujoco" (CPU) or "warp" (MuJoCo Warp); see `robot_io.sim.factory`.
        device: the backend's device: None (mujoco: the CPU; warp: cuda, or cuda:LOCAL_RANK
            under torchrun), or "cpu", "cuda", "cuda:N" for warp.
    """

    def __init__(self, task: str | Task, num_worlds: int = 1, threads: int = 0, seed: int = 0,
                 task_config: TaskConfig | None = None, robot: RobotSpec | None = None,
                 backend: str = "mujoco",
                 device: str | None = None) -> None:
        self.task = make_task(task, task_config) if isinstance(task, str) else task
        self.robot = robot or default_robot_spec()
        spec = build_robot(self.robot)
        self.task.build_scene(spec)
        self.model = spec.compile()
        self.sim = make_backend(backend, self.model, num_worlds, threads, device)
        self.backend = backend
        self.device = self.sim.qpos.device
        self.num_worlds = num_worlds
        self.seed = seed
        self.paused = False
        self.gen = torch.Generator().manual_seed(seed)
        self._index(self.model)
        self.task.bind(self.model, self.sim, self.robot)
        self.episode_steps = torch.zeros(num_worlds, dtype=torch.long, device=self.device)
        self._instability_at_reset = torch.zeros(num_worlds, dtype=torch.long,
                                                 device=self.device)
        self.reset_params: dict[str, Tensor] = {}
        self.reset()

    # -- set-up -------------------------------------------------------------------------------
    def _index(self, m: mujoco.MjModel) -> None:
        r, dev = self.robot, self.device
        self.joint_qadr = torch.tensor([m.joint(n).qposadr[0] for n in r.joint_names], device=dev)
        self.joint_dadr = torch.tensor([m.joint(n).dofadr[0] for n in r.joint_names], device=dev)
        self.finger_qadr = torch.tensor([m.joint(f"{s}_finger_a").qposadr[0] for s in SIDES],
                                        device=dev)
        root_joint = m.joint(m.body(ROOT_BODY).jntadr[0])
        self.root_qadr = int(root_joint.qposadr[0])
        self.root_dadr = int(root_joint.dofadr[0])
        self.harness_mocap = int(m.body(HARNESS_BODY).mocapid[0])
        self.harness_eq = m.equality(HARNESS_EQ).id
        self.joint_lower = torch.tensor(r.joint_lower, dtype=torch.float64, device=dev)
        self.joint_upper = torch.tensor(r.joint_upper, dtype=torch.float64, device=dev)
        self.default_pose = torch.tensor(r.default_pose, dtype=torch.float64, device=dev)

        def sensor(name: str, dim: int) -> slice:
            adr = int(m.sensor(name).adr[0])
            return slice(adr, adr + dim)

        def columns(kind: str, dim: int) -> Tensor:
            """sensordata columns of left/right hand then left/right foot `kind` sensors."""
            names = [f"{s}_{part}_{kind}" for part in ("hand", "foot") for s in SIDES]
            return torch.cat([torch.arange(int(m.sensor(n).adr[0]), int(m.sensor(n).adr[0]) + dim,
                                           device=dev) for n in names])

        self._s_site_pos = columns("pos", 3)
        self._s_site_quat = columns("quat", 4)
        self._s_linvel = sensor("root_linvel", 3)

    @property
    def control_dt_s(self) -> float:
        return self.robot.control_dt_s

    @property
    def time_limit_steps(self) -> int:
        return int(round(self.task.config.time_limit_s / self.control_dt_s))

    # -- episode ------------------------------------------------------------------------------
    def reset(self, ids: Tensor | None = None) -> Observation:
        """Reset worlds `ids` (all when None): default pose, randomised task state; observe all."""
        if ids is None:
            ids = torch.arange(self.num_worlds, device=self.device)
        ids = torch.as_tensor(ids, dtype=torch.long, device=self.device).sort().values
        if len(ids) == 0:
            return self.observe()
        sim = self.sim
        sim.reset(ids)
        rows = ids.unsqueeze(1)
        # .to(sim tensor): the backend's dtype (float32 on Warp); a no-op on the CPU backend.
        sim.qpos[rows, self.joint_qadr] = self.default_pose.to(sim.qpos)
        sim.ctrl[ids, :self.robot.num_joints] = self.default_pose.to(sim.ctrl)
        sim.ctrl[ids, self.robot.num_joints:] = 0.0
        params = self.task.reset(ids, self.gen)
        sim.update_constants(ids)
        # The harness starts where the trunk is, switched off until a controller asks for it.
        sim.mocap_pos[ids, self.harness_mocap] = sim.qpos[ids, self.root_qadr:self.root_qadr + 3]
        sim.mocap_quat[ids, self.harness_mocap] = sim.qpos[ids,
                                                           self.root_qadr + 3:self.root_qadr + 7]
        sim.eq_active[ids, self.harness_eq] = 0.0
        sim.forward(ids)
        self.task.capture_initial(ids)
        self.episode_steps[ids] = 0
        self._instability_at_reset[ids] = sim.instability_count()[ids]
        for key, value in params.items():
            store = self.reset_params.setdefault(
                key, torch.full((self.num_worlds,), float("nan"), dtype=torch.float64,
                                device=self.device))
            store[ids] = value.to(store)
        return self.observe()

    def observe(self) -> Observation:
        """The current `Observation` of every world (float64 on every backend)."""
        sim = self.sim
        qpos, qvel, data = (x.to(torch.float64) for x in (sim.qpos, sim.qvel, sim.sensordata))
        a = self.root_qadr
        root_pos, root_quat = qpos[:, a:a + 3], qpos[:, a + 3:a + 7]
        d = self.root_dadr
        # Hands and feet in one pass: (B, 4, 3) positions and (B, 4, 4) quaternions.
        pos = data[:, self._s_site_pos].reshape(self.num_worlds, 4, 3)
        quat = data[:, self._s_site_quat].reshape(self.num_worlds, 4, 4)
        root = Frame(root_pos, root_quat)
        pos, quat = root.to_local(pos, quat)
        gravity = -root.rot[:, 2, :]  # world -z in the root frame: -(R^T e_z), R's third row
        return Observation(
            time_s=sim.time.clone().to(torch.float64),
            joint_pos=qpos[:, self.joint_qadr],
            joint_vel=qvel[:, self.joint_dadr],
            gripper_pos=qpos[:, self.finger_qadr] / self.robot.gripper.travel_m,
            root_pos=root_pos.clone(), root_quat=root_quat.clone(),
            root_lin_vel=data[:, self._s_linvel].clone(),
            root_ang_vel=qvel[:, d + 3:d + 6].clone(),  # free joint: already in the body frame
            projected_gravity=gravity,
            hand_pos=pos[:, :2], hand_quat=quat[:, :2], foot_pos=pos[:, 2:],
            foot_quat=quat[:, 2:], task=self.task.observe(root))

    def apply(self, targets: JointTargets) -> JointTargets:
        """Write the targets and step the physics by one control tick (no clamps: those are the
        safety filter's); while paused (safe mode), nothing is written or stepped.

        Returns:
            The targets actually applied.
        """
        sim, nj = self.sim, self.robot.num_joints
        if self.paused:
            return JointTargets(joint_pos=sim.ctrl[:, :nj].to(torch.float64).clone(),
                                gripper=sim.ctrl[:, nj:nj + 2].to(torch.float64)
                                / self.robot.gripper.travel_m)
        sim.ctrl[:, :nj] = targets.joint_pos
        sim.ctrl[:, nj:nj + 2] = targets.gripper * self.robot.gripper.travel_m
        if targets.harness is not None:
            sim.mocap_pos[:, self.harness_mocap] = targets.harness.pos
            sim.mocap_quat[:, self.harness_mocap] = targets.harness.quat
            sim.eq_active[:, self.harness_eq] = 1.0
        else:
            sim.eq_active[:, self.harness_eq] = 0.0
        sim.step(self.robot.substeps)
        self.episode_steps += 1
        return targets

    def enter_safe_mode(self) -> None:
        """Safe mode of a simulation: a pause (the physics does not step)."""
        self.paused = True

    def leave_safe_mode(self) -> None:
        self.paused = False

    # -- privileged quantities (PrivilegedSim) ---------------------------------------------
    @property
    def flat_terrain(self) -> bool:
        return self.task.flat_terrain

    def terrain_height(self, xy: Tensor, ids: Tensor | None = None) -> Tensor:
        """Ground height (n, P) under world points xy (n, P, 2)."""
        return self.task.terrain_height(xy, ids)

    def joint_bias_torque(self) -> Tensor:
        """(B, 29) bias torques (gravity, Coriolis) at the robot joints."""
        return self.sim.qfrc_bias[:, self.joint_dadr]

    def outcome(self) -> StepOutcome:
        """Success, sparse reward and time-out of every world in the current state."""
        unstable = self.sim.instability_count() > self._instability_at_reset
        success = self.task.success().to(self.device) & ~unstable
        timeout = self.episode_steps >= self.time_limit_steps
        return StepOutcome(success=success, reward=success.to(torch.float64), timeout=timeout,
                           unstable=unstable)

    def state(self) -> np.ndarray:
        """(N, nstate) full integration state (for exact replay)."""
        return self.sim.full_state().copy()

    def world_model_fields(self, ids: Tensor) -> dict[str, np.ndarray]:
        """Per-world model field values of worlds `ids`: {name: (n, ...)} (for exact replay)."""
        idx = ids.cpu().numpy()
        return {name: self.sim.model_field(name).cpu().numpy()[idx].copy()
                for name in sorted(self.sim.per_world_fields)}

    def restore(self, ids: Tensor, state: np.ndarray,
                model_fields: dict[str, np.ndarray]) -> Observation:
        """Put worlds `ids` into a recorded initial state (as from `state()` and
        `world_model_fields()`), starting a new episode there.

        Raises:
            ValueError: the state's width or a field's shape does not fit this env's model.
            NotImplementedError: the backend's state is not restorable (Warp: exact replay
                needs the mujoco backend).
        """
        ids = torch.as_tensor(ids, dtype=torch.long, device=self.device)
        full = self.sim.full_state()
        if not full.flags.writeable:  # a snapshot, not a view of the simulator's state
            raise NotImplementedError(f"the {self.backend} backend cannot restore a recorded "
                                      f"state; exact replay needs backend='mujoco'")
        if state.shape != (len(ids), full.shape[1]):
            raise ValueError(f"recorded state has shape {state.shape}, this model needs "
                             f"({len(ids)}, {full.shape[1]}): the scene or robot differ")
        for name, values in model_fields.items():
            field = self.sim.model_field(name)
            if tuple(values.shape[1:]) != tuple(field.shape[1:]):
                raise ValueError(f"recorded model field {name} has shape {values.shape[1:]}, "
                                 f"this model has {tuple(field.shape[1:])}")
            field[ids] = torch.from_numpy(np.ascontiguousarray(values)).to(field)
        full[ids.cpu().numpy()] = state
        self.sim.update_constants(ids)
        self.sim.forward(ids)
        self.task.capture_initial(ids)
        self.episode_steps[ids] = 0
        self._instability_at_reset[ids] = self.sim.instability_count()[ids]
        return self.observe()
