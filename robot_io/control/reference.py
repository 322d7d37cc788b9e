"""The reference whole-body controller (simulation only, privileged).

- A soft virtual harness (a mocap body welded to the trunk) carries the pelvis along the
  integrated base-velocity command, at standing height above the supporting terrain.
- The legs step (`Gait`): feet planted in stance, swing arcs to landing spots, tracked by
  damped-least-squares IK of each leg in the trunk frame.
- The arms reach the commanded hand poses by damped-least-squares differential IK within joint
  limits; a gravity feed-forward and an integral term cancel the PD droop of the weak arm
  servos, so hands reach the commanded pose even while holding a payload.
- Grippers follow the command by position.

It satisfies the same `Controller` protocol as the learned controller.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from robot_io.control.gait import Gait, GaitConfig
from robot_io.control.kinematics import (build_chains, dls_step, forward_kinematics,
                                         orientation_error)
from robot_io.math3d import mat_to_quat, quat_from_yaw, quat_mul, quat_rotate, quat_to_mat, yaw_of
from robot_io.robot_spec import LEFT_ARM, RIGHT_ARM
from robot_io.protocols import PrivilegedSim, World
from robot_io.t1_model import ROOT_BODY, robot_model
from robot_io.types import Command, HarnessTarget, JointTargets, Observation

CHAIN_SITES = ["left_hand", "right_hand", "left_foot", "right_foot"]
ARM_JOINTS = torch.tensor(LEFT_ARM + RIGHT_ARM)


@dataclass(frozen=True)
class ReferenceControllerConfig:
    """Gains of the reference controller (documented defaults)."""

    ik_iterations: int = 1
    ik_damping: float = 0.02
    max_ik_step_rad: float = 0.08
    posture_gain: float = 0.05  # null-space pull of the arms toward the default pose
    integral_gain: float = 0.03  # per tick, on the arm joint tracking error
    integral_limit_rad: float = 0.6
    joint_margin_rad: float = 0.02
    arm_margin_rad: float = 0.05
    # Extra joint damping [N m s / rad] the arms get through their position targets: the arm
    # servos (kp 20, kd 0.5) alone ring for seconds after a move.
    arm_damping: float = 1.5
    gait: GaitConfig = GaitConfig()


class ReferenceController:
    """Privileged controller for simulated worlds (a `World` that is also a `PrivilegedSim`).

    Args:
        env: the simulated worlds (read for privileged state: terrain, gravity torques).
        cfg: gains.

    Raises:
        TypeError: the world is not a simulator (a robot has no harness and no privileged
            state: use the learned controller there).
    """

    def __init__(self, env: World, cfg: ReferenceControllerConfig | None = None) -> None:
        if not isinstance(env, PrivilegedSim):
            raise TypeError(f"the reference controller needs a simulated world (privileged "
                            f"terrain and joint torques); {type(env).__name__} is not one: use "
                            f"the 'learned' controller on a robot")
        self.env, self.cfg = env, cfg or ReferenceControllerConfig()
        robot = env.robot
        waist = robot.joint_names.index("Waist")
        self.chains = build_chains(robot_model(robot), ROOT_BODY, CHAIN_SITES,
                                   list(robot.joint_names),
                                   frozen={"Waist": robot.default_pose[waist]})
        f64 = torch.float64
        self.default = torch.tensor(robot.default_pose, dtype=f64)
        joint_lower = torch.tensor(robot.joint_lower, dtype=f64)
        joint_upper = torch.tensor(robot.joint_upper, dtype=f64)
        margin = torch.full_like(joint_lower, self.cfg.joint_margin_rad)
        margin[ARM_JOINTS] = self.cfg.arm_margin_rad
        self.lower, self.upper = joint_lower + margin, joint_upper - margin
        self.kp = torch.tensor(robot.kp, dtype=torch.float64)
        pos, rot, _ = forward_kinematics(self.chains, self.default.unsqueeze(0))
        self.nominal_feet = pos[0, 2:]  # trunk upright: root frame == heading frame
        self.nominal_foot_rot = rot[0, 2:]
        terrain = None if env.flat_terrain else env.terrain_height
        self.gait = Gait(env.num_worlds, self.nominal_feet, robot.control_dt_s, terrain,
                         self.cfg.gait)
        # Index tensors of the chains, computed once: (C, L) into the joint vector.
        self._chain_index = self.chains.joint.clamp(min=0)
        self._flat_index = self._chain_index.reshape(-1)
        self._solve_mask = self.chains.solve.to(torch.float64)
        self._default_chain = self.default[self._chain_index]
        # Posture pull on the arms only (chains 0 and 1): the foot pose fixes the legs.
        self._posture_gain = torch.zeros(self.chains.num_chains, 1, dtype=torch.float64)
        self._posture_gain[:2] = self.cfg.posture_gain
        self._posture_gain = self._posture_gain * self._solve_mask
        n = env.num_worlds
        self.q_ik = self.default.expand(n, -1).clone()
        self.offset = torch.zeros(n, robot.num_joints, dtype=torch.float64)
        self.reset(env.observe())

    def reset(self, obs: Observation, ids: Tensor | None = None) -> None:
        if ids is None:
            ids = torch.arange(obs.num_worlds)
        ids = torch.as_tensor(ids, dtype=torch.long)
        self.q_ik[ids] = obs.joint_pos[ids]
        self.offset[ids] = 0.0
        feet_world = obs.root_pos[ids].unsqueeze(1) + quat_rotate(
            obs.root_quat[ids].unsqueeze(1).expand(-1, 2, -1), obs.foot_pos[ids])
        feet_yaw = yaw_of(quat_mul(obs.root_quat[ids].unsqueeze(1).expand(-1, 2, -1),
                                   obs.foot_quat[ids]))
        nominal_yaw = yaw_of(mat_to_quat(self.nominal_foot_rot))
        self.gait.reset(obs.root_pos[ids], yaw_of(obs.root_quat[ids]), feet_world,
                        feet_yaw - nominal_yaw, ids)

    def step(self, cmd: Command, obs: Observation) -> JointTargets:
        """Joint targets and a harness pose for this tick."""
        # Inference mode trims torch's per-operation overhead on this hot path; the state is
        # updated in place and the returned tensors are cloned out as ordinary tensors.
        with torch.inference_mode():
            joint, harness_pos, harness_quat = self._step(cmd, obs)
        return JointTargets(joint_pos=joint.clone(), gripper=cmd.gripper,
                            harness=HarnessTarget(pos=harness_pos.clone(),
                                                  quat=harness_quat.clone()))

    def _step(self, cmd: Command, obs: Observation) -> tuple[Tensor, Tensor, Tensor]:
        gait, cfg = self.gait, self.cfg
        gait.step(cmd.base_vel, obs.root_pos)
        targets_pos, targets_rot = self._chain_targets(cmd, obs)
        q = self.q_ik
        for _ in range(cfg.ik_iterations):
            pos, rot, jac = forward_kinematics(self.chains, q)
            err = torch.cat([targets_pos - pos, orientation_error(rot, targets_rot)], -1)
            bias = self._posture_gain * (self._default_chain - q[:, self._chain_index])
            dq = dls_step(jac, err, cfg.ik_damping, bias)
            # Scale the whole step of a chain (not each joint): clipping joints one by one
            # turns the step away from the descent direction and can make IK diverge.
            peak = dq.abs().max(dim=-1, keepdim=True).values
            dq = dq * torch.clamp(cfg.max_ik_step_rad / peak.clamp_min(1e-12), max=1.0)
            q = q.index_add(1, self._flat_index, (dq * self._solve_mask).reshape(q.shape[0], -1))
            q = torch.minimum(torch.maximum(q, self.lower), self.upper)
        self.q_ik.copy_(q)
        # Arms: gravity feed-forward, integral action and damping against the PD droop.
        arms = ARM_JOINTS
        bias_torque = self.env.joint_bias_torque()[:, arms]
        self.offset[:, arms] += cfg.integral_gain * (q[:, arms] - obs.joint_pos[:, arms])
        self.offset.clamp_(-cfg.integral_limit_rad, cfg.integral_limit_rad)
        joint_targets = q.clone()
        joint_targets[:, arms] += self.offset[:, arms] + (
            bias_torque - cfg.arm_damping * obs.joint_vel[:, arms]) / self.kp[arms]
        return joint_targets, gait.pos, quat_from_yaw(gait.yaw)

    def _chain_targets(self, cmd: Command, obs: Observation) -> tuple[Tensor, Tensor]:
        """Targets (B, 4, 3) and (B, 4, 3, 3) of the hand and foot sites in the root frame."""
        root_rot_t = quat_to_mat(obs.root_quat).transpose(-1, -2).unsqueeze(1)  # (B,1,3,3)
        gait = self.gait
        feet_local = (root_rot_t @ (gait.feet - obs.root_pos.unsqueeze(1)).unsqueeze(-1))
        feet_rot = root_rot_t @ _yaw_matrix(gait.feet_yaw) @ self.nominal_foot_rot
        pos = torch.cat([cmd.hand_pos, feet_local.squeeze(-1)], 1)
        rot = torch.cat([quat_to_mat(cmd.hand_quat), feet_rot], 1)
        return pos, rot


def _yaw_matrix(yaw: Tensor) -> Tensor:
    """(...,) -> (..., 3, 3) rotations about z."""
    c, s = torch.cos(yaw), torch.sin(yaw)
    zero, one = torch.zeros_like(yaw), torch.ones_like(yaw)
    return torch.stack([c, -s, zero, s, c, zero, zero, zero, one], -1).reshape(*yaw.shape, 3, 3)
