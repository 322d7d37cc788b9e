"""Residual RL baseline: a Gaussian residual policy on top of a frozen diffusion policy.

The frozen policy proposes a chunk with deterministic DDIM; the residual network sees the
observation history and that proposal and adds a correction (initialised to zero, so training
starts from the pre-trained behaviour). Everything is in normalised action space.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from learning.diffusion.networks import ResidualMLP
from learning.diffusion.policy import DiffusionPolicy, PolicyConfig


class ResidualPolicy(nn.Module):
    """base (frozen DP) + residual(obs, base chunk); `log_std` (Da,) is the exploration noise."""

    def __init__(self, cfg: PolicyConfig, obs_dim: int, action_dim: int, width: int = 256,
                 depth: int = 2, init_std: float = 0.1) -> None:
        super().__init__()
        self.cfg, self.action_dim = cfg, action_dim
        self.hparams = {"width": width, "depth": depth, "init_std": init_std}
        self.base = DiffusionPolicy(cfg, obs_dim, action_dim)
        self.base.requires_grad_(False)
        chunk = cfg.pred_horizon * action_dim
        self.residual = ResidualMLP(cfg.obs_horizon * obs_dim + chunk, chunk, width, depth, 0.0)
        nn.init.zeros_(self.residual.out.weight)
        nn.init.zeros_(self.residual.out.bias)
        self.log_std = nn.Parameter(torch.full((action_dim,), math.log(init_std)))

    def base_chunk(self, obs: Tensor) -> Tensor:
        """The frozen policy's deterministic DDIM chunk (fixed initial noise: a function of obs)."""
        gen = torch.Generator(obs.device).manual_seed(0)
        return self.base.sample(obs, generator=gen, sampler="ddim")

    def mean(self, obs: Tensor, base: Tensor) -> Tensor:
        z = torch.cat([obs.flatten(1), base.flatten(1)], dim=-1)
        return base + self.residual(z).reshape(base.shape)

    @torch.no_grad()
    def sample(self, obs: Tensor, generator: torch.Generator | None = None,
               sampler: str = "ddim", min_std: float = 0.0, deterministic: bool = True) -> Tensor:
        base = self.base_chunk(obs)
        mean = self.mean(obs, base)
        if deterministic:
            return mean
        noise = torch.randn(mean.shape, device=mean.device, generator=generator)
        return mean + self.log_std.exp() * noise

    def load_base(self, policy: DiffusionPolicy) -> None:
        self.base.load_state_dict(policy.state_dict())
