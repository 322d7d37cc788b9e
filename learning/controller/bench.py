"""`refine-dp bench controller-env`: throughput of a controller-training environment.

Three measurements in one process, interleaved in slices so machine drift cancels in the
ratios:
- env: `env.step(action)` with the policy's actions replaced by a fixed motion (everything a
  training tick does except the network: reference legs and harness, observation, reward,
  command schedule, resets);
- physics: the same worlds stepped bare (`sim.step(substeps)`), state untouched;
- the ratio env / physics in control steps per second (1.0 would mean the environment adds
  nothing to the physics).
"""

from __future__ import annotations

import time

import torch

from learning.controller.train import ControllerTrainConfig, make_env


def bench_controller_env(part: str = "upper", worlds: int = 256, threads: int = 0,
                         seconds: float = 10.0, slices: int = 4) -> dict:
    env = make_env(ControllerTrainConfig(part=part, worlds=worlds, threads=threads))
    env.reset()
    sim = env.env.sim
    substeps = env.robot.substeps
    gen = torch.Generator().manual_seed(0)
    action = 0.3 * torch.randn(worlds, env.action_dim, generator=gen)
    for _ in range(5):  # warm-up
        env.step(action)
    per_slice = seconds / (2 * slices)
    env_ticks = phys_ticks = 0
    env_s = phys_s = 0.0
    for _ in range(slices):
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < per_slice:
            env.step(action)
            env_ticks += 1
        env_s += time.perf_counter() - t0
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < per_slice:
            sim.step(substeps)
            phys_ticks += 1
        phys_s += time.perf_counter() - t0
    env_rate = env_ticks * worlds / env_s
    phys_rate = phys_ticks * worlds / phys_s
    return {"part": part, "worlds": worlds, "threads": sim.threads if hasattr(sim, "threads")
            else threads, "substeps": substeps,
            "env_control_steps_per_s": round(env_rate, 1),
            "physics_control_steps_per_s": round(phys_rate, 1),
            "env_physics_steps_per_s": round(env_rate * substeps, 1),
            "ratio": round(env_rate / phys_rate, 3)}


def format_bench(result: dict) -> str:
    return (f"controller env ({result['part']}, {result['worlds']} worlds, {result['threads']} "
            f"threads): env {result['env_control_steps_per_s']:.0f} control steps/s "
            f"({result['env_physics_steps_per_s']:.0f} physics steps/s), bare physics "
            f"{result['physics_control_steps_per_s']:.0f} control steps/s, ratio "
            f"{result['ratio']:.3f}")
