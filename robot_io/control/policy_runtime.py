"""Load an exported low-level policy for inference, with torch or ONNX Runtime.

An exported policy (`learning.controller.export.export_policy`) is `<part>.json` (its
`PolicySpec`) beside `<part>.safetensors` (torch runtime) and/or `<part>.onnx` (ONNX runtime).
Loading reads only JSON, safetensors and ONNX protobuf: nothing in those files runs code. Every
way a file can be missing, damaged or unfit for the spec ends in a `PolicySpecError` that names
the file and what to do.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor

from robot_io.control.policy_io import PolicyMLP, PolicySpec, PolicySpecError
from robot_io.optional import require

RUNTIMES = ("torch", "onnx")
ONNX_INPUT, ONNX_OUTPUT = "obs", "action"
ONNX_SPEC_KEY = "policy_spec"  # ONNX metadata entry holding the spec's JSON
HOW_TO_PRODUCE = ("train one with `refine-dp train-controller`, or export a trained actor with "
                  "learning.controller.export.export_policy")


class TorchPolicy:
    """A `PolicyMLP` with exported weights; `policy(obs)` -> action on the CPU.

    Args:
        spec: the policy's spec.
        module: the actor with its weights loaded.
        device: where the network runs.
    """

    runtime = "torch"

    def __init__(self, spec: PolicySpec, module: PolicyMLP, device: str = "cpu") -> None:
        self.spec, self.device = spec, torch.device(device)
        self.module = module.to(self.device).eval()

    def __call__(self, obs: Tensor) -> Tensor:
        """(B, obs_dim) float32 -> (B, action_dim) float32 clipped action, on the CPU."""
        with torch.inference_mode():
            return self.module(obs.to(self.device, torch.float32)).cpu()


class OnnxPolicy:
    """An ONNX Runtime session of an exported policy; `policy(obs)` -> action on the CPU.

    Args:
        spec: the policy's spec.
        session: an `onnxruntime.InferenceSession` of the exported graph.
    """

    runtime = "onnx"

    def __init__(self, spec: PolicySpec, session: object) -> None:
        self.spec, self.session = spec, session

    def __call__(self, obs: Tensor) -> Tensor:
        """(B, obs_dim) float32 -> (B, action_dim) float32 clipped action."""
        x = np.ascontiguousarray(obs.detach().to("cpu", torch.float32).numpy())
        (action,) = self.session.run([ONNX_OUTPUT], {ONNX_INPUT: x})
        return torch.from_numpy(action)


def load_spec(path: Path) -> PolicySpec:
    """Read and validate a `PolicySpec` JSON file.

    Raises:
        PolicySpecError: the file is missing, not JSON, not a spec, or holds bad values.
    """
    path = Path(path)
    if not path.is_file():
        raise PolicySpecError(f"policy spec {path} does not exist; {HOW_TO_PRODUCE}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise PolicySpecError(f"policy spec {path} is not valid JSON ({err}); the file is "
                              f"damaged, export it again") from err
    if not isinstance(data, dict):
        raise PolicySpecError(f"policy spec {path} holds a JSON {type(data).__name__}, not an "
                              f"object; the file is damaged, export it again")
    try:
        spec = PolicySpec.from_dict(data)
    except PolicySpecError as err:
        raise PolicySpecError(f"{path}: {err}") from err
    except (TypeError, ValueError, KeyError) as err:  # wrong types inside the JSON
        raise PolicySpecError(f"policy spec {path} holds values of the wrong type ({err}); "
                              f"the file is damaged, export it again") from err
    mean, std = np.asarray(spec.obs_mean, float), np.asarray(spec.obs_std, float)
    if not (np.isfinite(mean).all() and np.isfinite(std).all() and (std > 0).all()):
        raise PolicySpecError(f"policy spec {path}: obs_mean must be finite and obs_std finite "
                              f"and positive; the normalisation is damaged, export it again")
    return spec


def load_policy(weights_dir: Path, part: str = "upper", runtime: str = "torch",
                device: str = "cpu") -> TorchPolicy | OnnxPolicy:
    """Load `<part>.json` and its weights from `weights_dir`.

    Args:
        weights_dir: the exported policy folder.
        part: "upper" or "lower".
        runtime: "torch" (reads `<part>.safetensors`) or "onnx" (reads `<part>.onnx`, needs the
            `export` extra: onnxruntime).
        device: torch device, or for ONNX "cpu" / "cuda[:N]" (CUDA needs onnxruntime-gpu).

    Raises:
        ValueError: an unknown runtime.
        PolicySpecError: a missing folder or file, damaged files, weights that do not fit the
            spec, NaN or inf weights.
        MissingDependencyError: the ONNX runtime without onnxruntime installed.
    """
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown policy runtime {runtime!r}; known runtimes: "
                         f"{', '.join(RUNTIMES)}")
    weights_dir = Path(weights_dir)
    if not weights_dir.is_dir():
        raise PolicySpecError(f"controller weights folder {weights_dir} does not exist; "
                              f"{HOW_TO_PRODUCE}")
    spec = load_spec(weights_dir / f"{part}.json")
    if spec.part != part:
        raise PolicySpecError(f"{weights_dir / f'{part}.json'} describes a {spec.part!r} "
                              f"policy, not {part!r}; the files were renamed or mixed up")
    if runtime == "torch":
        policy: TorchPolicy | OnnxPolicy = _load_torch(weights_dir / f"{part}.safetensors",
                                                       spec, device)
    else:
        policy = _load_onnx(weights_dir / f"{part}.onnx", spec, device)
    _probe(policy, weights_dir)
    return policy


def _missing(path: Path, what: str) -> PolicySpecError:
    return PolicySpecError(f"{what} {path} does not exist (the folder has "
                           f"{', '.join(sorted(p.name for p in path.parent.iterdir())) or 'nothing'}"
                           f"); {HOW_TO_PRODUCE}")


def _load_torch(path: Path, spec: PolicySpec, device: str) -> TorchPolicy:
    if not path.is_file():
        raise _missing(path, "policy weights")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as err:
        raise PolicySpecError(f"policy weights {path} cannot be read ({err}); the file is "
                              f"damaged, export it again") from err
    module = PolicyMLP(spec)
    expected = module.state_dict()
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    if missing or extra:
        raise PolicySpecError(f"policy weights {path} do not fit the spec's network (hidden "
                              f"{list(spec.hidden)}): missing tensors {missing or 'none'}, "
                              f"unexpected tensors {extra or 'none'}")
    for name, want in expected.items():
        got = tensors[name]
        if tuple(got.shape) != tuple(want.shape):
            raise PolicySpecError(f"policy weights {path}: tensor {name!r} has shape "
                                  f"{tuple(got.shape)}, the spec's network needs "
                                  f"{tuple(want.shape)}; weights and spec come from different "
                                  f"exports")
        if not got.is_floating_point() or not bool(torch.isfinite(got).all()):
            raise PolicySpecError(f"policy weights {path}: tensor {name!r} holds NaN or inf "
                                  f"(or is not floating point); the policy is broken, export a "
                                  f"good one")
    for name in ("obs_mean", "obs_std"):
        if not torch.allclose(tensors[name].to(torch.float32), expected[name], rtol=1e-6,
                              atol=1e-6):
            raise PolicySpecError(f"policy weights {path}: {name} differs from the spec's; "
                                  f"weights and spec come from different exports")
    module.load_state_dict({k: v.to(torch.float32) for k, v in tensors.items()})
    return TorchPolicy(spec, module, device)


def _load_onnx(path: Path, spec: PolicySpec, device: str) -> OnnxPolicy:
    ort = require("onnxruntime", purpose="the ONNX runtime of the learned controller "
                                         "(or use runtime 'torch')")
    if not path.is_file():
        raise _missing(path, "ONNX policy")
    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, torch.get_num_threads())
    options.inter_op_num_threads = 1
    try:
        session = ort.InferenceSession(path.read_bytes(), sess_options=options,
                                       providers=_providers(ort, device))
    except _ort_errors(ort) as err:
        raise PolicySpecError(f"ONNX policy {path} cannot be loaded ({err}); the file is "
                              f"damaged, export it again") from err
    inputs, outputs = session.get_inputs(), session.get_outputs()
    shape_in = [i.shape for i in inputs if i.name == ONNX_INPUT]
    shape_out = [o.shape for o in outputs if o.name == ONNX_OUTPUT]
    if (len(inputs) != 1 or not shape_in or shape_in[0][-1] != spec.obs_dim
            or not shape_out or shape_out[0][-1] != spec.action_dim):
        raise PolicySpecError(
            f"ONNX policy {path} has inputs {[(i.name, i.shape) for i in inputs]} and outputs "
            f"{[(o.name, o.shape) for o in outputs]}; the spec needs {ONNX_INPUT!r} "
            f"[batch, {spec.obs_dim}] -> {ONNX_OUTPUT!r} [batch, {spec.action_dim}]")
    stored = session.get_modelmeta().custom_metadata_map.get(ONNX_SPEC_KEY)
    if stored is not None and json.loads(stored) != json.loads(json.dumps(spec.to_dict())):
        raise PolicySpecError(f"ONNX policy {path} was exported with another spec than "
                              f"{path.with_suffix('.json').name}; export them together again")
    return OnnxPolicy(spec, session)


def _providers(ort: object, device: str) -> list[str]:
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    raise ValueError(f"the ONNX runtime cannot run on device {device!r} here (providers: "
                     f"{', '.join(ort.get_available_providers())}); use device 'cpu', or "
                     f"install onnxruntime-gpu for 'cuda'")


def _ort_errors(ort: object) -> tuple[type[BaseException], ...]:
    """ONNX Runtime's exception classes (they derive from Exception only)."""
    state = ort.capi.onnxruntime_pybind11_state
    names = ("Fail", "InvalidProtobuf", "InvalidGraph", "InvalidArgument", "NoSuchFile",
             "NoModel", "RuntimeException", "NotImplemented")
    return (OSError, *(getattr(state, n) for n in names if hasattr(state, n)))


def _probe(policy: TorchPolicy | OnnxPolicy, weights_dir: Path) -> None:
    """Run the policy once on the mean observation: NaN or inf weights show up as NaN actions."""
    spec = policy.spec
    action = policy(torch.tensor(spec.obs_mean, dtype=torch.float32).unsqueeze(0))
    if tuple(action.shape) != (1, spec.action_dim) or not bool(torch.isfinite(action).all()):
        raise PolicySpecError(f"the {spec.part} policy in {weights_dir} ({policy.runtime}) gives "
                              f"{action.flatten().tolist()[:4]}... for the mean observation: "
                              f"its weights hold NaN or inf, export a good policy")


__all__ = ["ONNX_INPUT", "ONNX_OUTPUT", "ONNX_SPEC_KEY", "RUNTIMES", "OnnxPolicy", "TorchPolicy",
           "load_policy", "load_spec"]
