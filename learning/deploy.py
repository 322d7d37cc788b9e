"""The deployable planner: a `CommandSource` that runs a trained policy at the planner rate.

It keeps each world's observation history (one entry per action period, 10 Hz by default),
samples a chunk of Tp commands whenever a world has executed Ta of its current chunk, and holds
each command for `action_period_ticks` control ticks. The desktop app, evaluation and the real
robot all use exactly this class; a single robot is a batch of one. Sampling runs with torch on
the CPU by default and its wall time per chunk is recorded (`latency_summary`).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from learning.checkpoint import CheckpointError
from learning.features import ACTION_DIM, ObsSpec, action_to_command
from learning.planner import Planner
from robot_io.robot_spec import RobotSpec
from robot_io.types import Command, Observation


class PolicySource:
    """Runs `planner` for `num_worlds` worlds (satisfies `robot_io.protocols.CommandSource`).

    Args:
        planner: the loaded policy.
        num_worlds: B.
        seed: seed of the sampler's noise.
        sampler: "ddim" or "ddpm" (default: the planner's own).
        deterministic: evaluation sampling (no exploration noise).
        robot: when given, the first reset checks it against the policy's robot spec.
    """

    def __init__(self, planner: Planner, num_worlds: int, seed: int = 0,
                 sampler: str | None = None, deterministic: bool = True,
                 robot: RobotSpec | None = None) -> None:
        if num_worlds < 1:
            raise ValueError(f"num_worlds must be at least 1, got {num_worlds}")
        self.planner, self.num_worlds = planner, num_worlds
        self.sampler = sampler or planner.default_sampler
        self.deterministic, self.robot = deterministic, robot
        cfg = planner.cfg
        self.period, self.act_steps = cfg.action_period_ticks, cfg.act_steps
        self.generator = torch.Generator(planner.device).manual_seed(seed)
        self.hist = torch.zeros(num_worlds, cfg.obs_horizon, planner.obs_spec.dim)
        self.chunk = torch.zeros(num_worlds, cfg.pred_horizon, ACTION_DIM)
        self.tick = torch.zeros(num_worlds, dtype=torch.long)       # ticks since episode start
        self.chunk_tick = torch.zeros(num_worlds, dtype=torch.long)  # ticks since chunk start
        self.fresh = torch.ones(num_worlds, dtype=torch.bool)
        self.latencies_s: list[float] = []
        self.batch_sizes: list[int] = []
        self._checked = False

    def reset(self, obs: Observation, ids: Tensor | None = None) -> None:
        if not self._checked:
            self.planner.check_compatible(ObsSpec.of(obs), self.robot, "policy source")
            self._checked = True
        ids = torch.arange(self.num_worlds) if ids is None else ids
        self.fresh[ids] = True
        self.tick[ids] = 0

    def next_command(self, obs: Observation) -> Command:
        fresh = self.fresh
        on_period = (self.tick % self.period == 0) & ~fresh
        # Features only on the ticks that use them (1 in `period`), not on every control tick.
        feat = self.planner.obs_spec.observe(obs) if bool((fresh | on_period).any()) else None
        if bool(fresh.any()):
            self.hist[fresh] = feat[fresh].unsqueeze(1).expand(-1, self.hist.shape[1], -1)
        if bool(on_period.any()):
            self.hist[on_period] = torch.cat([self.hist[on_period, 1:],
                                              feat[on_period].unsqueeze(1)], dim=1)
        need = fresh | (self.chunk_tick >= self.act_steps * self.period)
        if bool(need.any()):
            ids = torch.nonzero(need).squeeze(1)
            self.chunk[ids] = self._sample(self.hist[ids]).to(self.chunk)
            self.chunk_tick[ids] = 0
        self.fresh[:] = False
        index = (self.chunk_tick // self.period).clamp_max(self.chunk.shape[1] - 1)
        action = self.chunk[torch.arange(self.num_worlds), index]
        self.tick += 1
        self.chunk_tick += 1
        return action_to_command(action)

    def _sample(self, obs_hist: Tensor) -> Tensor:
        start = time.perf_counter()
        chunk = self.planner.act(obs_hist, self.generator, self.sampler, self.deterministic)
        self.latencies_s.append(time.perf_counter() - start)
        self.batch_sizes.append(len(obs_hist))
        return chunk.cpu()

    def latency_summary(self) -> dict:
        """Wall time per sampled chunk: calls, median / p90 / max in ms, mean batch."""
        if not self.latencies_s:
            return {"calls": 0}
        ms = np.asarray(self.latencies_s) * 1e3
        return {"calls": len(ms), "median_ms": float(np.median(ms)),
                "p90_ms": float(np.percentile(ms, 90)), "max_ms": float(ms.max()),
                "mean_batch": float(np.mean(self.batch_sizes)), "sampler": self.sampler}


def make_policy_source(run: Path, num_worlds: int, seed: int = 0, sampler: str | None = None,
                       device: str = "cpu", task: str | None = None,
                       robot: RobotSpec | None = None) -> PolicySource:
    """Load the policy in `run` (a run or checkpoint folder) as a command source.

    Raises:
        CheckpointError: no or damaged checkpoint, or `task` differs from the policy's task.
    """
    planner = Planner.load(run, device)
    if task is not None and task != planner.task:
        raise CheckpointError(f"{run}: the policy was trained for task {planner.task!r}, not "
                              f"{task!r}; evaluate it on {planner.task!r} or train one for "
                              f"{task!r}")
    return PolicySource(planner, num_worlds, seed=seed, sampler=sampler, robot=robot)
