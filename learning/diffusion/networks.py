"""Denoisers over action chunks and the deterministic regressor baseline.

Shapes: x (B, Tp, Da) a noisy normalised action chunk, k (B,) denoising steps, obs (B, To, Do)
a normalised observation history. Denoisers return the predicted noise, (B, Tp, Da).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class NetConfig:
    """Network sizes. `kind` is "dit", "mlp" (residual-MLP denoiser) or "mlp-regressor"."""

    kind: str = "dit"
    width: int = 128        # DiT token width / MLP hidden width
    depth: int = 4          # DiT blocks / residual MLP blocks
    heads: int = 4          # DiT attention heads
    mlp_ratio: float = 4.0  # DiT feed-forward width / token width
    dropout: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


NET_KINDS = ("dit", "mlp", "mlp-regressor")


def timestep_embedding(k: Tensor, dim: int) -> Tensor:
    """(B,) steps -> (B, dim) sinusoidal features (Transformer positional encoding)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=k.device) / half)
    angles = k.to(torch.float32).unsqueeze(-1) * freqs
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


class DiTBlock(nn.Module):
    """Self-attention + feed-forward, both modulated by the conditioning vector (adaLN-Zero)."""

    def __init__(self, width: int, heads: int, mlp_ratio: float, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        hidden = int(width * mlp_ratio)
        self.ff = nn.Sequential(nn.Linear(width, hidden), nn.GELU(approximate="tanh"),
                                nn.Dropout(dropout), nn.Linear(hidden, width))
        self.modulation = nn.Linear(width, 6 * width)
        nn.init.zeros_(self.modulation.weight)  # each block starts as the identity
        nn.init.zeros_(self.modulation.bias)

    def forward(self, h: Tensor, c: Tensor) -> Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.modulation(F.silu(c)).unsqueeze(1).chunk(6, -1)
        b, n, w = h.shape
        y = self.norm1(h) * (1 + scale1) + shift1
        q, k, v = self.qkv(y).reshape(b, n, 3, self.heads, w // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, w)
        h = h + gate1 * self.proj(y)
        y = self.norm2(h) * (1 + scale2) + shift2
        return h + gate2 * self.ff(y)


class DiT(nn.Module):
    """Transformer denoiser: one token per chunk step and per observation step, joint
    self-attention, conditioned on the timestep and the observation by adaptive layer norm."""

    def __init__(self, cfg: NetConfig, obs_dim: int, action_dim: int, obs_horizon: int,
                 pred_horizon: int) -> None:
        super().__init__()
        w = cfg.width
        if w % cfg.heads or w % 2:
            raise ValueError(f"DiT width {w} must be even and divisible by heads {cfg.heads}")
        self.width, self.pred_horizon = w, pred_horizon
        self.action_in = nn.Linear(action_dim, w)
        self.obs_in = nn.Linear(obs_dim, w)
        self.pos = nn.Parameter(torch.zeros(1, pred_horizon + obs_horizon, w))
        nn.init.normal_(self.pos, std=0.02)
        self.time_mlp = nn.Sequential(nn.Linear(w, w), nn.SiLU(), nn.Linear(w, w))
        self.obs_cond = nn.Sequential(nn.Linear(obs_dim * obs_horizon, w), nn.SiLU(),
                                      nn.Linear(w, w))
        self.blocks = nn.ModuleList(DiTBlock(w, cfg.heads, cfg.mlp_ratio, cfg.dropout)
                                    for _ in range(cfg.depth))
        self.final_norm = nn.LayerNorm(w, elementwise_affine=False, eps=1e-6)
        self.final_mod = nn.Linear(w, 2 * w)
        self.out = nn.Linear(w, action_dim)
        for layer in (self.final_mod, self.out):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: Tensor, k: Tensor, obs: Tensor) -> Tensor:
        c = self.time_mlp(timestep_embedding(k, self.width)) + self.obs_cond(obs.flatten(1))
        h = torch.cat([self.action_in(x), self.obs_in(obs)], dim=1) + self.pos
        for block in self.blocks:
            h = block(h, c)
        shift, scale = self.final_mod(F.silu(c)).unsqueeze(1).chunk(2, -1)
        h = self.final_norm(h[:, :self.pred_horizon]) * (1 + scale) + shift
        return self.out(h)


class ResidualMLP(nn.Module):
    """Linear in, `depth` pre-norm residual blocks, linear out."""

    def __init__(self, in_dim: int, out_dim: int, width: int, depth: int, dropout: float) -> None:
        super().__init__()
        self.inp = nn.Linear(in_dim, width)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(width), nn.Linear(width, width), nn.Mish(),
                          nn.Dropout(dropout), nn.Linear(width, width)) for _ in range(depth))
        self.norm = nn.LayerNorm(width)
        self.out = nn.Linear(width, out_dim)

    def forward(self, z: Tensor) -> Tensor:
        h = self.inp(z)
        for block in self.blocks:
            h = h + block(h)
        return self.out(self.norm(h))


class MLPDenoiser(nn.Module):
    """Residual-MLP denoiser over the flattened chunk, observation and timestep features."""

    def __init__(self, cfg: NetConfig, obs_dim: int, action_dim: int, obs_horizon: int,
                 pred_horizon: int) -> None:
        super().__init__()
        self.shape = (pred_horizon, action_dim)
        self.time_dim = 32
        self.net = ResidualMLP(pred_horizon * action_dim + obs_horizon * obs_dim + self.time_dim,
                               pred_horizon * action_dim, cfg.width, cfg.depth, cfg.dropout)

    def forward(self, x: Tensor, k: Tensor, obs: Tensor) -> Tensor:
        z = torch.cat([x.flatten(1), obs.flatten(1), timestep_embedding(k, self.time_dim)], -1)
        return self.net(z).reshape(-1, *self.shape)


class MLPRegressor(nn.Module):
    """The paper's deterministic baseline: observation history -> action chunk, (B, Tp, Da)."""

    def __init__(self, cfg: NetConfig, obs_dim: int, action_dim: int, obs_horizon: int,
                 pred_horizon: int) -> None:
        super().__init__()
        self.shape = (pred_horizon, action_dim)
        self.net = ResidualMLP(obs_horizon * obs_dim, pred_horizon * action_dim, cfg.width,
                               cfg.depth, cfg.dropout)

    def forward(self, obs: Tensor) -> Tensor:
        return self.net(obs.flatten(1)).reshape(-1, *self.shape)


def build_network(cfg: NetConfig, obs_dim: int, action_dim: int, obs_horizon: int,
                  pred_horizon: int) -> nn.Module:
    """The network of `cfg.kind`; raises ValueError on an unknown kind."""
    classes = {"dit": DiT, "mlp": MLPDenoiser, "mlp-regressor": MLPRegressor}
    if cfg.kind not in classes:
        raise ValueError(f"unknown backbone {cfg.kind!r}; choose one of {', '.join(NET_KINDS)}")
    return classes[cfg.kind](cfg, obs_dim, action_dim, obs_horizon, pred_horizon)
