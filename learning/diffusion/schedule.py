"""DDPM noise schedule, posterior, DDIM steps and Gaussian log-probs: pure tensor maths.

Index convention: K denoising steps k = 0 .. K-1, k = K-1 the noisiest. `alpha_bar[k]` is the
signal fraction after k+1 noising steps; `alpha_bar_prev[k]` the one before (1 for k = 0).
Sampling runs k = K-1 down to 0 and produces x_{k-1}, with x_{-1} the action.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

# DPPO's defaults: x0 clipped to the normalised action box, noise clipped at 3 sigma.
X0_CLIP = 1.0
NOISE_CLIP = 3.0
LOGPROB_CLAMP = (-5.0, 2.0)


def cosine_alpha_bar(steps: int, s: float = 0.008) -> Tensor:
    """(K,) float64 alpha_bar of the squared-cosine schedule (Nichol & Dhariwal), with betas
    clipped to [0, 0.999]."""
    if steps < 1:
        raise ValueError(f"the schedule needs at least one step, got {steps}")
    t = torch.arange(steps + 1, dtype=torch.float64) / steps
    f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    betas = (1 - f[1:] / f[:-1]).clamp(0.0, 0.999)
    return torch.cumprod(1 - betas, dim=0)


@dataclass(frozen=True)
class NoiseSchedule:
    """Everything DDPM and DDIM need, as (K,) float32 tensors."""

    alpha_bar: Tensor
    alpha_bar_prev: Tensor
    betas: Tensor
    posterior_mean_x0: Tensor  # coefficient of x0 in the posterior mean of x_{k-1}
    posterior_mean_xk: Tensor  # coefficient of x_k
    posterior_var: Tensor      # beta tilde; 0 at k = 0
    posterior_logvar: Tensor   # clipped: the k = 0 entry reuses k = 1's (as in DDPM)

    @classmethod
    def cosine(cls, steps: int) -> NoiseSchedule:
        ab = cosine_alpha_bar(steps)
        ab_prev = torch.cat([torch.ones(1, dtype=torch.float64), ab[:-1]])
        betas = 1 - ab / ab_prev
        var = betas * (1 - ab_prev) / (1 - ab)
        logvar = torch.log(torch.cat([var[1:2], var[1:]]) if steps > 1 else var.clamp_min(1e-20))
        f = torch.float32
        return cls(alpha_bar=ab.to(f), alpha_bar_prev=ab_prev.to(f), betas=betas.to(f),
                   posterior_mean_x0=(betas * ab_prev.sqrt() / (1 - ab)).to(f),
                   posterior_mean_xk=((1 - ab_prev) * (1 - betas).sqrt() / (1 - ab)).to(f),
                   posterior_var=var.to(f), posterior_logvar=logvar.to(f))

    @property
    def steps(self) -> int:
        return len(self.alpha_bar)

    def to(self, device: torch.device | str) -> NoiseSchedule:
        return NoiseSchedule(*(getattr(self, f).to(device) for f in self.__dataclass_fields__))

    def add_noise(self, x0: Tensor, noise: Tensor, k: Tensor) -> Tensor:
        """q(x_k | x0): (B, ...) noisy samples at per-sample steps k (B,)."""
        ab = _bcast(self.alpha_bar[k], x0)
        return ab.sqrt() * x0 + (1 - ab).sqrt() * noise

    def predict_x0(self, xk: Tensor, eps: Tensor, k: Tensor) -> Tensor:
        """x0 implied by an epsilon prediction, clipped to [-1, 1]."""
        ab = _bcast(self.alpha_bar[k], xk)
        return ((xk - (1 - ab).sqrt() * eps) / ab.sqrt()).clamp(-X0_CLIP, X0_CLIP)

    def posterior_mean(self, x0: Tensor, xk: Tensor, k: Tensor) -> Tensor:
        """Mean of q(x_{k-1} | x_k, x0)."""
        return _bcast(self.posterior_mean_x0[k], xk) * x0 + _bcast(self.posterior_mean_xk[k], xk) * xk

    def posterior_std(self, k: Tensor) -> Tensor:
        """sqrt of the clipped posterior variance, (B,)."""
        return (0.5 * self.posterior_logvar[k]).exp()

    def ddim_timesteps(self, ddim_steps: int) -> list[int]:
        """The DDIM subsequence, noisiest first, always ending at k = 0."""
        if not 1 <= ddim_steps <= self.steps:
            raise ValueError(f"ddim_steps must be in [1, {self.steps}], got {ddim_steps}")
        stride = self.steps / ddim_steps
        return sorted({round(i * stride) for i in range(ddim_steps)}, reverse=True)

    def ddim_step(self, xk: Tensor, eps: Tensor, k: int, k_prev: int | None,
                  eta: float = 0.0) -> tuple[Tensor, Tensor]:
        """One DDIM update from step k to k_prev (None: to the clean action).

        Returns (mean, std): the next sample is mean + std * noise (std = 0 when eta = 0).
        """
        ab = self.alpha_bar[k]
        ab_prev = self.alpha_bar[k_prev] if k_prev is not None else torch.ones_like(ab)
        x0 = ((xk - (1 - ab).sqrt() * eps) / ab.sqrt()).clamp(-X0_CLIP, X0_CLIP)
        eps = (xk - ab.sqrt() * x0) / (1 - ab).sqrt()  # consistent with the clipped x0
        sigma = eta * ((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev)).clamp_min(0).sqrt()
        mean = ab_prev.sqrt() * x0 + (1 - ab_prev - sigma**2).clamp_min(0).sqrt() * eps
        return mean, sigma.expand(xk.shape[0])


def gaussian_log_prob(x: Tensor, mean: Tensor, std: Tensor, mask: Tensor | None = None,
                      clamp: tuple[float, float] | None = LOGPROB_CLAMP) -> Tensor:
    """Per-sample log-prob of x under N(mean, std^2), as DPPO scores a chunk.

    Each element's log-density is clamped to `clamp`, then averaged over the executed part of
    the chunk (`mask` (B, Tp) selects the executed rows) and the action dimensions.

    Args:
        x, mean: (B, Tp, Da).
        std: (B,) or (B, Tp, Da) or broadcastable.

    Returns:
        (B,) mean per-element log-prob.
    """
    std = _bcast(std, x) if std.dim() == 1 else std
    logp = -0.5 * ((x - mean) / std) ** 2 - std.log() - 0.5 * math.log(2 * math.pi)
    if clamp is not None:
        logp = logp.clamp(*clamp)
    if mask is None:
        return logp.flatten(1).mean(dim=1)
    weight = mask.to(logp).unsqueeze(-1).expand_as(logp)
    return (logp * weight).flatten(1).sum(dim=1) / weight.flatten(1).sum(dim=1)


def _bcast(v: Tensor, like: Tensor) -> Tensor:
    """(B,) -> (B, 1, ..., 1) matching `like`'s rank."""
    return v.reshape(v.shape + (1,) * (like.dim() - v.dim()))
