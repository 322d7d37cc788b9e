"""Retargeting maths (teleop_app.devices.retarget) against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from robot_io.math3d import quat_from_axis_angle, quat_from_yaw, quat_mul, quat_rotate, yaw_of
from teleop_app.devices import retarget
from teleop_app.devices.retarget import ClutchState, Transform

F64 = torch.float64
IDENT = torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=F64)


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=F64)


def scalar(value: float) -> torch.Tensor:
    return torch.tensor(value, dtype=F64)


def yaw_q(angle: float) -> torch.Tensor:
    return quat_from_yaw(scalar(angle))


def roll_q(angle: float) -> torch.Tensor:
    return quat_from_axis_angle(t(1, 0, 0), scalar(angle))


def pitch_q(angle: float) -> torch.Tensor:
    return quat_from_axis_angle(t(0, 1, 0), scalar(angle))


def assert_quat(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-9) -> None:
    """Equal rotations (q and -q are the same rotation)."""
    assert float((a * b).sum(-1).abs().min()) == pytest.approx(1.0, abs=tol)


# -- rotations -------------------------------------------------------------------------------
def test_rotation_vectors_and_quaternions() -> None:
    s = math.sqrt(0.5)
    assert torch.allclose(retarget.rotvec_to_quat(t(0, 0, math.pi / 2)), t(s, 0, 0, s))
    assert torch.equal(retarget.rotvec_to_quat(t(0, 0, 0)), IDENT)
    assert torch.allclose(retarget.quat_to_rotvec(t(s, s, 0, 0)), t(math.pi / 2, 0, 0))
    # -q is the same rotation: the shorter arc comes back.
    assert torch.allclose(retarget.quat_to_rotvec(-t(s, s, 0, 0)), t(math.pi / 2, 0, 0))
    assert torch.allclose(retarget.quat_to_rotvec(IDENT), t(0, 0, 0))
    v = t(0.3, -0.2, 0.5)
    assert torch.allclose(retarget.quat_to_rotvec(retarget.rotvec_to_quat(v)), v)


# -- calibration -----------------------------------------------------------------------------
def test_calibration_keeps_only_the_headsets_yaw_and_maps_the_head_to_its_point() -> None:
    # ZYX: yaw 0.6, then pitch 0.3 and roll 0.2: a tilted head looking 0.6 rad left.
    head_quat = quat_mul(quat_mul(yaw_q(0.6), pitch_q(0.3)), roll_q(0.2))
    head_pos = t(0.5, 1.0, 1.7)
    head_in_root = t(0.0, 0.0, 0.5)
    tf = retarget.calibrate_operator(head_pos, head_quat, head_in_root)
    # Gravity-aligned: a rotation about z by -0.6 only.
    assert torch.allclose(tf.quat, t(math.cos(-0.3), 0, 0, math.sin(-0.3)))
    # Translation: head_in_root - Rz(-0.6) head_pos, by hand.
    c, s = math.cos(0.6), math.sin(0.6)
    rx, ry = c * 0.5 + s * 1.0, -s * 0.5 + c * 1.0
    assert torch.allclose(tf.pos, t(-rx, -ry, 0.5 - 1.7))
    # The head lands on its point; 0.3 m ahead along the heading and 0.5 m lower maps to
    # 0.3 m ahead of the root and level with it; the head keeps its pitch and roll, loses yaw.
    ahead = head_pos + t(0.3 * c, 0.3 * s, -0.5)
    pos, quat = retarget.apply_transform(tf, torch.stack([head_pos, ahead]),
                                         torch.stack([head_quat, head_quat]))
    assert torch.allclose(pos, t(0, 0, 0.5, 0.3, 0, 0).reshape(2, 3))
    assert torch.allclose(quat[0], quat_mul(pitch_q(0.3), roll_q(0.2)))
    assert float(yaw_of(quat[0])) == pytest.approx(0.0, abs=1e-12)


def test_recalibration_follows_the_new_heading() -> None:
    first = retarget.calibrate_operator(t(0, 0, 1.6), yaw_q(0.0), t(0, 0, 0.5))
    again = retarget.calibrate_operator(t(1, 0, 1.6), yaw_q(math.pi / 2), t(0, 0, 0.5))
    # After turning left 90 degrees and recalibrating, the new forward (+y) is the root's +x.
    pos, _ = retarget.apply_transform(again, t(1, 1, 1.6), IDENT)
    assert torch.allclose(pos, t(1, 0, 0.5))
    pos, _ = retarget.apply_transform(first, t(1, 1, 1.6), IDENT)
    assert torch.allclose(pos, t(1, 1, 0.5))


def test_xr_tracking_space_to_z_up() -> None:
    # WebXR/OpenXR: x right, y up, +z back. A point 0.5 m ahead (z = -0.5), 0.1 m right and
    # 1.6 m up is (0.5 forward, -0.1 left, 1.6 up) in ours.
    pos, quat = retarget.xr_to_zup(t(0.1, 1.6, -0.5), IDENT)
    assert torch.allclose(pos, t(0.5, -0.1, 1.6))
    assert_quat(quat, IDENT)
    # A headset turned 90 degrees left (about XR's +y) looks along our +y: yaw +90 degrees.
    turned = quat_from_axis_angle(t(0, 1, 0), scalar(math.pi / 2))
    _, quat = retarget.xr_to_zup(t(0, 0, 0), turned)
    assert_quat(quat, yaw_q(math.pi / 2))
    # Looking up 0.3 rad is +0.3 about XR's +x (right), which is our -y: -0.3 about our +y.
    nod = quat_from_axis_angle(t(1, 0, 0), scalar(0.3))
    _, quat = retarget.xr_to_zup(t(0, 0, 0), nod)
    assert_quat(quat, pitch_q(-0.3))


# -- clutch ----------------------------------------------------------------------------------
def _clutch(state: ClutchState, on: bool, dev_pos: torch.Tensor, dev_quat: torch.Tensor,
            held: tuple[torch.Tensor, torch.Tensor], **kw: float
            ) -> tuple[ClutchState, torch.Tensor, torch.Tensor]:
    return retarget.clutch_step(state, torch.tensor(on), dev_pos, dev_quat, held[0], held[1],
                                **kw)


def test_clutch_engage_move_release_hold_reengage() -> None:
    state = ClutchState.released(())
    held = (t(0.3, -0.2, 0.1), roll_q(math.pi / 2))
    # Released: the target is the held pose whatever the device does.
    state, pos, quat = _clutch(state, False, t(9, 9, 9), yaw_q(1.0), held)
    assert torch.equal(pos, held[0]) and torch.equal(quat, held[1])
    # Engage with the device at (1, 2, 3), yawed 0.5: no jump.
    state, pos, quat = _clutch(state, True, t(1, 2, 3), yaw_q(0.5), held)
    assert torch.allclose(pos, held[0]) and torch.allclose(quat, held[1])
    # Device moves +0.1 x, +0.05 z and yaws 0.3 more: the hand does the same, the rotation
    # about the root's z applied to the rolled hand.
    state, pos, quat = _clutch(state, True, t(1.1, 2, 3.05), yaw_q(0.8), held)
    assert torch.allclose(pos, t(0.4, -0.2, 0.15))
    assert_quat(quat, quat_mul(yaw_q(0.3), roll_q(math.pi / 2)))
    held = (pos, quat)
    # Release and wave the device around: the hand holds.
    for dev in (t(5, 5, 5), t(-3, 0, 1)):
        state, pos, quat = _clutch(state, False, dev, yaw_q(-2.0), held)
        assert torch.equal(pos, held[0]) and torch.equal(quat, held[1])
    # Re-engage at the device's new pose: it starts from the held pose.
    state, pos, quat = _clutch(state, True, t(-3, 0, 1), yaw_q(-2.0), held)
    assert torch.allclose(pos, t(0.4, -0.2, 0.15))
    state, pos, quat = _clutch(state, True, t(-3, 0.1, 1), yaw_q(-2.0), held)
    assert torch.allclose(pos, t(0.4, -0.1, 0.15))
    assert_quat(quat, held[1])


def test_clutch_scales_and_works_per_hand() -> None:
    state = ClutchState.released((2,))
    held_pos = t(0.3, 0.2, 0.0, 0.3, -0.2, 0.0).reshape(2, 3)
    held_quat = IDENT.repeat(2, 1)
    on = torch.tensor([True, False])
    dev_q = yaw_q(0.5).repeat(2, 1)
    state, _, _ = retarget.clutch_step(state, on, torch.zeros(2, 3, dtype=F64), dev_q,
                                       held_pos, held_quat, pos_scale=0.5, rot_scale=0.5)
    moved = t(0.2, 0, 0).repeat(2, 1)
    state, pos, quat = retarget.clutch_step(state, on, moved, yaw_q(0.9).repeat(2, 1),
                                            held_pos, held_quat, pos_scale=0.5, rot_scale=0.5)
    assert torch.allclose(pos, t(0.4, 0.2, 0.0, 0.3, -0.2, 0.0).reshape(2, 3))  # half of 0.2
    assert_quat(quat[0], yaw_q(0.2))  # half of 0.4
    assert torch.equal(quat[1], IDENT)  # the right hand's clutch is released


# -- shaping ---------------------------------------------------------------------------------
def test_deadband_is_zero_inside_and_continuous_and_full_outside() -> None:
    x = t(0.05, -0.1, 0.55, -0.55, 1.0, -1.0)
    assert torch.allclose(retarget.deadband(x, 0.1), t(0, 0, 0.5, -0.5, 1.0, -1.0))
    # Continuous at the edge: 1e-6 past it gives 1e-6 / 0.9.
    assert float(retarget.deadband(t(0.1 + 1e-6), 0.1)) == pytest.approx(1e-6 / 0.9)
    # Per axis.
    assert torch.allclose(retarget.deadband(t(0.55, 0.75), t(0.1, 0.5)), t(0.5, 0.5))
    # Unbounded inputs: only shifted.
    assert torch.allclose(retarget.deadband(t(0.3, -0.05, -2.0), 0.1, full_scale=None),
                          t(0.2, 0.0, -1.9))
    with pytest.raises(ValueError, match="deadband width"):
        retarget.deadband(t(0.5), 1.0)


def test_exponential_smoothing() -> None:
    alpha = 1 - math.exp(-0.2)  # dt 0.02 s, tau 0.1 s
    assert retarget.smoothing_alpha(0.02, 0.1) == pytest.approx(0.18126924692)
    x = torch.zeros(1, dtype=F64)
    for _ in range(5):
        x = retarget.smooth_position(x, t(1.0), 0.02, 0.1)
    assert float(x) == pytest.approx(1 - math.exp(-1.0))  # 5 ticks: one time constant
    assert torch.equal(retarget.smooth_position(t(0.0), t(2.0), 0.02, 0.0), t(2.0))
    q = retarget.smooth_quat(IDENT, yaw_q(1.0), 0.02, 0.1)
    assert_quat(q, yaw_q(alpha))
    with pytest.raises(ValueError):
        retarget.smoothing_alpha(0.0, 0.1)


# -- limits ----------------------------------------------------------------------------------
def test_rate_limits_keep_the_direction() -> None:
    assert torch.allclose(retarget.limit_step(t(0.3, 0.4, 0.0), 0.1), t(0.06, 0.08, 0.0))
    assert torch.equal(retarget.limit_step(t(0.03, 0.04, 0.0), 0.1), t(0.03, 0.04, 0.0))
    # 0.5 m/s for 0.02 s: 0.01 m toward the target, along the line to it.
    pos = retarget.rate_limit_position(t(0, 0, 0), t(3, 4, 0), 0.5, 0.02)
    assert torch.allclose(pos, t(0.006, 0.008, 0.0))
    # 0.5 rad/s for 0.2 s: 0.1 rad about the same axis.
    assert_quat(retarget.rate_limit_quat(IDENT, yaw_q(1.0), 0.5, 0.2), yaw_q(0.1))
    assert_quat(retarget.rate_limit_quat(roll_q(0.2), roll_q(-0.5), 1.0, 0.2), roll_q(0.0))
    assert_quat(retarget.rate_limit_quat(IDENT, yaw_q(0.05), 0.5, 0.2), yaw_q(0.05))


def test_workspace_box_and_limit_hand() -> None:
    lo, hi = t(-0.15, -0.65, -0.45), t(0.75, 0.65, 0.65)
    assert torch.equal(retarget.clamp_to_box(t(0.9, -0.7, 0.0), lo, hi), t(0.75, -0.65, 0.0))
    # Rate limit first (0.01 m along +x), then the box (x at most 0.75).
    pos, quat = retarget.limit_hand(t(0.745, 0, 0), IDENT, t(2.0, 0, 0), yaw_q(1.0), 0.02, 0.5,
                                    0.5, lo, hi)
    assert torch.allclose(pos, t(0.75, 0, 0))
    assert_quat(quat, yaw_q(0.01))


def test_jog_hand_integrates_in_the_root_frame() -> None:
    lo, hi = t(-1, -1, -1), t(1, 1, 1)
    pos, quat = retarget.jog_hand(t(0.1, 0.2, 0.0), roll_q(math.pi / 2), t(0.1, 0, 0),
                                  t(0, 0, 0.5), 0.02, 0.1, 0.5, lo, hi)
    assert torch.allclose(pos, t(0.102, 0.2, 0.0))
    # Yaw 0.01 about the root's z, applied on the left of the rolled hand: the hand's x axis
    # turns in the root's xy plane.
    assert_quat(quat, quat_mul(yaw_q(0.01), roll_q(math.pi / 2)))
    assert torch.allclose(quat_rotate(quat, t(1, 0, 0)), t(math.cos(0.01), math.sin(0.01), 0))
    # A diagonal is capped at the speed: 0.002 m along (1, 1)/sqrt(2).
    pos, _ = retarget.jog_hand(t(0, 0, 0), IDENT, t(0.1, 0.1, 0), t(0, 0, 0), 0.02, 0.1, 0.5,
                               lo, hi)
    d = 0.002 / math.sqrt(2)
    assert torch.allclose(pos, t(d, d, 0))


# -- gripper and base ------------------------------------------------------------------------
def test_trigger_to_gripper() -> None:
    # SDL on Linux: rest -1. 0 is half pulled: (0.5 - 0.05) / 0.95.
    g = retarget.trigger_to_gripper(t(-1.0, -0.95, 0.0, 1.0), 0.05, rest=-1.0)
    assert torch.allclose(g, t(0.0, 0.0, 0.45 / 0.95, 1.0))
    # WebXR: rest 0.
    assert torch.allclose(retarget.trigger_to_gripper(t(0.02, 0.525, 1.2), 0.05),
                          t(0.0, 0.5, 1.0))


def test_stick_to_base_velocity() -> None:
    limits = {"max_vx_mps": 0.3, "max_vy_mps": 0.2, "max_yaw_rate_rps": 0.5}
    # SDL/WebXR sticks: y down +. Full up: forward at the limit.
    v = retarget.stick_to_base_velocity(t(0.0, -1.0), scalar(0.0), 0.1, **limits)
    assert torch.allclose(v, t(0.3, 0.0, 0.0))
    # Right at 0.55 with a 0.1 deadband: half speed to the right (-y); yaw axis left: turn left.
    v = retarget.stick_to_base_velocity(t(0.55, 0.05), scalar(-1.0), 0.1, **limits)
    assert torch.allclose(v, t(0.0, -0.1, 0.5))
    # Beyond full deflection: clamped at the limit.
    v = retarget.stick_to_base_velocity(t(0.0, 1.5), scalar(0.0), 0.1, **limits)
    assert torch.allclose(v, t(-0.3, 0.0, 0.0))


def test_transform_broadcasts_over_hands() -> None:
    tf = Transform(pos=t(1, 0, 0), quat=yaw_q(math.pi / 2))
    pos, quat = retarget.apply_transform(tf, t(1, 0, 0, 0, 1, 0).reshape(2, 3), IDENT.repeat(2, 1))
    assert torch.allclose(pos, t(1, 1, 0, 0, 0, 0).reshape(2, 3))
    assert_quat(quat[1], yaw_q(math.pi / 2))
