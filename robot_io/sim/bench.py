"""Simulation throughput: the whole batched environment against bare `mujoco.batch` physics.

All runs happen in one process on the same compiled scene, worlds and threads, so the ratio
`env_physics_steps_per_s / bare_physics_steps_per_s` says what the environment costs on top of
the physics (controller, command gate, observation, task outcome, resets), whatever the machine.
Run it with `refine-dp bench sim --task NAME --worlds N [--backend warp --device cuda]`.

Three measurements, each `seconds` long in total after a 0.5 s warm-up, taken in alternating
slices (`interleaved_rates`) so that the machine's drifts cancel in the ratio:
- env: `Session.tick` on `BatchedEnv` (safety filter + `ReferenceController` + apply + observe
  + outcome), with a constant command (hands held where they are, 0.2 m/s forward, grippers open); worlds that are done are
  reset.
- bare (the reference of the ratio): a fresh `mujoco.batch.Batch` of the same model, with the
  env's per-world model fields, replays one recorded env episode: from the same start state it
  is given, tick by tick, the controls, harness poses and harness switches the env applied, so
  it integrates the same motion (bit for bit) without any of the env's work. A stepping robot
  costs the solver more iterations than a held one, so this is the fair reference.
- bare held: the batch started from the env's last state and stepped with those inputs held
  fixed: the robot stands in its harness. Cheaper physics (fewer solver iterations); reported
  for comparison with the bare `mujoco.batch` rate of a static scene.

With `backend="warp"` (MuJoCo Warp, on a GPU or on Warp's CPU device) the reference is bare
MuJoCo Warp: a second `WarpBackend` with the env's per-world fields replays the recorded inputs
through its tensors from the recorded start (time, qpos, qvel: float32, the solver's warm start
is not carried over, so it follows the env's motion closely rather than bit for bit). On a GPU
every timed call ends with `torch.cuda.synchronize`, so the rates count finished work.
`physics_warnings` then counts instabilities and worlds that ran out of contact or constraint
slots.

The environment loop runs torch on one thread (`torch.set_num_threads(1)`): the physics already
uses the cores through the batch's thread pool, and torch's own pool would compete with it for
them on small (N, 29) tensors. The previous torch setting is restored afterwards.

Episodes are cut to `BENCH_EPISODE_S`: nobody steers, and at 0.2 m/s forward a robot would walk
into the task's table or door after a few seconds; timing an uncontrolled collision (a launched
box, an unstable world that MuJoCo resets by itself) is not the point. `physics_warnings` counts
MuJoCo's warnings (e.g. instabilities) in all runs and should be 0.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import mujoco
import numpy as np
import torch
from mujoco.batch import MODEL_FIELDS, Batch
from torch import Tensor

from robot_io.control.reference import ReferenceController
from robot_io.env import BatchedEnv
from robot_io.sim.backend import SimBackend
from robot_io.sim.factory import make_backend
from robot_io.sim.mujoco_batch import MujocoBatchBackend
from robot_io.protocols import EpisodeEnd
from robot_io.session import Session
from robot_io.tasks import default_config
from robot_io.types import Command, HarnessTarget, JointTargets, Observation

WARMUP_S = 0.5
BENCH_ROUNDS = 10
BENCH_EPISODE_S = 1.5  # 0.3 m of walking: every task starts the robot farther than that away
BENCH_TORCH_THREADS = 1
# The same stage as the env backend (robot_io.sim.mujoco_batch): positions, velocities and
# sensors current after every control step.
_STAGE = mujoco.mjtStage.mjSTAGE_VEL.value
# What the env writes before each physics call (robot_io.env.BatchedEnv.apply).
INPUT_FIELDS = ("ctrl", "mocap_pos", "mocap_quat", "eq_active")
# The state a tensor replay starts from (with the inputs).
STATE_FIELDS = ("time", "qpos", "qvel")


def interleaved_rates(ticks: dict[str, Callable[[], int]], seconds: float,
                      rounds: int = BENCH_ROUNDS, warmup_s: float = WARMUP_S) -> dict[str, float]:
    """Units per second of each `tick()` (which returns how many units it did).

    Each tick function is warmed up for `warmup_s`, then all are timed in `rounds` alternating
    slices of `seconds / rounds` each, so that slow drifts of the machine (other tenants,
    frequency changes) affect every measurement alike and cancel in their ratios.
    """
    for tick in ticks.values():
        end = time.perf_counter() + warmup_s
        while time.perf_counter() < end:
            tick()
    units = dict.fromkeys(ticks, 0)
    elapsed = dict.fromkeys(ticks, 0.0)
    for _ in range(rounds):
        for name, tick in ticks.items():
            start = time.perf_counter()
            end = start + seconds / rounds
            while (now := time.perf_counter()) < end:
                units[name] += tick()
            elapsed[name] += now - start
    return {name: units[name] / elapsed[name] for name in ticks}


def constant_command(obs: Observation, base_vx_mps: float = 0.2) -> Command:
    """Hands held at their observed pose, walking forward at `base_vx_mps`, grippers open."""
    n, device = obs.num_worlds, obs.time_s.device
    base_vel = torch.zeros(n, 3, dtype=torch.float64, device=device)
    base_vel[:, 0] = base_vx_mps
    return Command(base_vel=base_vel, hand_pos=obs.hand_pos.clone(),
                   hand_quat=obs.hand_quat.clone(),
                   gripper=torch.zeros(n, 2, dtype=torch.float64, device=device))


def warning_count(batch: Batch, ids: torch.Tensor | None = None) -> int:
    """How many MuJoCo warnings (instabilities, overflows) worlds `ids` (all: None) have had."""
    counts = batch.warning[:, :, 1]  # mjWarningStat (lastinfo, number): the number
    return int(counts[ids.cpu().numpy()].sum() if ids is not None else counts.sum())


def sim_warnings(sim: SimBackend, ids: torch.Tensor | None = None) -> int:
    """Warnings of worlds `ids` (all: None) of any backend: MuJoCo's warning counters, or on
    Warp the instabilities plus the worlds out of contact / constraint slots."""
    if isinstance(sim, MujocoBatchBackend):
        return warning_count(sim.batch, ids)
    counts = sim.instability_count() + sim.overflowed().long()
    return int(counts.sum() if ids is None else counts[ids].sum())


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


LOOP_CONTROLLERS = ("reference", "hold")


class _ConstantSource:
    """Per world, the `constant_command` of its episode's first observation."""

    def __init__(self, obs: Observation) -> None:
        self.cmd = constant_command(obs)

    def reset(self, obs: Observation, ids: Tensor | None = None) -> None:
        fresh = constant_command(obs)
        ids = torch.arange(obs.num_worlds) if ids is None else ids
        for name in Command.field_names():
            getattr(self.cmd, name)[ids.to(fresh.base_vel.device)] = getattr(fresh, name)[ids]

    def next_command(self, obs: Observation) -> Command:
        return self.cmd


