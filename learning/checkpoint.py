"""Checkpoint folders: safetensors weights plus JSON, written atomically, loaded without code.

A run folder holds numbered checkpoints and a `latest` file naming the newest:

    RUN/latest                    "ckpt-000200"
    RUN/ckpt-000200/policy.json   what the policy is: kind, config, specs, normalisers' origin,
                                  robot spec, task, metrics
    RUN/ckpt-000200/policy.safetensors   the weights a deployment needs
    RUN/ckpt-000200/train.json           loop state for resuming (step, optimiser groups, ...)
    RUN/ckpt-000200/train.safetensors    optimiser moments, raw weights, RNG states

A checkpoint is written as `ckpt-N.partial`, every file fsynced, then renamed and `latest`
replaced, so a kill at any moment leaves the previous checkpoint whole. Loading reads only JSON
and safetensors: nothing in a checkpoint can run code.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from robot_io.errors import RefineDpError

LATEST = "latest"
PREFIX = "ckpt-"
PARTIAL = ".partial"
POLICY_JSON, POLICY_WEIGHTS = "policy.json", "policy.safetensors"
TRAIN_JSON, TRAIN_WEIGHTS = "train.json", "train.safetensors"


class CheckpointError(RefineDpError, ValueError):
    """A checkpoint is missing, damaged or does not fit."""


@dataclass
class Checkpoint:
    """What a checkpoint folder holds (train parts empty unless asked for)."""

    path: Path
    meta: dict
    tensors: dict[str, Tensor]
    train_meta: dict
    train_tensors: dict[str, Tensor]


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_json(path: Path, data: dict) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1, allow_nan=True)
        f.flush()
        os.fsync(f.fileno())


def _write_tensors(path: Path, tensors: dict[str, Tensor]) -> None:
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(path))
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def save_checkpoint(run: Path, step: int, meta: dict, tensors: dict[str, Tensor],
                    train_meta: dict | None = None, train_tensors: dict[str, Tensor] | None = None,
                    keep: int = 2) -> Path:
    """Write checkpoint `step` into `run` atomically and point `latest` at it.

    Keeps the newest `keep` checkpoints and deletes older ones (and leftover partial ones).
    """
    run = Path(run)
    run.mkdir(parents=True, exist_ok=True)
    name = f"{PREFIX}{step:07d}"
    tmp = run / (name + PARTIAL)
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    _write_json(tmp / POLICY_JSON, meta)
    _write_tensors(tmp / POLICY_WEIGHTS, tensors)
    if train_meta is not None:
        _write_json(tmp / TRAIN_JSON, train_meta)
        _write_tensors(tmp / TRAIN_WEIGHTS, train_tensors or {})
    _fsync_dir(tmp)
    final = run / name
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    latest_tmp = run / (LATEST + PARTIAL)
    latest_tmp.write_text(name + "\n", encoding="utf-8")
    with open(latest_tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(latest_tmp, run / LATEST)
    _fsync_dir(run)
    kept = set(_newest(run, keep)) | {name}
    for old in run.iterdir():
        if old.is_dir() and old.name.startswith(PREFIX) and old.name not in kept:
            shutil.rmtree(old, ignore_errors=True)
    return final


def _newest(run: Path, keep: int) -> list[str]:
    names = sorted(p.name for p in run.iterdir()
                   if p.is_dir() and p.name.startswith(PREFIX) and not p.name.endswith(PARTIAL))
    return names[-keep:]


def latest_checkpoint(run: Path) -> Path | None:
    """The folder `run/latest` names, or None when `run` has no checkpoint yet."""
    pointer = Path(run) / LATEST
    if not pointer.is_file():
        return None
    name = pointer.read_text(encoding="utf-8").strip()
    path = Path(run) / name
    if not name.startswith(PREFIX) or not path.is_dir():
        raise CheckpointError(f"{pointer} names {name!r}, which is not a checkpoint folder; the "
                              f"run is damaged: point it at an existing {PREFIX}* folder")
    return path


def resolve(path: Path | str) -> Path:
    """A run folder (its latest checkpoint) or a checkpoint folder -> the checkpoint folder."""
    path = Path(path)
    if (path / POLICY_JSON).is_file():
        return path
    if not path.exists():
        raise CheckpointError(f"no policy at {path}: the folder does not exist; give a run "
                              f"folder written by `refine-dp pretrain` or `refine-dp finetune`")
    found = latest_checkpoint(path)
    if found is None:
        raise CheckpointError(f"{path} holds no checkpoint ({LATEST} is missing); give a run "
                              f"folder written by `refine-dp pretrain` or `refine-dp finetune`")
    return found


def load_checkpoint(path: Path | str, train: bool = False) -> Checkpoint:
    """Read a checkpoint (a run folder resolves to its latest one).

    Raises:
        CheckpointError: a file is missing or damaged (the message names it).
    """
    folder = resolve(path)

    def read_json(name: str) -> dict:
        p = folder / name
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise CheckpointError(f"{p} cannot be read ({e}); the checkpoint is damaged: use "
                                  f"an earlier one or train again") from e
        if not isinstance(data, dict):
            raise CheckpointError(f"{p} does not hold a JSON object; the checkpoint is damaged")
        return data

    def read_tensors(name: str) -> dict[str, Tensor]:
        p = folder / name
        if not p.is_file():
            raise CheckpointError(f"{p} is missing; the checkpoint is incomplete")
        try:
            return load_file(str(p))
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"{p} cannot be read as safetensors ({e}); the checkpoint is "
                                  f"damaged: use an earlier one or train again") from e

    meta, tensors = read_json(POLICY_JSON), read_tensors(POLICY_WEIGHTS)
    train_meta, train_tensors = {}, {}
    if train:
        train_meta, train_tensors = read_json(TRAIN_JSON), read_tensors(TRAIN_WEIGHTS)
    return Checkpoint(folder, meta, tensors, train_meta, train_tensors)


# -- optimisers and generators as plain tensors + JSON -------------------------------------------
def optimizer_to_tensors(opt: torch.optim.Optimizer, prefix: str
                         ) -> tuple[dict[str, Tensor], dict]:
    """Split an optimiser's state into tensors and JSON-ready metadata."""
    state = opt.state_dict()
    tensors, scalars = {}, {}
    for pid, entries in state["state"].items():
        for name, value in entries.items():
            if isinstance(value, Tensor):
                tensors[f"{prefix}.{pid}.{name}"] = value
            else:
                scalars[f"{pid}.{name}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def optimizer_from_tensors(opt: torch.optim.Optimizer, tensors: dict[str, Tensor], meta: dict,
                           prefix: str) -> None:
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith(prefix + "."):
            pid, name = key[len(prefix) + 1:].split(".", 1)
            state.setdefault(int(pid), {})[name] = value
    for key, value in meta["scalars"].items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = value
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def module_tensors(module: torch.nn.Module, prefix: str) -> dict[str, Tensor]:
    return {f"{prefix}.{k}": v for k, v in module.state_dict().items()}


def load_module(module: torch.nn.Module, tensors: dict[str, Tensor], prefix: str,
                where: Path | str) -> None:
    """Load `prefix.*` tensors into `module`, naming missing, unexpected or misshaped ones."""
    state = {k[len(prefix) + 1:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    shapes = [f"{k}: {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
              if k in state and state[k].shape != v.shape]
    if missing or extra or shapes:
        raise CheckpointError(
            f"{where}: the weights under {prefix!r} do not fit the network its config describes "
            f"(missing {missing[:5]}, unexpected {extra[:5]}, shapes {shapes[:5]}); the files "
            f"were mixed up or edited")
    module.load_state_dict(state)
