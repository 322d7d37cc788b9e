"""Behaviour-cloning warm start (DAgger) of a controller policy from a privileged teacher.

PPO from a random policy needs far more samples than a 2-core CPU gives in an hour to learn
the arm's inverse kinematics. So the actor first imitates a privileged teacher (the env's
`expert_action()`: it knows the arm configuration behind each command and the gravity torque)
on the states the actor itself visits (DAgger: the teacher acts with a probability that decays
to zero; every visited state is labelled with the teacher's action and kept in a replay buffer),
then PPO fine-tunes the actor on the task reward. The actor never sees privileged inputs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import Tensor

from learning.controller.ppo import ActorCritic


@dataclass(frozen=True)
class DaggerConfig:
    """Warm-start settings (0 iterations: no warm start)."""

    iterations: int = 0
    horizon: int = 24
    teacher_decay_iterations: int = 30   # teacher probability 1 -> 0 over these iterations
    buffer_size: int = 600_000
    epochs: int = 2
    batch_size: int = 4096
    lr: float = 1e-3
    noise_std: float = 0.05              # exploration noise on the actor's actions
    max_steps: int = 100                 # gradient steps per iteration at most


def dagger(env, model: ActorCritic, cfg: DaggerConfig, gen: torch.Generator,
           log=None, start_iteration: int = 0) -> list[dict]:
    """Run `cfg.iterations` DAgger iterations on `model.actor` (and its obs normaliser)."""
    opt = torch.optim.Adam(model.actor.parameters(), lr=cfg.lr)
    obs_buf = torch.zeros(cfg.buffer_size, env.obs_dim)
    act_buf = torch.zeros(cfg.buffer_size, env.action_dim)
    filled, cursor = 0, 0
    history = []
    obs, _ = env.reset()
    t0 = time.perf_counter()
    for it in range(start_iteration, cfg.iterations):
        beta = max(0.0, 1.0 - it / max(cfg.teacher_decay_iterations, 1))
        pos, rot = [], []
        for _ in range(cfg.horizon):
            teacher = env.expert_action()
            with torch.no_grad():
                student = model.mean(obs)
                student = student + cfg.noise_std * torch.randn(student.shape, generator=gen)
            use_teacher = torch.rand(env.num_worlds, generator=gen) < beta
            action = torch.where(use_teacher.unsqueeze(-1), teacher, student)
            n = obs.shape[0]
            idx = (torch.arange(n) + cursor) % cfg.buffer_size
            obs_buf[idx], act_buf[idx] = obs, teacher
            cursor = (cursor + n) % cfg.buffer_size
            filled = min(filled + n, cfg.buffer_size)
            model.obs_norm.update(obs)
            obs, _, _, _, _, info = env.step(action)
            pos.append(float(info["pos_err_m"].median()))
            rot.append(float(info["rot_err_rad"].median()))
        loss = _fit(model, opt, obs_buf[:filled], act_buf[:filled], cfg, gen)
        row = {"dagger_iteration": it + 1, "teacher_prob": beta, "bc_loss": loss,
               "pos_err_median_m": sum(pos) / len(pos), "rot_err_median_rad": sum(rot) / len(rot),
               "wall_s": time.perf_counter() - t0}
        history.append(row)
        if log is not None:
            log(row)
    return history


def _fit(model: ActorCritic, opt: torch.optim.Optimizer, obs: Tensor, act: Tensor,
         cfg: DaggerConfig, gen: torch.Generator) -> float:
    total, count = 0.0, 0
    steps = min(cfg.max_steps, max(1, cfg.epochs * obs.shape[0] // cfg.batch_size))
    for _ in range(steps):
        idx = torch.randint(obs.shape[0], (cfg.batch_size,), generator=gen)
        loss = (model.mean(obs[idx]) - act[idx]).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        total += float(loss.detach())
        count += 1
    return total / count
