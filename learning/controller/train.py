"""`refine-dp train-controller`: train a low-level policy, evaluate it held-out, export it.

    refine-dp train-controller --part upper --worlds 256 --out runs/upper

The upper-body recipe (sized for a 2-core CPU within an hour):
1. DAgger warm start from the privileged resolved-rate teacher (`learning.controller.dagger`);
2. PPO on the paper's tracking reward with the reward-weight curriculum, the critic warmed up
   first (`learning.controller.ppo`), until the iteration count or the time budget ends;
3. every `eval_every` iterations the deterministic actor is measured on held-out commands
   (`upper_eval`); the best one is exported to `OUT/export` (`upper.json`, `.safetensors`,
   `.onnx`) with `OUT/metrics.json` and `OUT/learning_curve.png`.

The run follows the training-process contract of `learning.progress` (status.json and
metrics.jsonl in OUT; a step is a DAgger iteration, then a PPO iteration, and metrics records name
their `phase`). SIGTERM stops after the current iteration: in PPO with a checkpoint, in DAgger
without one (the warm start is checkpointed only whole); the state becomes "cancelled" and the
command exits 0. Re-running the same command resumes: PPO from its latest checkpoint; a DAgger
phase that had not finished starts over (it takes minutes). With a time budget the run's total
steps are re-estimated from the measured PPO rate (`expected_ppo_iterations`).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from learning.checkpoint import (
    latest_checkpoint,
    load_checkpoint,
    load_module,
    module_tensors,
    save_checkpoint,
)
from learning.controller.dagger import DaggerConfig, dagger
from learning.controller.ppo import ActorCritic, PPOConfig, train
from learning.progress import TrainingJob, within_job
from robot_io.sim.distributed import rank_info
from robot_io.sim.render import write_bytes_atomic

PARTS = ("upper", "lower")


@dataclass(frozen=True)
class ControllerTrainConfig:
    """What `refine-dp train-controller` runs."""

    part: str = "upper"
    out: str = "runs/controller_upper"
    worlds: int = 256
    backend: str = "mujoco"
    device: str = "cpu"
    threads: int = 0
    seed: int = 0
    time_budget_s: float = 2100.0       # PPO stops here (the warm start comes first)
    eval_every: int = 50
    eval_worlds: int = 64
    dagger: DaggerConfig = field(default_factory=lambda: DaggerConfig(
        iterations=200, teacher_decay_iterations=40, max_steps=200))
    # A warm-started actor is fragile: a small, KL-adapted step, a tight clip, little noise and
    # a pull toward the teacher (larger steps destroyed it within one update).
    ppo: PPOConfig = field(default_factory=lambda: PPOConfig(
        iterations=3000, lr=2e-5, desired_kl=0.005, clip=0.1, init_std=0.1, entropy_coef=0.0,
        critic_warmup_iterations=15, curriculum_iterations=800, bc_coef=1.0))

    def __post_init__(self) -> None:
        if self.part not in PARTS:
            raise ValueError(f"unknown part {self.part!r}; known parts: {', '.join(PARTS)}")
        if self.worlds < 1:
            raise ValueError(f"--worlds must be at least 1, got {self.worlds}")


def load_run_actor(run: Path):
    """The deterministic actor of a run's latest PPO checkpoint, as an exportable `PolicyMLP`.

    Raises:
        CheckpointError: the run has no PPO checkpoint (the message names the folder).
    """
    saved = json.loads((run / "train_config.json").read_text()) if (
        run / "train_config.json").is_file() else None
    if saved is None:
        from learning.checkpoint import CheckpointError
        raise CheckpointError(f"{run} is not a train-controller run (no train_config.json)")
    ppo = PPOConfig(**{k: tuple(v) if isinstance(v, list) else v
                       for k, v in saved["ppo"].items()})
    cfg = ControllerTrainConfig(part=saved["part"], worlds=1, threads=1)
    env = make_env(cfg)
    model = ActorCritic(env.obs_dim, env.critic_obs_dim, env.action_dim, ppo)
    ck = load_checkpoint(run / "ppo")
    load_module(model, ck.tensors, "model", ck.path)
    return model.export(env)


def make_env(cfg: ControllerTrainConfig):
    """The training environment of `cfg.part` on `cfg.backend`."""
    if cfg.part == "upper":
        from learning.controller.upper_env import UpperBodyEnv, UpperEnvConfig

        return UpperBodyEnv(UpperEnvConfig(num_worlds=cfg.worlds), seed=cfg.seed,
                            threads=cfg.threads, backend=cfg.backend,
                            device=cfg.device if cfg.backend == "warp" else None)
    from learning.controller.lower_env import LowerBodyEnv, LowerEnvConfig

    if cfg.backend != "mujoco":
        raise ValueError("the lower-body environment runs on the CPU MuJoCo backend only (its "
                         "foot contact sensors are untested on MuJoCo Warp); use --backend mujoco")

    return LowerBodyEnv(LowerEnvConfig(num_worlds=cfg.worlds), seed=cfg.seed,
                        threads=cfg.threads)


class _Stopped(Exception):
    """Raised from DAgger's per-iteration callback to end the warm start when asked to stop."""


