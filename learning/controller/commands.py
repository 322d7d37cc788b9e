"""Hand-pose commands for training and evaluating the upper-body policy.

Commands come from sampled arm configurations through forward kinematics (paper appendix), so
every commanded pose is reachable: joint angles are drawn uniformly inside the limits (less a
margin), and a configuration is kept only when
- no forearm or hand part touches the trunk, the head, the legs or the other arm (the simulated
  robot does not collide with itself, so this is checked here on a copy of the model), and
- both hands lie inside the command boundary's hand box.

A pool is drawn once per seed; training and held-out evaluation use different seeds.
"""

from __future__ import annotations

from dataclasses import dataclass

import mujoco
import numpy as np
import torch
from torch import Tensor

from robot_io.control.policy_io import PART_JOINTS
from robot_io.robot_spec import RobotSpec
from robot_io.t1_model import ROOT_BODY, build_robot
from robot_io.types import SIDES, CommandLimits

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
    t = lambda x: torch.tensor(np.array(x), dtype=torch.float64)  # noqa: E731
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
