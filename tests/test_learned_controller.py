"""The learned controller's runtime: export, torch / ONNX agreement, closed loop on the open floor,
every bad-file case with its named error, the controller factory and the CLI option."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file, save_file

from learning.controller.export import export_policy
from robot_io import control
from robot_io.control import ControllerChoice, make_controller
from robot_io.control.learned import LearnedController
from robot_io.control.policy_io import (
    PART_JOINTS,
    UPPER_OBS_TERMS,
    PolicyMLP,
    PolicySpec,
    PolicySpecError,
    hand_chains,
    upper_observation,
)
from robot_io.control.policy_runtime import ONNX_SPEC_KEY, load_policy
from robot_io.control.reference import ReferenceController
from robot_io.env import BatchedEnv
from robot_io.errors import MissingDependencyError
from robot_io.t1_model import default_robot_spec
from robot_io.tasks.open_floor import OpenFloorTask
from robot_io.types import Command
from teleop_app.cli import main

ARMS = list(PART_JOINTS["upper"])
LEGS = [j for j in range(29) if j not in ARMS]
OBS_DIM = sum(width for _, width in UPPER_OBS_TERMS)


def make_spec(hidden: tuple[int, ...] = (32, 32), **changes) -> PolicySpec:
    """An upper-body spec for the T1: identity normalisation, the robot's pose and gains."""
    robot = default_robot_spec()
    values = {
        "part": "upper", "joint_names": tuple(robot.joint_names[i] for i in ARMS),
        "default_pose": tuple(robot.default_pose[i] for i in ARMS), "action_scale": 0.5,
        "action_clip": 2.0, "kp": tuple(robot.kp[i] for i in ARMS),
        "kd": tuple(robot.kd[i] for i in ARMS), "obs_terms": UPPER_OBS_TERMS,
        "obs_mean": (0.0,) * OBS_DIM, "obs_std": (1.0,) * OBS_DIM, "obs_clip": 5.0,
        "hidden": hidden, "activation": "elu", "control_dt_s": robot.control_dt_s}
    return PolicySpec(**{**values, **changes})


def make_actor(seed: int = 0, **spec_changes) -> PolicyMLP:
    torch.manual_seed(seed)
    actor = PolicyMLP(make_spec(**spec_changes))
    with torch.no_grad():  # large outputs, so that the action clip is exercised too
        actor.net[-1].weight.mul_(20.0)
    return actor.eval()


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[PolicyMLP, Path]:
    actor = make_actor()
    folder = tmp_path_factory.mktemp("ctrl")
    export_policy(actor, folder)
    return actor, folder


@pytest.fixture(scope="module")
def env() -> BatchedEnv:
    return BatchedEnv(OpenFloorTask(), num_worlds=2, threads=1)


def copy_export(src: Path, dst: Path, skip: tuple[str, ...] = ()) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.name not in skip:
            (dst / f.name).write_bytes(f.read_bytes())
    return dst


# -- export and runtimes ------------------------------------------------------------------------
def test_export_writes_spec_weights_and_onnx(exported: tuple[PolicyMLP, Path]) -> None:
    actor, folder = exported
    assert sorted(p.name for p in folder.iterdir()) == ["upper.json", "upper.onnx",
                                                         "upper.safetensors"]
    assert PolicySpec.load(folder / "upper.json") == actor.spec
    tensors = load_file(str(folder / "upper.safetensors"))
    assert set(tensors) == set(actor.state_dict())
    assert all(t.dtype == torch.float32 for t in tensors.values())
    assert torch.equal(tensors["net.0.weight"], actor.net[0].weight)
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(folder / "upper.onnx")).metadata_props}
    assert json.loads(meta[ONNX_SPEC_KEY]) == json.loads(json.dumps(actor.spec.to_dict()))


