"""Batched forward kinematics and damped-least-squares IK of kinematic chains, in torch.

Chains run from the root body to a site (hands, feet). They are padded to a common length so
that all chains of all worlds are solved in one set of tensor operations.
"""

from __future__ import annotations

from dataclasses import dataclass

import mujoco
import numpy as np
import torch
from torch import Tensor


@dataclass(frozen=True)
class ChainSet:
    """C chains padded to L links. Link l applies a fixed transform then its hinge rotation.

    Attributes:
        off_pos: (C, L, 3) link origin in its parent link's frame.
        off_rot: (C, L, 3, 3) link orientation in its parent link's frame.
        axis: (C, L, 3) hinge axis in the link frame (zero for a fixed link).
        k1, k2: (C, L, 3, 3) skew(axis) and skew(axis)^2, for Rodrigues' formula.
        joint: (C, L) index into the robot's joint vector, -1 for padding.
        solve: (C, L) whether the link is a real joint (False for padding).
        site_pos, site_rot: (C, 3), (C, 3, 3) the end site in the last link's frame.
        flat_index: (C * L,) `joint` flattened, padding mapped to joint 0.
    """

    off_pos: Tensor
    off_rot: Tensor
    axis: Tensor
    k1: Tensor
    k2: Tensor
    joint: Tensor
    solve: Tensor
    site_pos: Tensor
    site_rot: Tensor
    flat_index: Tensor  # (C * L,) joint indices, padding mapped to joint 0 (its axis is zero)

    @property
    def num_chains(self) -> int:
        return int(self.joint.shape[0])


_EYE = torch.eye(3, dtype=torch.float64)


def _skew(v: np.ndarray) -> np.ndarray:
    return np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]], float)


def _hinge(axis: np.ndarray, angle: float) -> np.ndarray:
    k = _skew(axis)
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * (k @ k)


def build_chains(model: mujoco.MjModel, root: str, sites: list[str], joint_names: list[str],
                 frozen: dict[str, float]) -> ChainSet:
    """Extract chains root -> site from a compiled model.

    Links without a joint, and frozen joints (held at the given angle), are folded into the
    next moving link's fixed offset (or into the site), so a chain has one link per joint IK
    may move.

    Args:
        model: the compiled model.
        root: the chains' base body (its frame is the root frame).
        sites: end sites, one chain each.
        joint_names: the robot joint order the `joint` indices refer to.
        frozen: joints on a chain that IK must not move, with the angle they are held at
            (e.g. the waist for the legs).
    """
    chains = []
    root_id = model.body(root).id
    for site in sites:
        sid = model.site(site).id
        bodies = []
        body = int(model.site_bodyid[sid])
        while body != root_id:
            if body == 0:
                raise ValueError(f"site {site} is not below body {root}")
            bodies.append(body)
            body = int(model.body_parentid[body])
        rows = []
        pend_pos, pend_rot = np.zeros(3), np.eye(3)  # fixed transform not yet emitted
        for b in reversed(bodies):
            rot = np.zeros(9)
            mujoco.mju_quat2Mat(rot, model.body_quat[b])
            pend_pos = pend_pos + pend_rot @ model.body_pos[b]
            pend_rot = pend_rot @ rot.reshape(3, 3)
            if model.body_jntnum[b] > 1:
                raise ValueError(f"body {model.body(b).name} has several joints")
            if model.body_jntnum[b] == 0:
                continue
            jnt = model.body_jntadr[b]
            if np.abs(model.jnt_pos[jnt]).max() > 1e-9:
                raise ValueError(f"joint {model.joint(jnt).name} is not at its body origin")
            name, axis = model.joint(jnt).name, model.jnt_axis[jnt].copy()
            if name in frozen:
                pend_rot = pend_rot @ _hinge(axis, frozen[name])
                continue
            rows.append((pend_pos, pend_rot, axis, joint_names.index(name)))
            pend_pos, pend_rot = np.zeros(3), np.eye(3)
        srot = np.zeros(9)
        mujoco.mju_quat2Mat(srot, model.site_quat[sid])
        chains.append((rows, pend_pos + pend_rot @ model.site_pos[sid],
                       pend_rot @ srot.reshape(3, 3)))
    length = max(len(rows) for rows, _, _ in chains)
    c = len(chains)
    off_pos = np.zeros((c, length, 3))
    off_rot = np.tile(np.eye(3), (c, length, 1, 1))
    axis = np.zeros((c, length, 3))
    joint = -np.ones((c, length), dtype=np.int64)
    for i, (rows, _, _) in enumerate(chains):
        for j, (p, r, a, idx) in enumerate(rows):
            off_pos[i, j], off_rot[i, j], axis[i, j], joint[i, j] = p, r, a, idx
    k1 = np.stack([[_skew(axis[i, j]) for j in range(length)] for i in range(c)])
    t = lambda x: torch.tensor(x, dtype=torch.float64)  # noqa: E731
    joint_t = torch.tensor(joint)
    return ChainSet(off_pos=t(off_pos), off_rot=t(off_rot), axis=t(axis), k1=t(k1),
                    k2=t(k1 @ k1), joint=joint_t, solve=joint_t >= 0,
                    site_pos=t(np.stack([p for _, p, _ in chains])),
                    site_rot=t(np.stack([r for _, _, r in chains])),
                    flat_index=joint_t.clamp(min=0).reshape(-1))


