"""Hand-pose commands for training and evaluating the upper-body policy.

Commands come from sampled arm configurations through forward kinematics (paper appendix), so
every commanded pose is reachable: joint angles are drawn uniformly inside the limits (less a
margin), and a configuration is kept only when
- no forearm or hand part touches the trunk, the head, the legs or the other arm (the simulated
  robot does not collide with itself, so this is checked here on a copy of the model), and
- both hands lie inside the command boundary's hand box.

A pool is drawn once per seed; training and held-out evaluation use different seeds.

`RandomCommandSource` (below) turns a pool into whole-body commands (random base velocities,
hand-pose moves and holds, grippers) for evaluating a controller in the session loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import mujoco
import numpy as np
import torch
from torch import Tensor

from robot_io.control.kinematics import build_chains, forward_kinematics
from robot_io.control.policy_io import PART_JOINTS
from robot_io.math3d import mat_to_quat
from robot_io.robot_spec import RobotSpec
from robot_io.t1_model import ROOT_BODY, build_robot, robot_model
from robot_io.tasks.base import Range
from robot_io.types import SIDES, Command, CommandLimits, Observation

if TYPE_CHECKING:
    from robot_io.protocols import World

_CHECK_BIT = 4  # contype / conaffinity bit the collision check gives the robot's geoms
# Bodies from the elbow outward: their contact with the rest of the robot is a collision.
_DISTAL_FROM = {"left": "Left_Elbow_Pitch", "right": "Right_Elbow_Pitch"}


@dataclass(frozen=True)
class ArmPoses:
    """A pool of reachable, collision-free arm configurations and their hand poses.

    Attributes:
        q: (P, 14) arm joint angles, left arm then right arm (`PART_JOINTS["upper"]` order).
        hand_pos: (P, 2, 3) grasp-site positions in the root frame.
        hand_quat: (P, 2, 4) grasp-site orientations in the root frame (wxyz, w >= 0).
    """

    q: Tensor
    hand_pos: Tensor
    hand_quat: Tensor

    def __len__(self) -> int:
        return int(self.q.shape[0])

    def sample(self, n: int, gen: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
        """n random entries: (q, hand_pos, hand_quat)."""
        idx = torch.randint(len(self), (n,), generator=gen)
        return self.q[idx], self.hand_pos[idx], self.hand_quat[idx]


def hand_poses(chains, default_pose: Tensor, arm_index: list[int] | Tensor,
               q_arm: Tensor) -> tuple[Tensor, Tensor]:
    """(n, 2, 3) positions and (n, 2, 4) orientations (wxyz, w >= 0) of both hands in the root
    frame for arm configurations q_arm (n, 14), the other joints at the default pose."""
    full = default_pose.expand(q_arm.shape[0], -1).clone()
    full[:, arm_index] = q_arm
    pos, rot, _ = forward_kinematics(chains, full)
    quat = mat_to_quat(rot)
    return pos, torch.where(quat[..., :1] < 0, -quat, quat)


def _body_of_joint(model: mujoco.MjModel, name: str) -> int:
    return int(model.jnt_bodyid[model.joint(name).id])


def _subtree(model: mujoco.MjModel, root: int) -> set[int]:
    out = {root}
    for b in range(model.nbody):
        p = b
        while p > 0:
            if p == root:
                out.add(b)
                break
            p = int(model.body_parentid[p])
    return out


def sample_arm_poses(robot: RobotSpec, count: int, seed: int, margin_rad: float = 0.1,
                     limits: CommandLimits | None = None,
                     max_draws: int | None = None) -> ArmPoses:
    """Draw `count` collision-free arm configurations whose hands lie in the hand box.

    Raises:
        RuntimeError: fewer than `count` configurations passed within `max_draws` draws
            (default 40 x count), which means the limits or the box leave no room.
    """
    limits = limits or CommandLimits()
    spec = build_robot(robot)
    for geom in spec.geoms:
        if geom.contype or geom.conaffinity:
            geom.contype, geom.conaffinity = _CHECK_BIT, _CHECK_BIT
    model = spec.compile()
    data = mujoco.MjData(model)
    arm_index = list(PART_JOINTS["upper"])
    names = [robot.joint_names[i] for i in arm_index]
    qadr = np.array([model.joint(n).qposadr[0] for n in names])
    lower = np.array([robot.joint_lower[i] for i in arm_index]) + margin_rad
    upper = np.array([robot.joint_upper[i] for i in arm_index]) - margin_rad
    all_qadr = np.array([model.joint(n).qposadr[0] for n in robot.joint_names])
    base = model.qpos0.copy()
    base[all_qadr] = robot.default_pose
    root = model.body(ROOT_BODY).id
    root_jnt = model.body_jntadr[root]
    base[model.jnt_qposadr[root_jnt]:model.jnt_qposadr[root_jnt] + 7] = (0, 0, 0, 1, 0, 0, 0)
    distal = {s: _subtree(model, _body_of_joint(model, _DISTAL_FROM[s])) for s in SIDES}
    distal_any = distal["left"] | distal["right"]
    sites = [model.site(f"{s}_hand").id for s in SIDES]
    box_lo, box_hi = np.array(limits.hand_box_min_m), np.array(limits.hand_box_max_m)
    rng = np.random.default_rng(seed)
    max_draws = max_draws or 40 * count
    qs, pos, quat = [], [], []
    draws = 0
    while len(qs) < count:
        if draws >= max_draws:
            raise RuntimeError(f"only {len(qs)} of {count} arm configurations passed the "
                               f"collision and hand-box checks in {draws} draws")
        draws += 1
        q = rng.uniform(lower, upper)
        data.qpos[:] = base
        data.qpos[qadr] = q
        mujoco.mj_kinematics(model, data)
        hands = data.site_xpos[sites]
        if (hands < box_lo).any() or (hands > box_hi).any():
            continue
        mujoco.mj_collision(model, data)
        if _self_collision(model, data, distal, distal_any):
            continue
        qs.append(q)
        pos.append(hands.copy())
        q4 = np.zeros((2, 4))
        for k, sid in enumerate(sites):
            mujoco.mju_mat2Quat(q4[k], data.site_xmat[sid])
        quat.append(np.where(q4[:, :1] < 0, -q4, q4))
    t = lambda x: torch.tensor(np.array(x), dtype=torch.float64)
    return ArmPoses(q=t(qs), hand_pos=t(pos), hand_quat=t(quat))


def _self_collision(model: mujoco.MjModel, data: mujoco.MjData, distal: dict[str, set[int]],
                    distal_any: set[int]) -> bool:
    """A contact between a forearm/hand body and any body outside that same arm's distal part."""
    for i in range(data.ncon):
        c = data.contact[i]
        b1, b2 = int(model.geom_bodyid[c.geom[0]]), int(model.geom_bodyid[c.geom[1]])
        if b1 not in distal_any and b2 not in distal_any:
            continue  # e.g. upper arm against the trunk at the shoulder: joint neighbours
        if c.dist > 0:
            continue
        same_arm = any(b1 in d and b2 in d for d in distal.values())
        if not same_arm:
            return True
    return False


