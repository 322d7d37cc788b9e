"""Fine-tuning a pre-trained planner with PPO in simulation: `refine-dp finetune`.

Methods: "dppo" (the paper's), and the baselines "mlp-ft" and "residual" (see `actors`). One
loop serves all three; it reads top to bottom:

1. load the pre-trained planner and wrap it in the method's chain actor; a critic on the
   environment observation only (the normalised observation history);
2. each iteration, run `steps_per_iter` chunk decisions in every world, recording each
   chunk's S Gaussian transitions, the sparse task reward, and episode ends;
3. scale rewards by the running return std, compute GAE over chunks;
4. PPO epochs over minibatches drawn from (env step x transition) pairs: each transition j gets
   its own clip (growing exponentially toward the final one) and the advantage discounted by
   gamma_denoise^(S-1-j); before that, the critic regresses the returns in its own (cheap)
   epochs over the env steps; optional BC regulariser;
5. curriculum: when the iteration's success rate reaches the threshold, widen the initial-state
   ranges by `widen_factor`;
6. checkpoint atomically (the policy with its frozen / fine-tuned split, plus everything needed
   to resume) and log to TensorBoard and `metrics.jsonl` (a line per iteration, step = iteration).

The run follows the training-process contract of `learning.progress`: status.json, metrics.jsonl,
and SIGTERM = finish the iteration, checkpoint it, state "cancelled", exit 0. A stopped or killed
run resumes from its latest checkpoint; its worlds restart from fresh episodes.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor, nn
from tqdm import tqdm

from learning.checkpoint import (
    CheckpointError,
    latest_checkpoint,
    load_checkpoint,
    load_module,
    module_tensors,
    optimizer_from_tensors,
    optimizer_to_tensors,
)
from learning.diffusion.policy import DiffusionPolicy, RegressorPolicy
from learning.features import ACTION_DIM, ObsSpec
from learning.planner import Planner
from learning.progress import TrainingJob, within_job
from learning.rl.actors import DiffusionActor, MeanRevertingActor, ResidualActor
from learning.rl.ppo import (
    RewardScaler,
    clipped_surrogate,
    compute_gae,
    explained_variance,
    normalize_advantages,
    value_loss,
)
from learning.rl.residual import ResidualPolicy
from learning.rl.rollout import ChunkEnv
from robot_io.control import ControllerChoice
from robot_io.tasks import default_config, task_names

METHODS = ("dppo", "mlp-ft", "residual")


@dataclass(frozen=True)
class FinetuneConfig:
    """Fine-tuning settings (paper-notes: DPPO defaults; sizes for a 2-core CPU).

    Attributes:
        policy: the pre-trained run (or checkpoint) folder.
        out: the fine-tuning run folder; an existing one is resumed.
        method: "dppo", "mlp-ft" or "residual".
        task: defaults to the policy's task.
        widen: initial-state ranges scaled by this factor at the start (out-of-distribution).
        curriculum: widen by `widen_factor` whenever success >= `curriculum_success`.
        ft_steps: K', the fine-tuned denoising steps (DPPO).
        clip_first, clip_last: PPO clip of the noisiest and of the final transition.
        gamma: discount per executed chunk; gamma_denoise: per transition.
        controller, controller_weights, controller_runtime: the low-level controller the
            planner drives ("reference" or "learned"; `ControllerChoice`).
    """

    policy: Path
    out: Path
    method: str = "dppo"
    task: str | None = None
    iterations: int = 60
    worlds: int = 50
    steps_per_iter: int = 20
    widen: float = 1.0
    curriculum: bool = False
    widen_factor: float = 1.1
    curriculum_success: float = 0.9
    max_widen: float = 4.0
    ft_steps: int = 10
    min_sampling_std: float = 0.1
    min_logprob_std: float = 0.1
    # DPPO's published clips are 1e-3 -> 1e-2 on a log-prob averaged over the executed elements.
    # Our chunks have 8 x 23 = 184 of them, so an averaged ratio lets a few critical dimensions
    # (grippers, hand height) move a lot: with 1e-3 -> 1e-2, 31 iterations took box pickup from
    # 80 % to 34 %; with 1e-4 -> 1e-3, 40 iterations took it to 85 % (README, learning results).
    clip_first: float = 1e-4
    clip_last: float = 1e-3
    residual_clip: float = 0.02
    gamma: float = 0.99
    gae_lambda: float = 0.95
    gamma_denoise: float = 0.99
    epochs: int = 4
    minibatch: int = 5000
    critic_epochs: int = 10
    critic_minibatch: int = 256
    actor_lr: float = 1e-4
    critic_lr: float = 1e-3
    target_kl: float = 1.0
    bc_coef: float = 0.0
    critic_warmup_iters: int = 3
    reward_scaling: bool = True
    mlpft_steps: int = 5
    residual_width: int = 256
    residual_depth: int = 2
    residual_std: float = 0.1
    seed: int = 0
    threads: int = 0
    device: str = "cpu"
    controller: str = "reference"
    controller_weights: Path | None = None
    controller_runtime: str = "torch"

    def __post_init__(self) -> None:
        self.controller_choice()  # an unknown controller or runtime fails here
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")
        if self.task is not None and self.task not in task_names():
            raise ValueError(f"unknown task {self.task!r}; known tasks: "
                             f"{', '.join(task_names())}")
        if min(self.iterations, self.worlds, self.steps_per_iter, self.epochs,
               self.minibatch) < 1:
            raise ValueError("iterations, worlds, steps_per_iter, epochs and minibatch must be "
                             ">= 1")
        if self.widen <= 0 or self.widen_factor < 1:
            raise ValueError("widen must be > 0 and widen_factor >= 1")

    def controller_choice(self) -> ControllerChoice:
        """The low-level controller of the rollouts."""
        weights = None if self.controller_weights is None else Path(self.controller_weights)
        return ControllerChoice(self.controller, weights, self.controller_runtime)


def clip_schedule(steps: int, first: float, last: float) -> Tensor:
    """(S,) PPO clip per transition: exponential from `first` (j = 0, noisiest) to `last`.

    One transition gets `last` (no division by S - 1 = 0)."""
    if steps == 1:
        return torch.tensor([last])
    j = torch.arange(steps, dtype=torch.float64) / (steps - 1)
    return (first * (last / first) ** j).to(torch.float32)


def curriculum_step(widen: float, success_rate: float, episodes: int,
                    cfg: FinetuneConfig) -> float:
    """The start-range factor for the next iteration: widened by `widen_factor` when the
    curriculum is on, some episodes ended, success reached `curriculum_success` and the result
    stays within `max_widen`; else unchanged."""
    if not cfg.curriculum or episodes == 0 or not success_rate >= cfg.curriculum_success:
        return widen
    wider = widen * cfg.widen_factor
    return wider if wider <= cfg.max_widen + 1e-9 else widen


def denoise_discount(steps: int, gamma_denoise: float) -> Tensor:
    """(S,) advantage weight per transition: gamma^(S-1-j), 1 for the final one."""
    return gamma_denoise ** torch.arange(steps - 1, -1, -1, dtype=torch.float32)


class Critic(nn.Module):
    """V(observation history): an MLP 256 x 3 on the normalised (To, Do) history."""

    def __init__(self, in_dim: int, width: int = 256) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, width), nn.Mish(), nn.Linear(width, width),
                                 nn.Mish(), nn.Linear(width, width), nn.Mish(),
                                 nn.Linear(width, 1))

    def forward(self, obs: Tensor) -> Tensor:
        return self.net(obs.flatten(1)).squeeze(-1)


def prepare(planner: Planner, cfg: FinetuneConfig) -> nn.Module:
    """Turn the pre-trained planner into the method's trainable actor (modifies `planner`)."""
    model = planner.model
    base_meta = {"method": cfg.method, "base_policy": str(cfg.policy),
                 "controller": cfg.controller}
    if cfg.method == "dppo":
        if not isinstance(model, DiffusionPolicy) or planner.kind != "diffusion":
            raise CheckpointError(f"{cfg.policy}: DPPO fine-tunes a diffusion policy; this one is "
                                  f"a {planner.kind!r} (use --method mlp-ft for a regressor)")
        if model.ft_net is None:
            model.split(cfg.ft_steps)
        planner.meta["finetune"] = {**base_meta, "ft_steps": model.ft_steps}
        return DiffusionActor(model, cfg.min_sampling_std, cfg.min_logprob_std)
    if cfg.method == "mlp-ft":
        if not isinstance(model, RegressorPolicy):
            raise CheckpointError(f"{cfg.policy}: MLP-FT fine-tunes the MLP regressor; this "
                                  f"policy is a {planner.kind!r} (pre-train with --backbone "
                                  f"mlp-regressor)")
        if model.ft_net is None:
            model.split()
        planner.meta["finetune"] = base_meta
        # The last transition's std is the exploration noise left on the executed chunk: the
        # same floor as DPPO's, so `--min-std` sets both.
        return MeanRevertingActor(model, steps=cfg.mlpft_steps, sigma_min=cfg.min_sampling_std)
    if not isinstance(model, DiffusionPolicy) or model.ft_net is not None:
        raise CheckpointError(f"{cfg.policy}: residual RL needs a pre-trained (not fine-tuned) "
                              f"diffusion policy; this one is a {planner.kind!r}")
    hparams = {"width": cfg.residual_width, "depth": cfg.residual_depth,
               "init_std": cfg.residual_std}
    residual = ResidualPolicy(model.cfg, model.obs_dim, model.action_dim, **hparams)
    residual.load_base(model)
    planner.model = residual.to(planner.device)
    planner.meta.update(kind="residual", finetune={**base_meta, "residual": hparams})
    return ResidualActor(residual)


