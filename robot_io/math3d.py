"""Batched rigid-body maths on torch tensors. Quaternions are (w, x, y, z)."""

from __future__ import annotations

import torch
from torch import Tensor


def quat_mul(a: Tensor, b: Tensor) -> Tensor:
    """Hamilton product a * b, (..., 4)."""
    # (w1 w2 - v1.v2, w1 v2 + w2 v1 + v1 x v2): few tensor ops, this is on hot paths.
    aw, av = a[..., :1], a[..., 1:]
    bw, bv = b[..., :1], b[..., 1:]
    w = aw * bw - (av * bv).sum(-1, keepdim=True)
    v = aw * bv + bw * av + torch.linalg.cross(av, bv)
    return torch.cat([w, v], -1)


_EYE3 = torch.eye(3, dtype=torch.float64)
# Entries of the cross-product matrix [a]x picked from [0, a0, a1, a2, -a0, -a1, -a2].
_SKEW_INDEX = torch.tensor([0, 6, 2, 3, 0, 4, 5, 1, 0])


def quat_conj(q: Tensor) -> Tensor:
    """Conjugate (the inverse of a unit quaternion)."""
    return torch.cat([q[..., :1], -q[..., 1:]], dim=-1)


def quat_rotate(q: Tensor, v: Tensor) -> Tensor:
    """Rotate vectors v (..., 3) by unit quaternions q (..., 4)."""
    w, xyz = q[..., :1], q[..., 1:]
    t = 2.0 * torch.cross(xyz, v, dim=-1)
    return v + w * t + torch.cross(xyz, t, dim=-1)


def quat_to_mat(q: Tensor) -> Tensor:
    """(..., 4) -> (..., 3, 3) rotation matrices (columns are the rotated axes)."""
    # R = (w^2 - |v|^2) I + 2 v v^T + 2 w [v]x, in few tensor ops (this is on hot paths).
    w, v = q[..., :1], q[..., 1:]
    wv = 2.0 * w * v
    padded = torch.cat([torch.zeros_like(w), wv, -wv], -1)  # [0, a, b, c, -a, -b, -c]
    skew = padded[..., _SKEW_INDEX].reshape(*q.shape[:-1], 3, 3)  # [2 w v]x
    outer = 2.0 * v.unsqueeze(-1) * v.unsqueeze(-2)
    diag = (w * w - (v * v).sum(-1, keepdim=True)).unsqueeze(-1) * _EYE3.to(q.device)
    return outer + skew + diag


def mat_to_quat(m: Tensor) -> Tensor:
    """(..., 3, 3) rotation matrices -> (..., 4) unit quaternions with w >= 0."""
    m00, m11, m22 = m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]
    # Magnitudes from the diagonal, signs from the off-diagonal: stable for all rotations.
    w = torch.sqrt(torch.clamp(1 + m00 + m11 + m22, min=0)) / 2
    x = torch.sqrt(torch.clamp(1 + m00 - m11 - m22, min=0)) / 2
    y = torch.sqrt(torch.clamp(1 - m00 + m11 - m22, min=0)) / 2
    z = torch.sqrt(torch.clamp(1 - m00 - m11 + m22, min=0)) / 2
    x = torch.copysign(x, m[..., 2, 1] - m[..., 1, 2])
    y = torch.copysign(y, m[..., 0, 2] - m[..., 2, 0])
    z = torch.copysign(z, m[..., 1, 0] - m[..., 0, 1])
    q = torch.stack([w, x, y, z], dim=-1)
    return q / q.norm(dim=-1, keepdim=True)


def yaw_of(q: Tensor) -> Tensor:
    """Heading angle (rotation about world z) of orientations q, (...,)."""
    w, x, y, z = q.unbind(-1)
    return torch.atan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))


def quat_from_yaw(yaw: Tensor) -> Tensor:
    """Rotation about z by yaw, (...,) -> (..., 4)."""
    half = 0.5 * yaw
    zero = torch.zeros_like(yaw)
    return torch.stack([torch.cos(half), zero, zero, torch.sin(half)], dim=-1)


def quat_from_axis_angle(axis: Tensor, angle: Tensor) -> Tensor:
    """Unit axis (..., 3) and angle (...,) -> quaternion (..., 4)."""
    half = 0.5 * angle.unsqueeze(-1)
    return torch.cat([torch.cos(half), axis * torch.sin(half)], dim=-1)


def quat_angle(a: Tensor, b: Tensor) -> Tensor:
    """Rotation angle between orientations a and b [rad], (...,)."""
    dot = (a * b).sum(-1).abs().clamp(max=1.0)
    return 2 * torch.acos(dot)


def wrap_angle(a: Tensor) -> Tensor:
    """Wrap angles to (-pi, pi]."""
    return torch.remainder(a + torch.pi, 2 * torch.pi) - torch.pi


class Frame:
    """A batch of frames (B, 3) / (B, 4) with their rotation matrices computed once."""

    def __init__(self, pos: Tensor, quat: Tensor) -> None:
        self.pos, self.quat = pos, quat
        self.rot = quat_to_mat(quat)  # (B, 3, 3)

    def to_local(self, pos: Tensor, quat: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """World poses (B, ..., 3) / (B, ..., 4) expressed in these frames."""
        return pose_in_frame(self.pos, self.quat, pos, quat, self.rot)


def pose_in_frame(frame_pos: Tensor, frame_quat: Tensor, pos: Tensor,
                  quat: Tensor | None = None,
                  frame_rot: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
    """Express world poses in a frame: (frame^-1 * pose). Frames (B, 3)/(B, 4); poses (B, ..., 3/4).

    frame_rot: the frames' rotation matrices when already known."""
    b = frame_pos.shape[0]
    rot = quat_to_mat(frame_quat) if frame_rot is None else frame_rot  # (B, 3, 3)
    flat = (pos.reshape(b, -1, 3) - frame_pos.unsqueeze(1)) @ rot  # row vectors: R^T (p - o)
    local_pos = flat.reshape(pos.shape)
    local_quat = None
    if quat is not None:
        extra = quat.dim() - frame_quat.dim()
        fq = frame_quat.reshape(b, *([1] * extra), 4)
        local_quat = quat_mul(quat_conj(fq), quat)
        local_quat = local_quat * torch.where(local_quat[..., :1] < 0, -1.0, 1.0)
    return local_pos, local_quat
