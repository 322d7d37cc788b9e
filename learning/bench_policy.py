"""Planner latency benchmark: wall time of one chunk at batch 1 on the CPU.

The reference, measured in the same run, is the bare denoiser forward pass times the number of
denoising steps the sampler takes: the ratio shows what the sampler and the normalisation add.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from learning.diffusion.policy import DiffusionPolicy, PolicyConfig
from learning.features import ACTION_DIM, ObsSpec
from learning.normalizer import Normalizer
from learning.planner import Planner

# The box-pickup DP observation (what an untrained benchmark policy is built for).
BOX_PICKUP_OBS = ObsSpec((("hand_pos", 6), ("hand_quat", 8), ("foot_pos", 6), ("foot_quat", 8),
                          ("gripper_pos", 2), ("task.object_pos", 3), ("task.object_quat", 4)))


@dataclass(frozen=True)
class PolicyBenchConfig:
    """What `bench_policy` measures (`refine-dp bench policy`).

    Attributes:
        policy: a run or checkpoint folder (None: an untrained default-size DiT for box pickup).
        calls: timed calls, after 5 warm-up calls.
        sampler: "ddim" or "ddpm" (None: the policy's default sampler).
    """

    policy: Path | None = None
    calls: int = 100
    sampler: str | None = None


def _default_planner() -> Planner:
    from learning.pretrain import default_net
    from robot_io.t1_model import default_robot_spec
    cfg = PolicyConfig(net=default_net("dit"))
    d = BOX_PICKUP_OBS.dim
    unit = Normalizer(-torch.ones(d), torch.ones(d))
    act = Normalizer(-torch.ones(ACTION_DIM), torch.ones(ACTION_DIM))
    planner = Planner.create(cfg, BOX_PICKUP_OBS, unit, act, default_robot_spec(), "box_pickup",
                             {})
    planner.model.eval()
    return planner


def _timed(fn, calls: int) -> list[float]:
    for _ in range(5):  # warm-up
        fn()
    out = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def bench_policy(policy: Path | None, calls: int, sampler: str | None) -> dict:
    """Median / p90 chunk latency (ms) at batch 1, and the bare-forward reference.

    Runs on torch's current thread pool: the caller (an entry point) sizes it.
    """
    if calls < 1:
        raise ValueError(f"calls must be at least 1, got {calls}")
    planner = Planner.load(policy) if policy is not None else _default_planner()
    sampler = sampler or planner.default_sampler
    cfg = planner.cfg
    obs = torch.randn(1, cfg.obs_horizon, planner.obs_spec.dim)
    gen = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        chunk_s = _timed(lambda: planner.act(obs, gen, sampler), calls)
        model = planner.model
        if isinstance(model, DiffusionPolicy):
            steps = cfg.ddim_steps if sampler == "ddim" else cfg.denoising_steps
            x = torch.randn(1, cfg.pred_horizon, ACTION_DIM)
            k = torch.zeros(1, dtype=torch.long)
            o = planner.obs_norm.normalize(obs)
            fwd_s = _timed(lambda: model.net(x, k, o), calls)
        else:
            steps, fwd_s = 1, chunk_s
    median = statistics.median(chunk_s) * 1e3
    ref = statistics.median(fwd_s) * 1e3 * steps
    return {"policy": str(policy) if policy else "untrained default DiT",
            "backbone": cfg.net.kind, "sampler": sampler if cfg.is_diffusion else "regressor",
            "denoising_steps": steps, "calls": calls, "threads": torch.get_num_threads(),
            "chunk_median_ms": median,
            "chunk_p90_ms": sorted(chunk_s)[int(0.9 * (calls - 1))] * 1e3,
            "bare_forward_x_steps_ms": ref, "ratio": median / ref,
            "budget_ms": 1e3 * cfg.action_period_ticks * 0.02}


def format_bench(r: dict) -> str:
    return (f"{r['policy']} ({r['backbone']}, {r['sampler']}, {r['denoising_steps']} steps, "
            f"{r['threads']} threads): one chunk at batch 1 takes {r['chunk_median_ms']:.2f} ms "
            f"median, {r['chunk_p90_ms']:.2f} ms p90 over {r['calls']} calls; bare denoiser "
            f"forward x steps {r['bare_forward_x_steps_ms']:.2f} ms (ratio {r['ratio']:.2f}); "
            f"planner period {r['budget_ms']:.0f} ms")
