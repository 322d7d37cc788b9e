"""The learned controller's runtime: export, torch / ONNX agreement, closed loop on the open floor,
every bad-file case with its named error, the controller factory and the CLI option."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file, save_file

from learning.controller.commands import sample_arm_poses
from learning.controller.export import export_policy
from learning.controller.lower_env import LowerBodyEnv, LowerEnvConfig
from robot_io import control
from robot_io.control import ControllerChoice, make_controller
from robot_io.control.footsteps import NO_SWING, FootstepPlanner, feet_from_observation
from robot_io.control.learned import HandIntegral, HandIntegralConfig, LearnedController
from robot_io.control.lower_policy import PolicyLegs
from robot_io.control.policy_io import (
    LOWER_OBS_TERMS,
    PART_JOINTS,
    UPPER_OBS_TERMS,
    PolicyMLP,
    PolicySpec,
    PolicySpecError,
    hand_chains,
    lower_observation,
    upper_observation,
)
from robot_io.control.policy_runtime import ONNX_SPEC_KEY, load_policy
from robot_io.control.reference import ReferenceController
from robot_io.env import BatchedEnv
from robot_io.errors import MissingDependencyError
from robot_io.math3d import yaw_of
from robot_io.t1_model import default_robot_spec
from robot_io.tasks.base import Range
from robot_io.tasks.open_floor import OpenFloorTask
from robot_io.types import Command
from teleop_app.cli import main

ARMS = list(PART_JOINTS["upper"])
LEGS = [j for j in range(29) if j not in ARMS]  # legs, waist and head: not the arms
LEGS_12 = list(PART_JOINTS["lower"])
WAIST_HEAD = [j for j in LEGS if j not in LEGS_12]
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
    # The hand integral off: the arm targets must be the bare policy's (it has its own test).
    off = HandIntegralConfig(gain_per_tick=0.0)
    ctrl = LearnedController(env, folder, hand_integral=off)
    onnx_ctrl = LearnedController(env, folder, runtime="onnx", hand_integral=off)
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


# -- the hand-position integral -------------------------------------------------------------------
def test_hand_integral_by_hand() -> None:
    """Gain 0.5, limit 8 cm, still below 0.05 m/s (1 mm per 20 ms tick), engaged below 10 cm of
    error; numbers by hand."""
    f64 = torch.float64
    loop = HandIntegral(2, 0.02, HandIntegralConfig(gain_per_tick=0.5, limit_m=0.08,
                                                    still_mps=0.05, engage_m=0.1))
    cmd = torch.zeros(2, 2, 3, dtype=f64)
    sag = torch.tensor([0.0, 0.0, -0.04], dtype=f64)

    def z_offsets(hand: torch.Tensor, expected: float) -> None:
        out = loop.apply(cmd, hand)
        torch.testing.assert_close(out[..., 2], torch.full((2, 2), expected, dtype=f64))

    z_offsets(cmd + sag, 0.0)  # no previous tick: nothing learnt
    z_offsets(cmd + sag, 0.02)
    z_offsets(cmd + sag, 0.04)
    z_offsets(cmd + 2 * sag, 0.04)  # the hand dropped 4 cm in a tick: not still
    z_offsets(cmd + 2 * sag, 0.08)
    z_offsets(cmd + 2 * sag, 0.08)  # 0.12, limited
    # The left hand's command moves 1 cm: only the right hand integrates its 0.8 mm x error.
    moved, hand = cmd.clone(), cmd + 2 * sag
    moved[:, 0, 0] = 0.01
    hand[..., 0] -= 0.0008
    out = loop.apply(moved, hand)
    torch.testing.assert_close(out[:, 0], moved[:, 0] + torch.tensor([0.0, 0.0, 0.08], dtype=f64))
    torch.testing.assert_close(out[:, 1], torch.tensor([[0.0004, 0.0, 0.08]] * 2, dtype=f64))
    loop.reset(torch.tensor([1]))  # world 1 forgets, and judges no stillness on its next tick
    out = loop.apply(moved, hand)
    assert torch.equal(out[1], moved[1])
    torch.testing.assert_close(out[0, 1], torch.tensor([0.0008, 0.0, 0.08], dtype=f64))
    # 30 cm off and still: an unreachable pose, not a sag; the offset stays as it was.
    hand[0, 1, 2] = -0.3
    loop.apply(moved, hand)
    out = loop.apply(moved, hand)
    torch.testing.assert_close(out[0, 1], torch.tensor([0.0008, 0.0, 0.08], dtype=f64))
    with pytest.raises(ValueError, match="gain_per_tick must be in"):
        HandIntegralConfig(gain_per_tick=2.0)
    with pytest.raises(ValueError, match="engage_m must be >= 0"):
        HandIntegralConfig(engage_m=-1.0)


def test_hand_integral_cancels_a_payload_droop() -> None:
    """The shipped arm policy carrying 1.5 kg to a pose 33 cm away (at 0.3 m/s, as the command
    gate would) and holding it: the integral brings the hand onto its command; without it the
    hand stays about 7 cm short."""
    errors = {}
    for gain in (0.0, HandIntegralConfig().gain_per_tick):
        env = BatchedEnv(OpenFloorTask(), num_worlds=1, threads=1)
        obs = env.reset()
        gripper = env.model.body("right_gripper").id
        env.sim.model_field("body_mass")[0, gripper] += 1.5
        env.sim.update_constants()
        ctrl = LearnedController(env, control.shipped_weights(),
                                 hand_integral=HandIntegralConfig(gain_per_tick=gain))
        ctrl.reset(obs)
        start, quat = obs.hand_pos.clone(), obs.hand_quat.clone()
        move = torch.tensor([0.25, 0.05, 0.2], dtype=torch.float64)
        last_second = []
        for tick in range(250):  # 5 s
            target = start.clone()
            target[0, 1] += min(1.0, tick * 0.02 * 0.3 / float(move.norm())) * move
            cmd = Command(base_vel=torch.zeros(1, 3, dtype=torch.float64), hand_pos=target,
                          hand_quat=quat, gripper=torch.tensor([[0.0, 1.0]], dtype=torch.float64))
            env.apply(ctrl.step(cmd, obs))
            obs = env.observe()
            if tick >= 200:
                last_second.append(float((obs.hand_pos[0, 1] - target[0, 1]).norm()))
        errors[gain] = sum(last_second) / len(last_second)
    without, with_loop = errors.values()
    assert with_loop < 0.025 and with_loop < 0.4 * without, errors


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


# -- lower-body policy ---------------------------------------------------------------------------
LOWER_DIM = sum(width for _, width in LOWER_OBS_TERMS)


@pytest.fixture(scope="module")
def lower_env() -> LowerBodyEnv:
    """Two worlds of the lower-body training env; a new nonzero command at every tick."""
    pool = sample_arm_poses(default_robot_spec(), 8, seed=3)
    cfg = LowerEnvConfig(num_worlds=2, resample_s=Range(0.02, 0.02), zero_fraction=0.0)
    return LowerBodyEnv(cfg, seed=0, threads=1, pool=pool)


def make_lower_actor(lower_env: LowerBodyEnv, seed: int = 0, **spec_changes) -> PolicyMLP:
    """A random-init lower policy with the training env's spec (identity normalisation)."""
    spec = lower_env.policy_spec(torch.zeros(LOWER_DIM), torch.ones(LOWER_DIM), hidden=(32, 32),
                                 activation="elu", obs_clip=5.0)
    torch.manual_seed(seed)
    actor = PolicyMLP(replace(spec, **spec_changes))
    with torch.no_grad():  # some actions beyond the action clip, so that it is exercised too
        actor.net[-1].weight.mul_(10.0)
    return actor.eval()


