"""Exponential moving average of weights with Diffusion Policy's warm-up schedule."""

from __future__ import annotations

import copy

import torch
from torch import nn


def ema_decay(step: int, power: float = 0.75, max_decay: float = 0.9999) -> float:
    """1 - (1 + step)^-power, capped: 0 at step 0, about 0.998 after 4000 steps."""
    return min(max_decay, max(0.0, 1.0 - (1.0 + step) ** -power))


class EMA:
    """Keeps `shadow`, an averaged copy of `model` (the copy is what gets deployed)."""

    def __init__(self, model: nn.Module, power: float = 0.75, max_decay: float = 0.9999) -> None:
        self.shadow = copy.deepcopy(model).eval().requires_grad_(False)
        self.power, self.max_decay = power, max_decay

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        decay = ema_decay(step, self.power, self.max_decay)
        for avg, new in zip(self.shadow.parameters(), model.parameters(), strict=True):
            avg.lerp_(new.detach(), 1.0 - decay)
        for avg, new in zip(self.shadow.buffers(), model.buffers(), strict=True):
            avg.copy_(new)
