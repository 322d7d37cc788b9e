"""Every `refine-dp` setting has one default: its dataclass's.

Parsing only (nothing runs): each command's least command line gives the dataclass defaults, the
library functions the handlers call default to the same values, and the documented command lines
users already have parse to the settings they meant.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, get_args

import pytest

from datasets.bench_recorder import RecorderBenchConfig
from learning.bench_policy import PolicyBenchConfig
from learning.controller.train import ControllerTrainConfig
from learning.diffusion.policy import SAMPLERS, PolicyConfig
from learning.pretrain import PretrainConfig, with_policy
from learning.rl.finetune import FinetuneConfig
from robot_io.control import CONTROLLERS, ControllerChoice
from teleop_app.cli import COMMANDS, Group, find_command, load_handler, settings_type
from teleop_app.app.bench_app import AppBenchConfig
from teleop_app.app_cli import AppConfig
from teleop_app.cli_parsing import parse
from teleop_app.commands import (
    BackendName,
    BenchPlannersConfig,
    BenchRecorderCommand,
    BenchRunnerConfig,
    BenchSimConfig,
    CollectConfig,
    DemoConfig,
    EvalConfig,
    PlannerName,
    RenderConfig,
    ReplayConfig,
    SamplerName,
    TasksConfig,
)
from teleop_app.controller_args import ControllerName
from teleop_app.controller_cli import (
    BenchControllerEnvConfig,
    EvalControllerConfig,
    ExportControllerConfig,
    TrainControllerCommand,
)
from teleop_app.dataset_cli import (
    DatasetDeleteConfig,
    DatasetExportConfig,
    DatasetFilterConfig,
    DatasetImportConfig,
    DatasetInfoConfig,
    DatasetMergeConfig,
    DatasetSplitConfig,
    DatasetValidateConfig,
)
from teleop_app.learn_cli import BenchPolicyCommand, FinetuneCommand, PretrainCommand

P = Path  # the paths are parsed, never opened


def parsed(argv: list[str]) -> Any:
    """The settings `refine-dp argv` hands to its handler (the path `main` takes, minus the run)."""
    path, command, rest = find_command(argv)
    return parse(settings_type(load_handler(command)), rest, prog="refine-dp " + " ".join(path))


def all_commands() -> set[tuple[str, ...]]:
    out = set()
    for name, node in COMMANDS.items():
        if isinstance(node, Group):
            out |= {(name, sub) for sub in node.commands}
        else:
            out.add((name,))
    return out


# Each command with its required arguments only, and the settings that must give: the dataclass
# with nothing but those values.
LEAST: dict[tuple[str, ...], tuple[list[str], Callable[[], Any]]] = {
    ("tasks",): ([], TasksConfig),
    ("render",): (["--task", "box_pickup", "--out", "x.png"],
                  lambda: RenderConfig("box_pickup", P("x.png"))),
    ("demo",): ([], DemoConfig),
    ("collect",): (["--task", "box_pickup", "--episodes", "3", "--out", "ds"],
                   lambda: CollectConfig("box_pickup", 3, P("ds"))),
    ("replay",): (["ds", "--episode", "2"], lambda: ReplayConfig(P("ds"), 2)),
    ("eval",): (["--source", "heuristic", "--task", "box_pickup"],
                lambda: EvalConfig("box_pickup", source="heuristic")),
    ("pretrain",): (["--data", "ds", "--out", "run"],
                    lambda: PretrainCommand(PretrainConfig(P("ds"), P("run")))),
    ("finetune",): (["--policy", "run", "--out", "ft"],
                    lambda: FinetuneCommand(FinetuneConfig(P("run"), P("ft")))),
    ("train-controller",): (["--part", "lower", "--out", "run"],
                            lambda: TrainControllerCommand(ControllerTrainConfig("lower", "run"))),
    ("export-controller",): (["--run", "run", "--out", "x"],
                             lambda: ExportControllerConfig(P("run"), P("x"))),
    ("eval-controller",): (["--mode", "random"], lambda: EvalControllerConfig("random")),
    ("bench", "sim"): (["--task", "box_pickup", "--worlds", "4"],
                       lambda: BenchSimConfig("box_pickup", 4)),
    ("bench", "planners"): ([], BenchPlannersConfig),
    ("bench", "recorder"): ([], lambda: BenchRecorderCommand(RecorderBenchConfig())),
    ("bench", "runner"): ([], BenchRunnerConfig),
    ("bench", "app"): ([], AppBenchConfig),
    ("app",): ([], AppConfig),
    ("bench", "policy"): ([], lambda: BenchPolicyCommand(PolicyBenchConfig())),
    ("bench", "controller-env"): ([], BenchControllerEnvConfig),
    ("dataset", "info"): (["ds"], lambda: DatasetInfoConfig(P("ds"))),
    ("dataset", "validate"): (["ds"], lambda: DatasetValidateConfig(P("ds"))),
    ("dataset", "split"): (["ds"], lambda: DatasetSplitConfig(P("ds"))),
    ("dataset", "merge"): (["d", "a"], lambda: DatasetMergeConfig(P("d"), (P("a"),))),
    ("dataset", "filter"): (["a", "b"], lambda: DatasetFilterConfig(P("a"), P("b"))),
    ("dataset", "delete"): (["ds", "4"], lambda: DatasetDeleteConfig(P("ds"), (4,))),
    ("dataset", "export"): (["ds", "--format", "robomimic", "--out", "x.h5"],
                            lambda: DatasetExportConfig(P("ds"), "robomimic", P("x.h5"))),
    ("dataset", "import"): (["x.h5", "--format", "robomimic", "--out", "ds"],
                            lambda: DatasetImportConfig(P("x.h5"), "robomimic", P("ds"))),
}


def test_every_command_is_checked() -> None:
    assert set(LEAST) == all_commands()


@pytest.mark.parametrize("path", sorted(LEAST), ids=" ".join)
def test_a_flag_left_out_is_the_dataclass_default(path: tuple[str, ...]) -> None:
    argv, expected = LEAST[path]
    assert parsed([*path, *argv]) == expected()


def test_the_controller_flags_default_to_controller_choice() -> None:
    assert parsed(["collect", *LEAST[("collect",)][0]]).controller == ControllerChoice()
    assert parsed(["replay", "ds", "--episode", "0"]).controller is None  # the recorded one


def test_the_resolved_configs_keep_the_library_defaults() -> None:
    pretrain = parsed(["pretrain", "--data", "ds", "--out", "run"])
    assert pretrain.config() == with_policy(PretrainConfig(P("ds"), P("run")))  # net: backbone's
    assert parsed(["finetune", "--policy", "r", "--out", "f"]).config() == FinetuneConfig(
        P("r"), P("f"))
    train = parsed(["train-controller", "--part", "upper", "--out", "run"])
    assert train.config(rank=0) == ControllerTrainConfig("upper", "run")  # mujoco: its cpu


# The functions the handlers call, and the fields whose defaults they must share. Fields left out
# mean something else there: `out` None is "out/...TASK-LABEL" for the command but "write nothing"
# for the function; eval's device and eval-controller's mode-specific settings are None until
# given, and the function then supplies its default (eval-controller's help shows it: see below).
LIBRARY = [
    (RenderConfig, "robot_io.sim.render:render_world", {}, set()),
    (BenchSimConfig, "robot_io.sim.bench:bench_sim", {}, set()),
    (BenchRunnerConfig, "robot_io.sim.bench_runner:bench_runner", {}, {"source"}),
    (BenchPlannersConfig, "planners.heuristic.bench:bench_planners", {}, set()),
    (CollectConfig, "teleop_app.collect:collect", {}, set()),
    (EvalConfig, "learning.evaluate:evaluate", {"video": "video_episodes"}, {"out"}),
    (EvalConfig, "learning.deploy:make_policy_source", {}, {"device"}),
    (ReplayConfig, "teleop_app.replay_video:replay_to_media", {}, set()),
    (DemoConfig, "teleop_app.demo:run_demo", {}, set()),
    (DatasetSplitConfig, "datasets.curation:split", {}, set()),
    (DatasetFilterConfig, "datasets.curation:filter_dataset", {}, {"success"}),
    (DatasetExportConfig, "datasets.lerobot:export_lerobot", {}, set()),
    (EvalControllerConfig, "learning.controller.evaluate:evaluate_controller", {},
     {"out", "task", "seconds", "episodes"}),
    (BenchControllerEnvConfig, "learning.controller.bench:bench_controller_env", {}, set()),
    (ExportControllerConfig, "learning.controller.export:export_policy", {}, set()),
]


@pytest.mark.parametrize(("settings", "function", "renamed", "meaning_differs"), LIBRARY,
                         ids=[row[1] for row in LIBRARY])
def test_the_function_called_defaults_to_the_same_values(
        settings: type, function: str, renamed: dict[str, str],
        meaning_differs: set[str]) -> None:
    import importlib

    module, _, name = function.partition(":")
    params = inspect.signature(getattr(importlib.import_module(module), name)).parameters
    compared = []
    for field in dataclasses.fields(settings):
        param = params.get(renamed.get(field.name, field.name))
        if (param is None or param.default is inspect.Parameter.empty
                or field.default is dataclasses.MISSING or field.name in meaning_differs):
            continue
        default = field.default
        if field.name == "controller" and param.default is None:
            default = None if default == ControllerChoice() else default  # None: the reference
        assert default == param.default, f"{settings.__name__}.{field.name}"
        compared.append(field.name)
    assert compared  # the row checks something


def test_eval_controller_help_shows_the_defaults_of_evaluate_controller(
        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        parsed(["eval-controller", "--help"])
    assert exc.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: pick_place)" in text and "(default: 20)" in text


def test_choices_are_the_registries() -> None:
    from robot_io.sim.factory import BACKENDS
    from teleop_app.collect import SOURCES

    assert get_args(PlannerName) == SOURCES
    assert set(get_args(SamplerName)) == set(SAMPLERS)
    assert set(get_args(BackendName)) == set(BACKENDS)
    assert get_args(ControllerName) == CONTROLLERS


# -- the command lines users have (README, docs, module docstrings) -----------------------------
DEFAULT_TRAIN = ControllerTrainConfig()
OLD_STYLE: list[tuple[str, Any]] = [
    ("collect --task box_pickup --source heuristic --episodes 4 --worlds 2 --out DIR "
     "--keep-failures --no-progress",
     CollectConfig("box_pickup", 4, P("DIR"), source="heuristic", worlds=2, keep_failures=True,
                   progress=False)),
    ("collect --task box_pickup --episodes 1 --out DIR --controller learned "
     "--controller-weights W --controller-runtime onnx",
     CollectConfig("box_pickup", 1, P("DIR"),
                   controller=ControllerChoice("learned", P("W"), "onnx"))),
    ("dataset export DIR --format lerobot --out PATH",
     DatasetExportConfig(P("DIR"), "lerobot", P("PATH"))),
    ("dataset filter SRC DEST --task box_pickup --source scripted --failures --min-length 3 "
     "--max-length 9",
     DatasetFilterConfig(P("SRC"), P("DEST"), task="box_pickup", source="scripted",
                         failures=True, min_length=3, max_length=9)),
    ("dataset merge DEST A B", DatasetMergeConfig(P("DEST"), (P("A"), P("B")))),
    ("dataset delete DIR 1 6", DatasetDeleteConfig(P("DIR"), (1, 6))),
    ("dataset split DIR --valid-fraction 0.2 --seed 1", DatasetSplitConfig(P("DIR"), 0.2, 1)),
    ("bench sim --task box_pickup --worlds 64 --json",
     BenchSimConfig("box_pickup", 64, json=True)),
    ("bench sim --task box_pickup --worlds 4096 --backend warp --device cuda",
     BenchSimConfig("box_pickup", 4096, backend="warp", device="cuda")),
    ("bench planners --tasks box_pickup pick_place --episodes 10 --worlds 5 --seed 2 --json",
     BenchPlannersConfig(("box_pickup", "pick_place"), 10, 5, seed=2, json=True)),
    ("bench policy --policy RUN --calls 3 --sampler ddpm --threads 1 --json",
     BenchPolicyCommand(PolicyBenchConfig(P("RUN"), 3, "ddpm"), threads=1, json=True)),
    ("bench controller-env --part lower --worlds 16 --threads 2 --seconds 1 --json",
     BenchControllerEnvConfig("lower", 16, 2, 1.0, json=True)),
    ("replay DIR --episode 3 --frames F --mode controller --controller learned "
     "--controller-runtime onnx",
     ReplayConfig(P("DIR"), 3, frames=P("F"), mode="controller",
                  controller=ControllerChoice("learned", None, "onnx"))),
    ("eval --policy RUN --task box_pickup --episodes 100 --worlds 50 --sampler ddim --widen 2 "
     "--video 1 --threads 2 --device cpu --json --no-progress",
     EvalConfig("box_pickup", policy=P("RUN"), episodes=100, worlds=50, sampler="ddim",
                widen=2.0, video=1, threads=2, device="cpu", json=True, progress=False)),
    ("eval-controller --mode planner --task box_pickup --episodes 2 --worlds 2 --out O",
     EvalControllerConfig("planner", task="box_pickup", episodes=2, worlds=2, out=P("O"))),
    ("export-controller --run RUN --out DIR --no-onnx",
     ExportControllerConfig(P("RUN"), P("DIR"), onnx=False)),
    ("render --task box_pickup --out F.png --seed 3 --width 160 --height 120",
     RenderConfig("box_pickup", P("F.png"), 3, 160, 120)),
]


@pytest.mark.parametrize(("line", "expected"), OLD_STYLE, ids=[line for line, _ in OLD_STYLE])
def test_an_old_command_line_parses_to_the_settings_it_meant(line: str, expected: Any) -> None:
    assert parsed(line.split()) == expected


def test_old_pretrain_line() -> None:
    cmd = parsed(("pretrain --data DIR --backbone mlp --out RUN --episodes 5 --steps 10 "
                  "--batch-size 8 --lr 1e-3 --eval-every 5 --eval-episodes 2 --eval-worlds 1 "
                  "--checkpoint-every 5 --width 64 --depth 2 --heads 2 --obs-horizon 3 "
                  "--pred-horizon 10 --act-steps 6 --denoising-steps 8 --ddim-steps 4 --seed 1 "
                  "--device cpu --threads 1 --no-progress").split())
    policy = PolicyConfig(obs_horizon=3, pred_horizon=10, act_steps=6, denoising_steps=8,
                          ddim_steps=4)
    train = PretrainConfig(P("DIR"), P("RUN"), backbone="mlp", episodes=5, steps=10,
                           batch_size=8, lr=1e-3, eval_every=5, eval_episodes=2, eval_worlds=1,
                           checkpoint_every=5, seed=1, device="cpu", policy=policy)
    assert cmd == PretrainCommand(train, width=64, depth=2, heads=2, threads=1, progress=False)
    net = cmd.config().policy.net
    assert (net.kind, net.width, net.depth, net.heads) == ("mlp", 64, 2, 2)


def test_old_finetune_line() -> None:
    cmd = parsed(("finetune --policy RUN --method mlp-ft --out RUN2 --task box_pickup "
                  "--iterations 5 --worlds 4 --steps-per-iter 3 --widen 1.5 --curriculum "
                  "--ft-steps 4 --bc-coef 0.1 --min-std 0.2 --epochs 2 --minibatch 64 "
                  "--actor-lr 1e-5 --seed 1 --device cpu --threads 1 --no-progress "
                  "--controller learned --controller-weights W --controller-runtime onnx").split())
    assert cmd.config() == FinetuneConfig(
        P("RUN"), P("RUN2"), method="mlp-ft", task="box_pickup", iterations=5, worlds=4,
        steps_per_iter=3, widen=1.5, curriculum=True, ft_steps=4, bc_coef=0.1,
        min_sampling_std=0.2, min_logprob_std=0.2, epochs=2, minibatch=64, actor_lr=1e-5,
        seed=1, threads=1, device="cpu", controller="learned", controller_weights=P("W"),
        controller_runtime="onnx")
    assert cmd.progress is False


def test_old_train_controller_line() -> None:
    cmd = parsed(("train-controller --part upper --out RUN --worlds 256 --minutes 20 "
                  "--iterations 100 --dagger-iterations 50 --threads 2 --seed 3 --backend warp "
                  "--device cuda:1 --no-progress").split())
    train = replace(DEFAULT_TRAIN, part="upper", out="RUN", worlds=256, time_budget_s=1200.0,
                    threads=2, seed=3, backend="warp",
                    ppo=replace(DEFAULT_TRAIN.ppo, iterations=100),
                    dagger=replace(DEFAULT_TRAIN.dagger, iterations=50))
    assert cmd == TrainControllerCommand(train, device="cuda:1", progress=False)
    resolved = cmd.config(rank=2)
    assert (resolved.device, resolved.seed) == ("cuda:1", 5)  # each rank its own seed


def test_warp_training_defaults_to_this_process_cuda_device(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    cmd = parsed(["train-controller", "--part", "upper", "--out", "r", "--backend", "warp"])
    assert cmd.config(rank=1).device == "cuda:1"


@pytest.mark.parametrize("line", [
    "train-controller --part upper --out R --dagger-iterations 200",  # DAgger's teacher decay
    "train-controller --part upper --out R --minutes 35 --iterations 3000",
    "finetune --policy P --out F --min-std 0.1",
    "pretrain --data D --out R --width 96 --depth 3 --heads 4",
])
def test_giving_the_default_is_leaving_it_out(line: str) -> None:
    words = line.split()
    least = words[:words.index("--out") + 2]
    given, left_out = parsed(words), parsed(least)
    resolve = (lambda c: c.config(rank=0)) if words[0] == "train-controller" else (
        lambda c: c.config())
    assert resolve(given) == resolve(left_out)


def test_the_runner_bench_spins_as_long_as_the_runner() -> None:
    from robot_io.runner import SPIN_S

    assert BenchRunnerConfig().spin_ms == pytest.approx(SPIN_S * 1e3)  # ms in the CLI, s below