@pytest.fixture(scope="module")
def lower_exported(tmp_path_factory: pytest.TempPathFactory, lower_env: LowerBodyEnv,
                   exported: tuple[PolicyMLP, Path]) -> tuple[PolicyMLP, Path, Path]:
    """The lower actor, a folder with only the lower policy, and one with both."""
    actor = make_lower_actor(lower_env)
    lower_only = tmp_path_factory.mktemp("lower")
    export_policy(actor, lower_only)
    both = copy_export(exported[1], tmp_path_factory.mktemp("both"))
    copy_export(lower_only, both)
    return actor, lower_only, both


def lower_expected(actor: PolicyMLP, x: torch.Tensor, default: torch.Tensor) -> torch.Tensor:
    """(B, 12) leg targets = default + scale * clip(policy(x)), computed here."""
    spec = actor.spec
    with torch.no_grad():
        action = actor(x)
    return default[LEGS_12] + spec.action_scale * action.double().clamp(-spec.action_clip,
                                                                          spec.action_clip)


def test_lower_policy_export_and_runtimes_agree(
        lower_exported: tuple[PolicyMLP, Path, Path]) -> None:
    actor, folder, _ = lower_exported
    assert sorted(p.name for p in folder.iterdir()) == ["lower.json", "lower.onnx",
                                                         "lower.safetensors"]
    torch_policy = load_policy(folder, "lower", runtime="torch")
    onnx_policy = load_policy(folder, "lower", runtime="onnx")
    assert torch_policy.spec == onnx_policy.spec == actor.spec
    x = 3.0 * torch.randn(16, LOWER_DIM, generator=torch.Generator().manual_seed(2))
    a_torch, a_onnx = torch_policy(x), onnx_policy(x)
    assert a_torch.shape == (16, 12)
    torch.testing.assert_close(a_onnx, a_torch, atol=1e-5, rtol=0)
    assert float(a_torch.abs().max()) == actor.spec.action_clip


