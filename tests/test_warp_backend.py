"""The MuJoCo Warp backend against the CPU backend, on Warp's CPU device.

Agreement tolerance (absolute, every world, every tick of a 25-tick = 200-step rollout of two
box_pickup worlds from the same seed):

    rollout                 qpos [m, rad]   qvel [m/s, rad/s]   sensordata
    fixed joint targets     2e-5            3e-3                2e-3
    reference controller    3e-4            1.5e-2              2e-3

Measured on the CPU (seeds 0-3, box_pickup and open_floor): fixed targets at most 2.0e-6 /
3.0e-4 / 2.1e-4, reference controller at most 2.9e-5 / 1.2e-3 / 9.2e-5. The cause: Warp computes
in float32 (the initial state already differs by float32 rounding, 3e-8), MuJoCo on the CPU in
float64; the differences grow where a contact is made or broken (the largest are in the stepping
leg's ankle), and a closed loop feeds them back into the commands. Over longer rollouts the two
drift apart like any two chaotic trajectories (after about 35 ticks of an unsupported robot
falling over, qvel differs by 1 rad/s), so the tolerance is only claimed for these rollouts.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import mujoco
import pytest
import torch
import warp as wp

from robot_io.safety import SafetyFilter
from robot_io.control.reference import ReferenceController
from robot_io.env import BatchedEnv
from robot_io.errors import MissingDependencyError
from robot_io.sim import bench
from robot_io.sim.bench import EnvLoop, TensorReplay, backend_copy, record_episode_tensors
from robot_io.sim.factory import make_backend
from robot_io.sim.warp_backend import WarpBackend
from robot_io.tasks import default_config
from robot_io.types import CommandLimits, JointTargets
from teleop_app.cli import main

TICKS = 25  # control ticks of 8 physics steps
FIXED_TOL = {"qpos": 2e-5, "qvel": 3e-3, "sensordata": 2e-3}
REFERENCE_TOL = {"qpos": 3e-4, "qvel": 1.5e-2, "sensordata": 2e-3}
INITIAL_TOL = {"qpos": 1e-6, "qvel": 1e-6, "sensordata": 1e-6}  # float32 rounding


def make_pair(task: str, worlds: int, seed: int) -> tuple[BatchedEnv, BatchedEnv]:
    """The same task and seed on the CPU backend and on Warp's CPU device."""
    cpu = BatchedEnv(task, worlds, threads=1, seed=seed)
    warp = BatchedEnv(task, worlds, threads=1, seed=seed, backend="warp", device="cpu")
    return cpu, warp


def max_differences(cpu: BatchedEnv, warp: BatchedEnv) -> dict[str, float]:
    return {name: float((getattr(cpu.sim, name) - getattr(warp.sim, name).double()).abs().max())
            for name in ("qpos", "qvel", "sensordata")}


def hold_pose(env: BatchedEnv) -> JointTargets:
    """Fixed joint targets: the default pose, grippers open, no harness."""
    n = env.num_worlds
    return JointTargets(env.default_pose.expand(n, -1).clone(),
                        torch.zeros(n, 2, dtype=torch.float64, device=env.device))


def test_initial_state_and_constants_agree_with_the_cpu_backend() -> None:
    cpu, warp = make_pair("box_pickup", 2, seed=0)
    assert warp.sim.qpos.dtype == torch.float32 and warp.device == torch.device("cpu")
    diff = max_differences(cpu, warp)
    assert all(diff[k] <= INITIAL_TOL[k] for k in diff), diff
    # The randomised box masses reached the Warp model, and set_const derived the same
    # constants as mj_setConst did per world on the CPU.
    box = cpu.task.box_body
    masses = warp.sim.model_field("body_mass")[:, box].double()
    assert torch.allclose(masses, cpu.reset_params["object_mass_kg"], rtol=1e-6)
    assert masses[0] != masses[1]
    for world in range(2):
        reference = cpu.sim.world_model(world)
        mirrored = warp.sim.world_model(world)
        for name in ("body_subtreemass", "dof_invweight0", "body_invweight0"):
            assert getattr(mirrored, name) == pytest.approx(getattr(reference, name), rel=1e-4,
                                                            abs=1e-6), name
    # Host copies: the mjSTATE_INTEGRATION layout of the CPU backend, and MjData for rendering.
    assert warp.sim.full_state() == pytest.approx(cpu.sim.full_state(), abs=1e-6)
    data = warp.sim.world_data(1)
    assert data.qpos == pytest.approx(cpu.sim.qpos[1].numpy(), abs=1e-6)
    assert data.xpos[box] == pytest.approx(cpu.sim.xpos[1, box].numpy(), abs=1e-6)
    first = torch.tensor([0])
    with pytest.raises(NotImplementedError, match="backend='mujoco'"):
        warp.restore(first, warp.state()[:1], warp.world_model_fields(first))