def test_export_without_onnx_and_refusing_nan(tmp_path: Path) -> None:
    written = export_policy(make_actor(), tmp_path / "a", onnx=False)
    assert [p.name for p in written] == ["upper.safetensors", "upper.json"]
    bad = make_actor()
    with torch.no_grad():
        bad.net[0].bias[3] = float("nan")
    with pytest.raises(PolicySpecError, match=r"'net.0.bias' holds NaN"):
        export_policy(bad, tmp_path / "b")
    assert not (tmp_path / "b").exists()  # nothing written


def test_torch_and_onnx_runtimes_agree(exported: tuple[PolicyMLP, Path]) -> None:
    actor, folder = exported
    torch_policy = load_policy(folder, runtime="torch")
    onnx_policy = load_policy(folder, runtime="onnx")
    gen = torch.Generator().manual_seed(1)
    for batch in (1, 3, 64):  # a dynamic batch; values beyond the observation clip too
        obs = 4.0 * torch.randn(batch, OBS_DIM, generator=gen)
        a_torch, a_onnx = torch_policy(obs), onnx_policy(obs)
        assert a_torch.shape == a_onnx.shape == (batch, 14)
        torch.testing.assert_close(a_onnx, a_torch, atol=1e-5, rtol=0)
        with torch.no_grad():
            torch.testing.assert_close(a_torch, actor(obs), atol=0, rtol=0)
    assert float(a_torch.abs().max()) == actor.spec.action_clip  # clipped inside the policy


# -- closed loop ---------------------------------------------------------------------------------
def test_learned_controller_drives_the_open_floor(env: BatchedEnv,
                                                  exported: tuple[PolicyMLP, Path]) -> None:
    actor, folder = exported
    obs = env.reset()
    ctrl = LearnedController(env, folder)
    onnx_ctrl = LearnedController(env, folder, runtime="onnx")
    legs = ReferenceController(env)  # fed the same inputs: the legs and harness must match
    for c in (ctrl, onnx_ctrl, legs):
        c.reset(obs)
    spec, default = actor.spec, env.default_pose
    last = torch.zeros(2, 14)
    offset = torch.tensor([[[0.05, 0.0, 0.05], [0.05, 0.0, -0.05]]], dtype=torch.float64)
    for tick in range(10):
        cmd = Command(base_vel=torch.tensor([[0.2, 0.0, 0.0], [0.0, 0.0, 0.3]],
                                            dtype=torch.float64),
                      hand_pos=obs.hand_pos + offset, hand_quat=obs.hand_quat.clone(),
                      gripper=torch.tensor([[0.0, 1.0], [0.5, 0.25]], dtype=torch.float64))
        targets = ctrl.step(cmd, obs)
        onnx_targets = onnx_ctrl.step(cmd, obs)
        ref = legs.step(cmd, obs)
        with torch.no_grad():
            action = actor(upper_observation(obs, cmd.hand_pos, cmd.hand_quat, last, default,
                                                 hand_chains(env.model, env.robot.joint_names)))
        last = action
        assert targets.joint_pos.shape == (2, 29)
        assert bool(torch.isfinite(targets.joint_pos).all())
        expected = default[ARMS] + spec.action_scale * action.double().clamp(
            -spec.action_clip, spec.action_clip)
        torch.testing.assert_close(targets.joint_pos[:, ARMS], expected, atol=1e-6, rtol=0)
        torch.testing.assert_close(onnx_targets.joint_pos, targets.joint_pos, atol=1e-5,
                                   rtol=0)
        torch.testing.assert_close(targets.joint_pos[:, LEGS], ref.joint_pos[:, LEGS])
        assert targets.harness is not None
        torch.testing.assert_close(targets.harness.pos, ref.harness.pos)
        torch.testing.assert_close(targets.harness.quat, ref.harness.quat)
        assert torch.equal(targets.gripper, cmd.gripper)
        env.apply(targets)
        obs = env.observe()
    assert bool((ctrl.last_action != 0).all())
    ctrl.reset(obs, torch.tensor([1]))  # only world 1 forgets its last action
    assert bool((ctrl.last_action[0] != 0).all()) and bool((ctrl.last_action[1] == 0).all())
    summary = ctrl.latency_summary()
    assert summary["calls"] == 10 and summary["runtime"] == "torch"
    assert 0 < summary["median_ms"] <= summary["max_ms"]


