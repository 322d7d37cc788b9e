"""Retargeting maths shared by the teleop devices (keyboard, gamepad, VR): pure torch functions.

Conventions (those of `robot_io.types`): positions in metres, angles in radians, quaternions
(w, x, y, z); hand poses in the robot's root frame (x forward, y left, z up). Every function
takes tensors with any leading shape `...` (e.g. (B, 2) for both hands of B worlds) and returns
new tensors; none keeps state. Stateful pieces (the clutch) take their state and return the
next one.

A VR pipeline composes them per tick:

    T = calibrate_operator(head_pos, head_quat, head_in_root_m)        # on request
    dev_pos, dev_quat = apply_transform(T, controller_pos, controller_quat)
    clutch, pos, quat = clutch_step(clutch, grip_held, dev_pos, dev_quat, held_pos, held_quat)
    pos, quat = smooth_position(...), smooth_quat(...)
    pos, quat = limit_hand(held_pos, held_quat, pos, quat, dt_s, ...)  # rate + workspace
    gripper = trigger_to_gripper(trigger, deadband)
    base_vel = stick_to_base_velocity(stick_xy, yaw_axis, deadband, max_...)

The keyboard and gamepad integrate velocities instead of following a device pose, and use the
limits, deadband, gripper and base-velocity functions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from robot_io.math3d import quat_conj, quat_from_yaw, quat_mul, quat_rotate, yaw_of

F64 = torch.float64
_SMALL = 1e-9


# -- rotations ---------------------------------------------------------------------------------
def rotvec_to_quat(rotvec: Tensor) -> Tensor:
    """Rotation vectors (..., 3) [rad] (axis times angle) -> unit quaternions (..., 4)."""
    angle = rotvec.norm(dim=-1, keepdim=True)
    half = 0.5 * angle
    # sin(a/2)/a, with its Taylor series near zero so that a zero vector gives the identity.
    k = torch.where(angle > 1e-6, torch.sin(half) / angle.clamp_min(1e-6),
                    0.5 - angle * angle / 48.0)
    return torch.cat([torch.cos(half), rotvec * k], dim=-1)


def quat_to_rotvec(quat: Tensor) -> Tensor:
    """Unit quaternions (..., 4) -> rotation vectors (..., 3) with angle in [0, pi]."""
    q = torch.where(quat[..., :1] < 0, -quat, quat)  # the shorter of the two rotations
    w, v = q[..., :1], q[..., 1:]
    s = v.norm(dim=-1, keepdim=True)
    angle = 2.0 * torch.atan2(s, w)
    k = torch.where(s > 1e-9, angle / s.clamp_min(1e-9), 2.0 / w.clamp_min(_SMALL))
    return v * k


def relative_rotation(from_quat: Tensor, to_quat: Tensor) -> Tensor:
    """The rotation r, expressed in the parent frame, with r * from = to: (..., 4)."""
    return quat_mul(to_quat, quat_conj(from_quat))


# -- poses ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Transform:
    """A rigid transform (pos (..., 3), quat (..., 4)) mapping points x to pos + quat * x."""

    pos: Tensor
    quat: Tensor


def apply_transform(transform: Transform, pos: Tensor, quat: Tensor) -> tuple[Tensor, Tensor]:
    """Poses (pos (..., 3), quat (..., 4)) mapped by `transform`: (T.pos + T.quat * pos,
    T.quat * quat). The transform broadcasts against the poses' leading shape."""
    t_quat = transform.quat.expand(*quat.shape[:-1], 4)
    return transform.pos + quat_rotate(t_quat, pos), quat_mul(t_quat, quat)


# XR tracking spaces (WebXR, OpenXR) are y up, x right, -z forward (also on each device's own
# axes); ours are z up, x forward, y left. Each axis of ours in XR coordinates:
# x_ours = -z_xr, y_ours = -x_xr, z_ours = y_xr. As a rotation: 120 degrees about (1, -1, -1).
_XR_TO_ZUP = torch.tensor([0.5, 0.5, -0.5, -0.5], dtype=F64)


def xr_to_zup(pos: Tensor, quat: Tensor) -> tuple[Tensor, Tensor]:
    """Poses from an XR tracking space (y up, -z forward) to a z-up one (x forward, y left).

    Both the space and each device's own axes are converted, so that a device held level and
    looking forward has the identity orientation. Shapes (..., 3) and (..., 4).
    """
    c = _XR_TO_ZUP.to(pos.device, pos.dtype).expand(*quat.shape[:-1], 4)
    return quat_rotate(c, pos), quat_mul(quat_mul(c, quat), quat_conj(c))