@pytest.mark.parametrize("controller", ["fixed", "reference"])
def test_rollout_agrees_with_the_cpu_backend(controller: str) -> None:
    cpu, warp = make_pair("box_pickup", 2, seed=0)
    tol = FIXED_TOL if controller == "fixed" else REFERENCE_TOL
    envs = (cpu, warp)
    ids = torch.arange(2)
    controllers, gates = {}, {}
    command = bench.constant_command(cpu.observe())  # the same command for both
    for env in envs:
        controllers[env] = ReferenceController(env)
        controllers[env].reset(env.observe(), ids)
        gates[env] = SafetyFilter(env.robot, 2)
        gates[env].episode_started(env.observe(), ids)
    start = cpu.sim.qpos.clone()
    worst = dict.fromkeys(tol, 0.0)
    for _ in range(TICKS):
        for env in envs:
            if controller == "fixed":
                env.apply(hold_pose(env))
            else:
                obs = env.observe()
                applied = gates[env].command(command, obs)
                env.apply(gates[env].targets(controllers[env].step(applied, obs)))
        worst = {k: max(v, max_differences(cpu, warp)[k]) for k, v in worst.items()}
    assert all(worst[k] <= tol[k] for k in tol), worst
    assert float((cpu.sim.qpos - start).abs().max()) > 0.01  # the robots did move
    assert warp.sim.instability_count().tolist() == [0, 0]
    assert not warp.sim.overflowed().any()


def test_reset_of_a_subset_of_worlds() -> None:
    cpu, warp = make_pair("box_pickup", 3, seed=3)
    for _ in range(5):
        for env in (cpu, warp):
            env.apply(hold_pose(env))
    before = warp.sim.qpos.clone()
    for env in (cpu, warp):
        env.reset(torch.tensor([1]))
    # The other worlds keep their state exactly; the reset one starts the same new episode as
    # on the CPU (the randomisation generator is shared by both backends).
    assert torch.equal(warp.sim.qpos[[0, 2]], before[[0, 2]])
    assert warp.episode_steps.tolist() == [5, 0, 5]
    assert float(warp.sim.time[1]) == 0.0 and float(warp.sim.time[0]) > 0.0
    assert float(warp.sim.qvel[1].abs().max()) == 0.0
    assert warp.sim.qpos[1].double() == pytest.approx(cpu.sim.qpos[1], abs=1e-6)
    assert not torch.equal(before[1], warp.sim.qpos[1])


def test_per_world_box_mass_changes_the_warp_physics() -> None:
    env = BatchedEnv("box_pickup", 2, threads=1, seed=0)
    model, box = env.model, env.task.box_body
    sim = WarpBackend(model, 2, device="cpu")
    for name in ("qpos", "qvel", "ctrl"):  # both worlds in the env's world-0 state
        getattr(sim, name)[:] = getattr(env.sim, name)[0].to(getattr(sim, name))
    qadr, dof = env.task.box_qadr, int(model.joint("box").dofadr[0])
    sim.qpos[:, qadr:qadr + 3] = torch.tensor([3.0, 0.0, 1.0])  # in the air, far from the robot
    masses = torch.tensor([1.0, 4.0])
    mass, inertia = sim.model_field("body_mass"), sim.model_field("body_inertia")
    inertia[:, box] *= (masses / mass[:, box]).unsqueeze(-1)
    mass[:, box] = masses
    sim.update_constants()
    sim.forward()
    g = -float(model.opt.gravity[2])
    assert sim.qfrc_bias[:, dof + 2].tolist() == pytest.approx((masses * g).tolist(), rel=1e-5)
    # The same 20 N upward push: the 1 kg box rises, the 4 kg box falls (a = F/m - g).
    force = wp.to_torch(sim.wd.xfrc_applied)
    force[:, box, 2] = 20.0
    steps, dt = 20, float(model.opt.timestep)
    sim.step(steps)
    # Semi-implicit Euler from rest: z_n - z_0 = a dt^2 n (n + 1) / 2.
    expected = (20.0 / masses - g) * dt ** 2 * steps * (steps + 1) / 2
    rise = sim.qpos[:, qadr + 2] - 1.0
    assert rise.tolist() == pytest.approx(expected.tolist(), rel=1e-3)
    assert rise[0] > 0.01 and rise[1] < -0.005


