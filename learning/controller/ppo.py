"""PPO for the low-level controller: Gaussian actor-critic with privileged critic inputs.

GAE, the clipped surrogate and the value loss are `learning.rl.ppo`'s, shared with DPPO. The
actor sees the policy observation, the critic the privileged one; both are normalised by running
statistics (frozen into the exported `PolicySpec`). The learning rate adapts to the measured KL
(halved above 2x the target, raised below half of it). Time-limit ends bootstrap from the value
of the last state; terminations do not.

Runs under torchrun too: every rank steps its own environments, gradients and statistics are
averaged over ranks (torch.distributed), and only rank 0 writes checkpoints and logs.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import torch
import torch.distributed as dist
from torch import Tensor, nn

from learning.checkpoint import (
    latest_checkpoint,
    load_checkpoint,
    load_module,
    module_tensors,
    optimizer_from_tensors,
    optimizer_to_tensors,
    save_checkpoint,
)
from learning.rl.ppo import clipped_surrogate, compute_gae
from robot_io.control.policy_io import PolicyMLP, PolicySpec


class RLEnv(Protocol):
    """A batched environment PPO trains in (see `UpperBodyEnv`)."""

    num_worlds: int
    obs_dim: int
    critic_obs_dim: int
    action_dim: int

    def reset(self) -> tuple[Tensor, Tensor]: ...

    def step(self, action: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, dict]: ...

    def set_progress(self, progress: float) -> None: ...

    def policy_spec(self, obs_mean: Tensor, obs_std: Tensor, hidden: tuple[int, ...],
                    activation: str, obs_clip: float) -> PolicySpec: ...


@dataclass(frozen=True)
class PPOConfig:
    """PPO settings (documented defaults, sized for a 2-core CPU)."""

    iterations: int = 1500
    horizon: int = 24                  # control ticks per world per iteration
    epochs: int = 5
    minibatches: int = 4
    lr: float = 1e-3
    desired_kl: float = 0.01           # adaptive learning rate target; 0 keeps lr fixed
    gamma: float = 0.99
    lam: float = 0.95
    clip: float = 0.2
    value_coef: float = 1.0
    entropy_coef: float = 0.002
    max_grad_norm: float = 1.0
    init_std: float = 0.5
    actor_hidden: tuple[int, ...] = (256, 256, 128)
    critic_hidden: tuple[int, ...] = (256, 256, 128)
    activation: str = "elu"
    obs_clip: float = 5.0
    curriculum_iterations: int = 600   # regularisation weights reach their end values here
    checkpoint_every: int = 50
    time_budget_s: float = 0.0         # stop (and save) after this much training time; 0: none
    critic_warmup_iterations: int = 0  # first iterations train the critic only (warm starts)
    bc_coef: float = 0.0               # weight of an MSE pull toward the env's teacher actions
    seed: int = 0


class RunningNorm(nn.Module):
    """Running mean and variance of observations (float64 sums), merged over ranks."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim, dtype=torch.float64))
        self.register_buffer("var", torch.ones(dim, dtype=torch.float64))
        self.register_buffer("count", torch.tensor(1e-4, dtype=torch.float64))

    def update(self, x: Tensor) -> None:
        x = x.to(torch.float64).reshape(-1, x.shape[-1])
        n = torch.tensor(float(x.shape[0]), dtype=torch.float64)
        s1, s2 = x.sum(0), x.square().sum(0)
        if dist.is_initialized():
            packed = torch.cat([s1, s2, n.reshape(1)])
            dist.all_reduce(packed)
            d = x.shape[1]
            s1, s2, n = packed[:d], packed[d:2 * d], packed[-1]
        mean_b = s1 / n
        var_b = (s2 / n - mean_b.square()).clamp(min=0)
        total = self.count + n
        delta = mean_b - self.mean
        self.mean += delta * n / total
        self.var = (self.var * self.count + var_b * n + delta.square() * self.count * n / total
                    ) / total
        self.count = total

    @property
    def std(self) -> Tensor:
        return self.var.sqrt().clamp(min=1e-2)

    def __call__(self, x: Tensor, clip: float) -> Tensor:  # type: ignore[override]
        return ((x - self.mean.to(x.dtype)) / self.std.to(x.dtype)).clamp(-clip, clip)


