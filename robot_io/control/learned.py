"""The learned low-level controller pi_L: exported neural policies behind the `Controller` protocol.

A weights folder holds `upper.json` (+ `upper.safetensors` and/or `upper.onnx`), the arms'
hand-pose tracking policy, and later `lower.json` (+ weights), the legs' locomotion policy
(layout: `learning.controller.export`). Each control tick:

1. the upper-body observation (`policy_io.upper_observation`) from the commanded hand poses,
   the robot's state and the policy's previous action;
2. the policy (torch or ONNX Runtime) -> a clipped action per world;
3. arm targets = default pose + action_scale * action (`policy_io.action_to_targets`).

Until a lower-body policy exists, the legs and the pelvis harness stay with an internal
`ReferenceController` (the upper-body policy was trained on top of exactly that), so the learned
arms can be used at once; it also means the controller is simulation-only for now. Its arm
targets are discarded. Grippers follow the command by position, as in the reference controller.
"""

from __future__ import annotations

import time
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from robot_io.control.policy_io import (
    PART_JOINTS,
    UPPER_OBS_TERMS,
    PolicySpec,
    PolicySpecError,
    action_to_targets,
    hand_chains,
    upper_observation,
)
from robot_io.control.policy_runtime import load_policy
from robot_io.control.reference import ReferenceController
from robot_io.types import Command, JointTargets, Observation

if TYPE_CHECKING:
    from robot_io.env import BatchedEnv

LATENCY_WINDOW = 10_000  # ticks kept for the latency summary (the newest ones)


class LearnedController:
    """Runs an exported upper-body policy for `env`'s worlds (satisfies `Controller`).

    Args:
        env: the simulated worlds (the legs' reference controller reads privileged state).
        weights_dir: the exported policy folder (`upper.json` and its weights).
        runtime: "torch" (safetensors) or "onnx" (ONNX Runtime, the `export` extra).
        device: where the policy runs ("cpu" by default).

    Raises:
        PolicySpecError: missing or damaged files, weights that do not fit the spec, NaN
            weights, a policy trained for another robot, or a lower-body policy (not supported
            by this runtime yet).
        MissingDependencyError: runtime "onnx" without onnxruntime.
    """

    def __init__(self, env: BatchedEnv, weights_dir: Path, runtime: str = "torch",
                 device: str = "cpu") -> None:
        weights_dir = Path(weights_dir)
        self.env, self.weights_dir, self.runtime = env, weights_dir, runtime
        self.upper = load_policy(weights_dir, "upper", runtime, device)
        check_fits(self.upper.spec, env.robot.joint_names, env.robot.default_pose,
                   env.robot.kp, env.robot.control_dt_s)
        # -- lower body -------------------------------------------------------------------------
        # The one place to add the lower-body policy: load `lower.json` here, check it like the
        # upper one, and in `step` replace the leg targets (and drop the harness) with its output.
        if (weights_dir / "lower.json").exists():
            raise PolicySpecError(f"{weights_dir / 'lower.json'}: a lower-body policy is not "
                                  f"supported yet by this runtime; remove it from the folder to "
                                  f"run the upper-body policy with the reference legs")
        self.legs = ReferenceController(env)
        # ---------------------------------------------------------------------------------------
        self.default = env.default_pose
        self.arms = torch.tensor(PART_JOINTS["upper"])
        self.chains = hand_chains(env.model, env.robot.joint_names)
        self.last_action = torch.zeros(env.num_worlds, self.upper.spec.action_dim)
        self.latencies_s: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self.calls = 0

    def reset(self, obs: Observation, ids: Tensor | None = None) -> None:
        """Forget the last action of worlds `ids` (all when None) and reset the legs."""
        self.legs.reset(obs, ids)
        if ids is None:
            self.last_action.zero_()
        else:
            self.last_action[torch.as_tensor(ids, dtype=torch.long)] = 0.0

    def step(self, cmd: Command, obs: Observation) -> JointTargets:
        """Arm targets from the policy; legs, harness from the reference; grippers as commanded."""
        ref = self.legs.step(cmd, obs)
        spec = self.upper.spec
        with torch.inference_mode():
            x = upper_observation(obs, cmd.hand_pos, cmd.hand_quat, self.last_action,
                                  self.default, self.chains)
            start = time.perf_counter()
            action = self.upper(x)
            self.latencies_s.append(time.perf_counter() - start)
            self.calls += 1
            arm_targets = action_to_targets(action, spec, self.default)
        # Cloned outside inference mode: ordinary tensors that `reset` may write into.
        self.last_action = action.to(torch.float32).clone()
        joint = ref.joint_pos  # a fresh tensor per tick
        joint[:, self.arms] = arm_targets.clone().to(joint.dtype)
        return JointTargets(joint_pos=joint, gripper=cmd.gripper, harness=ref.harness)

    def latency_summary(self) -> dict:
        """Wall time of the policy network per tick: calls, median / p90 / max in ms, runtime."""
        if not self.latencies_s:
            return {"calls": 0, "runtime": self.runtime}
        ms = np.asarray(self.latencies_s) * 1e3
        return {"calls": self.calls, "median_ms": float(np.median(ms)),
                "p90_ms": float(np.percentile(ms, 90)), "max_ms": float(ms.max()),
                "batch": int(self.last_action.shape[0]), "runtime": self.runtime}


def check_fits(spec: PolicySpec, joint_names: tuple[str, ...], default_pose: tuple[float, ...],
               kp: tuple[float, ...], control_dt_s: float) -> None:
    """Refuse a policy this runtime cannot drive on this robot.

    Besides `PolicySpec.check_robot` (joints, default pose, gains), the runtime indexes joints by
    `PART_JOINTS` and builds the observation of `UPPER_OBS_TERMS`, at the robot's control rate.

    Raises:
        PolicySpecError: naming the first thing that differs.
    """
    spec.check_robot(tuple(joint_names), tuple(default_pose), tuple(kp))
    order = tuple(joint_names[i] for i in PART_JOINTS[spec.part])
    if spec.joint_names != order:
        raise PolicySpecError(f"the {spec.part} policy drives joints in the order "
                              f"{list(spec.joint_names)}, this runtime in {list(order)}")
    if spec.part == "upper" and spec.obs_terms != UPPER_OBS_TERMS:
        raise PolicySpecError(f"the upper policy observes {list(spec.obs_terms)}, this runtime "
                              f"builds {list(UPPER_OBS_TERMS)}; re-export it with this version")
    if abs(spec.control_dt_s - control_dt_s) > 1e-9:
        raise PolicySpecError(f"the {spec.part} policy was trained at a control period of "
                              f"{spec.control_dt_s} s, the robot runs at {control_dt_s} s")


__all__ = ["LearnedController", "check_fits"]
