"""The planner-level MDP: one step executes Ta commands of a chunk, P control ticks each.

All worlds decide together at chunk boundaries (one batched sampler call); a world whose
episode ends inside a chunk keeps stepping until the boundary (its extra ticks are ignored) and
is then reset. Every tick is the session's (`robot_io.session.Session.tick`: safety filter,
controller, world), and the observation history and chunk timing are the deployed
`PolicySource`'s own `ChunkScheduler`, so a fine-tuned policy sees the same inputs once deployed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from learning.chunking import ChunkScheduler
from learning.features import ACTION_DIM, ObsSpec, action_to_command
from robot_io.protocols import Controller, World
from robot_io.session import Session
from robot_io.types import Command, CommandLimits, Observation


@dataclass(frozen=True)
class ChunkStep:
    """(B,) results of one chunk: the sparse reward collected, whether the episode ended and
    how, and its length in control ticks when it ended."""

    reward: Tensor
    done: Tensor
    success: Tensor
    episode_ticks: Tensor


class ChunkFeed:
    """The command source of a chunk-level rollout: executes the chunks the learner chose."""

    def __init__(self, schedule: ChunkScheduler) -> None:
        self.schedule = schedule
        self.pending: Tensor | None = None  # (B, >= Ta, Da) the next chunk of every world

    def reset(self, obs: Observation, ids: Tensor | None = None) -> None:
        self.schedule.reset(ids)

    def next_command(self, obs: Observation) -> Command:
        need = self.schedule.observe(obs)
        if bool(need.any()):
            if self.pending is None:
                raise RuntimeError("a world needs a chunk between chunk boundaries")
            ids = torch.nonzero(need).squeeze(1)
            self.schedule.set_chunk(ids, self.pending[ids])
        return action_to_command(self.schedule.action())


class ChunkEnv:
    """Batched chunk-level environment over `env`, driving `controller` through a session.

    Args:
        env: the worlds.
        controller: the low-level controller (reference or learned).
        obs_spec: the policy's observation spec (features and history width).
        obs_horizon, act_steps, period_ticks: To, Ta and P of the policy.
        limits: the command limits of the session's safety filter.
    """

    def __init__(self, env: World, controller: Controller, obs_spec: ObsSpec,
                 obs_horizon: int, act_steps: int, period_ticks: int,
                 limits: CommandLimits | None = None) -> None:
        self.env, self.controller, self.obs_spec = env, controller, obs_spec
        self.act_steps, self.period = act_steps, period_ticks
        self.schedule = ChunkScheduler(env.num_worlds, obs_spec.observe, obs_spec.dim,
                                       obs_horizon, act_steps, act_steps, period_ticks,
                                       ACTION_DIM)
        self.feed = ChunkFeed(self.schedule)
        self.session = Session(env, self.feed, controller, limits=limits, auto_restart=False)

    def reset(self, ids: Tensor | None = None) -> Tensor:
        """Reset worlds `ids` (all when None); returns the (B, To, Do) observation history."""
        obs = self.session.start_episodes(ids)
        self.schedule.observe(obs)
        return self.schedule.hist.clone()

    def step(self, actions: Tensor) -> tuple[Tensor, ChunkStep]:
        """Execute (B, >= Ta, Da) unnormalised actions; returns the next history and results."""
        n = self.env.num_worlds
        reward = torch.zeros(n, dtype=torch.float64)
        done = torch.zeros(n, dtype=torch.bool)
        success = torch.zeros(n, dtype=torch.bool)
        ticks = torch.zeros(n, dtype=torch.long)
        self.feed.pending = actions[:, :self.act_steps]
        for _ in range(self.act_steps * self.period):
            ended = self.session.tick().ended
            if ended is not None:
                ids = ended.world_ids
                reward[ids] += ended.success.to(torch.float64)  # the sparse task reward
                success[ids] = ended.success
                ticks[ids] = ended.steps
                done[ids] = True
        self.feed.pending = None
        if bool(done.any()):
            return self.reset(torch.nonzero(done).squeeze(1)), ChunkStep(reward, done, success,
                                                                          ticks)
        self.schedule.observe(self.session.obs)
        return self.schedule.hist.clone(), ChunkStep(reward, done, success, ticks)
