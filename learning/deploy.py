"""The deployable planner: a `CommandSource` that runs a trained policy at the planner rate.

Its `ChunkScheduler` (learning.chunking, shared with fine-tuning rollouts) keeps each world's
observation history (one entry per action period, 10 Hz by default), asks for a chunk of Tp
commands whenever a world has executed Ta of its current chunk, and holds each command for
`action_period_ticks` control ticks. The desktop app, evaluation and the real
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
from learning.chunking import ChunkScheduler
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
        self.generator = torch.Generator(planner.device).manual_seed(seed)
        self.schedule = chunk_scheduler(planner, num_worlds)
        self.latencies_s: list[float] = []
        self.batch_sizes: list[int] = []
        self._checked = False

    @property
    def hist(self) -> Tensor:
        """(B, To, Do) the observation history the next chunk is sampled from."""
        return self.schedule.hist

    def reset(self, obs: Observation, ids: Tensor | None = None) -> None:
        if not self._checked:
            self.planner.check_compatible(ObsSpec.of(obs), self.robot, "policy source")
            self._checked = True
        self.schedule.reset(ids)

    def next_command(self, obs: Observation) -> Command:
        need = self.schedule.observe(obs)
        if bool(need.any()):
            ids = torch.nonzero(need).squeeze(1)
            self.schedule.set_chunk(ids, self._sample(self.schedule.hist[ids]))
        return action_to_command(self.schedule.action())

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


def chunk_scheduler(planner: Planner, num_worlds: int) -> ChunkScheduler:
    """The chunk scheduler of `planner`'s horizons and rates (deployment and fine-tuning)."""
    cfg = planner.cfg
    return ChunkScheduler(num_worlds, planner.obs_spec.observe, planner.obs_spec.dim,
                          cfg.obs_horizon, cfg.pred_horizon, cfg.act_steps,
                          cfg.action_period_ticks, ACTION_DIM)


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
