"""Training environment of the upper-body hand-pose tracking policy.

The T1 stands on the open floor. The legs and the pelvis stay with the reference controller's
harness (as they do at run time while only the upper-body policy exists), which walks at a
random base velocity in some episodes so the arms feel the trunk move. The policy drives the 14
arm joints with position offsets around the default pose; MuJoCo's position actuators track
them inside the physics step.

Each world follows a schedule of hand-pose targets: a target is a sampled collision-free arm
configuration seen through forward kinematics (`commands.ArmPoses`); the command either jumps
to it or moves there along the joint-space line from the previous configuration (so every
intermediate command is reachable too), then holds.

Randomisation per episode: a payload in each gripper, the arm servos' stiffness and damping,
the floor friction (from the task), the base velocity.

Observation (actor): `robot_io.control.policy_io.upper_observation`. The critic also sees the
payloads, servo scales, base velocity command, trunk velocities and the configuration behind the
command. Rewards: paper appendix (`paper-notes.md`), see `UpperRewardConfig`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from learning.controller.commands import ArmPoses, hand_poses, sample_arm_poses
from robot_io.control.kinematics import (
    build_chains,
    forward_kinematics,
    orientation_error,
)
from robot_io.control.policy_io import (
    PART_JOINTS,
    UPPER_OBS_TERMS,
    PolicySpec,
    arm_ik_step,
    upper_observation,
)
from robot_io.control.reference import ReferenceController
from robot_io.env import BatchedEnv
from robot_io.math3d import quat_conj, quat_rotate, quat_to_mat
from robot_io.robot_spec import RobotSpec
from robot_io.t1_model import ROOT_BODY
from robot_io.tasks.base import Range
from robot_io.tasks.open_floor import OpenFloorTask
from robot_io.types import SIDES, Command

ARMS = torch.tensor(PART_JOINTS["upper"])


@dataclass(frozen=True)
class Weight:
    """A reward weight that moves from `start` to `end` over the curriculum."""

    start: float
    end: float

    def at(self, progress: float) -> float:
        p = min(max(progress, 0.0), 1.0)
        return self.start + (self.end - self.start) * p


@dataclass(frozen=True)
class UpperRewardConfig:
    """Reward terms of hand-pose tracking (paper appendix; kernels exp(-|e|^2 / sigma^2)).

    `pos_sigmas` and `rot_sigmas` are the paper's coarse / fine / precise kernels, weights
    +2 and +1 each; we add a tighter kernel per quantity (`pos_pinpoint_sigma`,
    `rot_pinpoint_sigma`) so that errors below 2 cm / 0.1 rad still earn reward. The posture
    prior pulls the arm toward the configuration behind the command (the arm has one redundant
    degree of freedom).
    """

    pos_sigmas: tuple[float, ...] = (0.4, 0.1, 0.08)
    pos_weight: float = 2.0
    rot_sigmas: tuple[float, ...] = (0.8, 0.5, 0.3)
    rot_weight: float = 1.0
    pos_pinpoint_sigma: float = 0.02
    pos_pinpoint_weight: float = 2.0
    rot_pinpoint_sigma: float = 0.1
    rot_pinpoint_weight: float = 1.0
    posture: float = -0.2           # |q - q_nom|_1
    action_rate: Weight = Weight(-0.01, -0.1)   # |a_t - a_{t-1}|^2
    joint_vel: Weight = Weight(-1e-3, -2e-3)    # |qd|^2
    joint_acc: Weight = Weight(-1e-6, -3e-6)    # |qdd|^2
    ee_acc: float = -1.4e-2                      # |hand acceleration|^2 (root frame)
    torque_limit: float = -0.1                   # PD torque beyond the limit [N m]
    joint_limit: float = -4.0                    # joint beyond 95 % of its range [rad]
    soft_limit_fraction: float = 0.95


@dataclass(frozen=True)
class UpperEnvConfig:
    """Sizes, schedule and randomisation of the upper-body training environment."""

    num_worlds: int = 256
    episode_s: float = 8.0
    hold_s: Range = Range(1.0, 2.5)
    move_s: Range = Range(0.0, 1.2)       # joint-space move duration; below step_below_s: a jump
    step_below_s: float = 0.2
    payload_kg: Range = Range(0.0, 1.5)
    kp_scale: Range = Range(0.9, 1.1)
    kd_scale: Range = Range(0.7, 1.3)
    walk_fraction: float = 0.3            # episodes with a random base velocity
    walk_vx: Range = Range(-0.3, 0.5)
    walk_vy: Range = Range(-0.2, 0.2)
    walk_yaw: Range = Range(-0.5, 0.5)
    front_fraction: float = 0.5           # targets drawn from the hands-in-front part of the pool
    pool_size: int = 20000
    pool_seed: int = 0
    action_scale: float = 0.5
    action_clip: float = 6.0
    rewards: UpperRewardConfig = field(default_factory=UpperRewardConfig)


def tracking_terms(pos_err: Tensor, rot_err: Tensor, rc: UpperRewardConfig) -> dict[str, Tensor]:
    """The tracking rewards of (B, 2) hand position [m] and orientation [rad] errors, summed
    over the hands (before the control-period scaling)."""
    e2, r2 = pos_err.square(), rot_err.square()
    return {
        "hand_pos": rc.pos_weight * sum(torch.exp(-e2 / s ** 2) for s in rc.pos_sigmas).sum(-1),
        "hand_pos_pinpoint": rc.pos_pinpoint_weight * torch.exp(
            -e2 / rc.pos_pinpoint_sigma ** 2).sum(-1),
        "hand_rot": rc.rot_weight * sum(torch.exp(-r2 / s ** 2) for s in rc.rot_sigmas).sum(-1),
        "hand_rot_pinpoint": rc.rot_pinpoint_weight * torch.exp(
            -r2 / rc.rot_pinpoint_sigma ** 2).sum(-1),
    }


class UpperBodyEnv:
    """Batched hand-pose tracking on the CPU MuJoCo backend (or any `BatchedEnv` backend).

    The RL interface (`learning.controller.ppo.RLEnv`): `reset()`, `step(action)`,
    `set_progress(p)`, dimensions `obs_dim`, `critic_obs_dim`, `action_dim`.
    """

    part = "upper"

    def __init__(self, cfg: UpperEnvConfig | None = None, seed: int = 0, threads: int = 0,
                 robot: RobotSpec | None = None, pool: ArmPoses | None = None,
                 backend: str = "mujoco", device: str | None = None) -> None:
        self.cfg = cfg = cfg or UpperEnvConfig()
        env_kwargs = {"backend": backend, "device": device} if backend != "mujoco" else {}
        self.env = BatchedEnv(OpenFloorTask(), num_worlds=cfg.num_worlds, threads=threads,
                              seed=seed, robot=robot, **env_kwargs)
        self.robot = self.env.robot
        self.num_worlds = n = cfg.num_worlds
        self.gen = torch.Generator().manual_seed(seed + 7919)
        self.pool = pool or sample_arm_poses(self.robot, cfg.pool_size, cfg.pool_seed)
        front = (self.pool.hand_pos[..., 0] > 0.05).all(-1) & (self.pool.hand_pos[..., 2]
                                                                < 0.2).all(-1)
        self._front_idx = torch.nonzero(front).squeeze(-1)
        self.reference = ReferenceController(self.env)
        model = self.env.model
        self.chains = build_chains(model, ROOT_BODY, [f"{s}_hand" for s in SIDES],
                                   list(self.robot.joint_names), frozen={})
        self.default = self.env.default_pose
        self.dt = self.robot.control_dt_s
        self.episode_ticks = int(round(cfg.episode_s / self.dt))
        self._gripper_body = [model.body(f"{s}_gripper").id for s in SIDES]
        self._gripper_ipos = torch.tensor(model.body_ipos[self._gripper_body],
                                          dtype=torch.float64)
        self._gripper_mass0 = torch.tensor([model.body_mass[b] for b in self._gripper_body],
                                           dtype=torch.float64)
        self._gripper_inertia0 = torch.tensor(model.body_inertia[self._gripper_body],
                                              dtype=torch.float64)
        self._arm_act = torch.tensor([model.actuator(self.robot.joint_names[j]).id
                                      for j in PART_JOINTS["upper"]])
        self.kp = torch.tensor(self.robot.kp, dtype=torch.float64)[ARMS]
        self.kd = torch.tensor(self.robot.kd, dtype=torch.float64)[ARMS]
        self.torque_limit = torch.tensor(self.robot.torque_limit, dtype=torch.float64)[ARMS]
        lo = torch.tensor(self.robot.joint_lower, dtype=torch.float64)[ARMS]
        hi = torch.tensor(self.robot.joint_upper, dtype=torch.float64)[ARMS]
        mid, half = (lo + hi) / 2, (hi - lo) / 2 * cfg.rewards.soft_limit_fraction
        self.soft_lo, self.soft_hi = mid - half, mid + half
        # Per-world state.
        f64 = torch.float64
        self.q_from = torch.zeros(n, 14, dtype=f64)    # command path start (joint space)
        self.q_to = torch.zeros(n, 14, dtype=f64)      # command path end
        self.move_ticks = torch.ones(n, dtype=torch.long)
        self.hold_ticks = torch.ones(n, dtype=torch.long)
        self.segment_tick = torch.zeros(n, dtype=torch.long)
        self.q_cmd = torch.zeros(n, 14, dtype=f64)
        self.cmd_pos = torch.zeros(n, 2, 3, dtype=f64)
        self.cmd_quat = torch.zeros(n, 2, 4, dtype=f64)
        self.base_vel = torch.zeros(n, 3, dtype=f64)
        self.payload = torch.zeros(n, 2, dtype=f64)
        self.kp_scale = torch.ones(n, dtype=f64)
        self.kd_scale = torch.ones(n, dtype=f64)
        self.last_action = torch.zeros(n, 14, dtype=f64)
        self.prev_qd = torch.zeros(n, 14, dtype=f64)
        self.prev_hand_vel = torch.zeros(n, 2, 3, dtype=f64)
        self.prev_hand_pos = torch.zeros(n, 2, 3, dtype=f64)
        self.ticks = torch.zeros(n, dtype=torch.long)
        self.progress = 0.0
        self.obs_dim = sum(w for _, w in UPPER_OBS_TERMS)
        self.critic_obs_dim = self.obs_dim + 2 + 2 + 3 + 6 + 14
        self.action_dim = 14
        self._obs = None

    # -- RL interface -----------------------------------------------------------------------
    def set_progress(self, progress: float) -> None:
        """Curriculum position in [0, 1] (the regularisation weights follow it)."""
        self.progress = float(progress)

    def reset(self) -> tuple[Tensor, Tensor]:
        self._reset_worlds(torch.arange(self.num_worlds))
        return self._observe()

    def step(self, action: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, dict]:
        """Apply (B, 14) actions for one control tick.

        Returns:
            obs, critic_obs (after automatic resets), reward (B,), terminated (B,) bool,
            truncated (B,) bool (time limit: bootstrap from the value), info.
        """
        cfg = self.cfg
        action = action.to(torch.float64).clamp(-cfg.action_clip, cfg.action_clip)
        obs = self._obs
        cmd = Command(base_vel=self.base_vel, hand_pos=self.cmd_pos, hand_quat=self.cmd_quat,
                      gripper=torch.zeros(self.num_worlds, 2, dtype=torch.float64))
        targets = self.reference.step(cmd, obs)
        joint = targets.joint_pos
        joint[:, ARMS] = self.default[ARMS] + cfg.action_scale * action
        arm_target = joint[:, ARMS].clone()
        targets = type(targets)(joint_pos=joint, gripper=targets.gripper,
                                harness=targets.harness)
        self.env.apply(targets)
        self.ticks += 1
        obs = self.env.observe()
        reward, terms = self._reward(obs, action, arm_target)
        self.last_action = action
        outcome = self.env.outcome()
        terminated = outcome.unstable.clone()
        truncated = (self.ticks >= self.episode_ticks) & ~terminated
        info = {"pos_err_m": terms.pop("pos_err_m"), "rot_err_rad": terms.pop("rot_err_rad"),
                "terms": terms}
        done = terminated | truncated
        self._advance_commands()
        self._obs = obs
        if bool(done.any()):
            self._reset_worlds(torch.nonzero(done).squeeze(-1))
        o, c = self._observe()
        return o, c, reward, terminated, truncated, info

    # -- internals -------------------------------------------------------------------------
    def _reset_worlds(self, ids: Tensor) -> None:
        cfg, gen, n = self.cfg, self.gen, len(ids)
        self.env.reset(ids)
        # Payloads and servo randomisation (per-world model fields), then constants.
        sim = self.env.sim
        mass = sim.model_field("body_mass")
        inertia = sim.model_field("body_inertia")
        self.payload[ids] = cfg.payload_kg.sample(2 * n, gen).reshape(n, 2)
        for k, body in enumerate(self._gripper_body):
            m0 = self._gripper_mass0[k]
            mass[ids, body] = (m0 + self.payload[ids, k]).to(mass)
            inertia[ids, body] = (self._gripper_inertia0[k] * ((m0 + self.payload[ids, k])
                                                               / m0).unsqueeze(-1)).to(inertia)
        self.kp_scale[ids] = cfg.kp_scale.sample(n, gen)
        self.kd_scale[ids] = cfg.kd_scale.sample(n, gen)
        gain, bias = sim.model_field("actuator_gainprm"), sim.model_field("actuator_biasprm")
        rows, act = ids.unsqueeze(1), self._arm_act
        kp, kd = self.kp * self.kp_scale[ids, None], self.kd * self.kd_scale[ids, None]
        gain[rows, act, 0] = kp.to(gain)
        bias[rows, act, 1] = -kp.to(bias)
        bias[rows, act, 2] = -kd.to(bias)
        sim.update_constants(ids)
        sim.forward(ids)
        obs = self.env.observe()
        self.reference.reset(obs, ids)
        walk = torch.rand(n, generator=gen, dtype=torch.float64) < cfg.walk_fraction
        vel = torch.stack([cfg.walk_vx.sample(n, gen), cfg.walk_vy.sample(n, gen),
                           cfg.walk_yaw.sample(n, gen)], -1)
        self.base_vel[ids] = vel * walk.unsqueeze(-1)
        q_now = obs.joint_pos[ids][:, ARMS]
        self.q_from[ids] = q_now
        self.q_cmd[ids] = q_now
        self._new_segment(ids)
        self.last_action[ids] = 0.0
        self.prev_qd[ids] = 0.0
        self.prev_hand_vel[ids] = 0.0
        self.prev_hand_pos[ids] = obs.hand_pos[ids]
        self.ticks[ids] = 0
        self._obs = obs
        self._update_command_pose(ids)

    def _draw_targets(self, n: int) -> Tensor:
        gen, pool = self.gen, self.pool
        idx = torch.randint(len(pool), (n,), generator=gen)
        front = torch.rand(n, generator=gen) < self.cfg.front_fraction
        if len(self._front_idx) and bool(front.any()):
            pick = torch.randint(len(self._front_idx), (int(front.sum()),), generator=gen)
            idx[front] = self._front_idx[pick]
        return pool.q[idx]

    def _new_segment(self, ids: Tensor) -> None:
        cfg, gen, n = self.cfg, self.gen, len(ids)
        self.q_from[ids] = self.q_cmd[ids]
        self.q_to[ids] = self._draw_targets(n)
        move = cfg.move_s.sample(n, gen)
        move = torch.where(move < cfg.step_below_s, torch.zeros_like(move), move)
        self.move_ticks[ids] = (move / self.dt).round().long().clamp(min=1)
        self.hold_ticks[ids] = (cfg.hold_s.sample(n, gen) / self.dt).round().long()
        self.segment_tick[ids] = 0

    def _advance_commands(self) -> None:
        self.segment_tick += 1
        ended = self.segment_tick >= self.move_ticks + self.hold_ticks
        if bool(ended.any()):
            self._new_segment(torch.nonzero(ended).squeeze(-1))
        # Only worlds whose command still moves (or just got a new target) need kinematics.
        moving = torch.nonzero(self.segment_tick <= self.move_ticks).squeeze(-1)
        if len(moving):
            self._update_command_pose(moving)

    def _update_command_pose(self, ids: Tensor) -> None:
        frac = (self.segment_tick[ids].to(torch.float64) / self.move_ticks[ids]).clamp(max=1.0)
        q = self.q_from[ids] + frac.unsqueeze(-1) * (self.q_to[ids] - self.q_from[ids])
        self.q_cmd[ids] = q
        self.cmd_pos[ids], self.cmd_quat[ids] = hand_poses(self.chains, self.default, ARMS, q)

    def _observe(self) -> tuple[Tensor, Tensor]:
        obs = self._obs
        actor = upper_observation(obs, self.cmd_pos, self.cmd_quat, self.last_action,
                                  self.default, self.chains)
        extra = torch.cat([
            self.payload, self.kp_scale.unsqueeze(-1), self.kd_scale.unsqueeze(-1),
            self.base_vel, obs.root_lin_vel, obs.root_ang_vel,
            self.q_cmd - obs.joint_pos[:, ARMS]], -1).to(torch.float32)
        return actor, torch.cat([actor, extra], -1)

    def _reward(self, obs, action: Tensor, arm_target: Tensor) -> tuple[Tensor, dict]:
        rc, w = self.cfg.rewards, self.progress
        pos_err = (self.cmd_pos - obs.hand_pos).norm(dim=-1)                  # (B, 2)
        rot_err = orientation_error(quat_to_mat(obs.hand_quat),
                                    quat_to_mat(self.cmd_quat)).norm(dim=-1)  # (B, 2)
        terms = tracking_terms(pos_err, rot_err, rc)
        q, qd = obs.joint_pos[:, ARMS], obs.joint_vel[:, ARMS]
        terms["posture"] = rc.posture * (q - self.q_cmd).abs().sum(-1)
        terms["action_rate"] = rc.action_rate.at(w) * (action - self.last_action).square().sum(-1)
        terms["joint_vel"] = rc.joint_vel.at(w) * qd.square().sum(-1)
        qdd = (qd - self.prev_qd) / self.dt
        terms["joint_acc"] = rc.joint_acc.at(w) * qdd.square().sum(-1)
        hand_vel = (obs.hand_pos - self.prev_hand_pos) / self.dt
        hand_acc = (hand_vel - self.prev_hand_vel) / self.dt
        terms["ee_acc"] = rc.ee_acc * hand_acc.square().sum((-1, -2))
        torque = self.kp * self.kp_scale[:, None] * (arm_target - q) - (
            self.kd * self.kd_scale[:, None] * qd)
        terms["torque_limit"] = rc.torque_limit * (torque.abs() - self.torque_limit).clamp(
            min=0).sum(-1)
        terms["joint_limit"] = rc.joint_limit * ((self.soft_lo - q).clamp(min=0)
                                                 + (q - self.soft_hi).clamp(min=0)).sum(-1)
        # The first ticks after a reset have no previous velocity: skip the difference terms.
        fresh = self.ticks <= 1
        for key in ("joint_acc", "ee_acc"):
            terms[key] = torch.where(fresh, torch.zeros_like(terms[key]), terms[key])
        self.prev_qd = qd.clone()
        self.prev_hand_vel = hand_vel
        self.prev_hand_pos = obs.hand_pos.clone()
        reward = sum(terms.values()) * self.dt
        terms["pos_err_m"] = pos_err
        terms["rot_err_rad"] = rot_err
        return reward.to(torch.float32), terms

    def expert_action(self, gain: float = 2.0, joint_damping: float = 1.0) -> Tensor:
        """A teacher's action for the current state (for a behaviour-cloning warm start).

        The measured arm joints plus `gain` times the observation's IK step toward the
        commanded hand poses (`policy_io.arm_ik_step`), plus the gravity torque of the arm
        without its payload and a joint damping torque, turned into a target offset through the
        servo stiffness. It is a function of what the actor observes: the payload, which the
        actor cannot see, is left to the IK feedback (and to PPO).
        """
        obs, cfg = self._obs, self.cfg
        step = arm_ik_step(self.chains, obs.joint_pos, self.cmd_pos, self.cmd_quat)
        dadr = self.env.joint_dadr[ARMS]
        torque = self.env.sim.qfrc_bias[:, dadr].to(torch.float64) - joint_damping * (
            obs.joint_vel[:, ARMS])
        # Remove the payload's holding torque J_com^T (-m g): MuJoCo's bias force includes it.
        # The payload sits at the gripper body's centre of mass; its linear Jacobian there is
        # the hand site's, shifted by the lever from the site: J_v - [com - site]x J_w.
        site, _, jac = forward_kinematics(self.chains, obs.joint_pos)   # (B, 2, 3), (B, 2, 6, 7)
        sim = self.env.sim
        body = self._gripper_body
        com_w = sim.xpos[:, body].double() + quat_rotate(sim.xquat[:, body].double(),
                                                self._gripper_ipos.expand(self.num_worlds, -1, -1))
        com = quat_rotate(quat_conj(obs.root_quat).unsqueeze(1).expand(-1, 2, -1),
                          com_w - obs.root_pos.unsqueeze(1))
        lever = (com - site).unsqueeze(-1).expand(*com.shape, jac.shape[-1])
        jac_v = jac[..., :3, :] - torch.linalg.cross(lever, jac[..., 3:, :], dim=-2)
        weight = 9.81 * self.payload.unsqueeze(-1) * obs.projected_gravity.unsqueeze(1)
        payload = (jac_v.transpose(-1, -2) @ weight.unsqueeze(-1)).squeeze(-1)
        full = torch.zeros_like(obs.joint_pos)
        full[:, self.chains.joint.reshape(-1)] = payload.reshape(self.num_worlds, -1)
        torque = torque + full[:, ARMS]
        target = obs.joint_pos[:, ARMS] + gain * step + torque / (
            self.kp * self.kp_scale[:, None])
        action = (target - self.default[ARMS]) / cfg.action_scale
        return action.clamp(-cfg.action_clip, cfg.action_clip).to(torch.float32)

    def policy_spec(self, obs_mean: Tensor, obs_std: Tensor, hidden: tuple[int, ...],
                    activation: str, obs_clip: float) -> PolicySpec:
        """The `PolicySpec` of a policy trained in this environment."""
        idx = list(PART_JOINTS["upper"])
        r = self.robot
        return PolicySpec(
            part="upper", joint_names=tuple(r.joint_names[i] for i in idx),
            default_pose=tuple(r.default_pose[i] for i in idx),
            action_scale=self.cfg.action_scale, action_clip=self.cfg.action_clip,
            kp=tuple(r.kp[i] for i in idx), kd=tuple(r.kd[i] for i in idx),
            obs_terms=UPPER_OBS_TERMS, obs_mean=tuple(obs_mean.tolist()),
            obs_std=tuple(obs_std.tolist()), obs_clip=obs_clip, hidden=tuple(hidden),
            activation=activation, control_dt_s=r.control_dt_s)