# -- bad files -----------------------------------------------------------------------------------
def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])


def _other_hidden_weights(folder: Path) -> None:
    save_file(make_actor(hidden=(16, 16)).state_dict(), str(folder / "upper.safetensors"))


def _deeper_weights(folder: Path) -> None:
    save_file(make_actor(hidden=(32, 32, 32)).state_dict(), str(folder / "upper.safetensors"))


def _nan_weights(folder: Path) -> None:
    tensors = load_file(str(folder / "upper.safetensors"))
    tensors["net.2.weight"][0, 0] = float("nan")
    save_file(tensors, str(folder / "upper.safetensors"))


def _json_edit(**changes) -> Callable[[Path], None]:
    def edit(folder: Path) -> None:
        data = json.loads((folder / "upper.json").read_text())
        data.update(changes)
        (folder / "upper.json").write_text(json.dumps(data))
    return edit


@pytest.mark.parametrize("runtime,damage,message", [
    ("torch", lambda f: (f / "upper.json").unlink(), r"upper.json does not exist.*train-controller"),
    ("torch", lambda f: (f / "upper.safetensors").unlink(),
     r"upper.safetensors does not exist \(the folder has upper.json, upper.onnx\)"),
    ("onnx", lambda f: (f / "upper.onnx").unlink(), r"upper.onnx does not exist"),
    ("torch", lambda f: _truncate(f / "upper.json"), r"not valid JSON.*damaged"),
    ("torch", lambda f: (f / "upper.json").write_text("[1, 2]"), r"JSON list, not an object"),
    ("torch", _json_edit(format="something-else"), r"not a refine-dp controller policy spec"),
    ("torch", _json_edit(obs_mean="zero"), r"obs_mean has 4 entries"),
    ("torch", _json_edit(obs_std=[0.0] * OBS_DIM), r"obs_std finite and positive"),
    ("torch", _json_edit(part="lower"), r"describes a 'lower' policy, not 'upper'"),
    ("torch", lambda f: _truncate(f / "upper.safetensors"), r"cannot be read.*damaged"),
    ("onnx", lambda f: _truncate(f / "upper.onnx"), r"cannot be loaded.*damaged"),
    ("torch", _other_hidden_weights, r"'net.0.weight' has shape \(16, 107\).*\(32, 107\)"),
    ("torch", _deeper_weights, r"unexpected tensors \['net.6.bias', 'net.6.weight'\]"),
    ("torch", _nan_weights, r"tensor 'net.2.weight' holds NaN"),
    ("onnx", _json_edit(action_scale=0.25), r"exported with another spec"),
])
def test_bad_files_get_named_errors(tmp_path: Path, exported: tuple[PolicyMLP, Path],
                                    runtime: str, damage, message: str) -> None:
    folder = copy_export(exported[1], tmp_path / "ctrl")
    damage(folder)
    with pytest.raises(PolicySpecError, match=message):
        load_policy(folder, runtime=runtime)


def test_missing_folder_and_unknown_runtime(tmp_path: Path,
                                            exported: tuple[PolicyMLP, Path]) -> None:
    with pytest.raises(PolicySpecError, match=r"folder .*nowhere does not exist.*train-contr"):
        load_policy(tmp_path / "nowhere")
    with pytest.raises(ValueError, match=r"unknown policy runtime 'tensorrt'.*torch, onnx"):
        load_policy(exported[1], runtime="tensorrt")


def test_nan_in_the_onnx_graph_is_caught_by_the_probe(tmp_path: Path,
                                                      exported: tuple[PolicyMLP, Path]) -> None:
    import onnx
    from onnx import numpy_helper

    folder = copy_export(exported[1], tmp_path / "ctrl")
    model = onnx.load(str(folder / "upper.onnx"))
    init = next(i for i in model.graph.initializer if numpy_helper.to_array(i).ndim == 2)
    values = numpy_helper.to_array(init).copy()
    values[0, 0] = float("nan")
    init.CopyFrom(numpy_helper.from_array(values, init.name))
    onnx.save(model, str(folder / "upper.onnx"))
    with pytest.raises(PolicySpecError, match=r"\(onnx\) gives .*NaN or inf"):
        load_policy(folder, runtime="onnx")