def calibrate_operator(head_pos: Tensor, head_quat: Tensor, head_in_root_m: Tensor) -> Transform:
    """The transform from a gravity-aligned operator frame to the robot's root frame.

    The headset's heading (yaw only: its pitch and roll are ignored) becomes the robot's
    forward axis, and the headset's position, height included, lands on `head_in_root_m`, so
    that a controller held 0.3 m ahead of and 0.5 m below the eyes maps 0.3 m ahead of and
    0.5 m below that point. Call it again to recalibrate.

    Args:
        head_pos: (..., 3) headset position in the tracking frame (z up: see `xr_to_zup`).
        head_quat: (..., 4) headset orientation; its +x axis is where the operator looks.
        head_in_root_m: (3,) or (..., 3) where the operator's eyes map in the root frame.

    Returns:
        The transform root <- tracking: rotation about z by -yaw(head), then a translation.
    """
    inv_yaw = quat_from_yaw(-yaw_of(head_quat))
    pos = head_in_root_m.to(head_pos.dtype) - quat_rotate(inv_yaw, head_pos)
    return Transform(pos=pos, quat=inv_yaw)


# -- clutch --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ClutchState:
    """Per-hand clutch: whether it is engaged and the poses it was engaged at.

    Attributes:
        engaged: (...,) bool, the clutch input of the previous tick.
        device_pos, device_quat: (..., 3), (..., 4) the device pose when the clutch engaged.
        hand_pos, hand_quat: (..., 3), (..., 4) the hand target when the clutch engaged.
    """

    engaged: Tensor
    device_pos: Tensor
    device_quat: Tensor
    hand_pos: Tensor
    hand_quat: Tensor

    @classmethod
    def released(cls, shape: tuple[int, ...]) -> ClutchState:
        """A released clutch of leading shape `shape` (e.g. (B, 2))."""
        zero = torch.zeros(*shape, 3, dtype=F64)
        ident = torch.zeros(*shape, 4, dtype=F64)
        ident[..., 0] = 1.0
        return cls(engaged=torch.zeros(shape, dtype=torch.bool), device_pos=zero,
                   device_quat=ident, hand_pos=zero.clone(), hand_quat=ident.clone())


def clutch_step(state: ClutchState, engaged: Tensor, device_pos: Tensor, device_quat: Tensor,
                held_pos: Tensor, held_quat: Tensor, pos_scale: float = 1.0,
                rot_scale: float = 1.0) -> tuple[ClutchState, Tensor, Tensor]:
    """One tick of a per-hand clutch.

    While engaged, the target is the hand pose held when the clutch engaged, moved by the
    device's motion since then: position `hand + pos_scale * (device - device_at_engage)`,
    orientation `(device * device_at_engage^-1)^rot_scale * hand` (the device's rotation, in
    the root frame, applied to the hand). While released, the target is the held pose. On
    engaging, the target equals the held pose, so it never jumps; re-engaging starts from
    whatever is held then.

    Args:
        state: the clutch state of the previous tick.
        engaged: (...,) bool, the clutch input now (a grip held, a button down).
        device_pos, device_quat: (..., 3), (..., 4) the device pose now, in the root frame
            (after calibration); ignored where released.
        held_pos, held_quat: (..., 3), (..., 4) the hand target held now (last tick's output,
            after limits): anchors a new engagement and is the output while released.
        pos_scale, rot_scale: motion scale factors (1: the hand moves as the device does).

    Returns:
        The next state and the target (pos (..., 3), quat (..., 4)).
    """
    engaged = engaged.to(torch.bool)
    rising = (engaged & ~state.engaged).unsqueeze(-1)
    dev_pos = torch.where(rising, device_pos, state.device_pos)
    dev_quat = torch.where(rising, device_quat, state.device_quat)
    hand_pos = torch.where(rising, held_pos, state.hand_pos)
    hand_quat = torch.where(rising, held_quat, state.hand_quat)
    follow_pos = hand_pos + pos_scale * (device_pos - dev_pos)
    rel = relative_rotation(dev_quat, device_quat)
    if rot_scale != 1.0:
        rel = rotvec_to_quat(rot_scale * quat_to_rotvec(rel))
    follow_quat = quat_mul(rel, hand_quat)
    on = engaged.unsqueeze(-1)
    target_pos = torch.where(on, follow_pos, held_pos)
    target_quat = torch.where(on, follow_quat, held_quat)
    nxt = ClutchState(engaged=engaged.clone(), device_pos=dev_pos, device_quat=dev_quat,
                      hand_pos=hand_pos, hand_quat=hand_quat)
    return nxt, target_pos, target_quat