def test_both_policies_drive_the_open_floor_without_harness(
        env: BatchedEnv, exported: tuple[PolicyMLP, Path],
        lower_exported: tuple[PolicyMLP, Path, Path]) -> None:
    upper_actor, (lower_actor, _, both) = exported[0], lower_exported
    obs = env.reset()
    ctrl = LearnedController(env, both)
    onnx_ctrl = LearnedController(env, both, runtime="onnx")
    assert ctrl.reference is None and isinstance(ctrl.legs, PolicyLegs)
    default, chains = env.default_pose, hand_chains(env.model, env.robot.joint_names)
    # The planner and the observation as LowerBodyEnv makes them, step by step: a fresh plan
    # on the first tick, then a step with the previous tick's command before each observation.
    planner = FootstepPlanner(2, env.control_dt_s)
    planner.reset(feet_from_observation(obs))
    for c in (ctrl, onnx_ctrl):
        c.reset(obs)
    last_upper, last_lower, prev_vel = torch.zeros(2, 14), torch.zeros(2, 12), None
    offset = torch.tensor([[[0.05, 0.0, 0.05], [0.05, 0.0, -0.05]]], dtype=torch.float64)
    for tick in range(10):  # standing first: the planner starts walking one tick later
        vel = torch.tensor([[0.3, 0.0, 0.0], [0.0, 0.1, 0.4]], dtype=torch.float64)
        vel = vel * (tick > 0)
        cmd = Command(base_vel=vel, hand_pos=obs.hand_pos + offset,
                      hand_quat=obs.hand_quat.clone(),
                      gripper=torch.tensor([[0.0, 1.0], [0.5, 0.25]], dtype=torch.float64))
        targets, onnx_targets = ctrl.step(cmd, obs), onnx_ctrl.step(cmd, obs)
        if prev_vel is not None:
            planner.step(prev_vel, feet_from_observation(obs))
        x = lower_observation(obs, planner.swing_indicator(), planner.countdown_s,
                              planner.relative_footholds(obs.root_pos, yaw_of(obs.root_quat)),
                              vel, last_lower, default)
        expected_legs = lower_expected(lower_actor, x, default)
        with torch.no_grad():
            last_lower = lower_actor(x)
            arm_action = upper_actor(upper_observation(obs, cmd.hand_pos, cmd.hand_quat,
                                                       last_upper, default, chains))
        last_upper, prev_vel = arm_action, vel
        spec = upper_actor.spec
        expected_arms = default[ARMS] + spec.action_scale * arm_action.double().clamp(
            -spec.action_clip, spec.action_clip)
        assert targets.harness is None and onnx_targets.harness is None
        assert bool(torch.isfinite(targets.joint_pos).all())
        torch.testing.assert_close(targets.joint_pos[:, LEGS_12], expected_legs, atol=1e-6,
                                   rtol=0)
        torch.testing.assert_close(targets.joint_pos[:, ARMS], expected_arms, atol=1e-6, rtol=0)
        torch.testing.assert_close(targets.joint_pos[:, WAIST_HEAD], default[WAIST_HEAD]
                                   .expand(2, -1), atol=0, rtol=0)
        torch.testing.assert_close(onnx_targets.joint_pos, targets.joint_pos, atol=1e-5, rtol=0)
        assert torch.equal(targets.gripper, cmd.gripper)
        landed, footholds = ctrl.planned_touchdowns()
        expected_landed, expected_footholds = planner.planned_touchdowns()
        assert torch.equal(landed, expected_landed)
        torch.testing.assert_close(footholds[landed], expected_footholds[landed])
        env.apply(targets)
        obs = env.observe()
    assert bool((ctrl.legs.planner.swing_leg >= 0).all())  # both worlds are stepping
    assert ctrl.latency_summary()["calls"] == 10
    ctrl.reset(obs, torch.tensor([1]))
    assert bool((ctrl.legs.last_action[1] == 0).all())
    assert int(ctrl.legs.planner.swing_leg[1]) == NO_SWING
    ctrl.step(cmd, obs)  # a reset world's first tick sees the fresh plan, as in training
    assert int(ctrl.legs.planner.swing_leg[1]) == NO_SWING
    assert int(ctrl.legs.planner.swing_leg[0]) != NO_SWING


