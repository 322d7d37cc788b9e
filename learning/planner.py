"""A planner policy with everything needed to run it: features, normalisers, the network(s),
the horizons, and where it came from. Saved and loaded as a checkpoint folder.

Kinds (`Planner.kind`):
- "diffusion": a diffusion policy; after DPPO it carries the frozen / fine-tuned split.
- "regressor": the deterministic MLP baseline; after MLP-FT, the fine-tuned copy.
- "residual": a frozen diffusion policy plus a Gaussian residual (residual RL).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from learning.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_module,
    module_tensors,
    save_checkpoint,
)
from learning.diffusion.policy import DiffusionPolicy, PolicyConfig, build_policy
from learning.features import ACTION_DIM, ACTION_FIELDS, ObsSpec
from learning.normalizer import Normalizer
from robot_io.errors import SchemaMismatchError
from robot_io.robot_spec import RobotSpec

FORMAT = "refine-dp-policy"
FORMAT_VERSION = 1
KINDS = ("diffusion", "regressor", "residual")


class Planner:
    """Normalised policy + normalisers + specs.

    Attributes:
        cfg: horizons, rates, network sizes.
        obs_spec: the DP observation entries it was trained on.
        model: DiffusionPolicy, RegressorPolicy or ResidualPolicy (normalised space).
        meta: everything else stored in policy.json (task, robot spec, fine-tuning, metrics).
    """

    def __init__(self, cfg: PolicyConfig, obs_spec: ObsSpec, obs_norm: Normalizer,
                 act_norm: Normalizer, model: nn.Module, meta: dict) -> None:
        self.cfg, self.obs_spec, self.model, self.meta = cfg, obs_spec, model, meta
        self.obs_norm, self.act_norm = obs_norm, act_norm

    @classmethod
    def create(cls, cfg: PolicyConfig, obs_spec: ObsSpec, obs_norm: Normalizer,
               act_norm: Normalizer, robot: RobotSpec, task: str, task_config: dict,
               source: dict | None = None) -> Planner:
        model = build_policy(cfg, obs_spec.dim, ACTION_DIM)
        meta = {"kind": "diffusion" if cfg.is_diffusion else "regressor", "task": task,
                "task_config": task_config, "robot_spec": robot.to_dict(),
                "source": source or {}, "finetune": None, "metrics": {}}
        return cls(cfg, obs_spec, obs_norm, act_norm, model, meta)

    @property
    def kind(self) -> str:
        return self.meta["kind"]

    @property
    def task(self) -> str:
        return self.meta["task"]

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device: torch.device | str) -> Planner:
        self.model.to(device)
        self.obs_norm, self.act_norm = self.obs_norm.to(device), self.act_norm.to(device)
        return self

    @property
    def default_sampler(self) -> str:
        """DDIM for a pre-trained diffusion policy (fast); DDPM once DPPO has split it."""
        split = isinstance(self.model, DiffusionPolicy) and self.model.ft_net is not None
        return "ddpm" if split else "ddim"

    @torch.no_grad()
    def act(self, obs_hist: Tensor, generator: torch.Generator | None = None,
            sampler: str | None = None, deterministic: bool = True) -> Tensor:
        """(B, To, Do) unnormalised observation features -> (B, Tp, Da) actions."""
        obs = self.obs_norm.normalize(obs_hist.to(self.device))
        x = self.model.sample(obs, generator=generator, sampler=sampler or self.default_sampler,
                              deterministic=deterministic)
        return self.act_norm.unnormalize(x.clamp(-1.0, 1.0))

    def check_compatible(self, obs_spec: ObsSpec, robot: RobotSpec | None, where: str) -> None:
        """Refuse an environment whose observation or robot differs from the training one."""
        self.obs_spec.check_matches(obs_spec, where)
        if robot is not None:
            diffs = RobotSpec.from_dict(self.meta["robot_spec"]).differences(robot)
            if diffs:
                raise SchemaMismatchError(
                    f"{where}: the policy was trained for another robot spec (stored vs "
                    f"running): {'; '.join(diffs[:5])}")

    # -- storage ---------------------------------------------------------------------------
    def policy_meta(self) -> dict:
        return {"format": FORMAT, "format_version": FORMAT_VERSION, **self.meta,
                "policy_config": self.cfg.to_dict(), "obs_spec": self.obs_spec.to_list(),
                "action_fields": [list(f) for f in ACTION_FIELDS]}

    def tensors(self) -> dict[str, Tensor]:
        return {**self.obs_norm.tensors("obs_norm"), **self.act_norm.tensors("act_norm"),
                **module_tensors(self.model, "model")}

    def save(self, run: Path, step: int, train_meta: dict | None = None,
             train_tensors: dict[str, Tensor] | None = None) -> Path:
        return save_checkpoint(run, step, self.policy_meta(), self.tensors(), train_meta,
                               train_tensors)

    @classmethod
    def load(cls, path: Path | str, device: str = "cpu") -> Planner:
        """Load a run folder's latest checkpoint or a checkpoint folder.

        Raises:
            CheckpointError: missing / damaged files, another format, or weights that do not
                fit the stored config.
        """
        ckpt = load_checkpoint(path)
        return cls.from_checkpoint(ckpt.path, ckpt.meta, ckpt.tensors).to(device)

    @classmethod
    def from_checkpoint(cls, where: Path, meta: dict, tensors: dict[str, Tensor]) -> Planner:
        if meta.get("format") != FORMAT:
            raise CheckpointError(f"{where}: not a refine-dp policy (format "
                                  f"{meta.get('format')!r}, expected {FORMAT!r})")
        if meta.get("format_version") != FORMAT_VERSION:
            raise CheckpointError(f"{where}: policy format version {meta.get('format_version')!r}"
                                  f", this code reads {FORMAT_VERSION}; use the matching release")
        try:
            cfg = PolicyConfig.from_dict(meta["policy_config"])
            obs_spec = ObsSpec.from_list(meta["obs_spec"])
            kind = meta["kind"]
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"{where}: policy.json is incomplete or malformed ({e!r})") from e
        if [list(f) for f in ACTION_FIELDS] != meta.get("action_fields"):
            raise SchemaMismatchError(f"{where}: the policy's action fields "
                                      f"{meta.get('action_fields')} differ from this code's "
                                      f"{[list(f) for f in ACTION_FIELDS]}")
        if kind not in KINDS:
            raise CheckpointError(f"{where}: unknown policy kind {kind!r}; known: {KINDS}")
        model = _build_model(kind, cfg, obs_spec.dim, meta.get("finetune") or {})
        load_module(model, tensors, "model", where)
        try:
            obs_norm = Normalizer.from_tensors(tensors, "obs_norm")
            act_norm = Normalizer.from_tensors(tensors, "act_norm")
        except KeyError as e:
            raise CheckpointError(f"{where}: normaliser tensor {e} is missing") from e
        if obs_norm.low.shape != (obs_spec.dim,) or act_norm.low.shape != (ACTION_DIM,):
            raise CheckpointError(f"{where}: normaliser shapes do not fit the specs")
        keep = {k: v for k, v in meta.items()
                if k not in ("format", "format_version", "policy_config", "obs_spec",
                             "action_fields")}
        planner = cls(cfg, obs_spec, obs_norm, act_norm, model, keep)
        planner.model.eval()
        return planner


def _build_model(kind: str, cfg: PolicyConfig, obs_dim: int, finetune: dict) -> nn.Module:
    """The module a checkpoint's weights load into, with the same fine-tuning split."""
    if kind == "residual":
        from learning.rl.residual import ResidualPolicy
        return ResidualPolicy(cfg, obs_dim, ACTION_DIM, **finetune.get("residual", {}))
    model = build_policy(cfg, obs_dim, ACTION_DIM)
    if finetune.get("ft_steps"):
        model.split(int(finetune["ft_steps"]))
    elif finetune.get("method") == "mlp-ft":
        model.split()
    return model