# -- shaping -------------------------------------------------------------------------------------
def deadband(x: Tensor, width: float | Tensor, full_scale: float | None = 1.0) -> Tensor:
    """Per-axis deadband: zero for |x| <= width, continuous past it.

    y = sign(x) * max(|x| - width, 0) * full_scale / (full_scale - width), so y reaches
    full_scale where x does (a stick's full deflection stays full). With full_scale None the
    output is only shifted (y = sign(x) * max(|x| - width, 0)), for unbounded inputs.

    Args:
        x: (..., D) inputs.
        width: a width for all axes, or (D,) per axis, each in [0, full_scale).
    """
    width_t = torch.as_tensor(width, dtype=x.dtype, device=x.device)
    too_wide = full_scale is not None and bool((width_t >= full_scale).any())
    if bool((width_t < 0).any()) or too_wide:
        raise ValueError(f"deadband width must be in [0, full_scale={full_scale}), got {width}")
    y = torch.sign(x) * (x.abs() - width_t).clamp_min(0.0)
    if full_scale is not None:
        y = y * (full_scale / (full_scale - width_t))
    return y


def smoothing_alpha(dt_s: float, time_constant_s: float) -> float:
    """The exponential smoothing factor 1 - exp(-dt/tau) (1 when tau is 0: no smoothing)."""
    if dt_s <= 0 or time_constant_s < 0:
        raise ValueError(f"need dt_s > 0 and time_constant_s >= 0, got {dt_s}, {time_constant_s}")
    return 1.0 if time_constant_s == 0 else 1.0 - math.exp(-dt_s / time_constant_s)


def smooth_position(prev: Tensor, target: Tensor, dt_s: float, time_constant_s: float) -> Tensor:
    """First-order low-pass: prev + alpha * (target - prev), (..., D)."""
    return prev + smoothing_alpha(dt_s, time_constant_s) * (target - prev)


def smooth_quat(prev: Tensor, target: Tensor, dt_s: float, time_constant_s: float) -> Tensor:
    """First-order low-pass of orientations (slerp by alpha along the shorter arc), (..., 4)."""
    alpha = smoothing_alpha(dt_s, time_constant_s)
    step = rotvec_to_quat(alpha * quat_to_rotvec(relative_rotation(prev, target)))
    return quat_mul(step, prev)


# -- limits --------------------------------------------------------------------------------------
def clamp_to_box(pos: Tensor, box_min: Tensor, box_max: Tensor) -> Tensor:
    """Positions (..., 3) clamped into an axis-aligned box [box_min, box_max] (3,)."""
    lo = torch.as_tensor(box_min, dtype=pos.dtype, device=pos.device)
    hi = torch.as_tensor(box_max, dtype=pos.dtype, device=pos.device)
    return torch.maximum(torch.minimum(pos, hi), lo)


def limit_step(step: Tensor, max_norm: float | Tensor) -> Tensor:
    """Vectors (..., D) shortened to norm max_norm where longer; direction kept."""
    norm = step.norm(dim=-1, keepdim=True)
    return step * torch.clamp(torch.as_tensor(max_norm, dtype=step.dtype) / norm.clamp_min(1e-12),
                              max=1.0)


def rate_limit_position(prev: Tensor, target: Tensor, max_speed_mps: float,
                        dt_s: float) -> Tensor:
    """Move from prev toward target by at most max_speed_mps * dt_s, (..., 3)."""
    return prev + limit_step(target - prev, max_speed_mps * dt_s)


def rate_limit_quat(prev: Tensor, target: Tensor, max_rate_rps: float, dt_s: float) -> Tensor:
    """Rotate from prev toward target by at most max_rate_rps * dt_s about the same axis,
    (..., 4)."""
    rotvec = quat_to_rotvec(relative_rotation(prev, target))
    return quat_mul(rotvec_to_quat(limit_step(rotvec, max_rate_rps * dt_s)), prev)