def test_runtime_matches_the_training_env(lower_env: LowerBodyEnv,
                                          lower_exported: tuple[PolicyMLP, Path, Path]) -> None:
    """Driven by LowerBodyEnv's own commands, the lower-only controller's leg targets are the
    policy applied to the env's observations, across command changes; its arms are those of
    a reference controller fed the same inputs."""
    actor, folder, _ = lower_exported
    o, _ = lower_env.reset()
    ctrl = LearnedController(lower_env.env, folder)
    assert ctrl.upper is None and isinstance(ctrl.reference, ReferenceController)
    reference = ReferenceController(lower_env.env)
    obs, default = lower_env._obs, lower_env.default
    for c in (ctrl, reference):
        c.reset(obs)
    changes = 0
    for _ in range(12):
        vel = lower_env.base_vel.clone()
        cmd = Command(base_vel=vel, hand_pos=obs.hand_pos.clone(),
                      hand_quat=obs.hand_quat.clone(), gripper=torch.zeros(2, 2,
                                                                            dtype=torch.float64))
        targets, ref = ctrl.step(cmd, obs), reference.step(cmd, obs)
        assert targets.harness is None
        torch.testing.assert_close(targets.joint_pos[:, LEGS_12],
                                   lower_expected(actor, o, default), atol=1e-6, rtol=0)
        torch.testing.assert_close(targets.joint_pos[:, ARMS], ref.joint_pos[:, ARMS])
        assert torch.equal(targets.joint_pos[:, WAIST_HEAD], default[WAIST_HEAD].expand(2, -1))
        with torch.no_grad():
            o, _, _, terminated, truncated, _ = lower_env.step(actor(o))
        assert not bool((terminated | truncated).any())
        obs = lower_env._obs
        changes += int(not torch.equal(lower_env.base_vel, vel))
    assert changes == 12  # so the planner's one-tick command lag matters
    assert bool((ctrl.legs.planner.swing_leg >= 0).all())


def test_eval_controller_reads_the_footstep_planner(
        env: BatchedEnv, exported: tuple[PolicyMLP, Path],
        lower_exported: tuple[PolicyMLP, Path, Path]) -> None:
    from learning.controller.eval_metrics import GaitTouchdowns, foothold_source

    env.reset()
    source, _ = foothold_source(LearnedController(env, lower_exported[1]))
    assert isinstance(source, LearnedController)
    upper_only, _ = foothold_source(LearnedController(env, exported[1]))
    assert isinstance(upper_only, GaitTouchdowns)  # unchanged: the reference legs' gait


def _swap_legs(spec: PolicySpec) -> dict:
    return {k: getattr(spec, k)[6:] + getattr(spec, k)[:6]
            for k in ("joint_names", "default_pose", "kp", "kd")}


def _swap_terms(spec: PolicySpec) -> dict:
    terms = spec.obs_terms
    return {"obs_terms": (terms[1], terms[0], *terms[2:])}


@pytest.mark.parametrize("changes,message", [
    (_swap_legs, r"the lower policy drives joints in the order"),
    (_swap_terms, r"the lower policy observes .*this runtime builds"),
    (lambda _: {"control_dt_s": 0.01}, r"control period of 0.01 s"),
])
def test_an_unfit_lower_policy_is_refused(tmp_path: Path, env: BatchedEnv,
                                          lower_env: LowerBodyEnv, changes, message: str) -> None:
    base = make_lower_actor(lower_env).spec
    export_policy(make_lower_actor(lower_env, **changes(base)), tmp_path, onnx=False)
    with pytest.raises(PolicySpecError, match=message):
        LearnedController(env, tmp_path)


def test_a_damaged_lower_policy_is_refused(tmp_path: Path, env: BatchedEnv,
                                           exported: tuple[PolicyMLP, Path]) -> None:
    folder = copy_export(exported[1], tmp_path / "ctrl")
    (folder / "lower.json").write_text("{}")
    with pytest.raises(PolicySpecError, match=r"lower.json.*not a refine-dp controller policy"):
        LearnedController(env, folder)


def test_eval_controller_runs_a_lower_policy_folder(
        tmp_path: Path, lower_exported: tuple[PolicyMLP, Path, Path]) -> None:
    """Random-mode evaluation of a controller with a lower policy (its own footstep planner
    resets with it; the evaluator must not call its reset with world ids)."""
    from learning.controller.evaluate import evaluate_controller
    from robot_io.control import ControllerChoice

    folder = lower_exported[2]
    report = evaluate_controller(ControllerChoice("learned", folder), "random", worlds=2,
                                 seconds=0.4, threads=1, out_dir=tmp_path / "eval",
                                 progress=False)
    assert report.to_dict()["controller"]["name"] == "learned"