# -- random whole-body commands for evaluating a controller -------------------------------------
@dataclass(frozen=True)
class RandomCommandConfig:
    """How `RandomCommandSource` draws its commands (documented defaults).

    Base velocity: each world holds a velocity for `vel_hold_s`; a held velocity is zero with
    probability `zero_vel_fraction`, else each component is uniform within +- the limits of
    `limits` (the command gate's defaults). Arms: each world draws a target configuration from
    the pool, reaches it by a jump (probability `arm_jump_fraction`) or by a joint-space move of
    `arm_move_s`, then holds it for `arm_hold_s`; at every new target each gripper is closed
    with probability `gripper_closed_fraction`, else open.
    """

    vel_hold_s: Range = Range(2.0, 4.0)
    zero_vel_fraction: float = 0.25
    limits: CommandLimits = CommandLimits()
    arm_jump_fraction: float = 0.3
    arm_move_s: Range = Range(0.3, 1.2)
    arm_hold_s: Range = Range(1.5, 3.0)
    gripper_closed_fraction: float = 0.5

    def __post_init__(self) -> None:
        for name in ("zero_vel_fraction", "arm_jump_fraction", "gripper_closed_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"RandomCommandConfig.{name} must lie in [0, 1], got {value}")
        if self.vel_hold_s.lo <= 0 or self.arm_hold_s.lo < 0 or self.arm_move_s.lo < 0:
            raise ValueError("RandomCommandConfig: hold and move times must not be negative "
                             "(and velocity holds must be positive)")


class RandomCommandSource:
    """Random base-velocity, hand-pose and gripper commands for every world (a `CommandSource`).

    Hand commands are the forward kinematics of arm configurations: a move follows the
    joint-space line from the previous configuration to a pool entry, so every intermediate
    command is reachable too (as in `learning.controller.upper_env`). The other joints stay at
    the default pose, the hand poses are in the root frame.

    Args:
        env: the worlds commanded (its model, robot spec, world count and control period).
        pool: the arm configurations to draw targets from; evaluation uses a pool drawn with a
            seed that training never uses.
        seed: seed of this source's generator.
        cfg: how commands are drawn.
    """

    def __init__(self, env: World, pool: ArmPoses, seed: int = 0,
                 cfg: RandomCommandConfig | None = None) -> None:
        if len(pool) == 0:
            raise ValueError("the arm-pose pool is empty")
        self.cfg = cfg or RandomCommandConfig()
        self.pool, self.dt = pool, env.control_dt_s
        self.num_worlds = n = env.num_worlds
        self.gen = torch.Generator().manual_seed(seed)
        self.chains = build_chains(robot_model(env.robot), ROOT_BODY,
                                   [f"{s}_hand" for s in SIDES], list(env.robot.joint_names),
                                   frozen={})
        self.default = torch.tensor(env.robot.default_pose, dtype=torch.float64)
        self.arms = torch.tensor(PART_JOINTS["upper"])
        f64 = torch.float64
        self.base_vel = torch.zeros(n, 3, dtype=f64)
        self.vel_ticks_left = torch.zeros(n, dtype=torch.long)
        self.q_from = torch.zeros(n, len(self.arms), dtype=f64)
        self.q_to = torch.zeros(n, len(self.arms), dtype=f64)
        self.move_ticks = torch.ones(n, dtype=torch.long)
        self.hold_ticks = torch.ones(n, dtype=torch.long)
        self.segment_tick = torch.zeros(n, dtype=torch.long)
        self.gripper = torch.zeros(n, 2, dtype=f64)
        self.hand_pos = torch.zeros(n, 2, 3, dtype=f64)
        self.hand_quat = torch.zeros(n, 2, 4, dtype=f64)
        self.hand_quat[..., 0] = 1.0

    def reset(self, obs: Observation, ids: Tensor | None = None) -> None:
        """Start worlds `ids` (all when None) from their measured arm configuration."""
        ids = torch.arange(self.num_worlds) if ids is None else torch.as_tensor(ids).long()
        if len(ids) == 0:
            return
        self.q_to[ids] = obs.joint_pos[ids][:, self.arms].to(torch.float64)
        self._new_arm_segment(ids)
        self._new_velocity(ids)
        self._update_hands(ids)

    def next_command(self, obs: Observation) -> Command:
        """This tick's command; then the schedules advance by one tick."""
        cmd = Command(base_vel=self.base_vel.clone(), hand_pos=self.hand_pos.clone(),
                      hand_quat=self.hand_quat.clone(), gripper=self.gripper.clone())
        self.vel_ticks_left -= 1
        expired = torch.nonzero(self.vel_ticks_left <= 0).squeeze(1)
        if len(expired):
            self._new_velocity(expired)
        self.segment_tick += 1
        # A move shows its last pose at tick move_ticks - 1; the hold follows for hold_ticks.
        ended = torch.nonzero(self.segment_tick >= self.move_ticks - 1 + self.hold_ticks
                              ).squeeze(1)
        if len(ended):
            self._new_arm_segment(ended)
        # Only worlds whose command still moves (or just got a new target) need kinematics.
        moving = torch.nonzero(self.segment_tick < self.move_ticks).squeeze(1)
        if len(moving):
            self._update_hands(moving)
        return cmd

    def _ticks(self, seconds: Tensor) -> Tensor:
        return (seconds / self.dt).round().long()

    def _new_velocity(self, ids: Tensor) -> None:
        cfg, gen, n = self.cfg, self.gen, len(ids)
        lim = torch.tensor([cfg.limits.max_vx_mps, cfg.limits.max_vy_mps,
                            cfg.limits.max_yaw_rate_rps], dtype=torch.float64)
        vel = (2 * torch.rand(n, 3, generator=gen, dtype=torch.float64) - 1) * lim
        zero = torch.rand(n, generator=gen, dtype=torch.float64) < cfg.zero_vel_fraction
        self.base_vel[ids] = torch.where(zero.unsqueeze(-1), torch.zeros_like(vel), vel)
        self.vel_ticks_left[ids] = self._ticks(cfg.vel_hold_s.sample(n, gen)).clamp(min=1)

    def _new_arm_segment(self, ids: Tensor) -> None:
        """From the current target, toward a new pool entry: a jump or a joint-space move."""
        cfg, gen, n = self.cfg, self.gen, len(ids)
        self.q_from[ids] = self.q_to[ids]
        self.q_to[ids], _, _ = self.pool.sample(n, gen)
        jump = torch.rand(n, generator=gen, dtype=torch.float64) < cfg.arm_jump_fraction
        move = self._ticks(cfg.arm_move_s.sample(n, gen)).clamp(min=1)
        self.move_ticks[ids] = torch.where(jump, torch.ones_like(move), move)
        self.hold_ticks[ids] = self._ticks(cfg.arm_hold_s.sample(n, gen))
        self.segment_tick[ids] = 0
        closed = torch.rand(n, 2, generator=gen, dtype=torch.float64) < (
            cfg.gripper_closed_fraction)
        self.gripper[ids] = closed.to(torch.float64)

    def _update_hands(self, ids: Tensor) -> None:
        """Hand poses of worlds `ids` at their place on the joint-space line."""
        frac = ((self.segment_tick[ids] + 1).to(torch.float64)
                / self.move_ticks[ids]).clamp(max=1.0)
        q = self.q_from[ids] + frac.unsqueeze(-1) * (self.q_to[ids] - self.q_from[ids])
        self.hand_pos[ids], self.hand_quat[ids] = hand_poses(self.chains, self.default,
                                                             self.arms, q)
