"""BatchedEnv mechanics: zero-copy tensors, per-world randomisation, unstable worlds."""

from __future__ import annotations

import numpy as np
import torch

from robot_io.env import BatchedEnv
from robot_io.types import HarnessTarget, JointTargets


def test_state_tensors_share_memory_with_mujoco_batch() -> None:
    env = BatchedEnv("box_pickup", num_worlds=2, threads=1)
    qpos_np = env.sim.batch.bind("qpos")
    env.sim.qpos[1, 0] = 12.5
    assert qpos_np[1, 0] == 12.5
    assert env.sim.ctrl.data_ptr() == env.sim.batch.bind("ctrl").ctypes.data


def test_per_world_model_fields_randomise_mass_and_friction() -> None:
    env = BatchedEnv("box_pickup", num_worlds=4, threads=1, seed=1)
    box = env.task.box_body
    masses = env.sim.model_field("body_mass")[:, box]
    assert torch.allclose(masses, env.reset_params["object_mass_kg"])
    assert len(set(masses.tolist())) == 4
    lo, hi = env.task.config.physics.object_mass_kg.lo, env.task.config.physics.object_mass_kg.hi
    assert bool(((masses >= lo) & (masses <= hi)).all())
    # The compiled model itself is untouched: the values are per world.
    assert env.model.body_mass[box] == 1.5


def test_unstable_world_is_reported_and_others_are_not() -> None:
    env = BatchedEnv("box_pickup", num_worlds=3, threads=1)
    env.sim.qvel[1, -1] = 1e12  # a blown-up box in world 1
    env.apply(JointTargets(env.default_pose.expand(3, -1).clone(),
                           torch.zeros(3, 2, dtype=torch.float64)))
    out = env.outcome()
    assert out.unstable.tolist() == [False, True, False]
    assert out.done.tolist() == [False, True, False]
    env.reset(torch.tensor([1]))
    assert not env.outcome().unstable.any()
    assert np.isfinite(env.sim.qvel.numpy()).all()


def test_door_latch_holds_until_the_handle_is_turned() -> None:
    from robot_io.tasks.door import LATCH_ANGLE_RAD
    env = BatchedEnv("door", num_worlds=2, threads=1)
    task = env.task
    applied = torch.from_numpy(env.sim.batch.bind("qfrc_applied"))
    door_dof = task.door_dof
    handle_dof = int(env.model.joint("handle_hinge").dofadr[0])
    obs = env.observe()
    harness = HarnessTarget(obs.root_pos.clone(), obs.root_quat.clone())  # robot stays put
    targets = JointTargets(env.default_pose.expand(2, -1).clone(),
                           torch.zeros(2, 2, dtype=torch.float64), harness)
    for _ in range(50):  # 1 s: push the door open in both worlds, turn the handle in world 1
        applied[:, door_dof] = 15.0
        applied[1, handle_dof] = 2.0  # beats the return spring: the handle turns to its stop
        env.apply(targets)
    door, handle = task.angles()
    assert float(handle[1]) > LATCH_ANGLE_RAD
    assert float(door[0]) < 0.05, "a latched door swung open"
    assert float(door[1]) > 0.3, "an unlatched door did not swing"


def test_dp_observation_vector_matches_its_spec() -> None:
    from robot_io.dp_observation import dp_observation, dp_observation_spec
    env = BatchedEnv("pick_place", num_worlds=2, threads=1)
    obs = env.observe()
    spec = dp_observation_spec(obs)
    vec = dp_observation(obs)
    assert [name for name, _ in spec][:5] == ["hand_pos", "hand_quat", "foot_pos", "foot_quat",
                                              "gripper_pos"]
    assert dict(spec)["task.target_pos"] == 3
    assert vec.shape == (2, sum(width for _, width in spec)) == (2, 6 + 8 + 6 + 8 + 2 + 3 + 4 + 3)
    start = sum(width for name, width in spec[:spec.index(("task.object_pos", 3))])
    assert torch.equal(vec[:, start:start + 3], obs.task["object_pos"])