def _mlp(inp: int, hidden: tuple[int, ...], out: int, activation: str) -> nn.Sequential:
    act = {"elu": nn.ELU, "tanh": nn.Tanh}[activation]
    layers: list[nn.Module] = []
    for h in hidden:
        layers += [nn.Linear(inp, h), act()]
        inp = h
    layers.append(nn.Linear(inp, out))
    return nn.Sequential(*layers)


class ActorCritic(nn.Module):
    """Gaussian actor (state-independent std) and privileged critic."""

    def __init__(self, obs_dim: int, critic_obs_dim: int, action_dim: int,
                 cfg: PPOConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.actor = _mlp(obs_dim, cfg.actor_hidden, action_dim, cfg.activation)
        self.critic = _mlp(critic_obs_dim, cfg.critic_hidden, 1, cfg.activation)
        self.log_std = nn.Parameter(torch.full((action_dim,), math.log(cfg.init_std)))
        self.obs_norm = RunningNorm(obs_dim)
        self.critic_norm = RunningNorm(critic_obs_dim)
        with torch.no_grad():  # small initial actions: start near the default pose
            self.actor[-1].weight.mul_(0.01)
            self.actor[-1].bias.zero_()

    def mean(self, obs: Tensor) -> Tensor:
        return self.actor(self.obs_norm(obs, self.cfg.obs_clip))

    def value(self, critic_obs: Tensor) -> Tensor:
        return self.critic(self.critic_norm(critic_obs, self.cfg.obs_clip)).squeeze(-1)

    def dist(self, obs: Tensor) -> torch.distributions.Normal:
        return torch.distributions.Normal(self.mean(obs), self.log_std.exp().expand(
            obs.shape[0], -1))

    def export(self, env: RLEnv) -> PolicyMLP:
        """The deterministic actor as a `PolicyMLP` with the normalisation folded into its spec."""
        spec = env.policy_spec(self.obs_norm.mean.float(), self.obs_norm.std.float(),
                               self.cfg.actor_hidden, self.cfg.activation, self.cfg.obs_clip)
        policy = PolicyMLP(spec)
        policy.net.load_state_dict(self.actor.state_dict())
        return policy


@dataclass
class Rollout:
    obs: Tensor
    critic_obs: Tensor
    actions: Tensor
    logp: Tensor
    values: Tensor
    rewards: Tensor
    dones: Tensor
    teacher: Tensor | None = None  # (T, B, A) teacher actions for the BC regulariser


@dataclass
class TrainState:
    iteration: int = 0
    env_steps: int = 0
    wall_s: float = 0.0
    lr: float = 0.0
    history: list[dict] = field(default_factory=list)


def _rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def _average_gradients(module: nn.Module) -> None:
    if not dist.is_initialized():
        return
    world = dist.get_world_size()
    for p in module.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= world


def collect(env: RLEnv, model: ActorCritic, horizon: int, obs: Tensor, critic_obs: Tensor,
            stats: dict) -> tuple[Rollout, Tensor, Tensor, Tensor]:
    """Step `env` for `horizon` ticks with the stochastic policy; returns the rollout, the next
    observations and the bootstrap value."""
    keys = ("obs", "critic_obs", "actions", "logp", "values", "rewards", "dones", "teacher")
    buf = {k: [] for k in keys}
    want_teacher = stats.get("bc_coef", 0.0) > 0
    for _ in range(horizon):
        if want_teacher:
            buf["teacher"].append(env.expert_action())
        with torch.no_grad():
            d = model.dist(obs)
            action = d.sample()
            logp = d.log_prob(action).sum(-1)
            value = model.value(critic_obs)
        next_obs, next_critic, reward, terminated, truncated, info = env.step(action)
        reward = reward.to(torch.float32)
        if bool(truncated.any()):
            # Time-limit ends: bootstrap with the value of the state the episode stopped in,
            # approximated by the state observed before the reset (the pre-step value).
            reward = reward + stats["gamma"] * value * truncated.to(torch.float32)
        for key, val in (("obs", obs), ("critic_obs", critic_obs), ("actions", action),
                         ("logp", logp), ("values", value), ("rewards", reward),
                         ("dones", terminated | truncated)):
            buf[key].append(val)
        stats["reward_sum"] += float(reward.sum())
        stats["pos_err"].append(info["pos_err_m"].median().item() if "pos_err_m" in info
                                else float("nan"))
        stats["rot_err"].append(info["rot_err_rad"].median().item() if "rot_err_rad" in info
                                else float("nan"))
        # Any other per-world metric (B, ...) the env reports: the median over worlds (NaN
        # entries, e.g. worlds without an event this tick, are left out).
        for key, val in info.items():
            if key not in ("terms", "pos_err_m", "rot_err_rad"):
                stats.setdefault("metrics", {}).setdefault(key, []).append(
                    val.to(torch.float64).nanmedian().item())
        for key, val in info.get("terms", {}).items():
            stats["terms"][key] = stats["terms"].get(key, 0.0) + float(val.mean())
        obs, critic_obs = next_obs, next_critic
    with torch.no_grad():
        last_value = model.value(critic_obs)
    roll = Rollout(**{k: torch.stack(v) if v else None for k, v in buf.items()})
    return roll, obs, critic_obs, last_value


def update(model: ActorCritic, opt: torch.optim.Optimizer, roll: Rollout, last_value: Tensor,
           cfg: PPOConfig, gen: torch.Generator, critic_only: bool = False) -> dict:
    """PPO epochs over the rollout; returns diagnostics and adapts the learning rate.

    `critic_only` trains the value function alone (the critic warm-up of a warm-started actor).
    """
    adv, ret = compute_gae(roll.rewards, roll.values, roll.dones, last_value, cfg.gamma, cfg.lam)
    flat = lambda x: x.reshape(-1, *x.shape[2:])
    obs, cobs, act, logp_old = (flat(roll.obs), flat(roll.critic_obs), flat(roll.actions),
                                flat(roll.logp))
    adv, ret, val_old = flat(adv), flat(ret), flat(roll.values)
    teacher = flat(roll.teacher) if roll.teacher is not None else None
    total = obs.shape[0]
    size = total // cfg.minibatches
    out = {"policy_loss": 0.0, "value_loss": 0.0, "kl": 0.0, "clip_fraction": 0.0,
           "entropy": 0.0}
    count = 0
    for _ in range(cfg.epochs):
        perm = torch.randperm(total, generator=gen)
        for k in range(cfg.minibatches):
            idx = perm[k * size:(k + 1) * size]
            a = adv[idx]
            a = (a - a.mean()) / (a.std() + 1e-8)
            d = model.dist(obs[idx])
            logp = d.log_prob(act[idx]).sum(-1)
            pl = clipped_surrogate(logp, logp_old[idx], a, cfg.clip)
            value = model.value(cobs[idx])
            v_clipped = val_old[idx] + (value - val_old[idx]).clamp(-cfg.clip, cfg.clip)
            vl = torch.max((value - ret[idx]).square(), (v_clipped - ret[idx]).square()).mean()
            entropy = d.entropy().sum(-1).mean()
            loss = pl.loss + cfg.value_coef * vl - cfg.entropy_coef * entropy
            if teacher is not None and cfg.bc_coef > 0:
                bc = (d.mean - teacher[idx]).square().mean()
                loss = loss + cfg.bc_coef * bc
                out["bc_loss"] = out.get("bc_loss", 0.0) + float(bc.detach())
            if critic_only:
                loss = cfg.value_coef * vl
            opt.zero_grad()
            loss.backward()
            _average_gradients(model)
            nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            opt.step()
            kl = float(pl.approx_kl)
            if cfg.desired_kl > 0 and not critic_only:
                lr = opt.param_groups[0]["lr"]
                if kl > 2 * cfg.desired_kl:
                    lr = max(lr / 1.5, 1e-6)
                elif kl < cfg.desired_kl / 2:
                    lr = min(lr * 1.5, 1e-2)
                for g in opt.param_groups:
                    g["lr"] = lr
            out["policy_loss"] += float(pl.loss.detach())
            out["value_loss"] += float(vl.detach())
            out["kl"] += kl
            out["clip_fraction"] += float(pl.clip_fraction)
            out["entropy"] += float(entropy.detach())
            count += 1
    return {k: v / count for k, v in out.items()}


def train(env: RLEnv, cfg: PPOConfig, out: Path, progress: bool = True,
          evaluate=None, eval_every: int = 0, log=print,
          init: ActorCritic | None = None, should_stop: Callable[[], bool] | None = None,
          on_iteration: Callable[[dict], None] | None = None
          ) -> tuple[ActorCritic, TrainState]:
    """Train (or resume) a policy in `env`; checkpoints, TensorBoard and metrics go to `out`.

    Args:
        evaluate: optional callable(model) -> dict of held-out metrics, run every `eval_every`
            iterations and at the end (rank 0 only).
        init: a warm-started model to begin from when `out` has no checkpoint yet.
        should_stop: asked before each iteration (on every rank, so it may synchronise them);
            True ends training like the time budget does: with a checkpoint.
        on_iteration: called with each iteration's metrics row, after its checkpoint if it has
            one (every rank).
    """
    out = Path(out)
    torch.manual_seed(cfg.seed + _rank())
    gen = torch.Generator().manual_seed(cfg.seed + 1 + _rank())
    model = ActorCritic(env.obs_dim, env.critic_obs_dim, env.action_dim, cfg)
    if init is not None:
        model.load_state_dict(init.state_dict())
        with torch.no_grad():  # exploration starts at cfg.init_std around the warm start
            model.log_std.fill_(math.log(cfg.init_std))
    if dist.is_initialized():  # every rank starts from rank 0's weights
        for tensor in list(model.parameters()) + list(model.buffers()):
            dist.broadcast(tensor.data, src=0)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    state = TrainState(lr=cfg.lr)
    resume = latest_checkpoint(out) if out.exists() else None
    if resume is not None:
        ck = load_checkpoint(resume, train=True)
        if ck.meta.get("ppo") != _cfg_json(cfg):
            log(f"resuming {resume} with a changed PPO config")
        load_module(model, ck.tensors, "model", resume)
        optimizer_from_tensors(opt, ck.train_tensors, ck.train_meta["optimizer"], "opt")
        state = TrainState(**ck.train_meta["state"])
        gen.set_state(ck.train_tensors["gen"])
        log(f"resumed from {resume.name} at iteration {state.iteration}")
    writer = None
    rank0 = _rank() == 0
    if rank0:
        from torch.utils.tensorboard import SummaryWriter
        out.mkdir(parents=True, exist_ok=True)
        writer = SummaryWriter(str(out / "tb"), purge_step=state.iteration)
        (out / "config.json").write_text(json.dumps(_cfg_json(cfg), indent=1) + "\n")

    def save() -> None:
        if not rank0:
            return
        opt_t, opt_meta = optimizer_to_tensors(opt, "opt")
        save_checkpoint(out, state.iteration, {"ppo": _cfg_json(cfg)},
                        module_tensors(model, "model"),
                        {"optimizer": opt_meta, "state": asdict(state)},
                        {**opt_t, "gen": gen.get_state()})

    bar = None
    if progress and rank0:
        from tqdm import tqdm
        bar = tqdm(total=cfg.iterations, initial=state.iteration, desc=f"train {env_name(env)}",
                   unit="it", dynamic_ncols=True, mininterval=2.0)
    obs, critic_obs = env.reset()
    stats = {"gamma": cfg.gamma, "bc_coef": cfg.bc_coef}
    start_wall = state.wall_s
    t0 = time.perf_counter()
    while state.iteration < cfg.iterations:
        if cfg.time_budget_s > 0 and state.wall_s >= cfg.time_budget_s:
            log(f"time budget of {cfg.time_budget_s:.0f} s reached at iteration "
                f"{state.iteration}")
            break
        if should_stop is not None and should_stop():
            log(f"stopping at iteration {state.iteration} as asked")
            break
        env.set_progress(state.iteration / max(cfg.curriculum_iterations, 1))
        stats.update(reward_sum=0.0, pos_err=[], rot_err=[], terms={}, metrics={})
        t_roll = time.perf_counter()
        roll, obs, critic_obs, last_value = collect(env, model, cfg.horizon, obs, critic_obs,
                                                    stats)
        t_upd = time.perf_counter()
        diag = update(model, opt, roll, last_value, cfg, gen,
                      critic_only=state.iteration < cfg.critic_warmup_iterations)
        # The normalisers learn from the rollout only after the update: changing them while
        # collecting would make the stored log-probs disagree with the ones the update computes
        # (with a small action std that alone pushes many samples outside the clip range).
        model.obs_norm.update(roll.obs)
        model.critic_norm.update(roll.critic_obs)
        t_end = time.perf_counter()
        state.iteration += 1
        state.env_steps += cfg.horizon * env.num_worlds * (dist.get_world_size()
                                                           if dist.is_initialized() else 1)
        state.wall_s = start_wall + (t_end - t0)
        state.lr = opt.param_groups[0]["lr"]
        row = {"iteration": state.iteration, "env_steps": state.env_steps,
               "wall_s": round(state.wall_s, 2),
               "reward_per_step": stats["reward_sum"] / (cfg.horizon * env.num_worlds),
               "pos_err_median_m": _nanmean(stats["pos_err"]),
               "rot_err_median_rad": _nanmean(stats["rot_err"]),
               "rollout_s": t_upd - t_roll, "update_s": t_end - t_upd, "lr": state.lr,
               "action_std": float(model.log_std.detach().exp().mean()), **diag,
               **{f"{key}_median": _nanmean(v) for key, v in stats["metrics"].items()}}
        if evaluate is not None and eval_every and rank0 and (
                state.iteration % eval_every == 0 or state.iteration == cfg.iterations):
            row.update({f"eval/{k}": v for k, v in evaluate(model).items()})
        state.history.append(row)
        if writer is not None:
            for key, value in row.items():
                if key != "iteration" and isinstance(value, (int, float)):
                    writer.add_scalar(key if "/" in key else f"train/{key}", value,
                                      state.iteration)
            for key, value in stats["terms"].items():
                writer.add_scalar(f"reward_terms/{key}", value / cfg.horizon, state.iteration)
            with open(out / "metrics.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")
        if bar is not None:
            bar.update(1)
            bar.set_postfix(r=f"{row['reward_per_step']:.3f}",
                            pos=f"{row['pos_err_median_m'] * 100:.1f}cm",
                            rot=f"{row['rot_err_median_rad']:.2f}")
        if state.iteration % cfg.checkpoint_every == 0:
            save()
        if on_iteration is not None:
            on_iteration(row)
    save()
    if bar is not None:
        bar.close()
    if writer is not None:
        writer.close()
    return model, state


def env_name(env: RLEnv) -> str:
    return getattr(env, "part", type(env).__name__)


def _nanmean(values: list[float]) -> float:
    vals = [v for v in values if not math.isnan(v)]
    return sum(vals) / len(vals) if vals else float("nan")


def _cfg_json(cfg: PPOConfig) -> dict:
    return json.loads(json.dumps(asdict(cfg)))