def expected_ppo_iterations(iteration: int, wall_s: float, iterations: int,
                            time_budget_s: float) -> int:
    """The PPO iterations a run will end with: `iterations`, or fewer when the time budget ends
    it first at the rate measured so far (it stops before the first iteration that would start
    at or after the budget: ceil(budget / seconds per iteration))."""
    if time_budget_s <= 0 or iteration <= 0 or wall_s <= 0:
        return iterations
    return max(iteration, min(iterations, math.ceil(time_budget_s * iteration / wall_s)))


def train_controller(cfg: ControllerTrainConfig, progress: bool = True, log=print,
                     job: TrainingJob | None = None) -> dict:
    """Run the recipe; returns the final metrics (also written to OUT/metrics.json), or
    `{"part", "state": "cancelled", "ppo_iterations"}` when it was asked to stop.

    Args:
        job: the entered job to report to and take stop requests from (default: one of its own
            for `cfg.out`, which handles SIGTERM; only rank 0 of a distributed run writes).
    """
    return within_job(job, cfg.out, "train-controller",
                      lambda j: _train_controller(cfg, j, progress, log),
                      write=rank_info().rank == 0)


def _train_controller(cfg: ControllerTrainConfig, job: TrainingJob, progress: bool,
                      log) -> dict:
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    _init_distributed(cfg)
    (out / "train_config.json").write_text(json.dumps(_json(cfg), indent=1) + "\n")
    env = make_env(cfg)
    gen = torch.Generator().manual_seed(cfg.seed)
    ppo_dir = out / "ppo"
    warm_steps = _warm_steps(cfg)
    stop = _stop_check(job)
    t0 = time.perf_counter()
    try:
        init = _warm_start(cfg, env, gen, job, stop, progress, log)
    except _Stopped:
        log("stopped during the warm start: it starts over when the command runs again")
        return {"part": cfg.part, "state": "cancelled", "ppo_iterations": 0}
    warm_s = time.perf_counter() - t0
    evaluate, best = _evaluator(cfg, out, env)
    rank0 = _rank() == 0
    if init is not None and rank0:
        evaluate(init, tag="warm_start")

    def on_iteration(row: dict) -> None:
        it = row["iteration"]
        job.set_total_steps(warm_steps + expected_ppo_iterations(
            it, row["wall_s"], cfg.ppo.iterations, cfg.time_budget_s))
        job.log(warm_steps + it, phase="ppo",
                **{k: v for k, v in row.items() if k not in ("iteration", "wall_s")})
        newest = latest_checkpoint(ppo_dir)
        if newest is not None and str(newest) != job.last_checkpoint:
            job.checkpointed(newest)

    model, state = train(env, replace(cfg.ppo, time_budget_s=cfg.time_budget_s), ppo_dir,
                         progress=progress and rank0, evaluate=evaluate,
                         eval_every=cfg.eval_every, log=log, init=init, should_stop=stop,
                         on_iteration=on_iteration)
    if not rank0:
        return {}
    job.checkpointed(latest_checkpoint(ppo_dir))
    if job.should_stop:  # the final evaluation runs when the command runs again
        return {"part": cfg.part, "state": "cancelled", "ppo_iterations": state.iteration}
    job.set_total_steps(warm_steps + state.iteration)  # the time budget may have ended it
    final = evaluate(model, tag="final")
    if warm_s < 1.0 and (out / "dagger.jsonl").is_file():  # resumed: the warm start ran before
        lines = [ln for ln in (out / "dagger.jsonl").read_text().splitlines() if ln.strip()]
        warm_s = json.loads(lines[-1])["wall_s"] if lines else warm_s
    metrics = {"part": cfg.part, "warm_start_s": round(warm_s, 1),
               "ppo_iterations": state.iteration, "ppo_env_steps": state.env_steps,
               "ppo_wall_s": round(state.wall_s, 1), "final": final,
               "best": best.get("metrics"), "best_tag": best.get("tag"),
               "export": str(out / "export")}
    if cfg.part == "upper":
        metrics["held_out_best"] = _full_upper_eval(out / "export", cfg)
    write_bytes_atomic(out / "metrics.json", (json.dumps(metrics, indent=1) + "\n").encode())
    _plot(out)
    return metrics


