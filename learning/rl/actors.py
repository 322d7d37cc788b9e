"""Stochastic chunk policies as chains of Gaussian decisions, for PPO.

A chain actor samples an action chunk through S Gaussian transitions x_0 -> x_1 -> ... -> x_S
(the executed chunk is x_S) and scores any recorded transition j with a log-prob. PPO then
treats every (environment step, transition) pair as a sample: DPPO's denoising-step MDP.

- `DiffusionActor` (DPPO): the last K' of K DDPM steps are transitions of a fine-tuned copy;
  a frozen copy runs the K - K' earlier ones.
- `MeanRevertingActor` (MLP-FT): x_0 is noise, each transition pulls toward the MLP's output
  mu(obs) by theta_j (linear up to 1) and adds noise sigma_j (linear, decreasing).
- `ResidualActor` (residual RL): one transition from the frozen DP's chunk to a Gaussian
  around chunk + residual.

Shapes: obs (B, To, Do), chunks (B, Tp, Da), chain (B, S+1, Tp, Da), j (N,) in [0, S).
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor, nn

from learning.diffusion.policy import DiffusionPolicy, RegressorPolicy
from learning.diffusion.schedule import NOISE_CLIP, gaussian_log_prob
from learning.rl.residual import ResidualPolicy


class ChainActor(Protocol):
    steps: int  # S, transitions per chunk

    def parameters(self): ...

    def sample_chain(self, obs: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """(chunk, chain): exploration sampling, recording the S transitions."""

    def log_prob(self, obs: Tensor, x_prev: Tensor, x_next: Tensor, j: Tensor,
                 mask: Tensor) -> Tensor:
        """(N,) log-prob of transitions j (with gradients)."""

    def bc_loss(self, obs: Tensor, x_prev: Tensor, j: Tensor) -> Tensor:
        """Regulariser toward the frozen pre-trained policy."""


def _noise(shape: torch.Size, like: Tensor, generator: torch.Generator) -> Tensor:
    return torch.randn(shape, device=like.device, generator=generator).clamp(-NOISE_CLIP,
                                                                           NOISE_CLIP)


class DiffusionActor(nn.Module):
    """DPPO's actor over a split `DiffusionPolicy` (call `policy.split(K')` first).

    Args:
        min_sampling_std: floor on every DDPM step's std while exploring.
        min_logprob_std: floor on the std when scoring a transition.
    """

    def __init__(self, policy: DiffusionPolicy, min_sampling_std: float = 0.1,
                 min_logprob_std: float = 0.1) -> None:
        super().__init__()
        if policy.ft_net is None:
            raise ValueError("split the diffusion policy (policy.split(K')) before fine-tuning")
        self.policy = policy
        self.steps = policy.ft_steps
        self.min_sampling_std, self.min_logprob_std = min_sampling_std, min_logprob_std

    def step_k(self, j: Tensor) -> Tensor:
        """Transition j (0 = the noisiest fine-tuned step) -> denoising step k = K' - 1 - j."""
        return self.steps - 1 - j

    @torch.no_grad()
    def sample_chain(self, obs: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        p = self.policy
        b, cfg = obs.shape[0], p.cfg
        x = _noise(torch.Size((b, cfg.pred_horizon, p.action_dim)), obs, generator)
        chain = []
        for k in reversed(range(cfg.denoising_steps)):
            if k == self.steps - 1:
                chain.append(x)  # the state entering the first fine-tuned step
            mean, std = p.p_mean_std(x, k, obs, self.min_sampling_std)
            x = mean + std.view(-1, 1, 1) * _noise(x.shape, x, generator)
            if k < self.steps:
                chain.append(x)
        return x, torch.stack(chain, dim=1)

    def _mean_std(self, net: nn.Module, obs: Tensor, x: Tensor, k: Tensor) -> tuple[Tensor, Tensor]:
        s = self.policy.schedule
        x0 = s.predict_x0(x, net(x, k, obs), k)
        return s.posterior_mean(x0, x, k), s.posterior_std(k).clamp_min(self.min_logprob_std)

    def log_prob(self, obs: Tensor, x_prev: Tensor, x_next: Tensor, j: Tensor,
                 mask: Tensor) -> Tensor:
        mean, std = self._mean_std(self.policy.ft_net, obs, x_prev, self.step_k(j))
        return gaussian_log_prob(x_next, mean, std, mask)

    def bc_loss(self, obs: Tensor, x_prev: Tensor, j: Tensor) -> Tensor:
        k = self.step_k(j)
        with torch.no_grad():
            target = self.policy.net(x_prev, k, obs)
        return ((self.policy.ft_net(x_prev, k, obs) - target) ** 2).mean()

    def trainable(self) -> list[nn.Parameter]:
        return list(self.policy.ft_net.parameters())


class MeanRevertingActor(nn.Module):
    """MLP-FT: mean-reverting sampling around a deterministic MLP (call `policy.split()` first).

    Transition j: x_{j+1} ~ N(x_j + theta_j (mu - x_j), sigma_j^2) with theta_j linear from
    `theta_min` to 1 and sigma_j linear from `sigma_max` down to `sigma_min` (constant when
    `sigma_min` is the larger: the noise never grows along the chain).
    """

    def __init__(self, policy: RegressorPolicy, steps: int = 5, theta_min: float = 0.2,
                 sigma_max: float = 0.3, sigma_min: float = 0.1) -> None:
        super().__init__()
        if policy.ft_net is None:
            raise ValueError("split the regressor (policy.split()) before fine-tuning")
        if steps < 1:
            raise ValueError(f"MLP-FT needs at least one sampling step, got {steps}")
        self.policy, self.steps = policy, steps
        # A single transition is the last one: theta 1 (mean mu), sigma_min.
        frac = (torch.arange(steps, dtype=torch.float32) / (steps - 1) if steps > 1
                else torch.ones(1))
        self.register_buffer("theta", theta_min + (1 - theta_min) * frac)
        sigma_max = max(sigma_max, sigma_min)
        self.register_buffer("sigma", sigma_max + (sigma_min - sigma_max) * frac)

    @torch.no_grad()
    def sample_chain(self, obs: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        mu = self.policy.mean(obs)
        x = _noise(mu.shape, mu, generator)
        chain = [x]
        for j in range(self.steps):
            x = x + self.theta[j] * (mu - x) + self.sigma[j] * _noise(x.shape, x, generator)
            chain.append(x)
        return x, torch.stack(chain, dim=1)

    def log_prob(self, obs: Tensor, x_prev: Tensor, x_next: Tensor, j: Tensor,
                 mask: Tensor) -> Tensor:
        mu = self.policy.ft_net(obs)
        theta = self.theta[j].view(-1, 1, 1)
        mean = x_prev + theta * (mu - x_prev)
        return gaussian_log_prob(x_next, mean, self.sigma[j], mask)

    def bc_loss(self, obs: Tensor, x_prev: Tensor, j: Tensor) -> Tensor:
        with torch.no_grad():
            target = self.policy.net(obs)
        return ((self.policy.ft_net(obs) - target) ** 2).mean()

    def trainable(self) -> list[nn.Parameter]:
        return list(self.policy.ft_net.parameters())


class ResidualActor(nn.Module):
    """Residual RL: one Gaussian transition from the frozen DP's chunk."""

    def __init__(self, policy: ResidualPolicy, min_std: float = 0.02) -> None:
        super().__init__()
        self.policy, self.steps, self.min_std = policy, 1, min_std

    @torch.no_grad()
    def sample_chain(self, obs: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        base = self.policy.base_chunk(obs)
        mean = self.policy.mean(obs, base)
        x = mean + self._std() * _noise(mean.shape, mean, generator)
        return x, torch.stack([base, x], dim=1)

    def _std(self) -> Tensor:
        return self.policy.log_std.exp().clamp_min(self.min_std)

    def log_prob(self, obs: Tensor, x_prev: Tensor, x_next: Tensor, j: Tensor,
                 mask: Tensor) -> Tensor:
        mean = self.policy.mean(obs, x_prev)
        return gaussian_log_prob(x_next, mean, self._std().expand_as(mean), mask)

    def bc_loss(self, obs: Tensor, x_prev: Tensor, j: Tensor) -> Tensor:
        return ((self.policy.mean(obs, x_prev) - x_prev) ** 2).mean()

    def trainable(self) -> list[nn.Parameter]:
        return list(self.policy.residual.parameters()) + [self.policy.log_std]
