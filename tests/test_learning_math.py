"""Hand-checked numbers for the learning maths: the noise schedule and its posterior, DDIM,
Gaussian log-probs, GAE and PPO's surrogate, DPPO's K / K' split, normalisers, EMA, features,
training windows, and the clear errors of checkpoints and schema checks.

Expected values are derived in the comments and computed here by independent formulas (plain
`math` on scalars, or the textbook Gaussian-conditioning formulas), never by the code under test.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from learning.checkpoint import CheckpointError, load_module
from learning.data import Windows
from learning.diffusion.networks import NetConfig
from learning.diffusion.policy import DiffusionPolicy, PolicyConfig, RegressorPolicy
from learning.diffusion.schedule import NoiseSchedule, cosine_alpha_bar, gaussian_log_prob
from learning.ema import EMA, ema_decay
from learning.features import (
    ACTION_DIM,
    ObsSpec,
    action_to_command,
    command_to_action,
    quat_to_rot6d,
    rot6d_to_quat,
)
from learning.normalizer import Normalizer
from learning.planner import Planner
from learning.rl.actors import DiffusionActor, MeanRevertingActor
from learning.rl.finetune import clip_schedule, denoise_discount
from learning.rl.ppo import RewardScaler, RunningMeanStd, clipped_surrogate, compute_gae
from robot_io.errors import SchemaMismatchError
from robot_io.t1_model import default_robot_spec
from robot_io.types import Command

F64 = torch.float64
HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
OBS_DIM, ACT_DIM = 3, 2


# -- helpers: independent formulas and tiny models ------------------------------------------
def alpha_bar_by_hand(steps: int, s: float = 0.008) -> list[float]:
    """Nichol & Dhariwal's cosine schedule on scalars: f(t) = cos^2(((t/K) + s)/(1 + s) pi/2),
    beta_k = min(1 - f(k+1)/f(k), 0.999), alpha_bar_k = prod_{i<=k} (1 - beta_i). Without the
    clip the product telescopes to f(k+1)/f(0)."""
    def f(t: float) -> float:
        return math.cos(((t / steps) + s) / (1 + s) * math.pi / 2) ** 2

    out, ab = [], 1.0
    for k in range(steps):
        ab *= 1.0 - min(1.0 - f(k + 1) / f(k), 0.999)
        out.append(ab)
    return out


def tiny_policy_config(kind: str = "mlp", steps: int = 5) -> PolicyConfig:
    return PolicyConfig(obs_horizon=2, pred_horizon=4, act_steps=2, denoising_steps=steps,
                        ddim_steps=min(steps, 3), net=NetConfig(kind, width=16, depth=1))


def tiny_diffusion(steps: int = 5, seed: int = 0) -> DiffusionPolicy:
    torch.manual_seed(seed)
    return DiffusionPolicy(tiny_policy_config("mlp", steps), OBS_DIM, ACT_DIM).eval()


def gaussian_logp_by_hand(x: float, mean: float, std: float) -> float:
    return -0.5 * ((x - mean) / std) ** 2 - math.log(std) - HALF_LOG_2PI


# -- 1-3. the noise schedule, its posterior, DDIM --------------------------------------------
def test_cosine_schedule_one_step_is_clipped_to_0_001() -> None:
    # K = 1: f(1) = cos^2(pi/2) = 0, so beta_0 = 1 - 0/f(0) = 1 is clipped to 0.999 and
    # alpha_bar_0 = 1 - 0.999 = 0.001.
    assert cosine_alpha_bar(1).tolist() == pytest.approx([0.001], abs=1e-12)


def test_cosine_schedule_two_steps_from_the_formula() -> None:
    s = 0.008

    def f(t: float) -> float:
        return math.cos(((t / 2) + s) / (1 + s) * math.pi / 2) ** 2

    # alpha_bar_0 = f(1)/f(0) (beta_0 ~ 0.506 is not clipped); f(2) = cos^2(pi/2) ~ 0 makes
    # beta_1 ~ 1, clipped to 0.999: alpha_bar_1 = alpha_bar_0 * 0.001.
    ab0 = f(1) / f(0)
    assert 0.49 < ab0 < 0.50
    assert cosine_alpha_bar(2).tolist() == pytest.approx([ab0, ab0 * 0.001], rel=1e-12)
    assert cosine_alpha_bar(5).tolist() == pytest.approx(alpha_bar_by_hand(5), rel=1e-12)
    with pytest.raises(ValueError, match="at least one step"):
        cosine_alpha_bar(0)


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_posterior_matches_gaussian_conditioning(k: int) -> None:
    # x_{k-1} = sqrt(ab_prev) x0 + sqrt(1 - ab_prev) e1 and x_k = sqrt(a) x_{k-1} + sqrt(b) e2,
    # a = ab/ab_prev, b = 1 - a. Cov(x_{k-1}, x_k) = sqrt(a)(1 - ab_prev), Var(x_k) = 1 - ab, so
    # E[x_{k-1} | x_k, x0] = sqrt(ab_prev) x0 + sqrt(a)(1 - ab_prev)/(1 - ab) (x_k - sqrt(ab) x0)
    # Var[x_{k-1} | x_k, x0] = (1 - ab_prev) - a (1 - ab_prev)^2 / (1 - ab).
    sched = NoiseSchedule.cosine(5)
    hand = alpha_bar_by_hand(5)
    ab, ab_prev = hand[k], hand[k - 1]
    a = ab / ab_prev
    gen = torch.Generator().manual_seed(k)
    x0 = torch.rand(3, 4, 2, generator=gen, dtype=F64) * 2 - 1
    xk = torch.randn(3, 4, 2, generator=gen, dtype=F64)
    want_mean = (math.sqrt(ab_prev) * x0
                 + math.sqrt(a) * (1 - ab_prev) / (1 - ab) * (xk - math.sqrt(ab) * x0))
    want_var = (1 - ab_prev) - a * (1 - ab_prev) ** 2 / (1 - ab)
    steps = torch.full((3,), k)
    got = sched.posterior_mean(x0.float(), xk.float(), steps)
    assert torch.allclose(got.double(), want_mean, atol=1e-5)
    assert float(sched.posterior_var[k]) == pytest.approx(want_var, rel=1e-5)
    assert float(sched.posterior_std(torch.tensor([k]))) == pytest.approx(math.sqrt(want_var),
                                                                           rel=1e-5)


def test_posterior_at_the_last_step_is_exact_and_its_logvar_is_clipped() -> None:
    sched = NoiseSchedule.cosine(5)
    hand = alpha_bar_by_hand(5)
    # k = 0: ab_prev = 1, so x_{-1} = x0 exactly: mean x0, variance 0 ...
    x0 = torch.tensor([[[0.3, -0.7]]])
    xk = torch.tensor([[[1.2, 0.4]]])
    assert torch.allclose(sched.posterior_mean(x0, xk, torch.tensor([0])), x0, atol=1e-6)
    assert float(sched.posterior_var[0]) == 0.0
    # ... and the log-variance reuses k = 1's (no log 0), as DDPM clips it.
    var1 = (1 - hand[0]) - hand[1] / hand[0] * (1 - hand[0]) ** 2 / (1 - hand[1])
    assert float(sched.posterior_logvar[0]) == float(sched.posterior_logvar[1])
    assert float(sched.posterior_logvar[0]) == pytest.approx(math.log(var1), rel=1e-5)


def test_predict_x0_inverts_add_noise_and_clips() -> None:
    sched = NoiseSchedule.cosine(5)
    hand = alpha_bar_by_hand(5)
    gen = torch.Generator().manual_seed(0)
    x0 = torch.rand(5, 4, 2, generator=gen) * 2 - 1
    noise = torch.randn(5, 4, 2, generator=gen)
    k = torch.arange(5)
    xk = sched.add_noise(x0, noise, k)
    want = torch.stack([math.sqrt(hand[i]) * x0[i] + math.sqrt(1 - hand[i]) * noise[i]
                        for i in range(5)])
    assert torch.allclose(xk, want, atol=1e-6)
    # The noisiest step keeps ~1e-4 of the signal: dividing by sqrt(ab) amplifies rounding.
    assert torch.allclose(sched.predict_x0(xk, noise, k), x0, atol=1e-3)
    assert torch.allclose(sched.predict_x0(xk[:4], noise[:4], k[:4]), x0[:4], atol=1e-5)
    # An x0 outside the action box comes back clipped to it.
    big = torch.tensor([[[3.0, -2.5]]])
    z = torch.tensor([[[0.5, -0.5]]])
    one = torch.tensor([1])
    assert sched.predict_x0(sched.add_noise(big, z, one), z, one).tolist() == [[[1.0, -1.0]]]


def test_ddim_timesteps_run_noisiest_first_and_end_at_zero() -> None:
    sched = NoiseSchedule.cosine(5)
    assert sched.ddim_timesteps(5) == [4, 3, 2, 1, 0]
    # stride 5/3: round(0), round(1.67), round(3.33) -> 0, 2, 3
    assert sched.ddim_timesteps(3) == [3, 2, 0]
    assert sched.ddim_timesteps(1) == [0]
    for bad in (0, 6):
        with pytest.raises(ValueError, match=r"ddim_steps must be in \[1, 5\]"):
            sched.ddim_timesteps(bad)


@pytest.mark.parametrize(("k", "k_prev"), [(4, 2), (2, 1), (1, None)])
def test_ddim_step_with_the_true_noise_lands_on_the_forward_process(
        k: int, k_prev: int | None) -> None:
    # eta = 0 with eps the noise that made x_k: x0 is recovered exactly, and the step returns
    # sqrt(ab_prev) x0 + sqrt(1 - ab_prev) eps (ab_prev = 1 on the final step: x0 itself).
    sched = NoiseSchedule.cosine(5)
    hand = alpha_bar_by_hand(5)
    gen = torch.Generator().manual_seed(k)
    x0 = torch.rand(2, 4, 2, generator=gen) * 1.8 - 0.9
    eps = torch.randn(2, 4, 2, generator=gen)
    xk = math.sqrt(hand[k]) * x0 + math.sqrt(1 - hand[k]) * eps
    ab_prev = hand[k_prev] if k_prev is not None else 1.0
    mean, std = sched.ddim_step(xk, eps, k, k_prev)
    want = math.sqrt(ab_prev) * x0 + math.sqrt(1 - ab_prev) * eps
    assert torch.allclose(mean, want, atol=1e-4)
    assert std.tolist() == [0.0, 0.0]


# -- 4-5. Gaussian log-probs ----------------------------------------------------------------
def test_gaussian_log_prob_one_std_away() -> None:
    # x = mean + std: -0.5 - ln 0.1 - 0.5 ln(2 pi) = -0.5 + 2.302585 - 0.918939 = 0.883646
    mean = torch.full((2, 3, 4), 0.25)
    std = torch.full((2,), 0.1)
    got = gaussian_log_prob(mean + 0.1, mean, std)
    assert got.shape == (2,)
    assert got.tolist() == pytest.approx([0.883646] * 2, abs=1e-5)


def test_gaussian_log_prob_is_clamped_per_element() -> None:
    zero = torch.zeros(1, 2, 3)
    # far away: -0.5 * 100^2 - ... clamps to -5
    assert gaussian_log_prob(zero + 10.0, zero, torch.tensor([0.1])).item() == -5.0
    # std 0.01 at the mean: -ln 0.01 - 0.5 ln(2 pi) = 4.60517 - 0.91894 = 3.686 clamps to 2
    assert -math.log(0.01) - HALF_LOG_2PI == pytest.approx(3.686, abs=1e-3)
    assert gaussian_log_prob(zero, zero, torch.tensor([0.01])).item() == 2.0
    assert gaussian_log_prob(zero, zero, torch.tensor([0.01]), clamp=None).item() == \
        pytest.approx(3.686, abs=1e-3)


def test_gaussian_log_prob_mask_averages_executed_rows_only() -> None:
    # Rows 0, 1 sit at the mean (-0.5 ln 2 pi each); row 2 is 1.5 std away (-1.125 more).
    mean = torch.zeros(1, 3, 2)
    x = mean.clone()
    x[0, 2] = 1.5
    std = torch.ones(1)
    mask = torch.tensor([[True, True, False]])
    assert gaussian_log_prob(x, mean, std, mask).item() == pytest.approx(-HALF_LOG_2PI, abs=1e-6)
    all_rows = (4 * -HALF_LOG_2PI + 2 * (-HALF_LOG_2PI - 1.125)) / 6
    assert gaussian_log_prob(x, mean, std).item() == pytest.approx(all_rows, abs=1e-6)
    # a per-element std broadcasts like the mean
    assert gaussian_log_prob(x, mean, torch.ones(1, 3, 2), mask).item() == \
        pytest.approx(-HALF_LOG_2PI, abs=1e-6)


def test_diffusion_actor_log_prob_floors_the_posterior_std() -> None:
    # K = 5 posterior stds are [0.283, 0.283, 0.503, 0.726, 0.951] (k = 0 reuses k = 1's). With
    # K' = 3 and a floor of 0.4, transitions j = 1, 2 (k = 1, 0) score with std 0.4 and j = 0
    # (k = 2) with its own 0.503: redo the whole DDPM step by hand and compare.
    policy = tiny_diffusion()
    policy.split(3)
    actor = DiffusionActor(policy, min_sampling_std=0.1, min_logprob_std=0.4)
    hand = alpha_bar_by_hand(5)
    gen = torch.Generator().manual_seed(1)
    n = 3
    obs = torch.randn(n, 2, OBS_DIM, generator=gen)
    x_prev = torch.randn(n, 4, ACT_DIM, generator=gen)
    j = torch.tensor([0, 1, 2])
    mask = torch.tensor([[True, True, False, False]]).expand(n, -1)
    # Var[x_{k-1} | x_k, x0] as in test_posterior_matches_gaussian_conditioning; k = 0 uses k = 1's.
    def var_by_hand(k: int) -> float:
        ab, ab_prev = hand[k], hand[k - 1]
        return (1 - ab_prev) - ab / ab_prev * (1 - ab_prev) ** 2 / (1 - ab)

    want_std = [max(math.sqrt(var_by_hand(max(2 - int(ji), 1))), 0.4) for ji in j]
    assert want_std[0] == pytest.approx(0.5033, abs=1e-3)
    assert want_std[1:] == [0.4, 0.4]
    with torch.no_grad():
        means = []
        for i in range(n):
            k = 2 - int(j[i])
            ab, ab_prev = hand[k], (hand[k - 1] if k > 0 else 1.0)
            eps = policy.ft_net(x_prev[i:i + 1], torch.tensor([k]), obs[i:i + 1])[0]
            x0 = ((x_prev[i] - math.sqrt(1 - ab) * eps) / math.sqrt(ab)).clamp(-1, 1)
            a = ab / ab_prev
            means.append(math.sqrt(ab_prev) * x0 + math.sqrt(a) * (1 - ab_prev) / (1 - ab)
                         * (x_prev[i] - math.sqrt(ab) * x0))
        mean = torch.stack(means)
        std = torch.tensor(want_std).view(n, 1, 1)
        # within one std of the mean: no element reaches the clamp
        x_next = mean + std * (torch.rand(n, 4, ACT_DIM, generator=gen) * 2 - 1)
        z = (x_next - mean) / std
        want = (-0.5 * z**2 - std.log() - HALF_LOG_2PI)[:, :2].mean(dim=(1, 2))
        got = actor.log_prob(obs, x_prev, x_next, j, mask)
    assert torch.allclose(got, want, atol=1e-4)


# -- 6-8. GAE, the clipped surrogate, DPPO's per-transition schedules --------------------------
def test_gae_by_hand() -> None:
    # gamma 0.9, lam 0.8 (gamma lam = 0.72), last value 0.6; the episode ends at t = 1.
    # t=2: delta = 2 + 0.9*0.6 - 0.3 = 2.24                     A = 2.24
    # t=1: done, delta = 0 - 0.4 = -0.4, nothing carried back  A = -0.4
    # t=0: delta = 1 + 0.9*0.4 - 0.5 = 0.86                     A = 0.86 + 0.72*(-0.4) = 0.572
    # returns = A + V = [1.072, 0.0, 2.54]
    rewards = torch.tensor([[1.0], [0.0], [2.0]])
    values = torch.tensor([[0.5], [0.4], [0.3]])
    dones = torch.tensor([[0.0], [1.0], [0.0]])
    adv, ret = compute_gae(rewards, values, dones, torch.tensor([0.6]), 0.9, 0.8)
    assert adv[:, 0].tolist() == pytest.approx([0.572, -0.4, 2.24], abs=1e-6)
    assert ret[:, 0].tolist() == pytest.approx([1.072, 0.0, 2.54], abs=1e-6)


def test_gae_keeps_worlds_apart() -> None:
    # World 1: rewards [0, 0, 1], V = 0, ends at t = 2 so its last value (5) is never used:
    # A2 = 1, A1 = 0 + 0.72*1 = 0.72, A0 = 0.72*0.72 = 0.5184. World 0 is the case above.
    rewards = torch.tensor([[1.0, 0.0], [0.0, 0.0], [2.0, 1.0]])
    values = torch.tensor([[0.5, 0.0], [0.4, 0.0], [0.3, 0.0]])
    dones = torch.tensor([[0, 0], [1, 0], [0, 1]], dtype=torch.bool)
    adv, ret = compute_gae(rewards, values, dones, torch.tensor([0.6, 5.0]), 0.9, 0.8)
    assert adv[:, 0].tolist() == pytest.approx([0.572, -0.4, 2.24], abs=1e-6)
    assert adv[:, 1].tolist() == pytest.approx([0.5184, 0.72, 1.0], abs=1e-6)
    assert torch.allclose(ret, adv + values)


def test_gae_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match=r"dones \(2, 1\)"):
        compute_gae(torch.zeros(3, 1), torch.zeros(3, 1), torch.zeros(2, 1), torch.zeros(1),
                    0.9, 0.8)


def test_clipped_surrogate_by_hand() -> None:
    # r = 1.5, A = 2, c = 0.2: max(-3.0, -2 * 1.2) = -2.4
    # r = 0.5, A = -2:         max(1.0, 2 * 0.8)   = 1.6
    lr = torch.tensor([math.log(1.5), math.log(0.5)])
    out = clipped_surrogate(lr, torch.zeros(2), torch.tensor([2.0, -2.0]), 0.2)
    assert out.loss.item() == pytest.approx((-2.4 + 1.6) / 2, abs=1e-6)
    single = clipped_surrogate(lr[:1], torch.zeros(1), torch.tensor([2.0]), 0.2)
    assert single.loss.item() == pytest.approx(-2.4, abs=1e-6)
    # approx KL = (r - 1) - ln r = 0.5 - ln 1.5 = 0.094535
    assert single.approx_kl.item() == pytest.approx(0.5 - math.log(1.5), abs=1e-6)
    assert single.clip_fraction.item() == 1.0
    other = clipped_surrogate(lr[1:], torch.zeros(1), torch.tensor([-2.0]), 0.2)
    assert other.loss.item() == pytest.approx(1.6, abs=1e-6)


def test_clipped_surrogate_with_a_per_sample_clip() -> None:
    # Both r = 1.5, A = 2; clips 0.2 and 0.6: losses -2.4 and max(-3, -3.2) = -3.0.
    lr = torch.full((2,), math.log(1.5))
    out = clipped_surrogate(lr, torch.zeros(2), torch.full((2,), 2.0), torch.tensor([0.2, 0.6]))
    assert out.loss.item() == pytest.approx(-2.7, abs=1e-6)
    assert out.clip_fraction.item() == 0.5  # |r - 1| = 0.5 exceeds 0.2, not 0.6
    assert out.ratio_mean.item() == pytest.approx(1.5, abs=1e-6)


def test_clip_schedule_and_denoise_discount() -> None:
    # exponential from 1e-3 to 1e-2: the middle one is 1e-3 * 10^0.5 = 3.1623e-3
    assert clip_schedule(3, 1e-3, 1e-2).tolist() == pytest.approx([1e-3, 3.1623e-3, 1e-2],
                                                                   rel=1e-4)
    assert clip_schedule(1, 1e-3, 1e-2).tolist() == pytest.approx([1e-2])  # no 0/0
    # gamma^(S-1-j): 0.99^2 = 0.9801, 0.99, 1
    assert denoise_discount(3, 0.99).tolist() == pytest.approx([0.9801, 0.99, 1.0], rel=1e-6)
    assert denoise_discount(1, 0.99).tolist() == [1.0]


# -- 9-10. the K / K' split and the chain actors -------------------------------------------
def test_split_routes_the_last_steps_to_the_fine_tuned_copy() -> None:
    policy = tiny_diffusion()
    policy.split(2)
    assert all(not p.requires_grad for p in policy.net.parameters())
    assert all(p.requires_grad for p in policy.ft_net.parameters())
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, ACT_DIM, generator=gen)
    obs = torch.randn(2, 2, OBS_DIM, generator=gen)
    with torch.no_grad():
        before = [policy.eps(x, k, obs) for k in range(5)]
        # the copy starts equal to the frozen network
        assert torch.equal(policy.ft_net(x, torch.zeros(2, dtype=torch.long), obs),
                           policy.net(x, torch.zeros(2, dtype=torch.long), obs))
        policy.ft_net.net.out.bias.add_(0.5)
        after = [policy.eps(x, k, obs) for k in range(5)]
    changed = [not torch.equal(b, a) for b, a in zip(before, after)]
    assert changed == [True, True, False, False, False]


@pytest.mark.parametrize("bad", [0, 6])
def test_split_rejects_out_of_range_ft_steps(bad: int) -> None:
    with pytest.raises(ValueError, match=r"ft_steps \(K'\) must be in \[1, 5\]"):
        tiny_diffusion().split(bad)


def test_diffusion_actor_records_the_fine_tuned_chain() -> None:
    policy = tiny_diffusion()
    with pytest.raises(ValueError, match="split"):
        DiffusionActor(policy)
    policy.split(2)
    actor = DiffusionActor(policy)
    obs = torch.randn(3, 2, OBS_DIM, generator=torch.Generator().manual_seed(0))
    chunk, chain = actor.sample_chain(obs, torch.Generator().manual_seed(5))
    assert chunk.shape == (3, 4, ACT_DIM) and chain.shape == (3, 3, 4, ACT_DIM)
    assert torch.equal(chain[:, -1], chunk)
    assert actor.step_k(torch.tensor([0, 1])).tolist() == [1, 0]
    again, chain2 = actor.sample_chain(obs, torch.Generator().manual_seed(5))
    assert torch.equal(again, chunk) and torch.equal(chain2, chain)


def test_mean_reverting_actor_schedules_and_final_mean() -> None:
    torch.manual_seed(0)
    policy = RegressorPolicy(tiny_policy_config("mlp-regressor"), OBS_DIM, ACT_DIM).eval()
    with pytest.raises(ValueError, match="split"):
        MeanRevertingActor(policy)
    policy.split()
    actor = MeanRevertingActor(policy, steps=3, theta_min=0.2, sigma_max=0.3, sigma_min=0.1)
    # theta: 0.2 -> 1 in two equal steps; sigma: 0.3 -> 0.1
    assert actor.theta.tolist() == pytest.approx([0.2, 0.6, 1.0])
    assert actor.sigma.tolist() == pytest.approx([0.3, 0.2, 0.1])
    gen = torch.Generator().manual_seed(2)
    obs = torch.randn(2, 2, OBS_DIM, generator=gen)
    chunk, chain = actor.sample_chain(obs, gen)
    assert chain.shape == (2, 4, 4, ACT_DIM) and torch.equal(chain[:, -1], chunk)
    # theta_last = 1: the final transition's mean is mu whatever x_prev is, so
    # x_next = mu + 0.1 z scores -0.5 z^2 - ln 0.1 - 0.5 ln 2 pi per element (|z| < 1: unclamped).
    with torch.no_grad():
        mu = policy.ft_net(obs)
        z = torch.rand(2, 4, ACT_DIM, generator=gen) * 2 - 1
        x_prev = torch.randn(2, 4, ACT_DIM, generator=gen) * 3
        mask = torch.tensor([[True, True, True, False]]).expand(2, -1)
        got = actor.log_prob(obs, x_prev, mu + 0.1 * z, torch.tensor([2, 2]), mask)
    want = (-0.5 * z**2 - math.log(0.1) - HALF_LOG_2PI)[:, :3].mean(dim=(1, 2))
    assert torch.allclose(got, want, atol=1e-5)


def test_mean_reverting_actor_with_one_step_reverts_fully() -> None:
    # One transition is the last one: theta 1 and sigma_min, so the executed chunk is centred on
    # the regressor's output (as clip_schedule gives a single transition the last clip).
    torch.manual_seed(0)
    policy = RegressorPolicy(tiny_policy_config("mlp-regressor"), OBS_DIM, ACT_DIM).eval()
    policy.split()
    actor = MeanRevertingActor(policy, steps=1, theta_min=0.2, sigma_max=0.3, sigma_min=0.1)
    assert actor.theta.tolist() == [1.0]
    assert actor.sigma.tolist() == pytest.approx([0.1])


# -- 11-13. running statistics, normalisers, EMA ----------------------------------------------
def test_running_mean_std_matches_numpy() -> None:
    rng = np.random.default_rng(0)
    data = rng.normal(3.0, 2.0, size=(50, 2))
    stats = RunningMeanStd((2,))
    for chunk in np.array_split(data, [7, 8, 30]):  # uneven batches, one of a single row
        stats.update(torch.from_numpy(chunk))
    assert stats.mean.numpy() == pytest.approx(data.mean(0), rel=1e-4)
    assert stats.var.numpy() == pytest.approx(data.var(0), rel=1e-4)
    # Exactly: the data pooled with the prior pseudo-sample (count 1e-4, mean 0, var 1).
    c0, n = 1e-4, len(data)
    m = data.sum(0) / (n + c0)
    v = (c0 * (1 + m**2) + ((data - m) ** 2).sum(0)) / (n + c0)
    assert stats.mean.numpy() == pytest.approx(m, rel=1e-10)
    assert stats.var.numpy() == pytest.approx(v, rel=1e-10)


def test_reward_scaler_divides_by_the_discounted_return_std() -> None:
    # gamma 0.5; world 1's episode ends at t = 0, so its return restarts:
    # t0: ret = [1, 2]; t1: [0.5, 0] + [0, 0]; t2: [0.25, 0] + [4, 1] = [4.25, 1]
    rewards = torch.tensor([[1.0, 2.0], [0.0, 0.0], [4.0, 1.0]])
    dones = torch.tensor([[0.0, 1.0], [0.0, 0.0], [0.0, 0.0]])
    scaler = RewardScaler(2, gamma=0.5)
    scaled = scaler(rewards, dones)
    returns = np.array([1.0, 2.0, 0.5, 0.0, 4.25, 1.0])
    c0, n = 1e-4, len(returns)
    m = returns.sum() / (n + c0)
    v = (c0 * (1 + m**2) + ((returns - m) ** 2).sum()) / (n + c0)
    assert torch.allclose(scaled.double(), rewards.double() / math.sqrt(v + 1e-8), rtol=1e-6)


def test_normalizer_fit_span_floor_and_round_trip() -> None:
    data = torch.tensor([[2.0, 3.0, -1.0], [6.0, 3.0, 1.0], [4.0, 3.0, 0.0]])
    norm = Normalizer.fit(data, min_span=0.5)
    # column 0 spans [2, 6]; column 1 is constant 3, widened to 3 +- 0.25; column 2 [-1, 1]
    assert norm.low.tolist() == pytest.approx([2.0, 2.75, -1.0])
    assert norm.high.tolist() == pytest.approx([6.0, 3.25, 1.0])
    assert torch.allclose(norm.normalize(data),
                          torch.tensor([[-1.0, 0.0, -1.0], [1.0, 0.0, 1.0], [0.0, 0.0, 0.0]]))
    assert torch.allclose(norm.normalize(torch.tensor([[5.0, 3.25, 0.5]])),
                          torch.tensor([[0.5, 1.0, 0.5]]))
    x = torch.randn(10, 3, dtype=F64)
    assert torch.allclose(norm.unnormalize(norm.normalize(x)), x, atol=1e-6)
    # without a floor a constant column is only centred (no division by a zero span)
    assert Normalizer.fit(data).normalize(data)[:, 1].tolist() == [0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="NaN"):
        Normalizer.fit(torch.tensor([[math.nan, 1.0]]))


def test_ema_decay_and_update() -> None:
    assert ema_decay(0) == 0.0
    assert ema_decay(1) == pytest.approx(1 - 2**-0.75)  # 0.405396
    assert ema_decay(10**6) == 0.9999  # 1 - 1e6^-0.75 = 0.99997 is capped
    model = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    ema = EMA(model)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update(model, 1)  # shadow = 0 + (1 - decay)(1 - 0) = 2^-0.75 = 0.594604
    assert ema.shadow.weight.item() == pytest.approx(2**-0.75, rel=1e-6)
    ema.update(model, 0)  # decay 0: a plain copy
    assert ema.shadow.weight.item() == 1.0


# -- 14-15. features and training windows -----------------------------------------------------
def _unit_quats(n: int, gen: torch.Generator) -> torch.Tensor:
    q = torch.randn(n, 4, generator=gen, dtype=F64)
    return q / q.norm(dim=-1, keepdim=True)


def _same_up_to_sign(a: torch.Tensor, b: torch.Tensor, atol: float) -> bool:
    sign = torch.sign((a * b).sum(-1, keepdim=True))
    return torch.allclose(a, sign * b, atol=atol)


def test_rot6d_round_trip_and_sign_invariance() -> None:
    q = _unit_quats(64, torch.Generator().manual_seed(0))
    r6 = quat_to_rot6d(q)
    assert r6.shape == (64, 6)
    assert torch.allclose(quat_to_rot6d(-q), r6, atol=1e-12)
    assert _same_up_to_sign(rot6d_to_quat(r6), q, atol=1e-9)
    # identity: columns e_x, e_y
    assert quat_to_rot6d(torch.tensor([1.0, 0, 0, 0], dtype=F64)).tolist() == [1, 0, 0, 0, 1, 0]
    # Gram-Schmidt recovers the rotation from scaled, skewed columns
    skewed = torch.cat([2.0 * r6[:, :3], 0.5 * r6[:, 3:] + 0.3 * r6[:, :3]], dim=-1)
    assert _same_up_to_sign(rot6d_to_quat(skewed), q, atol=1e-9)


def test_command_action_round_trip() -> None:
    gen = torch.Generator().manual_seed(1)
    b = 5
    cmd = Command(base_vel=torch.randn(b, 3, generator=gen, dtype=F64),
                  hand_pos=torch.randn(b, 2, 3, generator=gen, dtype=F64),
                  hand_quat=_unit_quats(2 * b, gen).reshape(b, 2, 4),
                  gripper=torch.rand(b, 2, generator=gen, dtype=F64))
    action = command_to_action(cmd)
    assert action.shape == (b, ACTION_DIM) and action.dtype == torch.float32
    back = action_to_command(action)
    assert torch.allclose(back.base_vel, cmd.base_vel, atol=1e-6)
    assert torch.allclose(back.hand_pos, cmd.hand_pos, atol=1e-6)
    assert torch.allclose(back.gripper, cmd.gripper, atol=1e-6)
    assert _same_up_to_sign(back.hand_quat, cmd.hand_quat, atol=1e-5)
    with pytest.raises(ValueError, match="23 entries, got 22"):
        action_to_command(action[:, :22])


def test_windows_batch_clips_at_episode_edges() -> None:
    # Episode A: rows 0..3, episode B: rows 4..9. obs row i holds i, action row i holds 100 + i.
    first = torch.tensor([0] * 4 + [4] * 6)
    last = torch.tensor([3] * 4 + [9] * 6)
    w = Windows(obs=torch.arange(10.0).unsqueeze(1), actions=100 + torch.arange(10.0).unsqueeze(1),
                episode_first=first, episode_last=last, episode_ids=[0, 1])
    obs, act, mask = w.batch(torch.tensor([1, 5, 8]), obs_horizon=3, pred_horizon=3, period=2)
    assert obs.shape == (3, 3, 1) and act.shape == (3, 3, 1) and mask.shape == (3, 3)
    # row 1: obs 1-4, 1-2 clip to A's start 0; actions 1, 3, 5 -> 5 is past A's end: 3, masked
    # row 5: obs 1, 3 clip to B's start 4; actions 5, 7, 9 all inside
    # row 8: obs 4, 6, 8; actions 8, 10, 12 -> 8, 9, 9
    assert obs[..., 0].tolist() == [[0, 0, 1], [4, 4, 5], [4, 6, 8]]
    assert act[..., 0].tolist() == [[101, 103, 103], [105, 107, 109], [108, 109, 109]]
    assert mask.tolist() == [[True, True, False], [True, True, True], [True, False, False]]


# -- 16. schema checks and checkpoint errors -------------------------------------------------
SPEC = ObsSpec((("hand_pos", 6), ("hand_quat", 8), ("task.object_pos", 3)))


@pytest.fixture(scope="module")
def robot():
    return default_robot_spec()


@pytest.fixture
def saved_run(tmp_path: Path, robot) -> Path:
    """A tiny untrained planner saved as checkpoint 1 of a run folder."""
    torch.manual_seed(0)
    cfg = tiny_policy_config("mlp")
    d = SPEC.dim
    planner = Planner.create(cfg, SPEC, Normalizer(-torch.ones(d), torch.ones(d)),
                             Normalizer(-torch.ones(ACTION_DIM), torch.ones(ACTION_DIM)),
                             robot, "box_pickup", {})
    planner.save(tmp_path / "run", 1)
    return tmp_path / "run"


def test_obs_spec_mismatch_names_the_difference() -> None:
    assert SPEC.dim == 6 + 12 + 3
    SPEC.check_matches(ObsSpec(SPEC.fields), "here")
    cases = {
        "missing \\['task.object_pos'\\]": ObsSpec(SPEC.fields[:2]),
        "unexpected \\['task.door'\\]": ObsSpec(SPEC.fields + (("task.door", 2),)),
        "widths differ \\(hand_pos: 6 vs 3\\)": ObsSpec((("hand_pos", 3),) + SPEC.fields[1:]),
        "order differs": ObsSpec(SPEC.fields[::-1]),
    }
    for detail, other in cases.items():
        with pytest.raises(SchemaMismatchError, match=f"^where: .*{detail}"):
            SPEC.check_matches(other, "where")
    with pytest.raises(SchemaMismatchError, match="observation has 16 entries"):
        SPEC.features(torch.zeros(2, 16))


def test_planner_check_compatible(saved_run: Path, robot) -> None:
    planner = Planner.load(saved_run)
    planner.check_compatible(SPEC, robot, "eval")
    with pytest.raises(SchemaMismatchError, match="eval: .*missing"):
        planner.check_compatible(ObsSpec(SPEC.fields[:2]), robot, "eval")
    stiffer = dataclasses.replace(robot, kp=tuple(2 * k for k in robot.kp))
    with pytest.raises(SchemaMismatchError, match="another robot spec .*kp: "):
        planner.check_compatible(SPEC, stiffer, "eval")


def _ckpt(run: Path) -> Path:
    return run / (run / "latest").read_text().strip()


def test_missing_latest_is_a_clear_error(saved_run: Path) -> None:
    (saved_run / "latest").unlink()
    with pytest.raises(CheckpointError, match="holds no checkpoint \\(latest is missing\\)"):
        Planner.load(saved_run)
    with pytest.raises(CheckpointError, match="does not exist"):
        Planner.load(saved_run / "nowhere")


def test_missing_weights_are_a_clear_error(saved_run: Path) -> None:
    (_ckpt(saved_run) / "policy.safetensors").unlink()
    with pytest.raises(CheckpointError, match="policy.safetensors is missing"):
        Planner.load(saved_run)


def test_truncated_weights_are_a_clear_error(saved_run: Path) -> None:
    path = _ckpt(saved_run) / "policy.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    with pytest.raises(CheckpointError, match="cannot be read as safetensors .*damaged"):
        Planner.load(saved_run)


def test_wrong_format_is_a_clear_error(saved_run: Path) -> None:
    path = _ckpt(saved_run) / "policy.json"
    meta = json.loads(path.read_text())
    meta["format"] = "someone-elses-policy"
    path.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError,
                       match="not a refine-dp policy \\(format 'someone-elses-policy'"):
        Planner.load(saved_run)
    path.write_text("{ not json")
    with pytest.raises(CheckpointError, match="policy.json cannot be read"):
        Planner.load(saved_run)


def test_load_module_names_misshaped_weights() -> None:
    module = nn.Linear(3, 2)
    tensors = {"m.weight": torch.zeros(2, 4), "m.bias": torch.zeros(2)}
    with pytest.raises(CheckpointError, match=r"weight: \(2, 4\) vs \(2, 3\)"):
        load_module(module, tensors, "m", "here")
    with pytest.raises(CheckpointError, match=r"missing \['bias'\]"):
        load_module(module, {"m.weight": torch.zeros(2, 3)}, "m", "here")
    load_module(module, {"m.weight": torch.ones(2, 3), "m.bias": torch.ones(2)}, "m", "here")
    assert module.weight.sum().item() == 6.0


def test_the_pretrain_network_follows_the_backbone() -> None:
    from learning.pretrain import PretrainConfig, default_net

    assert PretrainConfig(Path("d"), Path("o")).policy.net == default_net("dit")  # 96 x 3
    mlp = PretrainConfig(Path("d"), Path("o"), backbone="mlp").policy.net
    assert (mlp.kind, mlp.width, mlp.depth) == ("mlp", 512, 3)
