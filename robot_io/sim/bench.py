"""Simulation throughput: the whole batched environment against bare `mujoco.batch` physics.

Both are measured in the same process on the same compiled scene, worlds and threads, so the
ratio `env_physics_steps_per_s / bare_physics_steps_per_s` says what the environment costs on
top of the physics (controller, command gate, observation, task outcome, resets), whatever the
machine. Run it with `refine-dp bench sim --task NAME --worlds N`.

The environment loop runs torch on one thread (`torch.set_num_threads(1)`): the physics already
uses the cores through the batch's thread pool, and torch's own pool competing with it on small
(N, 29) tensors only slows both down. The previous torch setting is restored afterwards.

Episodes are cut to `BENCH_EPISODE_S`: nobody steers, and at 0.2 m/s forward a robot would walk
into the task's table or door after a few seconds; timing an uncontrolled collision (a launched
box, an unstable world that MuJoCo resets by itself) is not the point. `physics_warnings` counts
MuJoCo's warnings (e.g. instabilities) in both runs and should be 0.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import mujoco
import torch
from mujoco.batch import Batch

from robot_io.command_gate import CommandGate
from robot_io.control.reference import ReferenceController
from robot_io.env import BatchedEnv
from robot_io.tasks import default_config
from robot_io.types import Command, CommandLimits, Observation

WARMUP_S = 0.5
BENCH_EPISODE_S = 1.5  # 0.3 m of walking: every task starts the robot farther than that away
BENCH_TORCH_THREADS = 1
# The same stage as the env backend (robot_io.sim.mujoco_batch): positions, velocities and
# sensors current after every control step.
_STAGE = mujoco.mjtStage.mjSTAGE_VEL.value


def timed_rate(tick: Callable[[], int], seconds: float, warmup_s: float = WARMUP_S) -> float:
    """Units per second of `tick()` (which returns how many units it did), after a warm-up.

    Runs `tick` for `warmup_s` untimed, then for at least `seconds`, and divides the units done
    by the elapsed `time.perf_counter()` time.
    """
    end = time.perf_counter() + warmup_s
    while time.perf_counter() < end:
        tick()
    units = 0
    start = time.perf_counter()
    end = start + seconds
    while (now := time.perf_counter()) < end:
        units += tick()
    return units / (now - start)


def constant_command(obs: Observation, base_vx_mps: float = 0.2) -> Command:
    """Hands held at their observed pose, walking forward at `base_vx_mps`, grippers open."""
    n = obs.num_worlds
    base_vel = torch.zeros(n, 3, dtype=torch.float64)
    base_vel[:, 0] = base_vx_mps
    return Command(base_vel=base_vel, hand_pos=obs.hand_pos.clone(),
                   hand_quat=obs.hand_quat.clone(),
                   gripper=torch.zeros(n, 2, dtype=torch.float64))


class _EnvLoop:
    """The session loop of `BatchedEnv` with a constant command; resets worlds that are done."""

    def __init__(self, env: BatchedEnv) -> None:
        self.env = env
        self.controller = ReferenceController(env)
        self.gate = CommandGate(CommandLimits(), env.num_worlds, env.control_dt_s)
        self.obs = env.reset()
        self.controller.reset(self.obs)
        self.cmd = constant_command(self.obs)
        self.reward_sum = 0.0
        self.warnings_of_reset_worlds = 0

    def tick(self) -> int:
        """One control step of every world; returns the number of world control steps (N)."""
        env = self.env
        applied = self.gate(self.cmd)
        env.apply(self.controller.step(applied, self.obs))
        self.obs = env.observe()
        outcome = env.outcome()
        self.reward_sum += float(outcome.reward.sum())
        done = outcome.done
        if bool(done.any()):
            ids = torch.nonzero(done).squeeze(1)
            self.warnings_of_reset_worlds += warning_count(env.sim.batch, ids)
            self.obs = env.reset(ids)
            self.controller.reset(self.obs, ids)
            self.gate.reset(ids)
            fresh = constant_command(self.obs)
            for name in Command.field_names():
                getattr(self.cmd, name)[ids] = getattr(fresh, name)[ids]
        return env.num_worlds


def warning_count(batch: Batch, ids: torch.Tensor | None = None) -> int:
    """How many MuJoCo warnings (instabilities, overflows) worlds `ids` (all: None) have had."""
    counts = batch.warning[:, :, 0]
    return int(counts[ids.numpy()].sum() if ids is not None else counts.sum())


def _bare_batch(env: BatchedEnv, threads: int) -> Batch:
    """A new batch of the env's compiled model, starting from the env's current states."""
    bare = Batch(env.model, env.num_worlds, threads)
    bare.state[:] = env.sim.batch.state
    bare.forward(stage=_STAGE)
    return bare


def bench_sim(task: str, worlds: int, threads: int = 0, seconds: float = 5.0,
              seed: int = 0) -> dict[str, object]:
    """Throughput of the full environment and of bare physics on the same scene.

    Args:
        task: a registered task name.
        worlds: number of worlds N.
        threads: physics threads (0: all CPUs).
        seconds: timed duration of each of the two measurements (after a 0.5 s warm-up each).
        seed: the env's seed.

    Returns:
        task, worlds, threads (the batch's actual thread count), physics_dt_s, control_dt_s,
        substeps, env_control_steps_per_s (N x ticks / s), env_physics_steps_per_s (that times
        substeps), bare_physics_steps_per_s (N x physics steps / s of a bare `mujoco.batch`
        stepping `substeps` at a time), ratio (env / bare physics steps per second) and
        torch_threads (torch's thread count during the env loop), episode_s (the episode length
        of the env loop) and physics_warnings (MuJoCo warnings in both runs; 0 when clean).

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
        loop = _EnvLoop(env)
        env_rate = timed_rate(loop.tick, seconds)
    finally:
        torch.set_num_threads(previous_threads)
    substeps = env.robot.substeps
    bare = _bare_batch(env, threads)

    def bare_tick() -> int:
        bare.step(nstep=substeps, stage=_STAGE)
        return worlds * substeps

    bare_rate = timed_rate(bare_tick, seconds)
    return {
        "task": env.task.name, "worlds": worlds, "threads": env.sim.batch.nthread,
        "physics_dt_s": env.robot.physics_dt_s, "control_dt_s": env.control_dt_s,
        "substeps": substeps, "env_control_steps_per_s": env_rate,
        "env_physics_steps_per_s": env_rate * substeps, "bare_physics_steps_per_s": bare_rate,
        "ratio": env_rate * substeps / bare_rate, "torch_threads": BENCH_TORCH_THREADS,
        "episode_s": BENCH_EPISODE_S,
        "physics_warnings": (loop.warnings_of_reset_worlds + warning_count(env.sim.batch)
                             + warning_count(bare)),
    }


def format_bench_line(result: dict[str, object]) -> str:
    """One human-readable line for a `bench_sim` result."""
    r = result
    line = (f"bench sim {r['task']}: {r['worlds']} worlds, {r['threads']} physics threads, "
            f"torch threads {r['torch_threads']}: env {r['env_control_steps_per_s']:,.0f} "
            f"control steps/s = {r['env_physics_steps_per_s']:,.0f} physics steps/s; bare "
            f"mujoco.batch {r['bare_physics_steps_per_s']:,.0f} physics steps/s; "
            f"ratio env/bare {r['ratio']:.3f}")
    if r["physics_warnings"]:
        line += f" (warning: {r['physics_warnings']} MuJoCo warnings, the timing is suspect)"
    return line