def limit_hand(prev_pos: Tensor, prev_quat: Tensor, pos: Tensor, quat: Tensor, dt_s: float,
               max_speed_mps: float, max_rate_rps: float, box_min: Tensor,
               box_max: Tensor) -> tuple[Tensor, Tensor]:
    """Rate limits then the workspace box for hand targets (..., 3) / (..., 4).

    The box comes last so the target is always inside it; clamping a point toward a box that
    holds prev never lengthens the step, so the speed limit still holds.
    """
    new_pos = clamp_to_box(rate_limit_position(prev_pos, pos, max_speed_mps, dt_s),
                           box_min, box_max)
    return new_pos, rate_limit_quat(prev_quat, quat, max_rate_rps, dt_s)


def jog_hand(pos: Tensor, quat: Tensor, lin_vel_mps: Tensor, ang_vel_rps: Tensor, dt_s: float,
             max_speed_mps: float, max_rate_rps: float, box_min: Tensor,
             box_max: Tensor) -> tuple[Tensor, Tensor]:
    """Integrate a hand target over one tick of velocity commands (keyboard, gamepad).

    The step is pos += v * dt, capped at max_speed_mps * dt (direction kept), then kept in the
    box; the turn is the rotation vector w * dt, capped at max_rate_rps * dt, applied in the
    root frame (on the left).

    Args:
        pos, quat: (..., 3), (..., 4) the hand target now.
        lin_vel_mps, ang_vel_rps: (..., 3) linear and angular velocity in the root frame.

    Returns:
        The next target (pos (..., 3), quat (..., 4)).
    """
    step = limit_step(lin_vel_mps * dt_s, max_speed_mps * dt_s)
    turn = rotvec_to_quat(limit_step(ang_vel_rps * dt_s, max_rate_rps * dt_s))
    new_quat = quat_mul(turn.expand_as(quat), quat)
    return (clamp_to_box(pos + step, box_min, box_max),
            new_quat / new_quat.norm(dim=-1, keepdim=True))


# -- grippers and base -------------------------------------------------------------------------
def trigger_to_gripper(value: Tensor, deadband_width: float = 0.05,
                       rest: float = 0.0) -> Tensor:
    """An analog trigger (rest .. 1) as a gripper command in [0, 1] (0 open, 1 closed).

    The trigger is first mapped linearly from [rest, 1] to [0, 1] (rest is -1 for SDL's
    triggers on Linux, 0 for WebXR's), then a deadband at the released end keeps a resting
    finger from closing the gripper: g = clamp((t - deadband) / (1 - deadband), 0, 1).
    """
    if rest >= 1.0:
        raise ValueError(f"trigger rest must be below 1, got {rest}")
    t = ((value - rest) / (1.0 - rest)).clamp(0.0, 1.0)
    return deadband(t, deadband_width).clamp(0.0, 1.0)


def stick_to_base_velocity(stick_xy: Tensor, yaw_axis: Tensor, deadband_width: float,
                           max_vx_mps: float, max_vy_mps: float,
                           max_yaw_rate_rps: float) -> Tensor:
    """Base velocity (..., 3) (vx, vy, yaw rate) from a thumbstick and a yaw axis.

    Sticks follow SDL's and the WebXR Gamepad API's convention: x right +, y down +, each in
    [-1, 1]. Stick up walks forward (+vx), stick left walks left (+vy), yaw axis left turns
    left (+yaw rate). Each axis gets a deadband with rescaling, then its limit.

    Args:
        stick_xy: (..., 2) the stick.
        yaw_axis: (...,) a third axis (e.g. the other stick's x).
    """
    axes = torch.stack([-stick_xy[..., 1], -stick_xy[..., 0], -yaw_axis], dim=-1).clamp(-1, 1)
    return base_velocity(deadband(axes, deadband_width), max_vx_mps, max_vy_mps,
                         max_yaw_rate_rps)


def base_velocity(axes: Tensor, max_vx_mps: float, max_vy_mps: float,
                  max_yaw_rate_rps: float) -> Tensor:
    """Normalised axes (..., 3) in [-1, 1] (forward, left, turn left) -> base velocity (..., 3)
    [m/s, m/s, rad/s], each axis scaled by its limit (inputs beyond +-1 are clamped)."""
    scale = torch.tensor([max_vx_mps, max_vy_mps, max_yaw_rate_rps], dtype=axes.dtype,
                         device=axes.device)
    return axes.clamp(-1.0, 1.0) * scale
