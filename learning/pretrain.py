"""Pre-training of the planner on demonstrations: `refine-dp pretrain`.

Reads top to bottom: resolve the config (or resume it from the run folder), load windows into
memory, fit normalisers, then train with AdamW under a warm-up + cosine schedule, keep an EMA
copy, log train / validation loss to TensorBoard and `metrics.jsonl`, evaluate in simulation
now and then, and write an atomic checkpoint every `checkpoint_every` steps.

The run follows the training-process contract of `learning.progress`: status.json, metrics.jsonl,
and SIGTERM = finish the step, checkpoint it, state "cancelled", exit 0. A stopped or killed run
continues from its latest checkpoint with the same data order and RNG state, so it ends with the
weights an uninterrupted run would have; with one seed the initial weights are the same too.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from datasets.dataset import Dataset
from datasets.errors import DatasetError
from learning.checkpoint import (
    latest_checkpoint,
    load_checkpoint,
    load_module,
    module_tensors,
    optimizer_from_tensors,
    optimizer_to_tensors,
)
from learning.data import Windows, load_windows
from learning.diffusion.networks import NET_KINDS, NetConfig
from learning.diffusion.policy import PolicyConfig
from learning.ema import EMA
from learning.features import ObsSpec
from learning.normalizer import ACTION_MIN_SPAN, OBS_MIN_SPAN, Normalizer
from learning.planner import Planner
from learning.progress import TrainingJob, within_job
from robot_io.tasks import default_config


@dataclass(frozen=True)
class PretrainConfig:
    """Pre-training settings (defaults sized for a 2-core CPU; use --device cuda to scale).

    Attributes:
        data: the dataset folder.
        out: the run folder (checkpoints, TensorBoard logs); an existing run is resumed.
        backbone: "dit", "mlp" (residual-MLP denoiser) or "mlp-regressor" (deterministic).
        policy: horizons, rates and the network; by default the backbone's CPU-sized network
            (`default_net`). A network of another kind than `backbone` is replaced by that.
        episodes: train on the first N successful episodes (None: all but the validation ones).
        steps: gradient steps in total.
        valid_episodes: held-out episodes for the validation loss (taken after the training
            ones when the dataset has more, else from them).
    """

    data: Path
    out: Path
    backbone: str = "dit"
    episodes: int | None = None
    steps: int = 4000
    batch_size: int = 256
    lr: float = 3e-4
    weight_decay: float = 1e-3
    warmup_steps: int = 200
    valid_episodes: int = 5
    valid_every: int = 250
    eval_every: int = 0  # steps between simulation evaluations (0: none)
    eval_episodes: int = 20
    eval_worlds: int = 10
    checkpoint_every: int = 500
    seed: int = 0
    device: str = "cpu"
    policy: PolicyConfig = field(default_factory=lambda: PolicyConfig(net=default_net("dit")))

    def __post_init__(self) -> None:
        if self.backbone not in NET_KINDS:
            raise ValueError(f"unknown backbone {self.backbone!r}; choose one of "
                             f"{', '.join(NET_KINDS)}")
        if self.policy.net.kind != self.backbone:
            # The backbone decides the network: its CPU-sized default (`default_net`), never a
            # network of another kind left over from the default policy config.
            object.__setattr__(self, "policy", dataclasses.replace(
                self.policy, net=default_net(self.backbone)))
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError("steps and batch_size must be at least 1")
        if self.episodes is not None and self.episodes < 1:
            raise ValueError(f"episodes must be at least 1, got {self.episodes}")


def default_net(backbone: str) -> NetConfig:
    """CPU-sized networks: a 3-block DiT of width 96, or a 3-block residual MLP of width 512."""
    if backbone == "dit":
        return NetConfig("dit", width=96, depth=3, heads=4)
    return NetConfig(backbone, width=512, depth=3)


def split_episodes(dataset: Dataset, episodes: int | None, valid: int) -> tuple[list, list]:
    """(train ids, validation ids) among the successful episodes, in id order."""
    ids = [i for i in dataset.episode_ids() if dataset.attrs(i).success]
    if not ids:
        raise DatasetError(f"{dataset.path} has no successful episodes to learn from; collect "
                           f"some with `refine-dp collect`")
    if episodes is not None and episodes > len(ids):
        raise DatasetError(f"{dataset.path} has {len(ids)} successful episodes, fewer than the "
                           f"{episodes} asked for")
    n = len(ids) if episodes is None else episodes
    if episodes is not None and len(ids) - n >= valid:  # spare episodes: validate on those
        return ids[:n], ids[n:n + valid]
    if n <= 1 or valid == 0:
        return ids[:n], []
    v = min(valid, max(1, n // 10))
    return ids[:n - v], ids[n - v:n]


def _lr(cfg: PretrainConfig, step: int) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


@torch.no_grad()
def validation_loss(planner: Planner, windows: Windows, batch: int = 1024) -> float:
    """Mean loss of the (EMA) policy on validation windows, with fixed noise."""
    cfg = planner.cfg
    gen = torch.Generator(planner.device).manual_seed(1234)
    rows = torch.arange(0, len(windows), max(1, len(windows) // batch))[:batch]
    obs, act, mask = windows.batch(rows, cfg.obs_horizon, cfg.pred_horizon,
                                   cfg.action_period_ticks)
    dev = planner.device
    obs, act = planner.obs_norm.normalize(obs.to(dev)), planner.act_norm.normalize(act.to(dev))
    return float(planner.model.loss(obs, act, mask.to(dev), generator=gen))


def pretrain(cfg: PretrainConfig, progress: bool = True, log: callable = print,
             job: TrainingJob | None = None) -> Planner:
    """Train (or resume) the run `cfg.out`; returns the EMA planner of the last step.

    Args:
        job: the entered job to report to and take stop requests from (default: one of its own
            for `cfg.out`, which handles SIGTERM).
    """
    return within_job(job, cfg.out, "pretrain", lambda j: _pretrain(cfg, j, progress, log))


def _pretrain(cfg: PretrainConfig, job: TrainingJob, progress: bool, log: callable) -> Planner:
    from torch.utils.tensorboard import SummaryWriter

    out = Path(cfg.out)
    resume = latest_checkpoint(out) if out.exists() else None
    train_state = None
    if resume is not None:
        ckpt = load_checkpoint(resume, train=True)
        stored = ckpt.train_meta["config"]
        policy_cfg = PolicyConfig.from_dict(stored.pop("policy"))
        stored.update(steps=max(cfg.steps, stored["steps"]), device=cfg.device)
        cfg = PretrainConfig(**{**stored, "data": Path(stored["data"]), "out": out,
                                "policy": policy_cfg})
        train_state = ckpt
        log(f"resuming {out} from step {ckpt.train_meta['step']} of {cfg.steps}")
    dataset = Dataset.open(cfg.data)
    if train_state is None:
        train_ids, valid_ids = split_episodes(dataset, cfg.episodes, cfg.valid_episodes)
    else:
        train_ids, valid_ids = train_state.train_meta["train_ids"], train_state.train_meta["valid_ids"]
    first = dataset.episode(train_ids[0])
    task = first.attrs.task
    obs_spec = _obs_spec_of(dataset, first, task)
    windows = load_windows(dataset, obs_spec, train_ids, progress)
    valid = load_windows(dataset, obs_spec, valid_ids) if valid_ids else None

    pcfg = cfg.policy
    # The initial weights come from the seed, without touching the process's global RNG.
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(cfg.seed)
        planner = Planner.create(pcfg, obs_spec, Normalizer.fit(windows.obs, OBS_MIN_SPAN),
                                 Normalizer.fit(windows.actions, ACTION_MIN_SPAN),
                                 dataset.robot_spec, task,
                                 default_config(task).to_dict(),
                                 source={"dataset": str(cfg.data),
                                         "train_episodes": len(train_ids),
                                         "valid_episodes": len(valid_ids)})
    device = torch.device(cfg.device)
    planner.to(device)
    model = planner.model.train()
    ema = EMA(model)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed)
    noise_gen = torch.Generator(device).manual_seed(cfg.seed + 1)
    step, history, loss_avg = 0, [], None
    if train_state is not None:
        t = train_state.train_tensors
        load_module(model, t, "raw", train_state.path)
        load_module(ema.shadow, train_state.tensors, "model", train_state.path)
        planner.obs_norm = Normalizer.from_tensors(train_state.tensors, "obs_norm").to(device)
        planner.act_norm = Normalizer.from_tensors(train_state.tensors, "act_norm").to(device)
        optimizer_from_tensors(opt, t, train_state.train_meta["optimizer"], "opt")
        gen.set_state(t["rng.batch"])
        noise_gen.set_state(t["rng.noise"].to(noise_gen.get_state().device))
        step, history = train_state.train_meta["step"], train_state.train_meta["history"]
        loss_avg = train_state.train_meta.get("loss_avg")  # the smoothed loss continues too
    job.start(step, cfg.steps, None if train_state is None else train_state.path)
    saved_step = step  # the step of the newest checkpoint (none yet on a fresh run: 0 steps)

    writer = SummaryWriter(str(out / "tb"), purge_step=step)
    ema_planner = Planner(pcfg, obs_spec, planner.obs_norm, planner.act_norm, ema.shadow,
                          planner.meta)

    def save() -> Path:
        opt_t, opt_meta = optimizer_to_tensors(opt, "opt")
        meta = {"config": _config_dict(cfg), "step": step, "train_ids": train_ids,
                "valid_ids": valid_ids, "optimizer": opt_meta, "history": history,
                "loss_avg": loss_avg}
        tensors = {**module_tensors(model, "raw"), **opt_t, "rng.batch": gen.get_state(),
                   "rng.noise": noise_gen.get_state().cpu()}
        ema_planner.meta["metrics"] = {**(history[-1] if history else {}), "step": step}
        path = ema_planner.save(out, step, meta, tensors)
        job.checkpointed(path)
        return path

    bar = tqdm(total=cfg.steps, initial=step, desc=f"pretrain {cfg.backbone}",
               disable=not progress, dynamic_ncols=True)
    period = pcfg.action_period_ticks
    started = time.perf_counter()
    while step < cfg.steps and not job.should_stop:
        rows = torch.randint(0, len(windows), (cfg.batch_size,), generator=gen)
        obs, act, mask = windows.batch(rows, pcfg.obs_horizon, pcfg.pred_horizon, period)
        obs = planner.obs_norm.normalize(obs.to(device))
        act = planner.act_norm.normalize(act.to(device))
        for group in opt.param_groups:
            group["lr"] = _lr(cfg, step)
        loss = model.loss(obs, act, mask.to(device), generator=noise_gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        ema.update(model, step)
        step += 1
        value, lr = loss.item(), opt.param_groups[0]["lr"]
        loss_avg = value if loss_avg is None else 0.98 * loss_avg + 0.02 * value
        writer.add_scalar("loss/train", value, step)
        writer.add_scalar("lr", lr, step)
        bar.update(1)
        bar.set_postfix(loss=f"{loss_avg:.4f}")
        record = {}
        if valid is not None and (step % cfg.valid_every == 0 or step == cfg.steps):
            record["valid_loss"] = validation_loss(ema_planner, valid)
            writer.add_scalar("loss/valid", record["valid_loss"], step)
        if cfg.eval_every and (step % cfg.eval_every == 0 or step == cfg.steps):
            record["success_rate"] = _evaluate(ema_planner, task, cfg)
            writer.add_scalar("eval/success_rate", record["success_rate"], step)
        job.log(step, train_loss=value, train_loss_avg=loss_avg, lr=lr, **record)
        if record:
            record.update(step=step, train_loss=loss_avg,
                          wall_s=time.perf_counter() - started)
            history.append(record)
            bar.set_postfix({k: f"{v:.4f}" for k, v in record.items()
                             if k in ("valid_loss", "success_rate")} | {"loss": f"{loss_avg:.4f}"})
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            if not record:
                history.append({"step": step, "train_loss": loss_avg,
                                "wall_s": time.perf_counter() - started})
            save()
            saved_step = step
    if saved_step != step:  # stopped between checkpoints: keep the step it stopped at
        save()
    bar.close()
    writer.close()
    return ema_planner


def _obs_spec_of(dataset: Dataset, episode, task: str) -> ObsSpec:
    """The DP observation spec of the task the dataset was recorded on, from its arrays."""
    from robot_io.dp_observation import ROBOT_FIELDS
    fields = []
    for name in ROBOT_FIELDS:
        fields.append((name, _width(episode, f"obs/{name}", dataset)))
    task_keys = sorted(k[len("obs/task/"):] for k in episode.arrays if k.startswith("obs/task/"))
    fields += [(f"task.{k}", _width(episode, f"obs/task/{k}", dataset)) for k in task_keys]
    return ObsSpec(tuple(fields))


def _width(episode, key: str, dataset: Dataset) -> int:
    if key not in episode.arrays:
        raise DatasetError(f"{dataset.path}: episodes lack {key}; this is not a refine-dp "
                           f"demonstration dataset")
    shape = episode.arrays[key].shape[1:]
    return int(math.prod(shape))


def _config_dict(cfg: PretrainConfig) -> dict:
    d = asdict(cfg)
    d["data"], d["out"] = str(Path(cfg.data).resolve()), str(cfg.out)  # resumable from anywhere
    return d


def _evaluate(planner: Planner, task: str, cfg: PretrainConfig) -> float:
    from learning.deploy import PolicySource
    from learning.evaluate import evaluate
    was_training = planner.model.training
    planner.model.eval()
    report = evaluate(task, lambda env: PolicySource(planner, env.num_worlds, seed=cfg.seed,
                                                     robot=env.robot),
                      episodes=cfg.eval_episodes, worlds=cfg.eval_worlds, seed=cfg.seed + 100,
                      progress=False)
    planner.model.train(was_training)
    return report.success_rate


def with_policy(cfg: PretrainConfig, **policy_overrides) -> PretrainConfig:
    """`cfg` with its policy config's fields replaced (net chosen from the backbone)."""
    net = default_net(cfg.backbone)
    net_fields = {k: policy_overrides.pop(k) for k in list(policy_overrides)
                  if k in NetConfig.__dataclass_fields__ and policy_overrides[k] is not None}
    net = dataclasses.replace(net, **net_fields)
    policy = dataclasses.replace(cfg.policy, net=net,
                                 **{k: v for k, v in policy_overrides.items() if v is not None})
    return dataclasses.replace(cfg, policy=policy)
