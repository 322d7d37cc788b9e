"""Hand-checked numbers for the rigid-body maths and the kinematics."""

from __future__ import annotations

import math

import mujoco
import numpy as np
import pytest
import torch

from robot_io.control.kinematics import (
    build_chains,
    dls_step,
    forward_kinematics,
    orientation_error,
)
from robot_io.env import BatchedEnv
from robot_io.math3d import (
    mat_to_quat,
    pose_in_frame,
    quat_angle,
    quat_from_yaw,
    quat_mul,
    quat_rotate,
    quat_to_mat,
    wrap_angle,
    yaw_of,
)

F64 = torch.float64
S = math.sqrt(0.5)


def test_quaternion_hand_values() -> None:
    qz90 = torch.tensor([S, 0, 0, S], dtype=F64)  # +90 deg about z
    v = torch.tensor([1.0, 0, 0], dtype=F64)
    assert torch.allclose(quat_rotate(qz90, v), torch.tensor([0.0, 1, 0], dtype=F64))
    assert torch.allclose(quat_mul(qz90, qz90), torch.tensor([0.0, 0, 0, 1], dtype=F64))
    m = quat_to_mat(qz90)
    assert torch.allclose(m, torch.tensor([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]], dtype=F64))
    assert torch.allclose(mat_to_quat(m), qz90)
    assert yaw_of(qz90).item() == pytest.approx(math.pi / 2)
    assert torch.allclose(quat_from_yaw(torch.tensor(math.pi / 2, dtype=F64)), qz90)
    assert quat_angle(qz90, torch.tensor([1.0, 0, 0, 0], dtype=F64)).item() == pytest.approx(
        math.pi / 2)
    assert wrap_angle(torch.tensor(3 * math.pi / 2)).item() == pytest.approx(-math.pi / 2)


def test_mat_to_quat_matches_mujoco_for_random_rotations() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        q = rng.normal(size=4)
        q /= np.linalg.norm(q)
        mat = np.zeros(9)
        mujoco.mju_quat2Mat(mat, q)
        ours = mat_to_quat(torch.tensor(mat.reshape(3, 3)))
        assert float(quat_angle(ours, torch.tensor(q))) < 1e-6


def test_pose_in_frame_hand_values() -> None:
    frame_pos = torch.tensor([[1.0, 2.0, 0.0]], dtype=F64)
    frame_quat = torch.tensor([[S, 0, 0, S]], dtype=F64)  # frame yawed +90 deg
    point = torch.tensor([[[1.0, 3.0, 0.5]]], dtype=F64)  # 1 m along world +y from the frame
    local, _ = pose_in_frame(frame_pos, frame_quat, point)
    assert torch.allclose(local, torch.tensor([[[1.0, 0.0, 0.5]]], dtype=F64))


def test_orientation_error_is_rotation_vector() -> None:
    target = quat_to_mat(torch.tensor([math.cos(0.3), math.sin(0.3), 0, 0], dtype=F64))  # 0.6 rad
    err = orientation_error(torch.eye(3, dtype=F64), target)
    assert torch.allclose(err, torch.tensor([0.6, 0, 0], dtype=F64))


def test_dls_step_hand_computed() -> None:
    # One task dimension, two joints: J = [1, 1], e = 1, d = 0 -> dq = J^T / (J J^T) = [0.5, 0.5].
    jac = torch.tensor([[1.0, 1.0]], dtype=F64)
    dq = dls_step(jac, torch.tensor([1.0], dtype=F64), damping=0.0)
    assert torch.allclose(dq, torch.tensor([0.5, 0.5], dtype=F64))
    # Damping 1: dq = J^T / (2 + 1) = [1/3, 1/3].
    dq = dls_step(jac, torch.tensor([1.0], dtype=F64), damping=1.0)
    assert torch.allclose(dq, torch.tensor([1 / 3, 1 / 3], dtype=F64))
    # Null-space bias along [1, -1] passes unchanged (J [1, -1] = 0).
    bias = torch.tensor([0.2, -0.2], dtype=F64)
    dq = dls_step(jac, torch.tensor([0.0], dtype=F64), damping=0.0, null_bias=bias)
    assert torch.allclose(dq, bias)


def test_chain_kinematics_match_mujoco() -> None:
    env = BatchedEnv("box_pickup", num_worlds=1, threads=1)
    model = env.model
    sites = ["left_hand", "right_hand", "left_foot", "right_foot"]
    chains = build_chains(model, "Trunk", sites, list(env.robot.joint_names),
                          frozen={"Waist": 0.2})
    data = mujoco.MjData(model)
    gen = torch.Generator().manual_seed(0)
    q = env.default_pose + 0.3 * torch.randn(29, generator=gen, dtype=F64)
    q[16] = 0.2  # the frozen waist is held at the angle the chains were built with
    data.qpos[3] = 1.0
    data.qpos[env.joint_qadr.numpy()] = q.numpy()
    mujoco.mj_forward(model, data)
    pos, rot, jac = forward_kinematics(chains, q.unsqueeze(0))
    for i, site in enumerate(sites):
        assert np.allclose(pos[0, i].numpy(), data.site(site).xpos - data.qpos[:3], atol=1e-12)
        assert np.allclose(rot[0, i].numpy(), data.site(site).xmat.reshape(3, 3), atol=1e-12)
        jacp = np.zeros((3, model.nv))
        mujoco.mj_jacSite(model, data, jacp, None, model.site(site).id)
        for link in range(chains.joint.shape[1]):
            j = int(chains.joint[i, link])
            if j >= 0:
                dof = int(env.joint_dadr[j])
                assert np.allclose(jac[0, i, :3, link].numpy(), jacp[:, dof], atol=1e-12)