class _HoldController:
    """The default pose, with the harness holding each robot where its episode started."""

    def __init__(self, env: BatchedEnv) -> None:
        obs, n = env.observe(), env.num_worlds
        self.hold = JointTargets(
            env.default_pose.expand(n, -1).clone(),
            torch.zeros(n, 2, dtype=torch.float64, device=env.device),
            HarnessTarget(obs.root_pos.clone(), obs.root_quat.clone()))

    def reset(self, obs: Observation, ids: Tensor | None = None) -> None:
        ids = torch.arange(obs.num_worlds) if ids is None else ids
        ids = ids.to(obs.root_pos.device)
        self.hold.harness.pos[ids] = obs.root_pos[ids]
        self.hold.harness.quat[ids] = obs.root_quat[ids]

    def step(self, cmd: Command, obs: Observation) -> JointTargets:
        return self.hold


class EnvLoop:
    """The session's tick on `BatchedEnv` with a constant command; worlds that are done are
    reset (by the session).

    controller "reference": `ReferenceController`, walking (it computes on the CPU); "hold":
    the default pose with the harness holding each robot where it started, on any device (the
    env loop of a GPU benchmark). Either way every tick is `Session.tick`: safety filter,
    controller, world, observe, outcome.
    """

    def __init__(self, env: BatchedEnv, controller: str = "reference") -> None:
        if controller not in LOOP_CONTROLLERS:
            raise ValueError(f"unknown loop controller {controller!r}; known: "
                             f"{list(LOOP_CONTROLLERS)}")
        self.env = env
        self.controller_name = controller
        low_level = ReferenceController(env) if controller == "reference" else _HoldController(env)
        self.session = Session(env, _ConstantSource(env.observe()), low_level, observers=[self])
        self.reward_sum = 0.0
        self.warnings_of_reset_worlds = 0
        self.session.start_episodes()

    def reset(self, ids: torch.Tensor) -> None:
        """New episodes in worlds `ids`: world, controller, safety filter and command."""
        self.warnings_of_reset_worlds += sim_warnings(self.env.sim, ids)
        self.session.start_episodes(ids.cpu())

    def tick(self) -> int:
        """One control step of every world; returns the number of world control steps (N)."""
        self.session.tick()
        synchronize(self.env.device)
        return self.env.num_worlds

    # -- StepObserver: count what the session's resets would otherwise hide ---------------
    def episode_started(self, start: object) -> None:
        pass

    def step(self, record: object) -> None:
        pass

    def episode_ended(self, end: EpisodeEnd) -> None:
        self.reward_sum += float(end.success.sum())
        self.warnings_of_reset_worlds += sim_warnings(self.env.sim, end.world_ids)