@pytest.mark.parametrize("backend", ["mujoco", "warp"])
def test_unstable_world_is_reset_and_reported_as_on_the_cpu(backend: str) -> None:
    env = BatchedEnv("box_pickup", 3, threads=1, backend=backend,
                     device="cpu" if backend == "warp" else None)
    env.sim.qvel[1, -1] = float("nan")  # a blown-up box in world 1
    env.apply(hold_pose(env))
    out = env.outcome()
    assert out.unstable.tolist() == [False, True, False]
    assert bool(torch.isfinite(env.sim.qvel).all())  # reset to the model's defaults
    env.reset(torch.tensor([1]))
    assert not env.outcome().unstable.any()
    if backend == "warp":  # one instability found, one reset
        assert env.sim.instability_count().tolist() == [0, 1, 0]
        assert env.sim.qvel.dtype == torch.float32


def test_model_fields_and_devices_are_validated() -> None:
    model = mujoco.MjModel.from_xml_string(
        "<mujoco><worldbody><body><freejoint/><geom size='0.1' margin='0.01'/></body>"
        "</worldbody></mujoco>")
    sim = WarpBackend(model, 3, device="cpu")
    margin = sim.model_field("geom_margin")  # not batched yet: gets per-world copies
    assert tuple(margin.shape) == (3, 1)
    assert margin[:, 0].tolist() == pytest.approx([0.01] * 3)
    margin[1, 0] = 0.02
    assert sim.model_field("geom_margin")[:, 0].tolist() == pytest.approx([0.01, 0.02, 0.01])
    assert "geom_margin" in sim.per_world_fields
    with pytest.raises(ValueError, match="cannot have per-world values"):
        sim.model_field("body_parentid")
    with pytest.raises(ValueError, match="device must be"):
        WarpBackend(model, 1, device="tpu")
    with pytest.raises(ValueError, match="num_worlds"):
        WarpBackend(model, 0, device="cpu")
    if not wp.is_cuda_available():
        with pytest.raises(ValueError, match="Warp has no device 'cuda'"):
            WarpBackend(model, 1, device="cuda")


def test_unknown_backend_lists_the_known_ones() -> None:
    model = mujoco.MjModel.from_xml_string("<mujoco/>")
    with pytest.raises(ValueError, match=r"unknown simulator backend 'bullet'; known backends: "
                                         r"\['mujoco', 'warp'\]"):
        make_backend("bullet", model, 1)
    with pytest.raises(ValueError, match="CPU only"):
        make_backend("mujoco", model, 1, device="cuda")


@pytest.mark.parametrize("module", ["warp", "mujoco_warp"])
def test_missing_warp_names_the_extra(monkeypatch: pytest.MonkeyPatch, module: str) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # `import module` now fails as if absent
    model = mujoco.MjModel.from_xml_string("<mujoco/>")
    with pytest.raises(MissingDependencyError,
                       match=rf"{module} is needed for the MuJoCo Warp backend.*"
                             r"pip install 'refine-dp\[gpu\]'"):
        make_backend("warp", model, 1, device="cpu")


