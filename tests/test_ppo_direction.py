"""The fine-tuning update moves each method's policy toward rewarded actions.

A one-step bandit: every chunk whose first action dimension averages above a threshold earns 1
(0.3 for the diffusion policies; 0.05 for MLP-FT, whose exploration spread is its final sigma).
The
same `ppo_update` the environment loop uses must raise the success rate of a diffusion policy
(DPPO's denoising-step MDP), of MLP-FT's mean-reverting chain and of a residual policy. This
catches sign errors, chain / log-prob index mix-ups and broken K / K' splits, which no loss
value reveals.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from learning.diffusion.networks import NetConfig
from learning.diffusion.policy import DiffusionPolicy, PolicyConfig, RegressorPolicy
from learning.rl.actors import DiffusionActor, MeanRevertingActor, ResidualActor
from learning.rl.finetune import Critic, FinetuneConfig, clip_schedule, denoise_discount, ppo_update
from learning.rl.residual import ResidualPolicy

OBS_DIM, ACT_DIM = 3, 2


def _cfg(kind: str) -> PolicyConfig:
    return PolicyConfig(obs_horizon=1, pred_horizon=4, act_steps=4, denoising_steps=10,
                        ddim_steps=5, net=NetConfig(kind, width=64, depth=2, heads=4))


def _pretrain(policy: torch.nn.Module) -> None:
    """Imitate actions ~ N(0, 0.3^2): about 16 % of chunks earn the reward at first."""
    torch.manual_seed(0)
    opt = torch.optim.Adam([p for p in policy.parameters() if p.requires_grad], 1e-3)
    for _ in range(200):
        act = (torch.randn(256, 1, ACT_DIM) * 0.3).expand(-1, 4, -1).clamp(-1, 1)
        loss = policy.loss(torch.zeros(256, 1, OBS_DIM), act)
        opt.zero_grad()
        loss.backward()
        opt.step()


def _actor(method: str) -> torch.nn.Module:
    if method == "dppo":
        policy = DiffusionPolicy(_cfg("mlp"), OBS_DIM, ACT_DIM)
        _pretrain(policy)
        policy.split(5)
        return DiffusionActor(policy)
    if method == "mlp-ft":
        policy = RegressorPolicy(_cfg("mlp-regressor"), OBS_DIM, ACT_DIM)
        _pretrain(policy)
        policy.split()
        return MeanRevertingActor(policy, steps=3)
    base = DiffusionPolicy(_cfg("mlp"), OBS_DIM, ACT_DIM)
    _pretrain(base)
    residual = ResidualPolicy(_cfg("mlp"), OBS_DIM, ACT_DIM, width=64, depth=1, init_std=0.3)
    residual.load_base(base)
    return ResidualActor(residual)


@pytest.mark.parametrize("method", ["dppo", "mlp-ft", "residual"])
def test_ppo_update_raises_the_bandit_success_rate(method: str) -> None:
    torch.manual_seed(1)
    actor = _actor(method)
    critic = Critic(OBS_DIM)
    cfg = FinetuneConfig(policy=Path("unused"), out=Path("unused"), epochs=4, minibatch=2500,
                         actor_lr=3e-4)
    actor_opt = torch.optim.AdamW(actor.trainable(), cfg.actor_lr, weight_decay=0.0)
    critic_opt = torch.optim.AdamW(critic.parameters(), cfg.critic_lr)
    gen = torch.Generator().manual_seed(0)
    s = actor.steps
    clips = clip_schedule(s, 1e-3, 1e-2) if method != "residual" else torch.tensor([0.05])
    discount = denoise_discount(s, 0.99)
    mask = torch.ones(4, dtype=torch.bool)
    obs = torch.zeros(500, 1, OBS_DIM)
    threshold = 0.05 if method == "mlp-ft" else 0.3  # about 16 % success at first
    rates = []
    for _ in range(12):
        chunk, chain = actor.sample_chain(obs, gen)
        reward = (chunk[:, :, 0].mean(1) > threshold).float()
        rates.append(float(reward.mean()))
        with torch.no_grad():
            value = critic(obs)
        ppo_update(actor, critic, actor_opt, critic_opt, obs, chain, reward - value, reward,
                   clips, discount, mask, cfg, gen)
    assert rates[-1] > rates[0] + 0.2, rates


def test_curriculum_widens_by_ten_percent_at_ninety_percent_success() -> None:
    from learning.rl.finetune import curriculum_step

    on = FinetuneConfig(policy=Path("p"), out=Path("o"), curriculum=True)
    off = FinetuneConfig(policy=Path("p"), out=Path("o"))
    assert curriculum_step(1.0, 0.9, 40, on) == pytest.approx(1.1)
    assert curriculum_step(1.1, 0.95, 40, on) == pytest.approx(1.21)
    assert curriculum_step(1.0, 0.89, 40, on) == 1.0        # below the threshold
    assert curriculum_step(1.0, 1.0, 0, on) == 1.0          # no episode ended
    assert curriculum_step(1.0, float("nan"), 0, on) == 1.0
    assert curriculum_step(1.0, 1.0, 40, off) == 1.0        # curriculum off
    assert curriculum_step(3.9, 1.0, 40, on) == 3.9         # 4.29 would pass max_widen 4


def test_widened_start_ranges_reach_the_environment() -> None:
    """What the curriculum writes into the task config is what the next reset samples."""
    from robot_io.env import BatchedEnv
    from robot_io.tasks import default_config

    env = BatchedEnv("box_pickup", 64, threads=1, seed=0)
    env.task.config = default_config("box_pickup").widened(2.0)
    env.reset()
    heading = env.reset_params["start_heading_rad"]
    nominal = default_config("box_pickup").start.heading_rad
    assert float(heading.abs().max()) > nominal.hi  # beyond the nominal +-0.35 rad
    assert float(heading.abs().max()) <= 2 * nominal.hi + 1e-9