def finetune(cfg: FinetuneConfig, progress: bool = True, log=print,
             job: TrainingJob | None = None) -> Planner:
    """Fine-tune (or resume) the run `cfg.out`; returns the fine-tuned planner.

    Args:
        job: the entered job to report to and take stop requests from (default: one of its own
            for `cfg.out`, which handles SIGTERM).
    """
    return within_job(job, cfg.out, "finetune", lambda j: _finetune(cfg, j, progress, log))


def _finetune(cfg: FinetuneConfig, job: TrainingJob, progress: bool, log) -> Planner:
    from torch.utils.tensorboard import SummaryWriter

    from robot_io.env import BatchedEnv

    out = Path(cfg.out)
    resume = latest_checkpoint(out) if out.exists() else None
    state = None
    if resume is not None:
        state = load_checkpoint(resume, train=True)
        stored = state.train_meta["config"]
        stored.update(iterations=max(cfg.iterations, stored["iterations"]), device=cfg.device,
                      threads=cfg.threads)
        if Path(cfg.policy).resolve() != Path(stored["policy"]).resolve():
            log(f"note: {out} continues from its own base policy {stored['policy']}, not "
                f"{cfg.policy}; choose a new --out to fine-tune another policy")
        weights = stored.get("controller_weights")
        cfg = FinetuneConfig(**{**stored, "policy": Path(stored["policy"]), "out": out,
                                "controller_weights": None if weights is None else Path(weights)})
        log(f"resuming {out} at iteration {state.train_meta['iteration']} of {cfg.iterations}")
    device = torch.device(cfg.device)
    planner = Planner.load(cfg.policy, cfg.device)
    task = cfg.task or planner.task
    actor = prepare(planner, cfg).to(device)
    pcfg = planner.cfg
    critic = Critic(pcfg.obs_horizon * planner.obs_spec.dim).to(device)
    actor_opt = torch.optim.AdamW(actor.trainable(), lr=cfg.actor_lr, weight_decay=0.0)
    critic_opt = torch.optim.AdamW(critic.parameters(), lr=cfg.critic_lr, weight_decay=0.0)
    scaler = RewardScaler(cfg.worlds, cfg.gamma)
    gen = torch.Generator(device).manual_seed(cfg.seed)
    widen, iteration, history = cfg.widen, 0, []
    if state is not None:
        load_module(planner.model, state.tensors, "model", state.path)
        t = state.train_tensors
        load_module(critic, t, "critic", state.path)
        optimizer_from_tensors(actor_opt, t, state.train_meta["actor_opt"], "actor_opt")
        optimizer_from_tensors(critic_opt, t, state.train_meta["critic_opt"], "critic_opt")
        scaler.stats.load({k[len("scaler."):]: v for k, v in t.items()
                           if k.startswith("scaler.")})
        gen.set_state(t["rng"].to(gen.get_state().device))
        widen, iteration = state.train_meta["widen"], state.train_meta["iteration"]
        history = state.train_meta["history"]
    job.start(iteration, cfg.iterations, None if state is None else state.path)

    task_config = default_config(task).widened(widen)
    env = BatchedEnv(task, cfg.worlds, threads=cfg.threads, seed=cfg.seed + 1000 * iteration,
                     task_config=task_config)
    planner.check_compatible(ObsSpec.of(env.observe()), env.robot, f"fine-tuning on {task}")
    cenv = ChunkEnv(env, cfg.controller_choice().build(env), planner.obs_spec, pcfg.obs_horizon,
                    pcfg.act_steps, pcfg.action_period_ticks)
    hist = cenv.reset()
    writer = SummaryWriter(str(out / "tb"), purge_step=iteration)
    clips = (clip_schedule(actor.steps, cfg.clip_first, cfg.clip_last) if cfg.method != "residual"
             else torch.tensor([cfg.residual_clip])).to(device)
    discount = denoise_discount(actor.steps, cfg.gamma_denoise).to(device)
    exec_mask = (torch.arange(pcfg.pred_horizon) < pcfg.act_steps).to(device)
    planner.meta["task"] = task

    def save() -> Path:
        a_t, a_meta = optimizer_to_tensors(actor_opt, "actor_opt")
        c_t, c_meta = optimizer_to_tensors(critic_opt, "critic_opt")
        tensors = {**module_tensors(critic, "critic"), **a_t, **c_t,
                   **{f"scaler.{k}": v for k, v in scaler.stats.state().items()},
                   "rng": gen.get_state().cpu()}
        weights = cfg.controller_weights
        meta = {"config": {**asdict(cfg), "policy": str(Path(cfg.policy).resolve()),
                           "out": str(cfg.out), "controller_weights":
                           None if weights is None else str(Path(weights).resolve())},
                "iteration": iteration, "widen": widen, "history": history,
                "actor_opt": a_meta, "critic_opt": c_meta}
        planner.meta["finetune"].update(iterations=iteration, widen=widen)
        planner.meta["task_config"] = default_config(task).widened(widen).to_dict()
        planner.meta["metrics"] = history[-1] if history else {}
        path = planner.save(out, iteration, meta, tensors)
        job.checkpointed(path)
        return path

    bar = tqdm(total=cfg.iterations, initial=iteration, desc=f"finetune {cfg.method}",
               disable=not progress, dynamic_ncols=True)
    started = time.perf_counter()
    steps, worlds, s = cfg.steps_per_iter, cfg.worlds, actor.steps
    while iteration < cfg.iterations and not job.should_stop:  # each iteration is checkpointed
        # -- 1. rollout ----------------------------------------------------------------------
        t0 = time.perf_counter()
        obs_buf = torch.zeros(steps, worlds, pcfg.obs_horizon, planner.obs_spec.dim, device=device)
        chain_buf = torch.zeros(steps, worlds, s + 1, pcfg.pred_horizon, ACTION_DIM,
                                device=device)
        rewards = torch.zeros(steps, worlds)
        dones = torch.zeros(steps, worlds)
        values = torch.zeros(steps, worlds)
        ended_success, ended_ticks = [], []
        actor.eval()
        for t in range(steps):
            obs_n = planner.obs_norm.normalize(hist.to(device))
            with torch.no_grad():
                chunk, chain = actor.sample_chain(obs_n, gen)
                values[t] = critic(obs_n).cpu()
            obs_buf[t], chain_buf[t] = obs_n, chain
            action = planner.act_norm.unnormalize(chunk.clamp(-1.0, 1.0)).cpu()
            hist, res = cenv.step(action)
            rewards[t], dones[t] = res.reward.float(), res.done.float()
            ended_success.append(res.success[res.done])
            ended_ticks.append(res.episode_ticks[res.done & res.success])
        with torch.no_grad():
            last_value = critic(planner.obs_norm.normalize(hist.to(device))).cpu()
        rollout_s = time.perf_counter() - t0

        # -- 2. returns and advantages ---------------------------------------------------------
        scaled = scaler(rewards, dones).float() if cfg.reward_scaling else rewards
        adv, returns = compute_gae(scaled, values, dones, last_value, cfg.gamma, cfg.gae_lambda)

        # -- 3. PPO over (env step x transition) samples ---------------------------------------
        t1 = time.perf_counter()
        n_env = steps * worlds
        obs_flat = obs_buf.reshape(n_env, *obs_buf.shape[2:])
        chain_flat = chain_buf.reshape(n_env, s + 1, *chain_buf.shape[3:])
        adv_flat, ret_flat = adv.reshape(n_env).to(device), returns.reshape(n_env).to(device)
        stats = ppo_update(actor, critic, actor_opt, critic_opt, obs_flat, chain_flat,
                           adv_flat, ret_flat, clips, discount, exec_mask, cfg, gen,
                           train_actor=iteration >= cfg.critic_warmup_iters)
        update_s = time.perf_counter() - t1

        # -- 4. bookkeeping, curriculum, checkpoint --------------------------------------------
        iteration += 1
        succ = torch.cat(ended_success)
        ticks = torch.cat(ended_ticks)
        rate = float(succ.float().mean()) if len(succ) else float("nan")
        record = {"iteration": iteration, "success_rate": rate, "episodes": len(succ),
                  "completion_time_s": float(ticks.float().mean()) * env.control_dt_s
                  if len(ticks) else float("nan"),
                  "widen": widen, "rollout_s": rollout_s, "update_s": update_s,
                  "wall_s": time.perf_counter() - started,
                  "explained_variance": explained_variance(values.reshape(-1),
                                                           returns.reshape(-1)),
                  **{k: sum(v) / len(v) for k, v in stats.items() if v}}
        history.append(record)
        for key, value in record.items():
            if key != "iteration" and isinstance(value, float) and math.isfinite(value):
                writer.add_scalar(f"finetune/{key}", value, iteration)
        # metrics.jsonl: the record less what the job writes itself (step, time_s).
        job.log(iteration, **{k: v for k, v in record.items()
                              if k not in ("iteration", "wall_s")})
        new_widen = curriculum_step(widen, rate, len(succ), cfg)
        if new_widen != widen:
            widen = new_widen
            env.task.config = default_config(task).widened(widen)
            log(f"curriculum: success {rate:.2f} >= {cfg.curriculum_success}, start ranges "
                f"widened to x{widen:.3f}")
        save()
        bar.update(1)
        bar.set_postfix(success=f"{rate:.2f}", eps=len(succ), widen=f"{widen:.2f}")
    bar.close()
    writer.close()
    plot_curve(history, out / "success_curve.png", cfg.method)
    planner.model.eval()
    return planner