def _warm_steps(cfg: ControllerTrainConfig) -> int:
    """The job's steps before PPO: the DAgger iterations of an upper-body run."""
    return cfg.dagger.iterations if cfg.part == "upper" else 0


def _warm_start(cfg: ControllerTrainConfig, env, gen: torch.Generator, job: TrainingJob,
                stop: Callable[[], bool], progress: bool, log) -> ActorCritic | None:
    """Start `job` where the run stands; the warm-started model PPO begins from.

    Runs DAgger unless the run already has its result or got to PPO. Returns None when PPO
    resumes from its checkpoint or the part has no warm start.

    Raises:
        _Stopped: asked to stop during DAgger (which is checkpointed only whole).
    """
    out = Path(cfg.out)
    ppo_dir, warm_dir = out / "ppo", out / "warm_start"
    warm_steps = _warm_steps(cfg)
    total = warm_steps + cfg.ppo.iterations
    resume = latest_checkpoint(ppo_dir) if ppo_dir.exists() else None
    if resume is not None:
        log("PPO checkpoint found: resuming PPO")
        done = load_checkpoint(resume, train=True).train_meta["state"]["iteration"]
        job.start(warm_steps + done, total, resume)
        return None
    if warm_steps == 0:
        job.start(0, total)
        return None
    init = ActorCritic(env.obs_dim, env.critic_obs_dim, env.action_dim, cfg.ppo)
    warm = latest_checkpoint(warm_dir) if warm_dir.exists() else None
    if warm is not None:
        load_module(init, load_checkpoint(warm).tensors, "model", warm_dir)
        log("warm start loaded")
        job.start(warm_steps, total, warm)
        return init
    job.start(0, total)

    def report(row: dict) -> None:
        with open(out / "dagger.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        job.log(row["dagger_iteration"], phase="dagger",
                **{k: v for k, v in row.items() if k not in ("dagger_iteration", "wall_s")})
        if progress:
            log(f"dagger {row['dagger_iteration']}/{cfg.dagger.iterations}: teacher "
                f"{row['teacher_prob']:.2f}, loss {row['bc_loss']:.4f}, hand error "
                f"{row['pos_err_median_m'] * 100:.1f} cm")
        if stop():
            raise _Stopped

    (out / "dagger.jsonl").unlink(missing_ok=True)
    dagger(env, init, cfg.dagger, gen, log=report)
    job.checkpointed(save_checkpoint(warm_dir, cfg.dagger.iterations,
                                     {"dagger": asdict(cfg.dagger)},
                                     module_tensors(init, "model")))
    return init


def _rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if dist.is_initialized() else 0


def _stop_check(job: TrainingJob) -> Callable[[], bool]:
    """`job.should_stop` agreed by all ranks of a distributed run (any rank asked: all stop);
    call it at the same point of the loop on every rank."""
    import torch.distributed as dist

    def stop() -> bool:
        if not dist.is_initialized():
            return job.should_stop
        on_gpu = dist.get_backend() == "nccl"
        device = torch.device("cuda", torch.cuda.current_device()) if on_gpu else None
        flag = torch.tensor([float(job.should_stop)], device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item() > 0)

    return stop


def _init_distributed(cfg: ControllerTrainConfig) -> None:
    """Under torchrun (WORLD_SIZE > 1): join the process group (NCCL on CUDA, else gloo)."""
    import torch.distributed as dist

    if rank_info().world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if cfg.device.startswith("cuda") else "gloo")


