"""PPO maths shared by DPPO, the baselines and the low-level controller's training.

Shapes: T rollout steps, B worlds; N samples in a minibatch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


def compute_gae(rewards: Tensor, values: Tensor, dones: Tensor, last_value: Tensor,
                gamma: float, lam: float) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation.

    Args:
        rewards, values: (T, B); values[t] = V(s_t).
        dones: (T, B) the episode ended at step t (no bootstrapping from s_{t+1}).
        last_value: (B,) V(s_T), the state after the last step.

    Returns:
        (advantages, returns), each (T, B); returns = advantages + values.
    """
    if rewards.shape != values.shape or rewards.shape != dones.shape:
        raise ValueError(f"rewards {tuple(rewards.shape)}, values {tuple(values.shape)} and "
                         f"dones {tuple(dones.shape)} must have the same (T, B) shape")
    steps = rewards.shape[0]
    adv = torch.zeros_like(rewards)
    running = torch.zeros_like(last_value)
    next_value = last_value
    for t in reversed(range(steps)):
        live = 1.0 - dones[t].to(rewards.dtype)
        delta = rewards[t] + gamma * next_value * live - values[t]
        running = delta + gamma * lam * live * running
        adv[t] = running
        next_value = values[t]
    return adv, adv + values


@dataclass(frozen=True)
class PolicyLoss:
    """The clipped surrogate and its diagnostics."""

    loss: Tensor
    approx_kl: Tensor   # E[(r - 1) - log r], >= 0
    clip_fraction: Tensor
    ratio_mean: Tensor


def clipped_surrogate(logp_new: Tensor, logp_old: Tensor, advantages: Tensor,
                      clip: Tensor | float) -> PolicyLoss:
    """PPO's clipped policy loss: mean of max(-A r, -A clip(r, 1 - c, 1 + c)).

    `clip` may be a per-sample tensor (DPPO clips each denoising step differently).
    """
    log_ratio = logp_new - logp_old
    ratio = log_ratio.exp()
    clip = torch.as_tensor(clip, dtype=ratio.dtype, device=ratio.device)
    clipped = torch.minimum(torch.maximum(ratio, 1 - clip), 1 + clip)
    loss = torch.maximum(-advantages * ratio, -advantages * clipped).mean()
    with torch.no_grad():
        kl = ((ratio - 1) - log_ratio).mean()
        frac = ((ratio - 1).abs() > clip).to(ratio.dtype).mean()
    return PolicyLoss(loss, kl, frac, ratio.detach().mean())


def value_loss(values: Tensor, returns: Tensor, old_values: Tensor | None = None,
               clip: float | None = None) -> Tensor:
    """0.5 * mean squared error, optionally with PPO's value clipping around `old_values`."""
    err = (values - returns) ** 2
    if clip is not None and old_values is not None:
        clipped = old_values + (values - old_values).clamp(-clip, clip)
        err = torch.maximum(err, (clipped - returns) ** 2)
    return 0.5 * err.mean()


def normalize_advantages(adv: Tensor, eps: float = 1e-8) -> Tensor:
    if adv.numel() < 2:
        return adv
    return (adv - adv.mean()) / (adv.std() + eps)


def explained_variance(pred: Tensor, target: Tensor) -> float:
    """1 - Var[target - pred] / Var[target] (NaN when the target is constant)."""
    var = target.var()
    return float("nan") if float(var) == 0 else float(1 - (target - pred).var() / var)


class RunningMeanStd:
    """Running mean and variance (parallel Welford), float64."""

    def __init__(self, shape: tuple[int, ...] = ()) -> None:
        self.mean = torch.zeros(shape, dtype=torch.float64)
        self.var = torch.ones(shape, dtype=torch.float64)
        self.count = 1e-4

    def update(self, x: Tensor) -> None:
        x = x.detach().to(torch.float64).reshape(-1, *self.mean.shape)
        n = x.shape[0]
        if n == 0:
            return
        mean, var = x.mean(0), x.var(0, unbiased=False)
        delta, total = mean - self.mean, self.count + n
        self.mean = self.mean + delta * n / total
        self.var = (self.var * self.count + var * n + delta**2 * self.count * n / total) / total
        self.count = total

    def state(self) -> dict[str, Tensor]:
        return {"mean": self.mean, "var": self.var,
                "count": torch.tensor(self.count, dtype=torch.float64)}

    def load(self, state: dict[str, Tensor]) -> None:
        self.mean, self.var = state["mean"].clone(), state["var"].clone()
        self.count = float(state["count"])


class RewardScaler:
    """Divides rewards by the running std of the discounted return (DPPO's reward scaling)."""

    def __init__(self, num_envs: int, gamma: float, eps: float = 1e-8) -> None:
        self.ret = torch.zeros(num_envs, dtype=torch.float64)
        self.stats = RunningMeanStd()
        self.gamma, self.eps = gamma, eps

    def __call__(self, rewards: Tensor, dones: Tensor) -> Tensor:
        """(T, B) rewards -> scaled rewards; updates the statistics."""
        for t in range(rewards.shape[0]):
            self.ret = self.ret * self.gamma + rewards[t].to(torch.float64)
            self.stats.update(self.ret)
            self.ret = self.ret * (1.0 - dones[t].to(torch.float64))
        return rewards / float(torch.sqrt(self.stats.var + self.eps))
