"""Export a trained low-level policy for the runtime (`robot_io.control.learned`).

An exported policy is a folder of files named after its part ("upper" or "lower"):

    OUT/upper.json          the `PolicySpec`: joints, default pose, gains, action scale and clip,
                            observation terms and normalisation, MLP sizes, control period
    OUT/upper.safetensors   the `PolicyMLP` state_dict in float32 (net.*.weight / net.*.bias,
                            obs_mean, obs_std); loading it runs no code
    OUT/upper.onnx          optional: the whole `PolicyMLP` (normalise -> MLP -> clip), input
                            "obs" (B, obs_dim) float32, output "action" (B, action_dim), dynamic
                            B; the spec's JSON is also stored in its metadata ("policy_spec")

Every file is written atomically (temporary name, fsync, rename), the JSON last, so a reader
never sees a half-written file and a new spec only appears once its weights are in place.
"""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import torch
from safetensors.torch import save as safetensors_bytes

from robot_io.control.policy_io import PolicyMLP, PolicySpecError
from robot_io.control.policy_runtime import ONNX_INPUT, ONNX_OUTPUT, ONNX_SPEC_KEY
from robot_io.optional import require
from robot_io.sim.render import write_bytes_atomic

ONNX_OPSET = 17


def export_policy(actor: PolicyMLP, out_dir: Path, onnx: bool = True) -> list[Path]:
    """Write `actor` as `<part>.json`, `<part>.safetensors` and (optionally) `<part>.onnx`.

    Args:
        actor: the deterministic actor with its spec (`PolicyMLP(spec)` plus trained weights).
        out_dir: the folder to write into (created when missing; same-named files replaced).
        onnx: also write the ONNX graph (needs the `export` extra: onnx).

    Returns:
        The paths written, JSON last.

    Raises:
        PolicySpecError: a weight is not finite (nothing is written).
        MissingDependencyError: `onnx` is True and the onnx package is not installed.
    """
    spec, out_dir = actor.spec, Path(out_dir)
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous()
               for k, v in actor.state_dict().items()}
    for name, value in tensors.items():
        if not bool(torch.isfinite(value).all()):
            raise PolicySpecError(f"the {spec.part} policy's tensor {name!r} holds NaN or inf; "
                                  f"refusing to export it (the training run diverged?)")
    onnx_bytes = _onnx_bytes(actor, json.dumps(spec.to_dict())) if onnx else None
    written = [write_bytes_atomic(out_dir / f"{spec.part}.safetensors",
                                  safetensors_bytes(tensors, metadata={"part": spec.part}))]
    if onnx_bytes is not None:
        written.append(write_bytes_atomic(out_dir / f"{spec.part}.onnx", onnx_bytes))
    spec_json = json.dumps(spec.to_dict(), indent=1) + "\n"
    written.append(write_bytes_atomic(out_dir / f"{spec.part}.json", spec_json.encode()))
    return written


def _onnx_bytes(actor: PolicyMLP, spec_json: str) -> bytes:
    """The ONNX model of `actor` on the CPU in float32, with the spec in its metadata."""
    onnx = require("onnx", purpose="exporting a controller policy to ONNX")
    # A CPU float32 copy, so that exporting never moves or changes the caller's module.
    model = PolicyMLP(actor.spec)
    model.load_state_dict({k: v.detach().to("cpu", torch.float32)
                           for k, v in actor.state_dict().items()})
    model.eval()
    example = torch.zeros(1, actor.spec.obs_dim)
    buf = io.BytesIO()
    # The TorchScript-based exporter (dynamo=False): it handles this plain MLP in well under a
    # second and needs no onnxscript, which the torch.export-based default requires.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, (example,), buf, input_names=[ONNX_INPUT],
                          output_names=[ONNX_OUTPUT], opset_version=ONNX_OPSET,
                          dynamic_axes={ONNX_INPUT: {0: "batch"}, ONNX_OUTPUT: {0: "batch"}},
                          dynamo=False)
    proto = onnx.load_from_string(buf.getvalue())
    entry = proto.metadata_props.add()
    entry.key, entry.value = ONNX_SPEC_KEY, spec_json
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


__all__ = ["ONNX_OPSET", "export_policy"]