def bare_copy(env: BatchedEnv, threads: int) -> Batch:
    """A new batch of the env's model with the env's per-world model fields and states."""
    source = env.sim.batch
    bare = Batch(env.model, env.num_worlds, threads)
    for name in MODEL_FIELDS:
        values = source.expanded(name)
        if values is not None:
            bare.expand(name)[...] = values
    bare.state[...] = source.state
    bare.forward(stage=_STAGE)
    return bare


class Replay:
    """Bare physics replaying recorded per-tick inputs from a start state, over and over."""

    def __init__(self, bare: Batch, start: np.ndarray, inputs: list[dict[str, np.ndarray]],
                 substeps: int) -> None:
        self.bare, self.start, self.inputs, self.substeps = bare, start, inputs, substeps
        self.views = {name: bare.bind(name) for name in INPUT_FIELDS}
        self.k = len(inputs)

    def tick(self) -> int:
        """One control step's worth of physics; returns the world physics steps done."""
        if self.k == len(self.inputs):
            self.bare.state[...] = self.start
            self.k = 0
        for name, value in self.inputs[self.k].items():
            self.views[name][...] = value
        self.bare.step(nstep=self.substeps, stage=_STAGE)
        self.k += 1
        return self.bare.nsim * self.substeps


def record_episode(loop: EnvLoop) -> tuple[np.ndarray, list[dict[str, np.ndarray]]]:
    """Reset every world and run one episode but its last tick (no reset inside).

    Returns:
        The start state (N, nstate) and, per tick, the inputs the env gave the physics.
    """
    env = loop.env
    loop.reset(torch.arange(env.num_worlds))
    start = env.sim.batch.state.copy()
    inputs = []
    for _ in range(env.time_limit_steps - 1):
        loop.tick()
        inputs.append({name: env.sim.batch.bind(name).copy() for name in INPUT_FIELDS})
    return start, inputs


