"""`refine-dp train-controller`: train a low-level policy, evaluate it held-out, export it.

    refine-dp train-controller --part upper --worlds 256 --out runs/upper

The upper-body recipe (sized for a 2-core CPU within an hour):
1. DAgger warm start from the privileged resolved-rate teacher (`learning.controller.dagger`);
2. PPO on the paper's tracking reward with the reward-weight curriculum, the critic warmed up
   first (`learning.controller.ppo`), until the iteration count or the time budget ends;
3. every `eval_every` iterations the deterministic actor is measured on held-out commands
   (`upper_eval`); the best one is exported to `OUT/export` (`upper.json`, `.safetensors`,
   `.onnx`) with `OUT/metrics.json` and `OUT/learning_curve.png`.

Killing and re-running the same command resumes: PPO from its latest checkpoint; a DAgger phase
that had not finished starts over (it takes minutes).
"""

from __future__ import annotations

import json
import time
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
                        threads=cfg.threads, backend=cfg.backend)


def train_controller(cfg: ControllerTrainConfig, progress: bool = True, log=print) -> dict:
    """Run the recipe; returns the final metrics (also written to OUT/metrics.json)."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    _init_distributed(cfg)
    (out / "train_config.json").write_text(json.dumps(_json(cfg), indent=1) + "\n")
    env = make_env(cfg)
    gen = torch.Generator().manual_seed(cfg.seed)
    ppo_dir = out / "ppo"
    warm_dir = out / "warm_start"
    init = None
    t0 = time.perf_counter()
    if latest_checkpoint(ppo_dir) if ppo_dir.exists() else None:
        log("PPO checkpoint found: resuming PPO")
    elif cfg.dagger.iterations > 0 and cfg.part == "upper":
        init = ActorCritic(env.obs_dim, env.critic_obs_dim, env.action_dim, cfg.ppo)
        if warm_dir.exists() and latest_checkpoint(warm_dir) is not None:
            load_module(init, load_checkpoint(warm_dir).tensors, "model", warm_dir)
            log("warm start loaded")
        else:
            def report(row: dict) -> None:
                with open(out / "dagger.jsonl", "a", encoding="utf-8") as f:
                    f.write(json.dumps(row) + "\n")
                if progress:
                    log(f"dagger {row['dagger_iteration']}/{cfg.dagger.iterations}: teacher "
                        f"{row['teacher_prob']:.2f}, loss {row['bc_loss']:.4f}, hand error "
                        f"{row['pos_err_median_m'] * 100:.1f} cm")
            (out / "dagger.jsonl").unlink(missing_ok=True)
            dagger(env, init, cfg.dagger, gen, log=report)
            save_checkpoint(warm_dir, cfg.dagger.iterations, {"dagger": asdict(cfg.dagger)},
                            module_tensors(init, "model"))
    warm_s = time.perf_counter() - t0
    evaluate, best = _evaluator(cfg, out, env)
    rank0 = _rank() == 0
    if init is not None and rank0:
        evaluate(init, tag="warm_start")
    model, state = train(env, replace(cfg.ppo, time_budget_s=cfg.time_budget_s), ppo_dir,
                         progress=progress and rank0, evaluate=evaluate,
                         eval_every=cfg.eval_every, log=log, init=init)
    if not rank0:
        return {}
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


def _rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if dist.is_initialized() else 0


def _init_distributed(cfg: ControllerTrainConfig) -> None:
    """Under torchrun (WORLD_SIZE > 1): join the process group (NCCL on CUDA, else gloo)."""
    import torch.distributed as dist

    from robot_io.sim.distributed import rank_info

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
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in (out / "ppo" / "metrics.jsonl").read_text().splitlines()
            if line.strip()] if (out / "ppo" / "metrics.jsonl").exists() else []
    evals = [json.loads(line) for line in (out / "evals.jsonl").read_text().splitlines()
             if line.strip()] if (out / "evals.jsonl").exists() else []
    dag = [json.loads(line) for line in (out / "dagger.jsonl").read_text().splitlines()
           if line.strip()] if (out / "dagger.jsonl").exists() else []
    fig, all_axes = plt.subplots(1, 3, figsize=(16, 4))
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
    axes[1].legend()
    fig.tight_layout()
    import io
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    write_bytes_atomic(out / "learning_curve.png", buf.getvalue())


def _json(cfg: ControllerTrainConfig) -> dict:
    return json.loads(json.dumps(asdict(cfg)))
