"""Per-dimension min/max normalisation to [-1, 1] (Diffusion Policy's default)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

# Spans below these are widened about their centre when fitting, so that a (nearly) constant
# column, e.g. an unused gripper, is not blown up by the first small deviation the policy meets
# (observations), and exploration noise in normalised units stays small in real units (actions).
OBS_MIN_SPAN = 0.05
ACTION_MIN_SPAN = 0.02
MIN_RANGE = 1e-6


@dataclass(frozen=True)
class Normalizer:
    """Maps each column's [min, max] of the training data onto [-1, 1].

    Attributes:
        low, high: (D,) float32 per-column extremes of the data.
    """

    low: Tensor
    high: Tensor

    @classmethod
    def fit(cls, data: Tensor, min_span: float = 0.0) -> Normalizer:
        """From (N, D) data; spans below `min_span` are widened about their centre."""
        flat = data.reshape(-1, data.shape[-1]).to(torch.float32)
        if not bool(torch.isfinite(flat).all()):
            raise ValueError("cannot fit a normaliser: the data holds NaN or inf")
        low, high = flat.min(dim=0).values, flat.max(dim=0).values
        center, half = 0.5 * (low + high), 0.5 * (high - low).clamp_min(min_span)
        return cls(center - half, center + half)

    @property
    def _center_scale(self) -> tuple[Tensor, Tensor]:
        span = self.high - self.low
        scale = torch.where(span > MIN_RANGE, 2.0 / span.clamp_min(MIN_RANGE),
                            torch.ones_like(span))
        return 0.5 * (self.high + self.low), scale

    def normalize(self, x: Tensor) -> Tensor:
        center, scale = self._center_scale
        return (x - center.to(x)) * scale.to(x)

    def unnormalize(self, x: Tensor) -> Tensor:
        center, scale = self._center_scale
        return x / scale.to(x) + center.to(x)

    def to(self, device: torch.device | str) -> Normalizer:
        return Normalizer(self.low.to(device), self.high.to(device))

    def tensors(self, prefix: str) -> dict[str, Tensor]:
        """For a checkpoint's safetensors file."""
        return {f"{prefix}.low": self.low.contiguous(), f"{prefix}.high": self.high.contiguous()}

    @classmethod
    def from_tensors(cls, tensors: dict[str, Tensor], prefix: str) -> Normalizer:
        return cls(tensors[f"{prefix}.low"].to(torch.float32),
                   tensors[f"{prefix}.high"].to(torch.float32))