def ppo_update(actor: nn.Module, critic: nn.Module, actor_opt: torch.optim.Optimizer,
               critic_opt: torch.optim.Optimizer, obs: Tensor, chain: Tensor, adv: Tensor,
               returns: Tensor, clips: Tensor, discount: Tensor, exec_mask: Tensor,
               cfg: FinetuneConfig, gen: torch.Generator, train_actor: bool = True
               ) -> dict[str, list[float]]:
    """One PPO update: critic epochs over the env steps, then actor epochs over every
    (env step, transition) pair of the rollout.

    Args:
        obs: (N, To, Do) normalised observation histories; chain: (N, S+1, Tp, Da) the recorded
            transitions; adv, returns: (N,) per env step.
        clips, discount: (S,) clip and advantage weight per transition.
        exec_mask: (Tp,) the executed rows of a chunk (scored by the log-probs).

    Returns:
        Per-minibatch losses and diagnostics by name.
    """
    device = obs.device
    stats: dict[str, list[float]] = {"pg_loss": [], "v_loss": [], "kl": [], "clip_frac": [],
                                     "bc": []}
    # The critic first, on environment steps: it is small and cheap, and good advantages need
    # many more critic steps than the actor takes.
    for _ in range(cfg.critic_epochs):
        perm = torch.randperm(len(obs), device=device, generator=gen)
        for start in range(0, len(perm), cfg.critic_minibatch):
            e = perm[start:start + cfg.critic_minibatch]
            v_loss = value_loss(critic(obs[e]), returns[e])
            critic_opt.zero_grad(set_to_none=True)
            v_loss.backward()
            nn.utils.clip_grad_norm_(critic.parameters(), 1.0)
            critic_opt.step()
            stats["v_loss"].append(v_loss.item())
    if not train_actor:
        return stats
    s = chain.shape[1] - 1
    env_idx = torch.arange(len(obs), device=device).repeat_interleave(s)
    j_idx = torch.arange(s, device=device).repeat(len(obs))
    logp_old = _log_probs(actor, obs, chain, env_idx, j_idx, exec_mask)
    actor.train()
    for _ in range(cfg.epochs):
        perm = torch.randperm(len(env_idx), device=device, generator=gen)
        for start in range(0, len(perm), cfg.minibatch):
            mb = perm[start:start + cfg.minibatch]
            e, j = env_idx[mb], j_idx[mb]
            logp = actor.log_prob(obs[e], chain[e, j], chain[e, j + 1], j,
                                  exec_mask.expand(len(mb), -1))
            a = normalize_advantages(adv[e]) * discount[j]
            pl = clipped_surrogate(logp, logp_old[mb], a, clips[j])
            loss = pl.loss
            if cfg.bc_coef > 0:
                bc = actor.bc_loss(obs[e], chain[e, j], j)
                loss = loss + cfg.bc_coef * bc
                stats["bc"].append(bc.item())
            actor_opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(actor.trainable(), 1.0)
            actor_opt.step()
            stats["pg_loss"].append(pl.loss.item())
            stats["kl"].append(float(pl.approx_kl))
            stats["clip_frac"].append(float(pl.clip_fraction))
            if float(pl.approx_kl) > cfg.target_kl:
                return stats
    return stats