def test_importing_robot_io_does_not_import_warp() -> None:
    code = ("import sys, robot_io, robot_io.env, robot_io.sim.factory, robot_io.sim.bench; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('warp', 'mujoco_warp')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_hold_loop_and_tensor_replay_of_the_gpu_benchmark() -> None:
    """The GPU benchmark's env loop and bare-physics replay, run here on Warp's CPU device."""
    config = dataclasses.replace(default_config("box_pickup"), time_limit_s=0.2)
    env = BatchedEnv("box_pickup", 2, seed=0, task_config=config, backend="warp", device="cpu")
    loop = EnvLoop(env, "hold")
    start, inputs = record_episode_tensors(loop)
    assert len(inputs) == env.time_limit_steps - 1 == 9
    assert bool(env.sim.eq_active[:, env.harness_eq].all())  # the harness holds the robots
    root = env.observe().root_pos
    assert float((root - start["qpos"][:, :3].double()).abs().max()) < 0.01
    replay = TensorReplay(backend_copy(env), start, inputs, env.robot.substeps)
    for _ in inputs:
        assert replay.tick() == 2 * env.robot.substeps
    # The same motion: bit for bit here, as the episode starts from a reset (no solver warm
    # start to replay) and Warp's CPU device is deterministic.
    assert torch.equal(replay.sim.qpos, env.sim.qpos)
    with pytest.raises(ValueError, match="unknown loop controller"):
        EnvLoop(env, "teleop")


def test_bench_sim_runs_on_warp(monkeypatch: pytest.MonkeyPatch,
                                capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(bench, "BENCH_EPISODE_S", 0.2)  # 10 ticks: Warp's CPU device is slow
    assert main(["bench", "sim", "--task", "box_pickup", "--worlds", "2", "--seconds", "0.2",
                 "--backend", "warp", "--device", "cpu", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["backend"], result["device"], result["controller"]) == ("warp", "cpu",
                                                                           "reference")
    assert result["threads"] is None and result["physics_warnings"] == 0
    for key in ("env_control_steps_per_s", "bare_physics_steps_per_s",
                "bare_held_physics_steps_per_s"):
        assert result[key] > 0
    line = bench.format_bench_line(result)
    assert "MuJoCo Warp on cpu" in line and "bare MuJoCo Warp replaying" in line


@pytest.mark.gpu
def test_rollout_on_a_gpu_agrees_with_the_cpu_backend() -> None:
    if not wp.is_cuda_available():
        pytest.skip("no CUDA device")
    cpu = BatchedEnv("box_pickup", 4, threads=1, seed=0)
    gpu = BatchedEnv("box_pickup", 4, seed=0, backend="warp", device="cuda")
    assert gpu.sim.qpos.is_cuda and gpu.observe().joint_pos.is_cuda
    worst = dict.fromkeys(FIXED_TOL, 0.0)
    for _ in range(TICKS):
        cpu.apply(hold_pose(cpu))
        gpu.apply(hold_pose(gpu))
        diff = {k: float((getattr(cpu.sim, k) - getattr(gpu.sim, k).double().cpu()).abs().max())
                for k in FIXED_TOL}
        worst = {k: max(v, diff[k]) for k, v in worst.items()}
    assert all(worst[k] <= REFERENCE_TOL[k] for k in worst), worst
    assert not gpu.outcome().done.any()


def test_upper_body_training_env_runs_on_warp_cpu() -> None:
    """The controller-training env on Warp's CPU device: float32 model fields take the
    randomisation, the teacher and the observation stay finite, and it matches the CPU env's
    observation layout."""
    from learning.controller.commands import sample_arm_poses
    from learning.controller.upper_env import UpperBodyEnv, UpperEnvConfig
    from robot_io.t1_model import default_robot_spec

    pool = sample_arm_poses(default_robot_spec(), 20, seed=5)
    env = UpperBodyEnv(UpperEnvConfig(num_worlds=2), seed=0, threads=1, pool=pool,
                       backend="warp", device="cpu")
    obs, critic = env.reset()
    assert obs.shape == (2, env.obs_dim) and critic.shape == (2, env.critic_obs_dim)
    mass = env.env.sim.model_field("body_mass")[:, env._gripper_body[0]]
    assert torch.allclose(mass.double(), env._gripper_mass0[0] + env.payload[:, 0], atol=1e-5)
    for _ in range(3):
        obs, critic, reward, *_ = env.step(env.expert_action())
    assert torch.isfinite(obs).all() and torch.isfinite(reward).all()