def test_onnx_runtime_needs_the_export_extra(monkeypatch: pytest.MonkeyPatch,
                                             exported: tuple[PolicyMLP, Path]) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if not installed
    with pytest.raises(MissingDependencyError, match=r"refine-dp\[export\]"):
        load_policy(exported[1], runtime="onnx")


@pytest.mark.parametrize("changes,message", [
    ({"default_pose": (0.3,) + make_spec().default_pose[1:]}, r"default pose 0.3"),
    ({"kp": (1.0,) + make_spec().kp[1:]}, r"kp 1.0"),
    ({"joint_names": make_spec().joint_names[7:] + make_spec().joint_names[:7],
      "default_pose": make_spec().default_pose[7:] + make_spec().default_pose[:7],
      "kp": make_spec().kp[7:] + make_spec().kp[:7]}, r"in the order"),
    ({"control_dt_s": 0.01}, r"control period of 0.01 s"),
])
def test_a_policy_for_another_robot_is_refused(tmp_path: Path, env: BatchedEnv, changes: dict,
                                               message: str) -> None:
    export_policy(make_actor(**changes), tmp_path, onnx=False)
    with pytest.raises(PolicySpecError, match=message):
        LearnedController(env, tmp_path)


def test_a_lower_body_policy_is_not_supported_yet(tmp_path: Path, env: BatchedEnv,
                                                  exported: tuple[PolicyMLP, Path]) -> None:
    folder = copy_export(exported[1], tmp_path / "ctrl")
    (folder / "lower.json").write_text("{}")
    with pytest.raises(PolicySpecError, match=r"lower-body policy is not supported yet"):
        LearnedController(env, folder)


# -- factory and CLI -----------------------------------------------------------------------------
def test_make_controller(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, env: BatchedEnv,
                         exported: tuple[PolicyMLP, Path]) -> None:
    with pytest.raises(ValueError, match=r"unknown controller 'mpc'; known controllers: "
                                         r"learned, reference"):
        make_controller("mpc", env)
    with pytest.raises(ValueError, match=r"unknown controller 'mpc'"):
        ControllerChoice("mpc")
    with pytest.raises(ValueError, match=r"apply to the 'learned' controller only"):
        make_controller("reference", env, weights=exported[1])
    assert isinstance(make_controller("reference", env), ReferenceController)
    learned = make_controller("learned", env, weights=exported[1], runtime="onnx")
    assert isinstance(learned, LearnedController) and learned.runtime == "onnx"
    monkeypatch.setattr(control, "SHIPPED_WEIGHTS", tmp_path / "empty")
    with pytest.raises(PolicySpecError, match=r"--controller-weights.*train-controller"):
        make_controller("learned", env)
    copy_export(exported[1], tmp_path / "empty")  # a package that ships a policy
    assert isinstance(make_controller("learned", env), LearnedController)