@torch.no_grad()
def _log_probs(actor: nn.Module, obs: Tensor, chain: Tensor, env_idx: Tensor, j_idx: Tensor,
               mask: Tensor, batch: int = 4096) -> Tensor:
    actor.eval()
    out = []
    for start in range(0, len(env_idx), batch):
        e, j = env_idx[start:start + batch], j_idx[start:start + batch]
        out.append(actor.log_prob(obs[e], chain[e, j], chain[e, j + 1], j,
                                  mask.expand(len(e), -1)))
    return torch.cat(out)


def plot_curve(history: list[dict], path: Path, label: str) -> None:
    """success_curve.png: training success rate (and the curriculum's widening) per iteration."""
    from matplotlib.figure import Figure  # no pyplot: no process-wide backend

    if not history:
        return
    its = [h["iteration"] for h in history]
    fig = Figure(figsize=(6, 3.5))
    ax = fig.subplots()
    ax.plot(its, [h["success_rate"] for h in history], label=f"{label} success rate")
    ax.set_xlabel("iteration")
    ax.set_ylabel("success rate (training rollouts)")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    if any(h["widen"] != history[0]["widen"] for h in history):
        ax2 = ax.twinx()
        ax2.plot(its, [h["widen"] for h in history], color="tab:orange", ls="--",
                 label="range widening")
        ax2.set_ylabel("start-range factor")
    ax.legend(loc="lower right")
    fig.tight_layout()
    tmp = path.with_name(path.name + ".partial.png")
    fig.savefig(tmp, dpi=100)
    tmp.replace(path)


def with_overrides(cfg: FinetuneConfig, **overrides) -> FinetuneConfig:
    return dataclasses.replace(cfg, **{k: v for k, v in overrides.items() if v is not None})
