"""The planner-level MDP: one step executes Ta commands of a chunk, P control ticks each.

All worlds decide together at chunk boundaries (one batched sampler call); a world whose
episode ends inside a chunk keeps stepping until the boundary (its extra ticks are ignored) and
is then reset. Per tick it runs exactly what the session loop runs: the command gate, the
controller, `BatchedEnv.apply`; its observation history is the deployed `PolicySource`'s.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from learning.features import ObsSpec, action_to_command
from robot_io.command_gate import CommandGate
from robot_io.env import BatchedEnv
from robot_io.protocols import Controller
from robot_io.types import CommandLimits


@dataclass(frozen=True)
class ChunkStep:
    """(B,) results of one chunk: the sparse reward collected, whether the episode ended and
    how, and its length in control ticks when it ended."""

    reward: Tensor
    done: Tensor
    success: Tensor
    episode_ticks: Tensor


class ChunkEnv:
    """Batched chunk-level environment over `env`, driving `controller`.

    Args:
        env: the worlds.
        controller: the low-level controller (reference or learned).
        obs_spec: the policy's observation spec (features and history width).
        obs_horizon, act_steps, period_ticks: To, Ta and P of the policy.
        limits: the command gate's limits.
    """

    def __init__(self, env: BatchedEnv, controller: Controller, obs_spec: ObsSpec,
                 obs_horizon: int, act_steps: int, period_ticks: int,
                 limits: CommandLimits | None = None) -> None:
        self.env, self.controller, self.obs_spec = env, controller, obs_spec
        self.act_steps, self.period = act_steps, period_ticks
        self.gate = CommandGate(limits or CommandLimits(), env.num_worlds, env.control_dt_s)
        self.hist = torch.zeros(env.num_worlds, obs_horizon, obs_spec.dim)
        self.obs = None

    def reset(self, ids: Tensor | None = None) -> Tensor:
        """Reset worlds `ids` (all when None); returns the (B, To, Do) observation history."""
        env = self.env
        ids = torch.arange(env.num_worlds) if ids is None else ids
        obs = env.reset(ids)
        self.controller.reset(obs, ids)
        self.gate.reset(ids)
        self.obs = obs
        feat = self.obs_spec.observe(obs)
        self.hist[ids] = feat[ids].unsqueeze(1).expand(-1, self.hist.shape[1], -1)
        return self.hist.clone()

    def step(self, actions: Tensor) -> tuple[Tensor, ChunkStep]:
        """Execute (B, >= Ta, Da) unnormalised actions; returns the next history and results."""
        env, n = self.env, self.env.num_worlds
        reward = torch.zeros(n, dtype=torch.float64)
        done = torch.zeros(n, dtype=torch.bool)
        success = torch.zeros(n, dtype=torch.bool)
        ticks = torch.zeros(n, dtype=torch.long)
        obs = self.obs
        for i in range(self.act_steps):
            cmd = action_to_command(actions[:, i])
            for _ in range(self.period):
                applied = self.gate(cmd)
                env.apply(self.controller.step(applied, obs))
                obs = env.observe()
                out = env.outcome()
                new = out.done & ~done
                if bool(new.any()):
                    reward += out.reward * new
                    success |= out.success & new
                    ticks[new] = env.episode_steps[new]
                    done |= new
            feat = self.obs_spec.observe(obs)
            self.hist = torch.cat([self.hist[:, 1:], feat.unsqueeze(1)], dim=1)
        self.obs = obs
        if bool(done.any()):
            self.reset(torch.nonzero(done).squeeze(1))
        return self.hist.clone(), ChunkStep(reward, done, success, ticks)