def test_cli_eval_with_the_learned_controller(tmp_path: Path,
                                              exported: tuple[PolicyMLP, Path],
                                              capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "eval"
    assert main(["eval", "--source", "heuristic", "--task", "box_pickup", "--episodes", "2",
                 "--worlds", "2", "--threads", "1", "--out", str(out), "--json",
                 "--no-progress", "--controller", "learned", "--controller-weights",
                 str(exported[1])]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["controller"] == "learned" and report["episodes"] == 2
    assert report["controller_latency"]["calls"] > 0
    assert json.loads((out / "eval.json").read_text())["controller"] == "learned"


def test_cli_controller_errors_are_one_line(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", "--source", "heuristic", "--task", "box_pickup", "--episodes", "1",
                 "--worlds", "1", "--out", str(tmp_path / "e"), "--no-progress",
                 "--controller", "learned", "--controller-weights",
                 str(tmp_path / "missing")]) == 2
    assert "missing does not exist" in capsys.readouterr().err
    assert main(["eval", "--source", "heuristic", "--task", "box_pickup", "--out",
                 str(tmp_path / "e"), "--controller-weights", str(tmp_path)]) == 2
    assert "--controller learned only" in capsys.readouterr().err


def test_collect_records_which_controller(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                          exported: tuple[PolicyMLP, Path]) -> None:
    import teleop_app.collect as collect_mod

    seen: dict = {}
    recorder = collect_mod.EpisodeRecorder

    def spy_recorder(*args, **kwargs):
        seen["recorded_as"] = kwargs["controller"]
        return recorder(*args, **kwargs)

    def run(session, **_):  # a random arm policy never succeeds: stop at once
        seen["controller"] = session.controller
        return SimpleNamespace(success=torch.zeros(0, dtype=torch.bool))

    monkeypatch.setattr(collect_mod, "EpisodeRecorder", spy_recorder)
    monkeypatch.setattr(collect_mod.Session, "run", run)
    choice = ControllerChoice("learned", exported[1], runtime="onnx")
    collect_mod.collect("box_pickup", "scripted", episodes=1, worlds=1, out=tmp_path / "ds",
                        threads=1, progress=False, controller=choice)
    assert seen["recorded_as"] == "learned"
    assert isinstance(seen["controller"], LearnedController)
    assert seen["controller"].runtime == "onnx"


def test_cli_replay_through_the_learned_controller(tmp_path: Path,
                                                   exported: tuple[PolicyMLP, Path],
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from teleop_app.collect import collect

    out = tmp_path / "ds"
    collect("box_pickup", "scripted", episodes=1, worlds=1, out=out, threads=1, progress=False)
    capsys.readouterr()
    replay = ["replay", str(out), "--episode", "0"]
    weights = ["--controller", "learned", "--controller-weights", str(exported[1])]
    assert main([*replay, "--mode", "controller", *weights]) == 0
    printed = capsys.readouterr().out
    assert "(controller, learned)" in printed and "success recorded True" in printed
    assert main([*replay, *weights]) == 2  # targets mode has no controller
    assert "--mode controller only" in capsys.readouterr().err


def test_cli_finetune_with_the_learned_controller_resumes_with_it(
        tmp_path: Path, exported: tuple[PolicyMLP, Path]) -> None:
    from learning.checkpoint import load_checkpoint
    from learning.planner import Planner
    from learning.pretrain import PretrainConfig, pretrain, with_policy
    from teleop_app.collect import collect

    data, run, tuned = tmp_path / "ds", tmp_path / "dit", tmp_path / "ft"
    collect("box_pickup", "scripted", episodes=2, worlds=2, out=data, threads=1, progress=False)
    cfg = PretrainConfig(data=data, out=run, steps=2, batch_size=16, warmup_steps=1,
                         valid_episodes=1, checkpoint_every=2)
    pretrain(with_policy(cfg, width=32, depth=1, heads=2, denoising_steps=4, ddim_steps=2,
                         pred_horizon=8, act_steps=4), progress=False, log=lambda *_: None)
    finetune = ["finetune", "--policy", str(run), "--out", str(tuned), "--worlds", "2",
                "--steps-per-iter", "1", "--ft-steps", "2", "--epochs", "1", "--minibatch",
                "16", "--threads", "1", "--no-progress"]
    assert main([*finetune, "--iterations", "1", "--controller", "learned",
                 "--controller-weights", str(exported[1])]) == 0
    assert main([*finetune, "--iterations", "2"]) == 0  # resumes with its own controller
    state = load_checkpoint(ckpt := tuned / (tuned / "latest").read_text().strip(), train=True)
    stored = state.train_meta["config"]
    assert state.train_meta["iteration"] == 2
    assert stored["controller"] == "learned"
    assert Path(stored["controller_weights"]) == exported[1].resolve()
    assert Planner.load(ckpt).meta["finetune"]["controller"] == "learned"