def record_episode_tensors(loop: EnvLoop) -> tuple[dict[str, Tensor], list[dict[str, Tensor]]]:
    """`record_episode` through the backend's tensors (any backend, any device).

    Returns:
        The start (time, qpos, qvel and the inputs) and, per tick, the inputs, as tensor copies.
    """
    env = loop.env
    loop.reset(torch.arange(env.num_worlds, device=env.device))
    start = {name: getattr(env.sim, name).clone() for name in STATE_FIELDS + INPUT_FIELDS}
    inputs = []
    for _ in range(env.time_limit_steps - 1):
        loop.tick()
        inputs.append({name: getattr(env.sim, name).clone() for name in INPUT_FIELDS})
    return start, inputs


def backend_copy(env: BatchedEnv, threads: int = 0) -> SimBackend:
    """A new backend of the env's kind and device with the env's per-world model fields and
    state (time, qpos, qvel, inputs)."""
    sim = make_backend(env.backend, env.model, env.num_worlds, threads, str(env.device))
    for name in sorted(env.sim.per_world_fields):
        sim.model_field(name)[...] = env.sim.model_field(name)
    sim.update_constants()
    for name in STATE_FIELDS + INPUT_FIELDS:
        getattr(sim, name)[...] = getattr(env.sim, name)
    sim.forward()
    return sim


class TensorReplay:
    """Any backend replaying recorded per-tick inputs from a start through its tensors."""

    def __init__(self, sim: SimBackend, start: dict[str, Tensor],
                 inputs: list[dict[str, Tensor]], substeps: int) -> None:
        self.sim, self.start, self.inputs, self.substeps = sim, start, inputs, substeps
        self.k = len(inputs)

    def tick(self) -> int:
        """One control step's worth of physics; returns the world physics steps done."""
        sim = self.sim
        if self.k == len(self.inputs):
            for name, value in self.start.items():
                getattr(sim, name)[...] = value
            sim.forward()
            self.k = 0
        for name, value in self.inputs[self.k].items():
            getattr(sim, name)[...] = value
        sim.step(self.substeps)
        synchronize(sim.qpos.device)
        self.k += 1
        return sim.num_worlds * self.substeps


@dataclasses.dataclass(frozen=True)
class References:
    """The bare-physics measurements timed beside the env, and their warnings."""

    bare: Callable[[], int]  # replaying the env's recorded motion
    held: Callable[[], int]  # the env's last state stepped with its inputs held
    warnings: Callable[[], int]


def mujoco_references(loop: EnvLoop, threads: int) -> References:
    """Bare `mujoco.batch`, bit for bit the env's motion (see the module docstring)."""
    env = loop.env
    start, inputs = record_episode(loop)
    substeps = env.robot.substeps
    held = bare_copy(env, threads)

    def held_tick() -> int:
        held.step(nstep=substeps, stage=_STAGE)
        return env.num_worlds * substeps

    replay = Replay(bare_copy(env, threads), start, inputs, substeps)
    return References(replay.tick, held_tick,
                      lambda: warning_count(held) + warning_count(replay.bare))


def tensor_references(loop: EnvLoop) -> References:
    """A second backend of the env's kind (e.g. bare MuJoCo Warp) replaying through tensors."""
    env = loop.env
    start, inputs = record_episode_tensors(loop)
    substeps = env.robot.substeps
    held = backend_copy(env)

    def held_tick() -> int:
        held.step(substeps)
        synchronize(env.device)
        return env.num_worlds * substeps

    replay = TensorReplay(backend_copy(env), start, inputs, substeps)
    return References(replay.tick, held_tick,
                      lambda: sim_warnings(held) + sim_warnings(replay.sim))