def forward_kinematics(chains: ChainSet, q: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """End-site poses and Jacobians in the root frame.

    Args:
        chains: the chains.
        q: (B, nj) robot joint positions.

    Returns:
        pos (B, C, 3), rot (B, C, 3, 3), jac (B, C, 6, L): rows 0-2 translational, 3-5
        rotational, zero columns for fixed or frozen links.
    """
    # Padding links have a zero axis: their rotation is the identity whatever the angle, and
    # their Jacobian column is zero, so no masking is needed below.
    theta = q[:, chains.flat_index].reshape(q.shape[0], *chains.joint.shape)
    s, c = torch.sin(theta)[..., None, None], torch.cos(theta)[..., None, None]
    # Each link's local rotation (fixed offset, then its hinge), all links in one batched op,
    # laid out link-major so that each link's slice is contiguous.
    local = (chains.off_rot @ (_EYE + s * chains.k1 + (1 - c) * chains.k2)).permute(2, 0, 1, 3, 4)
    local = local.contiguous()  # (L, B, C, 3, 3)
    rots = [local[0]]
    for link in range(1, local.shape[0]):
        rots.append(rots[-1] @ local[link])
    frames = torch.stack(rots, 2)  # (B, C, L, 3, 3): the link frames
    parents = torch.cat([_EYE.expand(q.shape[0], chains.num_chains, 1, 3, 3), frames[:, :, :-1]],
                        2)  # the frame each link is attached in
    anchor = torch.cumsum((parents @ chains.off_pos[..., None]).squeeze(-1), dim=2)
    # A hinge leaves its own axis unchanged, so the axis in the root frame is frame @ axis.
    axis = (frames @ chains.axis[..., None]).squeeze(-1)
    rot = rots[-1]
    ee_pos = anchor[:, :, -1] + (rot @ chains.site_pos[..., None]).squeeze(-1)
    ee_rot = rot @ chains.site_rot
    jp = torch.linalg.cross(axis, ee_pos.unsqueeze(2) - anchor)
    jac = torch.cat([jp, axis], dim=-1).transpose(-1, -2)  # (B, C, 6, L)
    return ee_pos, ee_rot, jac


def orientation_error(current: Tensor, target: Tensor) -> Tensor:
    """Rotation vector taking `current` to `target` (both (..., 3, 3)), in the outer frame."""
    rel = target @ current.transpose(-1, -2)
    # Axis-angle of rel via its quaternion; robust for all angles below pi.
    w = 0.5 * torch.sqrt(torch.clamp(1 + rel[..., 0, 0] + rel[..., 1, 1] + rel[..., 2, 2],
                                     min=1e-12))
    v = torch.stack([rel[..., 2, 1] - rel[..., 1, 2], rel[..., 0, 2] - rel[..., 2, 0],
                     rel[..., 1, 0] - rel[..., 0, 1]], -1) / (4 * w.unsqueeze(-1))
    sin_half = v.norm(dim=-1, keepdim=True)
    angle = 2 * torch.atan2(sin_half, w.unsqueeze(-1))
    return v * (angle / sin_half.clamp_min(1e-12))


def dls_step(jac: Tensor, err: Tensor, damping: float, null_bias: Tensor | None = None) -> Tensor:
    """Damped least-squares joint step dq = J^T (J J^T + d^2 I)^-1 err, plus a null-space bias.

    Args:
        jac: (..., 6, L).
        err: (..., 6) task-space error.
        damping: d, in the units of err.
        null_bias: (..., L) a joint-space step projected into the null space of J, or None.
    """
    jt = jac.transpose(-1, -2)
    eye = torch.eye(jac.shape[-2], dtype=jac.dtype)
    a = jac @ jt + damping ** 2 * eye
    if null_bias is None:
        return (jt @ torch.linalg.solve(a, err.unsqueeze(-1))).squeeze(-1)
    # One solve for both right-hand sides: the task error and the bias's task-space image.
    rhs = torch.stack([err, (jac @ null_bias.unsqueeze(-1)).squeeze(-1)], -1)
    x = jt @ torch.linalg.solve(a, rhs)
    return x[..., 0] + null_bias - x[..., 1]
