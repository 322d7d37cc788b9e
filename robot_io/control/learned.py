"""The learned low-level controller pi_L: exported neural policies behind the `Controller` protocol.

A weights folder holds `upper.json` (+ `upper.safetensors` and/or `upper.onnx`), the arms'
hand-pose tracking policy, and/or `lower.json` (+ weights), the legs' locomotion policy
(layout: `learning.controller.export`). Each control tick:

1. the upper-body observation (`policy_io.upper_observation`) from the commanded hand poses,
   the robot's state and the policy's previous action;
2. the policy (torch or ONNX Runtime) -> a clipped action per world;
3. arm targets = default pose + action_scale * action (`policy_io.action_to_targets`).

Legs: with a lower-body policy, `lower_policy.PolicyLegs` turns the command's base velocity into
footholds (`FootstepPlanner`) and the policy into leg targets, exactly as in training; there is
no harness, and waist and head stay at the default pose. Without one, the legs and the pelvis
harness stay with an internal `ReferenceController` (the upper-body policy was trained on top
of exactly that), which makes the controller simulation-only; its arm targets are discarded.
With only a lower-body policy the arms come from that reference controller's arm IK.
Grippers follow the command by position, as in the reference controller.

Hand-position integral (`HandIntegralConfig`): the upper policy observes neither the payload nor
an error history, so a held box makes the hand sag below its command by a few centimetres. An
outer loop adds the integrated position error to the command the policy sees while the command and
the hand hold still (tracking lag and overshoot are not a steady-state error) and the hand is near
its command (a far one is an unreachable pose), so the hand settles on the command under a payload. The reference controller cancels the same droop with integral
action in joint space.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from robot_io.control.lower_policy import PolicyLegs
from robot_io.control.policy_io import (
    LOWER_OBS_TERMS,
    PART_JOINTS,
    UPPER_OBS_TERMS,
    PolicySpec,
    PolicySpecError,
    action_to_targets,
    hand_chains,
    upper_observation,
)
from robot_io.control.policy_runtime import OnnxPolicy, TorchPolicy, load_policy
from robot_io.control.reference import ReferenceController
from robot_io.t1_model import robot_model
from robot_io.types import Command, JointTargets, Observation

if TYPE_CHECKING:
    from robot_io.protocols import World

LATENCY_WINDOW = 10_000  # ticks kept for the latency summary (the newest ones)
PART_OBS_TERMS = {"upper": UPPER_OBS_TERMS, "lower": LOWER_OBS_TERMS}
"""The observation each policy part must be trained on: what this runtime builds."""


@dataclass(frozen=True)
class HandIntegralConfig:
    """The outer integral loop on the commanded hand positions (per hand, root frame).

    Attributes:
        gain_per_tick: fraction of the position error added to the offset each tick (0 turns
            the loop off); 0.04 at 50 Hz settles the offset in about half a second.
        limit_m: largest offset per axis; more than any payload's droop, less than a reach
            error worth hiding.
        still_mps: the offset integrates only while the commanded and the measured hand both
            move slower than this.
        engage_m: ... and while the hand is closer to its command than this: a larger error is
            an unreachable pose, not a sag, and integrating it would wind the offset up.
    """

    gain_per_tick: float = 0.04
    limit_m: float = 0.08
    still_mps: float = 0.1
    engage_m: float = 0.1

    def __post_init__(self) -> None:
        if not 0.0 <= self.gain_per_tick <= 1.0:
            raise ValueError(f"gain_per_tick must be in [0, 1], got {self.gain_per_tick}")
        if min(self.limit_m, self.still_mps, self.engage_m) < 0:
            raise ValueError(f"limit_m, still_mps and engage_m must be >= 0, got {self.limit_m}, "
                             f"{self.still_mps} and {self.engage_m}")


class HandIntegral:
    """Integrates the hand position error of worlds where both the commanded and the measured
    hand hold still (see the module docstring); `apply` returns the command the policy is
    given. Judging the measured hand too keeps the loop out of transients: it learns a sag,
    not an overshoot."""

    def __init__(self, num_worlds: int, control_dt_s: float,
                 cfg: HandIntegralConfig | None = None) -> None:
        self.cfg = cfg or HandIntegralConfig()
        self.max_step_m = self.cfg.still_mps * control_dt_s
        self.offset = torch.zeros(num_worlds, 2, 3, dtype=torch.float64)
        # (B, 2, 2, 3): last tick's commanded and measured positions, NaN where unknown.
        self.prev = torch.full((num_worlds, 2, 2, 3), float("nan"), dtype=torch.float64)

    def reset(self, ids: Tensor | None = None) -> None:
        rows = slice(None) if ids is None else torch.as_tensor(ids, dtype=torch.long)
        self.offset[rows] = 0.0
        self.prev[rows] = float("nan")  # no stillness judged on the first tick

    def apply(self, hand_pos_cmd: Tensor, hand_pos: Tensor) -> Tensor:
        """(B, 2, 3) commanded and measured hand positions -> the shifted command."""
        cfg = self.cfg
        now = torch.stack([hand_pos_cmd, hand_pos], dim=2).to(torch.float64)
        if cfg.gain_per_tick > 0:
            # NaN (a reset world) compares False: not still.
            still = ((now - self.prev).norm(dim=-1) <= self.max_step_m).all(dim=-1)
            error = now[:, :, 0] - now[:, :, 1]
            learn = still & (error.norm(dim=-1) < cfg.engage_m)
            self.offset += torch.where(learn.unsqueeze(-1), cfg.gain_per_tick * error, 0.0)
            self.offset.clamp_(-cfg.limit_m, cfg.limit_m)
        self.prev = now
        return (now[:, :, 0] + self.offset).to(hand_pos_cmd.dtype)


class LearnedController:
    """Runs exported upper- and / or lower-body policies for `env`'s worlds (a `Controller`).

    What drives what, by the files in `weights_dir`:

    | files | arms | legs, waist, head | harness |
    | --- | --- | --- | --- |
    | `upper.json` | upper policy | reference controller | reference controller |
    | both | upper policy | lower policy, default pose | none |
    | `lower.json` | reference controller's arm IK | lower policy, default pose | none |

    With a lower-body policy the controller also has `planned_touchdowns()`, its footstep
    planner's (the `PlansFootholds` protocol of `eval-controller`).

    Args:
        env: the worlds (simulated, or a robot when both policies are given; the reference
            controller, where it runs, reads a simulator's privileged state).
        weights_dir: the exported policy folder.
        runtime: "torch" (safetensors) or "onnx" (ONNX Runtime, the `export` extra).
        device: where the policies run ("cpu" by default).
        hand_integral: the outer integral loop on the hand positions (default on; a gain of 0
            turns it off).

    Raises:
        PolicySpecError: missing or damaged files, weights that do not fit the spec, NaN
            weights, or a policy trained for another robot, joint order, observation or rate.
        MissingDependencyError: runtime "onnx" without onnxruntime.
    """

    def __init__(self, env: World, weights_dir: Path, runtime: str = "torch",
                 device: str = "cpu", hand_integral: HandIntegralConfig | None = None) -> None:
        weights_dir = Path(weights_dir)
        self.env, self.weights_dir, self.runtime = env, weights_dir, runtime
        self.num_worlds = env.num_worlds
        self.default = torch.tensor(env.robot.default_pose, dtype=torch.float64)
        has_lower = (weights_dir / "lower.json").exists()
        # Only a lone lower policy skips the upper one; otherwise a missing upper.json is the
        # error to report.
        self.upper = (None if has_lower and not (weights_dir / "upper.json").exists()
                      else self._load(weights_dir, "upper", runtime, device))
        self.lower = self._load(weights_dir, "lower", runtime, device) if has_lower else None
        # The reference controller runs while something still comes from it.
        self.reference = (ReferenceController(env) if self.upper is None or self.lower is None
                          else None)
        self.legs: ReferenceController | PolicyLegs
        if self.lower is None:
            self.legs = self.reference
        else:
            self.legs = PolicyLegs(self.lower, self.default, env.observe(),
                                   env.robot.control_dt_s)
            # An instance attribute, not a method: `eval-controller` recognises a controller
            # that plans footholds by this attribute; without a lower policy it reads the
            # reference controller's gait instead.
            self.planned_touchdowns = self.legs.planned_touchdowns
        self.arms = torch.tensor(PART_JOINTS["upper"])
        self.leg_joints = torch.tensor(PART_JOINTS["lower"])
        self.chains = hand_chains(robot_model(env.robot), env.robot.joint_names)
        # The upper policy's previous action (zeros without an upper policy).
        self.last_action = torch.zeros(env.num_worlds, len(self.arms))
        self.hand_integral = HandIntegral(env.num_worlds, env.robot.control_dt_s, hand_integral)
        self.latencies_s: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self.calls = 0

    def _load(self, weights_dir: Path, part: str, runtime: str,
              device: str) -> TorchPolicy | OnnxPolicy:
        """Load `part`'s policy from `weights_dir` and refuse it unless it fits this robot."""
        policy = load_policy(weights_dir, part, runtime, device)
        robot = self.env.robot
        check_fits(policy.spec, robot.joint_names, robot.default_pose, robot.kp,
                   robot.control_dt_s)
        return policy

    def reset(self, obs: Observation, ids: Tensor | None = None) -> None:
        """Forget the last actions of worlds `ids` (all when None) and reset the legs."""
        if self.reference is not None:
            self.reference.reset(obs, ids)
        if isinstance(self.legs, PolicyLegs):
            self.legs.reset(obs, ids)
        self.hand_integral.reset(ids)
        if ids is None:
            self.last_action.zero_()
        else:
            self.last_action[torch.as_tensor(ids, dtype=torch.long)] = 0.0

    def step(self, cmd: Command, obs: Observation) -> JointTargets:
        """Joint targets of this tick: see the class docstring for which part drives what."""
        ref = self.reference.step(cmd, obs) if self.reference is not None else None
        if self.lower is None:
            joint = ref.joint_pos  # a fresh tensor per tick
        else:
            joint = self.default.expand(self.num_worlds, -1).clone()
            if ref is not None:
                joint[:, self.arms] = ref.joint_pos[:, self.arms]
        network_s = 0.0
        if self.upper is not None:
            hand_pos_cmd = self.hand_integral.apply(cmd.hand_pos, obs.hand_pos)
            with torch.inference_mode():
                x = upper_observation(obs, hand_pos_cmd, cmd.hand_quat, self.last_action,
                                      self.default, self.chains)
                start = time.perf_counter()
                action = self.upper(x)
                network_s += time.perf_counter() - start
                arm_targets = action_to_targets(action, self.upper.spec, self.default)
            # Cloned outside inference mode: ordinary tensors that `reset` may write into.
            self.last_action = action.to(torch.float32).clone()
            joint[:, self.arms] = arm_targets.clone().to(joint.dtype)
        if isinstance(self.legs, PolicyLegs):
            joint[:, self.leg_joints] = self.legs.step(cmd.base_vel, obs).to(joint.dtype)
            network_s += self.legs.network_s
        self.latencies_s.append(network_s)
        self.calls += 1
        harness = ref.harness if self.lower is None else None
        return JointTargets(joint_pos=joint, gripper=cmd.gripper, harness=harness)

    def latency_summary(self) -> dict:
        """Wall time of the policy networks per tick: calls, median / p90 / max in ms, runtime."""
        if not self.latencies_s:
            return {"calls": 0, "runtime": self.runtime}
        ms = np.asarray(self.latencies_s) * 1e3
        return {"calls": self.calls, "median_ms": float(np.median(ms)),
                "p90_ms": float(np.percentile(ms, 90)), "max_ms": float(ms.max()),
                "batch": self.num_worlds, "runtime": self.runtime}


def check_fits(spec: PolicySpec, joint_names: tuple[str, ...], default_pose: tuple[float, ...],
               kp: tuple[float, ...], control_dt_s: float) -> None:
    """Refuse a policy this runtime cannot drive on this robot.

    Besides `PolicySpec.check_robot` (joints, default pose, gains), the runtime indexes joints by
    `PART_JOINTS` and builds the observation of `PART_OBS_TERMS` (`UPPER_OBS_TERMS`,
    `LOWER_OBS_TERMS`), at the robot's control rate.

    Raises:
        PolicySpecError: naming the first thing that differs.
    """
    spec.check_robot(tuple(joint_names), tuple(default_pose), tuple(kp))
    order = tuple(joint_names[i] for i in PART_JOINTS[spec.part])
    if spec.joint_names != order:
        raise PolicySpecError(f"the {spec.part} policy drives joints in the order "
                              f"{list(spec.joint_names)}, this runtime in {list(order)}")
    terms = PART_OBS_TERMS[spec.part]
    if spec.obs_terms != terms:
        raise PolicySpecError(f"the {spec.part} policy observes {list(spec.obs_terms)}, this "
                              f"runtime builds {list(terms)}; re-export it with this version")
    if abs(spec.control_dt_s - control_dt_s) > 1e-9:
        raise PolicySpecError(f"the {spec.part} policy was trained at a control period of "
                              f"{spec.control_dt_s} s, the robot runs at {control_dt_s} s")


__all__ = ["PART_OBS_TERMS", "HandIntegral", "HandIntegralConfig", "LearnedController",
           "check_fits"]
