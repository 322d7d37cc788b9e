"""The learning pipeline end to end at toy size: collect, pre-train (and resume), fine-tune with
DPPO, MLP-FT and residual RL, reload, evaluate, deploy, and the command line.

Everything runs on a 2-episode heuristic dataset with a one-block DiT of width 32, so the whole
file takes seconds on 2 cores; the numbers learned mean nothing, the plumbing is what is tested.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from learning.deploy import PolicySource
from learning.diffusion.policy import DiffusionPolicy, RegressorPolicy
from learning.evaluate import evaluate
from learning.features import ObsSpec
from learning.planner import Planner
from learning.pretrain import PretrainConfig, pretrain, with_policy
from learning.rl.finetune import FinetuneConfig, finetune, prepare
from learning.rl.residual import ResidualPolicy
from robot_io.control.reference import ReferenceController
from robot_io.env import BatchedEnv
from robot_io.tasks import default_config
from robot_io.types import Command
from teleop_app.cli import main
from teleop_app.collect import collect

TINY = {"width": 32, "depth": 1, "heads": 2, "denoising_steps": 6, "ddim_steps": 3,
        "pred_horizon": 8, "act_steps": 4}


def quiet(*_: object) -> None:
    """A `log` that drops the progress messages."""


def pretrain_cfg(data: Path, out: Path, steps: int = 10, backbone: str = "dit") -> PretrainConfig:
    cfg = PretrainConfig(data=data, out=out, backbone=backbone, steps=steps, batch_size=16,
                         warmup_steps=2, valid_episodes=1, checkpoint_every=5)
    return with_policy(cfg, **TINY)


def finetune_cfg(policy: Path, out: Path, method: str = "dppo") -> FinetuneConfig:
    return FinetuneConfig(policy=policy, out=out, method=method, iterations=1, worlds=2,
                          steps_per_iter=1, ft_steps=2, critic_warmup_iters=0, epochs=1,
                          minibatch=64, mlpft_steps=2, residual_width=32, residual_depth=1,
                          threads=1)


def ckpt_of(run: Path) -> Path:
    return run / (run / "latest").read_text().strip()


# -- fixtures: one dataset and one run of each kind for the whole module ---------------------
@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("data") / "box"
    report = collect("box_pickup", "heuristic", episodes=2, worlds=2, out=out, threads=1,
                     progress=False)
    assert report.total_successes == 2
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="module")
def dit_run(dataset: Path, runs: Path) -> Path:
    pretrain(pretrain_cfg(dataset, runs / "dit"), progress=False, log=quiet)
    return runs / "dit"


@pytest.fixture(scope="module")
def regressor_run(dataset: Path, runs: Path) -> Path:
    pretrain(pretrain_cfg(dataset, runs / "mlp", backbone="mlp-regressor"), progress=False,
             log=quiet)
    return runs / "mlp"


@pytest.fixture(scope="module")
def dppo_run(dit_run: Path, runs: Path) -> Path:
    finetune(finetune_cfg(dit_run, runs / "dppo"), progress=False, log=quiet)
    return runs / "dppo"


@pytest.fixture(scope="module")
def env() -> BatchedEnv:
    return BatchedEnv("box_pickup", 2, threads=1, seed=3)


# -- pre-training ----------------------------------------------------------------------------
def test_pretrain_writes_a_run_and_resumes_to_more_steps(dataset: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    planner = pretrain(pretrain_cfg(dataset, run, steps=10), progress=False, log=quiet)
    assert planner.kind == "diffusion" and planner.task == "box_pickup"
    assert (run / "latest").read_text().strip() == "ckpt-0000010"
    assert sorted(p.name for p in run.iterdir()) == ["ckpt-0000005", "ckpt-0000010", "latest",
                                                     "metrics.jsonl", "status.json", "tb"]
    assert any((run / "tb").iterdir())
    files = {"policy.json", "policy.safetensors", "train.json", "train.safetensors"}
    assert {p.name for p in (run / "ckpt-0000010").iterdir()} == files
    meta = json.loads((run / "ckpt-0000010" / "policy.json").read_text())
    assert meta["format"] == "refine-dp-policy" and meta["metrics"]["step"] == 10
    assert meta["policy_config"]["denoising_steps"] == 6
    assert "valid_loss" in meta["metrics"]  # one of the two episodes is held out
    train = json.loads((run / "ckpt-0000010" / "train.json").read_text())
    assert [h["step"] for h in train["history"]] == [5, 10]

    messages: list[str] = []
    again = pretrain(pretrain_cfg(dataset, run, steps=15), progress=False, log=messages.append)
    assert messages == [f"resuming {run} from step 10 of 15"]
    assert again.meta["metrics"]["step"] == 15
    assert sorted(p.name for p in run.iterdir()) == ["ckpt-0000010", "ckpt-0000015", "latest",
                                                     "metrics.jsonl", "status.json", "tb"]
    train = json.loads((run / "ckpt-0000015" / "train.json").read_text())
    assert train["step"] == 15 and [h["step"] for h in train["history"]] == [5, 10, 15]


def test_a_resumed_run_matches_an_uninterrupted_one(dataset: Path, tmp_path: Path) -> None:
    """Killed after checkpoint 5 and resumed, a run ends with the very same weights: the data
    order, the noise, the optimiser and the EMA all continue from the checkpoint."""
    full = tmp_path / "full"
    pretrain(pretrain_cfg(dataset, full, steps=10), progress=False, log=quiet)
    cut = tmp_path / "cut"
    shutil.copytree(full, cut)
    shutil.rmtree(cut / "ckpt-0000010")
    (cut / "latest").write_text("ckpt-0000005\n")
    pretrain(pretrain_cfg(dataset, cut, steps=10), progress=False, log=quiet)
    for name in ("policy.safetensors", "train.safetensors"):
        want = load_file(str(full / "ckpt-0000010" / name))
        got = load_file(str(cut / "ckpt-0000010" / name))
        assert want.keys() == got.keys()
        assert all(torch.equal(want[k], got[k]) for k in want), name


# -- fine-tuning ---------------------------------------------------------------------------
def test_dppo_iteration_saves_the_split_policy(dit_run: Path, dppo_run: Path) -> None:
    lines = (dppo_run / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert record["step"] == 1 and {"pg_loss", "v_loss", "kl"} <= set(record)
    assert (dppo_run / "success_curve.png").stat().st_size > 0
    assert (dppo_run / "latest").read_text().strip() == "ckpt-0000001"

    tuned, base = Planner.load(dppo_run), Planner.load(dit_run)
    model = tuned.model
    assert isinstance(model, DiffusionPolicy) and model.ft_net is not None
    assert model.ft_steps == 2 and tuned.default_sampler == "ddpm"
    assert tuned.meta["finetune"]["method"] == "dppo"
    assert all(not p.requires_grad for p in model.net.parameters())
    # the frozen part is the pre-trained network, untouched
    frozen, pre = model.net.state_dict(), base.model.net.state_dict()
    assert all(torch.equal(frozen[k], pre[k]) for k in pre)


def test_mlp_ft_iteration_reloads(regressor_run: Path, runs: Path) -> None:
    out = runs / "mlpft"
    finetune(finetune_cfg(regressor_run, out, "mlp-ft"), progress=False, log=quiet)
    tuned = Planner.load(out)
    assert tuned.kind == "regressor" and tuned.meta["finetune"]["method"] == "mlp-ft"
    assert isinstance(tuned.model, RegressorPolicy) and tuned.model.ft_net is not None
    assert (out / "metrics.jsonl").is_file()


def test_mlp_ft_exploration_noise_follows_min_std(regressor_run: Path, runs: Path) -> None:
    # `--min-std` sets the std of MLP-FT's last transition, the noise left on the executed chunk.
    planner = Planner.load(regressor_run)
    cfg = dataclasses.replace(finetune_cfg(regressor_run, runs / "unused", "mlp-ft"),
                              min_sampling_std=0.05, mlpft_steps=3)
    actor = prepare(planner, cfg)
    assert actor.sigma.tolist() == pytest.approx([0.3, 0.175, 0.05])
    assert actor.theta.tolist() == pytest.approx([0.2, 0.6, 1.0])


def test_residual_iteration_reloads(dit_run: Path, runs: Path) -> None:
    out = runs / "residual"
    finetune(finetune_cfg(dit_run, out, "residual"), progress=False, log=quiet)
    tuned = Planner.load(out)
    assert tuned.kind == "residual" and isinstance(tuned.model, ResidualPolicy)
    assert tuned.meta["finetune"]["residual"]["width"] == 32
    obs = torch.zeros(1, tuned.cfg.obs_horizon, tuned.obs_spec.dim)
    assert tuned.act(obs).shape == (1, 8, 23)


# -- evaluation and deployment -----------------------------------------------------------------
def test_evaluate_the_fine_tuned_policy(dppo_run: Path) -> None:
    planner = Planner.load(dppo_run)
    short = dataclasses.replace(default_config("box_pickup"), time_limit_s=1.0)
    report = evaluate("box_pickup", lambda env: PolicySource(planner, env.num_worlds, seed=0,
                                                             robot=env.robot),
                      episodes=2, worlds=2, seed=0, task_config=short, threads=1,
                      progress=False)
    assert len(report.per_episode) == 2
    latency = report.policy_latency
    assert latency is not None and latency["calls"] >= 2 and latency["sampler"] == "ddpm"
    assert latency["median_ms"] > 0


def test_a_fine_tuned_policy_refuses_ddim(dppo_run: Path) -> None:
    planner = Planner.load(dppo_run)
    with pytest.raises(ValueError, match="samples with ddpm"):
        evaluate("box_pickup", lambda env: PolicySource(planner, env.num_worlds, sampler="ddim",
                                                        robot=env.robot),
                 episodes=1, worlds=1, threads=1, progress=False)


@pytest.mark.parametrize(("which", "sampler"), [("dit_run", "ddim"), ("dppo_run", "ddpm")])
def test_reloaded_planners_act_identically(which: str, sampler: str, env: BatchedEnv,
                                           request: pytest.FixtureRequest) -> None:
    run = request.getfixturevalue(which)
    first, second = Planner.load(run), Planner.load(run)
    assert first.default_sampler == sampler
    feat = first.obs_spec.observe(env.reset())
    hist = feat.unsqueeze(1).expand(-1, first.cfg.obs_horizon, -1).contiguous()
    a = first.act(hist, torch.Generator().manual_seed(7))
    b = second.act(hist, torch.Generator().manual_seed(7))
    assert a.shape == (2, 8, 23) and torch.equal(a, b)
    assert not torch.equal(a, first.act(hist, torch.Generator().manual_seed(8)))


def _closed_loop(source: PolicySource, env: BatchedEnv, ticks: int
                 ) -> tuple[list, list[Command]]:
    """Run `source` through the reference controller; the observations and commands."""
    controller = ReferenceController(env)
    obs = env.reset()
    controller.reset(obs)
    source.reset(obs)
    seen, cmds = [], []
    for _ in range(ticks):
        cmd = source.next_command(obs)
        seen.append(obs)
        cmds.append(cmd)
        env.apply(controller.step(cmd, obs))
        obs = env.observe()
    return seen, cmds


def _replay(source: PolicySource, seen: list) -> list[Command]:
    source.reset(seen[0])
    return [source.next_command(obs) for obs in seen]


def _same(a: list[Command], b: list[Command]) -> bool:
    return all(torch.equal(getattr(x, f), getattr(y, f))
               for x, y in zip(a, b, strict=True) for f in Command.field_names())


@pytest.mark.parametrize("which", ["dit_run", "dppo_run"])
def test_policy_sources_with_one_seed_send_the_same_commands(
        which: str, env: BatchedEnv, request: pytest.FixtureRequest) -> None:
    planner = Planner.load(request.getfixturevalue(which))
    ticks = 2 * planner.cfg.act_steps * planner.cfg.action_period_ticks + 1  # three chunks
    seen, cmds = _closed_loop(PolicySource(planner, 2, seed=4, robot=env.robot), env, ticks)
    again = _replay(PolicySource(planner, 2, seed=4), seen)
    assert _same(cmds, again)
    other = _replay(PolicySource(planner, 2, seed=5), seen)
    assert not _same(cmds, other)
    # a command is held for an action period: ticks 0..4 send the chunk's first row
    assert all(torch.equal(cmds[0].base_vel, cmds[t].base_vel) for t in range(1, 5))
    assert ObsSpec.of(seen[0]) == planner.obs_spec


# -- the command line ------------------------------------------------------------------------
def test_cli_pretrain(dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    status = main(["pretrain", "--data", str(dataset), "--out", str(out), "--steps", "3",
                   "--batch-size", "8", "--checkpoint-every", "3", "--width", "32", "--depth",
                   "1", "--heads", "2", "--denoising-steps", "4", "--ddim-steps", "2",
                   "--pred-horizon", "8", "--act-steps", "4", "--no-progress"])
    assert status == 0
    assert "trained to step 3" in capsys.readouterr().out
    planner = Planner.load(out)
    assert planner.cfg.denoising_steps == 4 and planner.cfg.net.width == 32


def test_cli_refuses_dppo_on_a_regressor(regressor_run: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["finetune", "--policy", str(regressor_run), "--method", "dppo", "--out",
                   str(tmp_path / "ft"), "--iterations", "1", "--worlds", "2", "--threads", "1",
                   "--no-progress"])
    assert status == 2
    err = capsys.readouterr().err
    assert err.startswith("refine-dp: error: ")
    assert "DPPO fine-tunes a diffusion policy" in err and "--method mlp-ft" in err
    assert not (tmp_path / "ft" / "latest").exists()


def test_cli_bench_policy(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "policy", "--calls", "3", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["calls"] == 3 and result["sampler"] == "ddim"
    assert result["chunk_median_ms"] > 0
