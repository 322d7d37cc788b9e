"""The session loop shared by the CLI, the app, evaluation and fine-tuning.

    obs  = world.observe()
    cmd  = gate(source.next_command(obs))   # validated and clamped
    tgt  = controller.step(cmd, obs)
    sent = world.apply(tgt)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from robot_io.command_gate import CommandGate
from robot_io.env import BatchedEnv
from robot_io.protocols import CommandSource, Controller
from robot_io.types import Command, CommandLimits, JointTargets, Observation

StepCallback = Callable[[int, Observation, Command, JointTargets], None]


@dataclass(frozen=True)
class EpisodeResult:
    """(B,) per-world results of one batched episode."""

    success: Tensor
    steps: Tensor  # control steps until success or the time limit

    @property
    def success_rate(self) -> float:
        return float(self.success.to(torch.float64).mean())


def run_episode(env: BatchedEnv, source: CommandSource, controller: Controller,
                limits: CommandLimits | None = None, on_step: StepCallback | None = None,
                stop_on_success: bool = True) -> EpisodeResult:
    """Reset every world and run the loop until all worlds succeed or time out.

    A world that succeeds keeps being stepped (the batch moves together) but its result is
    frozen at its first success.
    """
    gate = CommandGate(limits or CommandLimits(), env.num_worlds, env.control_dt_s)
    obs = env.reset()
    source.reset(obs)
    controller.reset(obs)
    n = env.num_worlds
    success = torch.zeros(n, dtype=torch.bool)
    steps = torch.full((n,), env.time_limit_steps, dtype=torch.long)
    for k in range(env.time_limit_steps):
        cmd = gate(source.next_command(obs))
        sent = env.apply(controller.step(cmd, obs))
        obs = env.observe()
        if on_step is not None:
            on_step(k, obs, cmd, sent)
        new = env.outcome().success & ~success
        steps[new] = k + 1
        success |= new
        if stop_on_success and bool(success.all()):
            break
    return EpisodeResult(success=success, steps=steps)