def bench_sim(task: str, worlds: int, threads: int = 0, seconds: float = 5.0,
              seed: int = 0, backend: str = "mujoco",
              device: str | None = None) -> dict[str, object]:
    """Throughput of the full environment and of bare physics on the same scene.

    Args:
        task: a registered task name.
        worlds: number of worlds N.
        threads: physics threads (0: all CPUs).
        seconds: timed duration of each of the three measurements (after a 0.5 s warm-up each).
        seed: the env's seed.
        backend: "mujoco" (CPU) or "warp" (MuJoCo Warp).
        device: the backend's device (see `BatchedEnv`); with a CUDA device the env loop holds
            the robots ("hold", the reference controller runs on the CPU only).

    Returns:
        task, backend, device, controller (the env loop's), worlds, threads (the batch's actual
        thread count; None for warp), physics_dt_s, control_dt_s,
        substeps, env_control_steps_per_s (N x ticks / s), env_physics_steps_per_s (that times
        substeps), bare_physics_steps_per_s (N x physics steps / s of bare `mujoco.batch`
        replaying the env's motion; bare MuJoCo Warp for warp), bare_held_physics_steps_per_s
        (the same, robots held still), ratio (env / bare physics steps per second),
        torch_threads (torch's thread count during the env loop), episode_s (the env loop's
        episode length) and physics_warnings (MuJoCo warnings in all runs; 0 when clean).

    Raises:
        ValueError: unknown task or backend, worlds < 1, threads < 0 or seconds <= 0.
        MissingDependencyError: backend "warp" without the gpu extra.
    """
    if seconds <= 0:
        raise ValueError(f"seconds must be positive, got {seconds}")
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(BENCH_TORCH_THREADS)
    try:
        config = dataclasses.replace(default_config(task), time_limit_s=BENCH_EPISODE_S)
        env = BatchedEnv(task, worlds, threads, seed, task_config=config, backend=backend,
                         device=device)
        loop = EnvLoop(env, "reference" if env.device.type == "cpu" else "hold")
        if backend == "mujoco":  # bit for bit the env's motion
            refs = mujoco_references(loop, threads)
        else:
            refs = tensor_references(loop)
        rates = interleaved_rates({"env": loop.tick, "bare": refs.bare, "held": refs.held},
                                  seconds)
    finally:
        torch.set_num_threads(previous_threads)
    substeps = env.robot.substeps
    env_rate, bare_rate, held_rate = rates["env"], rates["bare"], rates["held"]
    warnings = loop.warnings_of_reset_worlds + sim_warnings(env.sim) + refs.warnings()
    return {
        "task": env.task.name, "backend": backend, "device": str(env.device),
        "controller": loop.controller_name, "worlds": worlds,
        "threads": env.sim.batch.nthread if backend == "mujoco" else None,
        "physics_dt_s": env.robot.physics_dt_s, "control_dt_s": env.control_dt_s,
        "substeps": substeps, "env_control_steps_per_s": env_rate,
        "env_physics_steps_per_s": env_rate * substeps, "bare_physics_steps_per_s": bare_rate,
        "bare_held_physics_steps_per_s": held_rate, "ratio": env_rate * substeps / bare_rate,
        "torch_threads": BENCH_TORCH_THREADS, "episode_s": BENCH_EPISODE_S,
        "physics_warnings": warnings,
    }


def format_bench_line(result: dict[str, object]) -> str:
    """One human-readable line for a `bench_sim` result."""
    r = result
    if r.get("backend", "mujoco") == "mujoco":
        where, bare = f"{r['threads']} physics threads", "mujoco.batch"
    else:
        where, bare = f"MuJoCo Warp on {r['device']}", "MuJoCo Warp"
    line = (f"bench sim {r['task']}: {r['worlds']} worlds, {where}, "
            f"torch threads {r['torch_threads']}: env {r['env_control_steps_per_s']:,.0f} "
            f"control steps/s = {r['env_physics_steps_per_s']:,.0f} physics steps/s; bare "
            f"{bare} replaying the same motion {r['bare_physics_steps_per_s']:,.0f} "
            f"physics steps/s; ratio env/bare {r['ratio']:.3f} (bare with the robots held "
            f"still: {r['bare_held_physics_steps_per_s']:,.0f} physics steps/s)")
    if r.get("controller", "reference") == "hold":
        line += " (env loop: robots held in their harness, no controller)"
    if r["physics_warnings"]:
        line += f" (warning: {r['physics_warnings']} MuJoCo warnings, the timing is suspect)"
    return line
