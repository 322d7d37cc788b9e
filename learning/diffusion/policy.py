"""The chunked planner policies: the diffusion policy (DDPM training, DDPM / DDIM sampling, and
the frozen / fine-tuned split DPPO leaves behind) and the deterministic MLP regressor.

Everything here works in normalised space: observations (B, To, Do) and action chunks
(B, Tp, Da) in [-1, 1]. `learning.planner.Planner` adds the normalisers and the features.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor, nn

from learning.diffusion.networks import NetConfig, build_network
from learning.diffusion.schedule import NOISE_CLIP, NoiseSchedule

SAMPLERS = ("ddpm", "ddim")


@dataclass(frozen=True)
class PolicyConfig:
    """Horizons, rates and the diffusion settings (paper-notes: DP and DPPO defaults, sized
    for a 2-core CPU).

    Attributes:
        obs_horizon: To, observations in the history, one per action period.
        pred_horizon: Tp, commands in a predicted chunk.
        act_steps: Ta, commands of a chunk executed before the next prediction.
        action_period_ticks: control ticks a command is held (5 at 50 Hz: a 10 Hz planner).
        denoising_steps: K, DDPM steps for training and DDPM sampling.
        ddim_steps: steps of the deterministic DDIM sampler used for deployment.
        net: the network.
    """

    obs_horizon: int = 2
    pred_horizon: int = 12
    act_steps: int = 8
    action_period_ticks: int = 5
    denoising_steps: int = 20
    ddim_steps: int = 5
    net: NetConfig = field(default_factory=NetConfig)

    def __post_init__(self) -> None:
        if min(self.obs_horizon, self.pred_horizon, self.act_steps, self.action_period_ticks,
               self.denoising_steps, self.ddim_steps) < 1:
            raise ValueError(f"horizons, rates and step counts must be >= 1: {self}")
        if self.act_steps > self.pred_horizon:
            raise ValueError(f"act_steps ({self.act_steps}) cannot exceed pred_horizon "
                             f"({self.pred_horizon})")
        if self.ddim_steps > self.denoising_steps:
            raise ValueError(f"ddim_steps ({self.ddim_steps}) cannot exceed denoising_steps "
                             f"({self.denoising_steps})")

    @property
    def is_diffusion(self) -> bool:
        return self.net.kind != "mlp-regressor"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> PolicyConfig:
        data = dict(data)
        net = NetConfig(**data.pop("net"))
        return cls(net=net, **data)


class DiffusionPolicy(nn.Module):
    """Epsilon-prediction DDPM over action chunks.

    After DPPO fine-tuning, `ft_net` serves the last `ft_steps` denoising steps (k < ft_steps)
    and the frozen pre-trained `net` the earlier ones; sampling always rebuilds that split.
    """

    def __init__(self, cfg: PolicyConfig, obs_dim: int, action_dim: int) -> None:
        super().__init__()
        self.cfg, self.obs_dim, self.action_dim = cfg, obs_dim, action_dim
        self.net = build_network(cfg.net, obs_dim, action_dim, cfg.obs_horizon, cfg.pred_horizon)
        self.ft_net: nn.Module | None = None
        self.ft_steps = 0
        self.schedule = NoiseSchedule.cosine(cfg.denoising_steps)

    def split(self, ft_steps: int) -> None:
        """Add a trainable copy of the network for the last `ft_steps` denoising steps and
        freeze the original (DPPO's K' of K)."""
        k = self.cfg.denoising_steps
        if not 1 <= ft_steps <= k:
            raise ValueError(f"ft_steps (K') must be in [1, {k}], got {ft_steps}")
        self.ft_net = build_network(self.cfg.net, self.obs_dim, self.action_dim,
                                    self.cfg.obs_horizon, self.cfg.pred_horizon)
        self.ft_net.load_state_dict(self.net.state_dict())
        self.ft_steps = ft_steps
        self.net.requires_grad_(False)

    def _apply(self, fn, recurse=True):  # .to(device) moves the schedule with the weights
        out = super()._apply(fn, recurse)
        self.schedule = NoiseSchedule(*(fn(getattr(self.schedule, f))
                                        for f in NoiseSchedule.__dataclass_fields__))
        return out

    def eps(self, x: Tensor, k: int, obs: Tensor) -> Tensor:
        """Predicted noise at denoising step k (all samples at the same step)."""
        steps = torch.full((x.shape[0],), k, dtype=torch.long, device=x.device)
        net = self.ft_net if (self.ft_net is not None and k < self.ft_steps) else self.net
        return net(x, steps, obs)

    def loss(self, obs: Tensor, action: Tensor, mask: Tensor | None = None,
             generator: torch.Generator | None = None) -> Tensor:
        """DDPM training loss: mean squared noise error over real (unpadded) chunk steps."""
        b = action.shape[0]
        k = torch.randint(0, self.cfg.denoising_steps, (b,), device=action.device,
                          generator=generator)
        noise = torch.randn(action.shape, device=action.device, generator=generator)
        pred = self.net(self.schedule.add_noise(action, noise, k), k, obs)
        err = (pred - noise) ** 2
        if mask is None:
            return err.mean()
        weight = mask.to(err).unsqueeze(-1).expand_as(err)
        return (err * weight).sum() / weight.sum().clamp_min(1.0)

    def p_mean_std(self, x: Tensor, k: int, obs: Tensor, min_std: float = 0.0
                   ) -> tuple[Tensor, Tensor]:
        """DDPM reverse step k: mean of x_{k-1} from the clipped x0, and its std (floored)."""
        steps = torch.full((x.shape[0],), k, dtype=torch.long, device=x.device)
        x0 = self.schedule.predict_x0(x, self.eps(x, k, obs), steps)
        mean = self.schedule.posterior_mean(x0, x, steps)
        std = self.schedule.posterior_std(steps).clamp_min(min_std)
        return mean, std

    @torch.no_grad()
    def sample(self, obs: Tensor, generator: torch.Generator | None = None,
               sampler: str = "ddpm", min_std: float = 0.0,
               deterministic: bool = True) -> Tensor:
        """(B, Tp, Da) an action chunk.

        Args:
            sampler: "ddpm" (K stochastic steps) or "ddim" (cfg.ddim_steps deterministic steps;
                not for a fine-tuned split, whose fine-tuned steps are DDPM steps).
            min_std: floor on each DDPM step's std (DPPO's exploration noise).
            deterministic: no noise on the final step (evaluation).
        """
        b, cfg = obs.shape[0], self.cfg
        x = torch.randn((b, cfg.pred_horizon, self.action_dim), device=obs.device,
                        generator=generator).clamp(-NOISE_CLIP, NOISE_CLIP)
        if sampler == "ddim":
            if self.ft_net is not None:
                raise ValueError("a DPPO fine-tuned policy samples with ddpm: its fine-tuned "
                                 "denoising steps are DDPM steps")
            steps = self.schedule.ddim_timesteps(cfg.ddim_steps)
            for i, k in enumerate(steps):
                k_prev = steps[i + 1] if i + 1 < len(steps) else None
                x, _ = self.schedule.ddim_step(x, self.eps(x, k, obs), k, k_prev)
            return x
        if sampler != "ddpm":
            raise ValueError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
        for k in reversed(range(cfg.denoising_steps)):
            mean, std = self.p_mean_std(x, k, obs, min_std)
            if k == 0 and deterministic:
                x = mean
                break
            noise = torch.randn(x.shape, device=x.device, generator=generator)
            x = mean + std.view(-1, 1, 1) * noise.clamp(-NOISE_CLIP, NOISE_CLIP)
        return x


class RegressorPolicy(nn.Module):
    """The deterministic MLP baseline; after MLP-FT, `ft_net` is the fine-tuned copy."""

    def __init__(self, cfg: PolicyConfig, obs_dim: int, action_dim: int) -> None:
        super().__init__()
        self.cfg, self.obs_dim, self.action_dim = cfg, obs_dim, action_dim
        self.net = build_network(cfg.net, obs_dim, action_dim, cfg.obs_horizon, cfg.pred_horizon)
        self.ft_net: nn.Module | None = None

    def split(self) -> None:
        """A trainable copy for fine-tuning; the original stays frozen (the BC anchor)."""
        self.ft_net = build_network(self.cfg.net, self.obs_dim, self.action_dim,
                                    self.cfg.obs_horizon, self.cfg.pred_horizon)
        self.ft_net.load_state_dict(self.net.state_dict())
        self.net.requires_grad_(False)

    def mean(self, obs: Tensor) -> Tensor:
        return (self.ft_net or self.net)(obs)

    def loss(self, obs: Tensor, action: Tensor, mask: Tensor | None = None,
             generator: torch.Generator | None = None) -> Tensor:
        err = (self.net(obs) - action) ** 2
        if mask is None:
            return err.mean()
        weight = mask.to(err).unsqueeze(-1).expand_as(err)
        return (err * weight).sum() / weight.sum().clamp_min(1.0)

    @torch.no_grad()
    def sample(self, obs: Tensor, generator: torch.Generator | None = None,
               sampler: str = "ddpm", min_std: float = 0.0, deterministic: bool = True) -> Tensor:
        return self.mean(obs).clamp(-1.0, 1.0)


def build_policy(cfg: PolicyConfig, obs_dim: int, action_dim: int) -> nn.Module:
    cls = DiffusionPolicy if cfg.is_diffusion else RegressorPolicy
    return cls(cfg, obs_dim, action_dim)
