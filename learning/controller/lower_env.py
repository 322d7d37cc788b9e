"""Training environment of the lower-body locomotion policy (foot-placement tracking).

The T1 stands on the open floor with no harness: the policy drives the 12 leg joints with
position offsets around the default pose (MuJoCo's position actuators track them inside the
physics step) and must keep the robot up by itself. Each world gets a random base-velocity
command, resampled every few seconds (zero in some draws); a `FootstepPlanner` turns it into
alternating footholds, and the policy is rewarded for putting its feet there (paper appendix,
see `paper-notes.md` and `LowerRewardConfig`). `LowerEnvConfig.track_footholds=False` is the
velocity-tracking-only variant: the foot-placement terms get weight zero.

Disturbance: the arms follow random collision-free configurations from an `ArmPoses` pool as
PD targets (joint-space moves, then holds), with a payload in each gripper; waist and head stay
at the default pose; the floor friction is randomised by the task.

Observation (actor): `robot_io.control.policy_io.lower_observation` (`LOWER_OBS_TERMS`, 54).
Critic, in addition (privileged, 40): the reference foot positions and the measured foot
positions (root heading frame), the base linear velocity (root frame), the foot contact wrenches
(force and torque about each sole site, heading frame, from MuJoCo contact sensors the task adds
to the scene) and the trunk height.

Episodes end in a fall (trunk below `fall_height_m`, tilt above `fall_tilt_rad`, or an unstable
simulation: `terminated`) or at the time limit (`truncated`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import mujoco
import torch
from torch import Tensor

from learning.controller.commands import ArmPoses, sample_arm_poses
from learning.controller.upper_env import Weight
from robot_io.control.footsteps import FootstepConfig, FootstepPlanner, feet_from_observation
from robot_io.control.kinematics import (
    build_chains,
    dls_step,
    forward_kinematics,
    orientation_error,
)
from robot_io.control.lower_policy import lower_policy_observation
from robot_io.control.policy_io import LOWER_OBS_TERMS, PART_JOINTS, PolicySpec
from robot_io.env import BatchedEnv
from robot_io.math3d import quat_to_mat, wrap_angle, yaw_of
from robot_io.robot_spec import RobotSpec
from robot_io.t1_model import ROOT_BODY, default_robot_spec
from robot_io.tasks.base import Range
from robot_io.tasks.open_floor import OpenFloorTask
from robot_io.types import SIDES, JointTargets, Observation

LEGS = torch.tensor(PART_JOINTS["lower"])
ARMS = torch.tensor(PART_JOINTS["upper"])
ANKLES = torch.tensor([4, 5, 10, 11])  # ankle pitch and roll within the 12 leg joints
_CONTACT_DATA = ((1 << int(mujoco.mjtConDataField.mjCONDATA_FORCE))
                 | (1 << int(mujoco.mjtConDataField.mjCONDATA_TORQUE))
                 | (1 << int(mujoco.mjtConDataField.mjCONDATA_POS)))
_NETFORCE = 3  # mjtConDataReduce: all matching contacts merged into one (world frame)


class FootContactFloorTask(OpenFloorTask):
    """The open floor plus one contact sensor per foot: the net contact force and torque on the
    foot (world frame) and their application point, added to the scene, not the robot files."""

    def build_scene(self, spec: mujoco.MjSpec) -> None:
        super().build_scene(spec)
        for side in SIDES:
            sensor = spec.add_sensor(name=f"{side}_foot_contact",
                                     type=mujoco.mjtSensor.mjSENS_CONTACT,
                                     objtype=mujoco.mjtObj.mjOBJ_XBODY,
                                     objname=f"{side}_foot_link")
            sensor.intprm[0], sensor.intprm[1], sensor.intprm[2] = _CONTACT_DATA, _NETFORCE, 1


@dataclass(frozen=True)
class LowerRewardConfig:
    """Reward terms of foot-placement tracking (paper appendix; kernels exp(-|e|^2 / sigma^2)).

    The joint references are the leg joint angles that put the soles on the planner's reference
    feet with the trunk upright at its measured position and yaw (its height clamped to
    `ref_height_m`), one damped-least-squares step per tick, warm-started; and their rate of
    change. Additions to the
    paper's list: a yaw-rate kernel (weight `yaw_rate`), so that the velocity-only variant can
    turn, and the air-time term counts only while the planner steps.
    """

    foot_pos_sigma: float = 0.05
    foot_pos: float = 5.0            # per foot
    foot_yaw_sigma: float = 0.1
    foot_yaw: float = 3.0            # per foot
    lin_vel_sigma: float = 0.25
    lin_vel: float = 1.0
    yaw_rate_sigma: float = 0.5
    yaw_rate: float = 0.5
    joint_ref_pos_sigma: float = 0.3
    joint_ref_pos: float = 0.5
    joint_ref_vel_sigma: float = 1.0
    joint_ref_vel: float = 0.3
    action_rate: Weight = Weight(-0.001, -0.5)     # |a_t - a_{t-1}|^2
    joint_acc: Weight = Weight(-1e-7, -1e-5)       # |qdd|^2 of the legs
    torque_limit: float = -0.5                     # PD torque beyond the limit [N m]
    joint_limit: float = -1e-4                     # joint beyond 95 % of its range [rad]
    soft_limit_fraction: float = 0.95
    ankle_posture: float = -2.0                    # |q_ankle - q_default|^2
    orientation_sigma: float = 0.2
    orientation: float = 3.0                       # exp(-|g_xy|^2 / sigma^2)
    air_time: float = 20.0                         # sum over touchdowns of (t_air - period)
    base_height: float = -3.0                      # 1 while the trunk is out of range
    base_height_range_m: Range = Range(0.55, 0.72)
    ref_height_m: Range = Range(0.5, 0.665)        # trunk height of the joint reference
    contact_force_n: float = 5.0                   # normal force that counts as contact


@dataclass(frozen=True)
class LowerEnvConfig:
    """Sizes, commands and randomisation of the lower-body training environment."""

    num_worlds: int = 128
    episode_s: float = 10.0
    physics_dt_s: float = 0.005          # 200 Hz, as the published T1 walking setup
    resample_s: Range = Range(2.0, 4.0)  # base-velocity command duration
    zero_fraction: float = 0.25          # commands that are exactly zero (stand)
    vx: Range = Range(-0.3, 0.5)
    vy: Range = Range(-0.2, 0.2)
    yaw_rate: Range = Range(-0.6, 0.6)
    arm_hold_s: Range = Range(1.0, 3.0)
    arm_move_s: Range = Range(0.5, 1.5)
    payload_kg: Range = Range(0.0, 1.0)
    pool_size: int = 2000
    pool_seed: int = 1
    action_scale: float = 0.25
    action_clip: float = 6.0
    fall_height_m: float = 0.45
    fall_tilt_rad: float = math.radians(60.0)
    track_footholds: bool = True         # False: velocity tracking only
    footsteps: FootstepConfig = field(default_factory=FootstepConfig)
    rewards: LowerRewardConfig = field(default_factory=LowerRewardConfig)


class LowerBodyEnv:
    """Batched foot-placement tracking on the CPU MuJoCo backend (the `RLEnv` protocol of
    `learning.controller.ppo`): `reset()`, `step(action)`, `set_progress(p)`, `policy_spec`."""

    part = "lower"

    def __init__(self, cfg: LowerEnvConfig | None = None, seed: int = 0, threads: int = 0,
                 robot: RobotSpec | None = None, pool: ArmPoses | None = None) -> None:
        self.cfg = cfg = cfg or LowerEnvConfig()
        if not cfg.track_footholds:
            cfg = self.cfg = replace(cfg, rewards=replace(cfg.rewards, foot_pos=0.0,
                                                          foot_yaw=0.0))
        robot = robot or default_robot_spec(physics_dt_s=cfg.physics_dt_s)
        self.env = BatchedEnv(FootContactFloorTask(), num_worlds=cfg.num_worlds,
                              threads=threads, seed=seed, robot=robot)
        self.robot, model = self.env.robot, self.env.model
        self.num_worlds = n = cfg.num_worlds
        self.dt = self.robot.control_dt_s
        self.episode_ticks = round(cfg.episode_s / self.dt)
        self.gen = torch.Generator().manual_seed(seed + 104729)
        self.pool = pool or sample_arm_poses(self.robot, cfg.pool_size, cfg.pool_seed)
        self.planner = FootstepPlanner(n, self.dt, cfg.footsteps)
        self.default = self.env.default_pose
        waist = self.robot.joint_names.index("Waist")
        self.chains = build_chains(model, ROOT_BODY, [f"{s}_foot" for s in SIDES],
                                   list(self.robot.joint_names),
                                   frozen={"Waist": self.robot.default_pose[waist]})
        _, rot, _ = forward_kinematics(self.chains, self.default.unsqueeze(0))
        self.nominal_foot_rot = rot[0]  # (2, 3, 3), trunk upright
        self._contact_adr = [int(model.sensor(f"{s}_foot_contact").adr[0]) for s in SIDES]
        self._gripper_body = [model.body(f"{s}_gripper").id for s in SIDES]
        self._gripper_mass0 = torch.tensor([model.body_mass[b] for b in self._gripper_body],
                                           dtype=torch.float64)
        self._gripper_inertia0 = torch.tensor(model.body_inertia[self._gripper_body],
                                              dtype=torch.float64)
        f64 = torch.float64
        self.kp = torch.tensor(self.robot.kp, dtype=f64)[LEGS]
        self.kd = torch.tensor(self.robot.kd, dtype=f64)[LEGS]
        self.torque_limit = torch.tensor(self.robot.torque_limit, dtype=f64)[LEGS]
        lo, hi = self.env.joint_lower[LEGS], self.env.joint_upper[LEGS]
        mid, half = (lo + hi) / 2, (hi - lo) / 2 * cfg.rewards.soft_limit_fraction
        self.soft_lo, self.soft_hi = mid - half, mid + half
        # Per-world state.
        self.base_vel = torch.zeros(n, 3, dtype=f64)
        self.cmd_ticks = torch.zeros(n, dtype=torch.long)
        self.arm_from = torch.zeros(n, 14, dtype=f64)
        self.arm_to = torch.zeros(n, 14, dtype=f64)
        self.arm_cmd = torch.zeros(n, 14, dtype=f64)
        self.arm_move = torch.ones(n, dtype=torch.long)
        self.arm_hold = torch.ones(n, dtype=torch.long)
        self.arm_tick = torch.zeros(n, dtype=torch.long)
        self.payload = torch.zeros(n, 2, dtype=f64)
        self.q_ref = self.default[LEGS].expand(n, -1).clone()
        self.qd_ref = torch.zeros(n, 12, dtype=f64)
        self.last_action = torch.zeros(n, 12, dtype=f64)
        self.prev_qd = torch.zeros(n, 12, dtype=f64)
        self.air_time = torch.zeros(n, 2, dtype=f64)
        self.wrench = torch.zeros(n, 2, 6, dtype=f64)
        self.ticks = torch.zeros(n, dtype=torch.long)
        self.progress = 0.0
        self.obs_dim = sum(w for _, w in LOWER_OBS_TERMS)
        self.critic_obs_dim = self.obs_dim + 6 + 6 + 3 + 12 + 1
        self.action_dim = 12
        self._obs: Observation | None = None

    # -- RL interface -----------------------------------------------------------------------
    def set_progress(self, progress: float) -> None:
        """Curriculum position in [0, 1] (the regularisation weights follow it)."""
        self.progress = float(progress)

    def reset(self) -> tuple[Tensor, Tensor]:
        self._reset_worlds(torch.arange(self.num_worlds))
        return self._observe()

    def step(self, action: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, dict]:
        """Apply (B, 12) actions for one control tick.

        Returns:
            obs, critic_obs (after automatic resets), reward (B,), terminated (B,) bool (a fall),
            truncated (B,) bool (time limit), info: per-world metrics (B,) and "terms".
        """
        cfg = self.cfg
        action = action.to(torch.float64).clamp(-cfg.action_clip, cfg.action_clip)
        joint = self.default.expand(self.num_worlds, -1).clone()
        joint[:, LEGS] = self.default[LEGS] + cfg.action_scale * action
        joint[:, ARMS] = self.arm_cmd
        applied = self.env.apply(JointTargets(
            joint_pos=joint, gripper=torch.zeros(self.num_worlds, 2, dtype=torch.float64),
            harness=None))
        self.ticks += 1
        obs = self._obs = self.env.observe()
        feet = feet_from_observation(obs)
        self.planner.step(self.base_vel, feet)
        self.wrench = self._wrenches(obs)
        self._update_joint_reference(obs)
        reward, terms, metrics = self._reward(obs, feet, action, applied.joint_pos[:, LEGS])
        # Touchdown accuracy: a foot at the end of its planned swing against its planned
        # foothold (NaN for worlds without a touchdown this tick).
        landed, planned = self.planner.planned_touchdowns()
        err = (feet[..., :2] - planned[..., :2]).norm(dim=-1)
        err = torch.where(landed, err, torch.full_like(err, float("nan")))
        metrics["touchdown_err_m"] = err.nanmean(-1)
        self.last_action = action
        gravity_z = obs.projected_gravity[:, 2]
        fell = (obs.root_pos[:, 2] < cfg.fall_height_m) | (
            gravity_z > -math.cos(cfg.fall_tilt_rad))
        terminated = fell | self.env.outcome().unstable
        truncated = (self.ticks >= self.episode_ticks) & ~terminated
        metrics["episode_age_s"] = self.ticks.to(torch.float64) * self.dt
        info = {**metrics, "terms": terms}
        self._advance_commands()
        done = terminated | truncated
        if bool(done.any()):
            self._reset_worlds(torch.nonzero(done).squeeze(-1))
        o, c = self._observe()
        return o, c, reward, terminated, truncated, info

    def policy_spec(self, obs_mean: Tensor, obs_std: Tensor, hidden: tuple[int, ...],
                    activation: str, obs_clip: float) -> PolicySpec:
        """The `PolicySpec` of a policy trained in this environment."""
        idx, r = list(PART_JOINTS["lower"]), self.robot
        return PolicySpec(
            part="lower", joint_names=tuple(r.joint_names[i] for i in idx),
            default_pose=tuple(r.default_pose[i] for i in idx),
            action_scale=self.cfg.action_scale, action_clip=self.cfg.action_clip,
            kp=tuple(r.kp[i] for i in idx), kd=tuple(r.kd[i] for i in idx),
            obs_terms=LOWER_OBS_TERMS, obs_mean=tuple(obs_mean.tolist()),
            obs_std=tuple(obs_std.tolist()), obs_clip=obs_clip, hidden=tuple(hidden),
            activation=activation, control_dt_s=r.control_dt_s)

    # -- episodes and commands --------------------------------------------------------------
    def _reset_worlds(self, ids: Tensor) -> None:
        cfg, gen, n = self.cfg, self.gen, len(ids)
        self.env.reset(ids)
        sim = self.env.sim
        mass, inertia = sim.model_field("body_mass"), sim.model_field("body_inertia")
        self.payload[ids] = cfg.payload_kg.sample(2 * n, gen).reshape(n, 2)
        for k, body in enumerate(self._gripper_body):
            m0 = self._gripper_mass0[k]
            mass[ids, body] = m0 + self.payload[ids, k]
            inertia[ids, body] = self._gripper_inertia0[k] * ((m0 + self.payload[ids, k])
                                                              / m0).unsqueeze(-1)
        sim.update_constants(ids)
        sim.forward(ids)
        obs = self._obs = self.env.observe()
        self.planner.reset(feet_from_observation(obs)[ids], ids)
        self.cmd_ticks[ids] = 0
        self._resample_velocity(ids)
        self.arm_cmd[ids] = obs.joint_pos[ids][:, ARMS]
        self._new_arm_segment(ids)
        self.q_ref[ids] = self.default[LEGS]
        self.qd_ref[ids] = 0.0
        self.last_action[ids] = 0.0
        self.prev_qd[ids] = 0.0
        self.air_time[ids] = 0.0
        self.wrench[ids] = 0.0
        self.ticks[ids] = 0

    def _resample_velocity(self, ids: Tensor) -> None:
        cfg, gen, n = self.cfg, self.gen, len(ids)
        vel = torch.stack([cfg.vx.sample(n, gen), cfg.vy.sample(n, gen),
                           cfg.yaw_rate.sample(n, gen)], -1)
        stand = torch.rand(n, generator=gen, dtype=torch.float64) < cfg.zero_fraction
        self.base_vel[ids] = torch.where(stand.unsqueeze(-1), torch.zeros_like(vel), vel)
        self.cmd_ticks[ids] = (cfg.resample_s.sample(n, gen) / self.dt).round().long()

    def _new_arm_segment(self, ids: Tensor) -> None:
        cfg, gen, n = self.cfg, self.gen, len(ids)
        self.arm_from[ids] = self.arm_cmd[ids]
        self.arm_to[ids] = self.pool.q[torch.randint(len(self.pool), (n,), generator=gen)]
        self.arm_move[ids] = (cfg.arm_move_s.sample(n, gen) / self.dt).round().long().clamp(min=1)
        self.arm_hold[ids] = (cfg.arm_hold_s.sample(n, gen) / self.dt).round().long()
        self.arm_tick[ids] = 0

    def _advance_commands(self) -> None:
        self.cmd_ticks -= 1
        expired = self.cmd_ticks <= 0
        if bool(expired.any()):
            self._resample_velocity(torch.nonzero(expired).squeeze(-1))
        self.arm_tick += 1
        ended = self.arm_tick >= self.arm_move + self.arm_hold
        if bool(ended.any()):
            self._new_arm_segment(torch.nonzero(ended).squeeze(-1))
        frac = (self.arm_tick.to(torch.float64) / self.arm_move).clamp(max=1.0).unsqueeze(-1)
        self.arm_cmd = self.arm_from + frac * (self.arm_to - self.arm_from)

    # -- measurements -----------------------------------------------------------------------
    def _wrenches(self, obs: Observation) -> Tensor:
        """(B, 2, 6) ground reaction force on each foot and its torque about the sole site,
        in the heading frame (the contact sensors are computed inside the physics step)."""
        data = self.env.sim.sensordata
        raw = torch.stack([data[:, a:a + 9] for a in self._contact_adr], 1)
        force, torque, point = -raw[..., :3], -raw[..., 3:6], raw[..., 6:9]
        sole = obs.root_pos.unsqueeze(1) + (quat_to_mat(obs.root_quat).unsqueeze(1)
                                            @ obs.foot_pos.unsqueeze(-1)).squeeze(-1)
        touching = force.norm(dim=-1, keepdim=True) > 0
        torque = torque + torch.linalg.cross(torch.where(touching, point - sole,
                                                         torch.zeros_like(point)), force)
        yaw = yaw_of(obs.root_quat).unsqueeze(-1).expand(-1, 2)
        return torch.cat([_yaw_rotate(-yaw, force), _yaw_rotate(-yaw, torque)], -1)

    def _update_joint_reference(self, obs: Observation) -> None:
        """One damped-least-squares step of the leg joint reference toward the reference feet."""
        rc = self.cfg.rewards
        ref_pos, ref_yaw = self.planner.reference_feet()
        yaw = yaw_of(obs.root_quat)
        height = obs.root_pos[:, 2:3].clamp(rc.ref_height_m.lo, rc.ref_height_m.hi)
        trunk = torch.cat([obs.root_pos[:, :2], height], -1)
        target_pos = _yaw_rotate(-yaw.unsqueeze(-1).expand(-1, 2), ref_pos - trunk.unsqueeze(1))
        target_rot = _yaw_matrix(wrap_angle(ref_yaw - yaw.unsqueeze(-1))) @ self.nominal_foot_rot
        q = self.default.expand(self.num_worlds, -1).clone()
        q[:, LEGS] = self.q_ref
        pos, rot, jac = forward_kinematics(self.chains, q)
        err = torch.cat([target_pos - pos, orientation_error(rot, target_rot)], -1)
        dq = dls_step(jac, err, 0.05)
        dq = dq * torch.clamp(0.2 / dq.abs().amax(-1, keepdim=True).clamp_min(1e-12), max=1.0)
        index = self.chains.joint.clamp(min=0)
        q = q.index_add(1, index.reshape(-1), (dq * self.chains.solve).reshape(q.shape[0], -1))
        q = torch.minimum(torch.maximum(q, self.env.joint_lower), self.env.joint_upper)
        new = q[:, LEGS]
        self.qd_ref = torch.where((self.ticks <= 1).unsqueeze(-1), torch.zeros_like(new),
                                  (new - self.q_ref) / self.dt)
        self.q_ref = new

    # -- observation and reward -------------------------------------------------------------
    def _observe(self) -> tuple[Tensor, Tensor]:
        obs, planner = self._obs, self.planner
        yaw = yaw_of(obs.root_quat)
        # The same function as the runtime (`robot_io.control.lower_policy.PolicyLegs`).
        actor = lower_policy_observation(obs, planner, self.base_vel, self.last_action,
                                         self.default)
        ref_pos, _ = planner.reference_feet()
        feet_world = obs.root_pos.unsqueeze(1) + (quat_to_mat(obs.root_quat).unsqueeze(1)
                                                  @ obs.foot_pos.unsqueeze(-1)).squeeze(-1)
        ground = torch.cat([obs.root_pos[:, :2], torch.zeros_like(yaw).unsqueeze(-1)], -1)
        heading = yaw.unsqueeze(-1).expand(-1, 2)
        extra = torch.cat([
            _yaw_rotate(-heading, ref_pos - ground.unsqueeze(1)).reshape(-1, 6),
            _yaw_rotate(-heading, feet_world - ground.unsqueeze(1)).reshape(-1, 6),
            obs.root_lin_vel, self.wrench.reshape(-1, 12),
            obs.root_pos[:, 2:3]], -1).to(torch.float32)
        return actor, torch.cat([actor, extra], -1)

    def _reward(self, obs: Observation, feet: Tensor, action: Tensor,
                leg_target: Tensor) -> tuple[Tensor, dict, dict]:
        rc, p, cfg = self.cfg.rewards, self.progress, self.cfg
        kernel = lambda e2, sigma: torch.exp(-e2 / sigma ** 2)
        ref_pos, ref_yaw = self.planner.reference_feet()
        feet_world = obs.root_pos.unsqueeze(1) + (quat_to_mat(obs.root_quat).unsqueeze(1)
                                                  @ obs.foot_pos.unsqueeze(-1)).squeeze(-1)
        pos_err = (feet_world - ref_pos).norm(dim=-1)                      # (B, 2)
        yaw_err = wrap_angle(feet[..., 2] - ref_yaw).abs()                 # (B, 2)
        yaw = yaw_of(obs.root_quat)
        world_vel = (quat_to_mat(obs.root_quat) @ obs.root_lin_vel.unsqueeze(-1)).squeeze(-1)
        vel = _yaw_rotate(-yaw, world_vel)                                  # heading frame
        vel_err = (vel[:, :2] - self.base_vel[:, :2]).norm(dim=-1)
        yaw_rate = (quat_to_mat(obs.root_quat) @ obs.root_ang_vel.unsqueeze(-1))[:, 2, 0]
        legs, legs_qd = obs.joint_pos[:, LEGS], obs.joint_vel[:, LEGS]
        t: dict[str, Tensor] = {}
        t["foot_pos"] = rc.foot_pos * kernel(pos_err.square(), rc.foot_pos_sigma).sum(-1)
        t["foot_yaw"] = rc.foot_yaw * kernel(yaw_err.square(), rc.foot_yaw_sigma).sum(-1)
        t["lin_vel"] = rc.lin_vel * kernel(vel_err.square(), rc.lin_vel_sigma)
        t["yaw_rate"] = rc.yaw_rate * kernel((yaw_rate - self.base_vel[:, 2]).square(),
                                             rc.yaw_rate_sigma)
        t["joint_ref_pos"] = rc.joint_ref_pos * kernel(
            (legs - self.q_ref).square().sum(-1), rc.joint_ref_pos_sigma)
        t["joint_ref_vel"] = rc.joint_ref_vel * kernel(
            (legs_qd - self.qd_ref).square().sum(-1), rc.joint_ref_vel_sigma)
        t["action_rate"] = rc.action_rate.at(p) * (action - self.last_action).square().sum(-1)
        qdd = (legs_qd - self.prev_qd) / self.dt
        t["joint_acc"] = torch.where(self.ticks <= 1, torch.zeros_like(qdd[:, 0]),
                                     rc.joint_acc.at(p) * qdd.square().sum(-1))
        torque = self.kp * (leg_target - legs) - self.kd * legs_qd
        t["torque_limit"] = rc.torque_limit * (torque.abs() - self.torque_limit).clamp(
            min=0).sum(-1)
        t["joint_limit"] = rc.joint_limit * ((self.soft_lo - legs).clamp(min=0)
                                             + (legs - self.soft_hi).clamp(min=0)).sum(-1)
        t["ankle_posture"] = rc.ankle_posture * (
            legs[:, ANKLES] - self.default[LEGS][ANKLES]).square().sum(-1)
        g_xy = obs.projected_gravity[:, :2].square().sum(-1)
        t["orientation"] = rc.orientation * kernel(g_xy, rc.orientation_sigma)
        # Air time: rewarded (or penalised) at each touchdown, only while the planner steps.
        contact = self.wrench[..., 2] > rc.contact_force_n
        first = contact & (self.air_time > 0)
        self.air_time += self.dt
        stepping = (self.planner.swing_leg >= 0).unsqueeze(-1)
        period = cfg.footsteps.step_period_s
        t["air_time"] = rc.air_time * ((self.air_time - period) * (first & stepping)).sum(-1)
        self.air_time = torch.where(contact, torch.zeros_like(self.air_time), self.air_time)
        height = obs.root_pos[:, 2]
        t["base_height"] = rc.base_height * ((height < rc.base_height_range_m.lo)
                                             | (height > rc.base_height_range_m.hi)).double()
        self.prev_qd = legs_qd.clone()
        reward = sum(t.values()) * self.dt
        metrics = {"pos_err_m": pos_err.mean(-1), "rot_err_rad": yaw_err.mean(-1),
                   "vel_err_mps": vel_err}
        return reward.to(torch.float32), t, metrics


def _yaw_rotate(yaw: Tensor, v: Tensor) -> Tensor:
    """Rotate vectors v (..., 3) about z by yaw (...,)."""
    c, s = torch.cos(yaw), torch.sin(yaw)
    return torch.stack([c * v[..., 0] - s * v[..., 1], s * v[..., 0] + c * v[..., 1],
                        v[..., 2]], -1)


def _yaw_matrix(yaw: Tensor) -> Tensor:
    """(...,) -> (..., 3, 3) rotations about z."""
    c, s = torch.cos(yaw), torch.sin(yaw)
    zero, one = torch.zeros_like(yaw), torch.ones_like(yaw)
    return torch.stack([c, -s, zero, s, c, zero, zero, zero, one], -1).reshape(*yaw.shape, 3, 3)