def _evaluator(cfg: ControllerTrainConfig, out: Path, env):
    """A held-out evaluation callback that exports the best actor so far."""
    from learning.controller.export import export_policy

    best: dict = {}
    # A resumed run remembers the best actor so far (it is the one in OUT/export).
    if (out / "evals.jsonl").is_file() and (out / "export").is_dir():
        for line in (out / "evals.jsonl").read_text().splitlines():
            row = json.loads(line) if line.strip() else {}
            if row.get("score", float("inf")) < best.get("score", float("inf")):
                best.update(score=row["score"], metrics=row, tag=row.get("tag") or "ppo")

    def evaluate(model: ActorCritic, tag: str | None = None) -> dict:
        metrics = _quick_eval(cfg, model)
        score = metrics.get("score", float("inf"))
        if score < best.get("score", float("inf")):
            best.update(score=score, metrics=metrics, tag=tag or "ppo")
            export_policy(model.export(env), out / "export", onnx=True)
        with open(out / "evals.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps({"tag": tag, **metrics}) + "\n")
        return metrics

    return evaluate, best


def _quick_eval(cfg: ControllerTrainConfig, model: ActorCritic) -> dict:
    if cfg.part != "upper":
        return {}
    from learning.controller.upper_eval import evaluate_upper

    m = evaluate_upper(model.mean, worlds=cfg.eval_worlds, targets=3, front_only=False,
                       threads=cfg.threads)
    # Model selection: position error in cm plus orientation error in 0.05 rad units.
    m["score"] = m["pos_err_median_m"] * 100 + m["rot_err_median_rad"] / 0.05
    return m


def _full_upper_eval(export: Path, cfg: ControllerTrainConfig) -> dict:
    """The exported policy on the held-out pool: all commands and the hands-in-front part,
    nominal and with the training randomisation."""
    from learning.controller.upper_eval import evaluate_upper
    from robot_io.control.policy_runtime import load_policy

    policy = load_policy(export, part="upper")
    return {name: evaluate_upper(policy, worlds=2 * cfg.eval_worlds, targets=4,
                                 threads=cfg.threads, **kw)
            for name, kw in (("all", {}), ("front", {"front_only": True}),
                             ("all_randomised", {"randomised": True}))}


def _plot(out: Path) -> None:
    from matplotlib.figure import Figure  # no pyplot: no process-wide backend

    rows = [json.loads(line) for line in (out / "ppo" / "metrics.jsonl").read_text().splitlines()
            if line.strip()] if (out / "ppo" / "metrics.jsonl").exists() else []
    evals = [json.loads(line) for line in (out / "evals.jsonl").read_text().splitlines()
             if line.strip()] if (out / "evals.jsonl").exists() else []
    dag = [json.loads(line) for line in (out / "dagger.jsonl").read_text().splitlines()
           if line.strip()] if (out / "dagger.jsonl").exists() else []
    fig = Figure(figsize=(16, 4))
    all_axes = fig.subplots(1, 3)
    if dag:
        ax = all_axes[0]
        t = [r["wall_s"] / 60 for r in dag]
        ax.plot(t, [r["pos_err_median_m"] * 100 for r in dag], label="hand error, all ticks [cm]")
        ax.plot(t, [r["bc_loss"] * 100 for r in dag], label="BC loss x 100")
        ax.plot(t, [r["teacher_prob"] * 10 for r in dag], ":", label="teacher share x 10")
        ax.set(xlabel="warm-start wall-clock [min]", title="DAgger warm start", yscale="log")
        ax.legend()
    axes = all_axes[1:]
    if rows:
        t = [r["wall_s"] / 60 for r in rows]
        axes[0].plot(t, [r["reward_per_step"] for r in rows])
        axes[0].set(xlabel="PPO wall-clock [min]", ylabel="reward per step",
                    title="PPO training reward")
        ev = [r for r in rows if "eval/pos_err_median_m" in r]
        if ev:
            ax = axes[1]
            ax.plot([r["wall_s"] / 60 for r in ev],
                    [r["eval/pos_err_median_m"] * 100 for r in ev], "o-", label="position [cm]")
            ax.plot([r["wall_s"] / 60 for r in ev],
                    [r["eval/rot_err_median_rad"] * 10 for r in ev], "s-",
                    label="orientation [0.1 rad]")
    if evals and evals[0].get("tag") == "warm_start" and "pos_err_median_m" in evals[0]:
        axes[1].axhline(evals[0]["pos_err_median_m"] * 100, ls=":", c="C0",
                        label="after warm start")
    axes[1].set(xlabel="PPO wall-clock [min]", ylabel="held-out median error",
                title="held-out hand tracking")
    if axes[1].get_legend_handles_labels()[0]:  # a lower-body run has no held-out curves
        axes[1].legend()
    fig.tight_layout()
    import io
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    write_bytes_atomic(out / "learning_curve.png", buf.getvalue())


def _json(cfg: ControllerTrainConfig) -> dict:
    return json.loads(json.dumps(asdict(cfg)))
