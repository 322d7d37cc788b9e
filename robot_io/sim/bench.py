"""Simulation throughput: the whole batched environment against bare `mujoco.batch` physics.

All runs happen in one process on the same compiled scene, worlds and threads, so the ratio
`env_physics_steps_per_s / bare_physics_steps_per_s` says what the environment costs on top of
the physics (controller, command gate, observation, task outcome, resets), whatever the machine.
Run it with `refine-dp bench sim --task NAME --worlds N`.

Three measurements, each `seconds` long in total after a 0.5 s warm-up, taken in alternating
slices (`interleaved_rates`) so that the machine's drifts cancel in the ratio:
- env: `BatchedEnv` + `ReferenceController` + `CommandGate` + observe + outcome, with a constant
  command (hands held where they are, 0.2 m/s forward, grippers open); worlds that are done are
  reset.
- bare (the reference of the ratio): a fresh `mujoco.batch.Batch` of the same model, with the
  env's per-world model fields, replays one recorded env episode: from the same start state it
  is given, tick by tick, the controls, harness poses and harness switches the env applied, so
  it integrates the same motion (bit for bit) without any of the env's work. A stepping robot
  costs the solver more iterations than a held one, so this is the fair reference.
- bare held: the batch started from the env's last state and stepped with those inputs held
  fixed: the robot stands in its harness. Cheaper physics (fewer solver iterations); reported
  for comparison with the bare `mujoco.batch` rate of a static scene.

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

from robot_io.command_gate import CommandGate
from robot_io.control.reference import ReferenceController
from robot_io.env import BatchedEnv
from robot_io.tasks import default_config
from robot_io.types import Command, CommandLimits, Observation

WARMUP_S = 0.5
BENCH_ROUNDS = 10
BENCH_EPISODE_S = 1.5  # 0.3 m of walking: every task starts the robot farther than that away
BENCH_TORCH_THREADS = 1
# The same stage as the env backend (robot_io.sim.mujoco_batch): positions, velocities and
# sensors current after every control step.
_STAGE = mujoco.mjtStage.mjSTAGE_VEL.value
# What the env writes before each physics call (robot_io.env.BatchedEnv.apply).
INPUT_FIELDS = ("ctrl", "mocap_pos", "mocap_quat", "eq_active")


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
    n = obs.num_worlds
    base_vel = torch.zeros(n, 3, dtype=torch.float64)
    base_vel[:, 0] = base_vx_mps
    return Command(base_vel=base_vel, hand_pos=obs.hand_pos.clone(),
                   hand_quat=obs.hand_quat.clone(),
                   gripper=torch.zeros(n, 2, dtype=torch.float64))


def warning_count(batch: Batch, ids: torch.Tensor | None = None) -> int:
    """How many MuJoCo warnings (instabilities, overflows) worlds `ids` (all: None) have had."""
    counts = batch.warning[:, :, 0]
    return int(counts[ids.numpy()].sum() if ids is not None else counts.sum())


class EnvLoop:
    """The session loop of `BatchedEnv` with a constant command; resets worlds that are done."""

    def __init__(self, env: BatchedEnv) -> None:
        self.env = env
        self.controller = ReferenceController(env)
        self.gate = CommandGate(CommandLimits(), env.num_worlds, env.control_dt_s)
        self.obs = env.observe()
        self.cmd = constant_command(self.obs)
        self.reward_sum = 0.0
        self.warnings_of_reset_worlds = 0
        self.reset(torch.arange(env.num_worlds))

    def reset(self, ids: torch.Tensor) -> None:
        """New episodes in worlds `ids`: env, controller, gate and command."""
        self.warnings_of_reset_worlds += warning_count(self.env.sim.batch, ids)
        self.obs = self.env.reset(ids)
        self.controller.reset(self.obs, ids)
        self.gate.reset(ids)
        fresh = constant_command(self.obs)
        for name in Command.field_names():
            getattr(self.cmd, name)[ids] = getattr(fresh, name)[ids]

    def tick(self) -> int:
        """One control step of every world; returns the number of world control steps (N)."""
        env = self.env
        applied = self.gate(self.cmd)
        env.apply(self.controller.step(applied, self.obs))
        self.obs = env.observe()
        outcome = env.outcome()
        self.reward_sum += float(outcome.reward.sum())
        if bool(outcome.done.any()):
            self.reset(torch.nonzero(outcome.done).squeeze(1))
        return env.num_worlds


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


def bench_sim(task: str, worlds: int, threads: int = 0, seconds: float = 5.0,
              seed: int = 0) -> dict[str, object]:
    """Throughput of the full environment and of bare physics on the same scene.

    Args:
        task: a registered task name.
        worlds: number of worlds N.
        threads: physics threads (0: all CPUs).
        seconds: timed duration of each of the three measurements (after a 0.5 s warm-up each).
        seed: the env's seed.

    Returns:
        task, worlds, threads (the batch's actual thread count), physics_dt_s, control_dt_s,
        substeps, env_control_steps_per_s (N x ticks / s), env_physics_steps_per_s (that times
        substeps), bare_physics_steps_per_s (N x physics steps / s of bare `mujoco.batch`
        replaying the env's motion), bare_held_physics_steps_per_s (the same, robots held
        still), ratio (env / bare physics steps per second), torch_threads (torch's thread
        count during the env loop), episode_s (the env loop's episode length) and
        physics_warnings (MuJoCo warnings in all runs; 0 when clean).

    Raises:
        ValueError: unknown task, worlds < 1, threads < 0 or seconds <= 0.
    """
    if seconds <= 0:
        raise ValueError(f"seconds must be positive, got {seconds}")
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(BENCH_TORCH_THREADS)
    try:
        config = dataclasses.replace(default_config(task), time_limit_s=BENCH_EPISODE_S)
        env = BatchedEnv(task, worlds, threads, seed, task_config=config)
        loop = EnvLoop(env)
        start, inputs = record_episode(loop)
        substeps = env.robot.substeps
        held = bare_copy(env, threads)

        def held_tick() -> int:
            held.step(nstep=substeps, stage=_STAGE)
            return worlds * substeps

        replay = Replay(bare_copy(env, threads), start, inputs, substeps)
        rates = interleaved_rates({"env": loop.tick, "bare": replay.tick, "held": held_tick},
                                  seconds)
    finally:
        torch.set_num_threads(previous_threads)
    env_rate, bare_rate, held_rate = rates["env"], rates["bare"], rates["held"]
    warnings = (loop.warnings_of_reset_worlds + warning_count(env.sim.batch)
                + warning_count(held) + warning_count(replay.bare))
    return {
        "task": env.task.name, "worlds": worlds, "threads": env.sim.batch.nthread,
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
    line = (f"bench sim {r['task']}: {r['worlds']} worlds, {r['threads']} physics threads, "
            f"torch threads {r['torch_threads']}: env {r['env_control_steps_per_s']:,.0f} "
            f"control steps/s = {r['env_physics_steps_per_s']:,.0f} physics steps/s; bare "
            f"mujoco.batch replaying the same motion {r['bare_physics_steps_per_s']:,.0f} "
            f"physics steps/s; ratio env/bare {r['ratio']:.3f} (bare with the robots held "
            f"still: {r['bare_held_physics_steps_per_s']:,.0f} physics steps/s)")
    if r["physics_warnings"]:
        line += f" (warning: {r['physics_warnings']} MuJoCo warnings, the timing is suspect)"
    return line
