"""The lower-body locomotion policy at runtime, and the observation it shares with training.

`PolicyLegs` drives the 12 leg joints with an exported lower-body policy that tracks the
footholds of a `FootstepPlanner` (no harness: the robot stands on its own). It ticks exactly as
the training environment (`learning.controller.lower_env.LowerBodyEnv`) does:

- at a reset, the planner stands on the measured feet and the last action is zero, and the
  first tick after it observes that plan as it is (training observes a fresh episode before any
  planner step);
- on every later tick the planner first advances by one period with the *previous* tick's
  base-velocity command and the measured feet (training steps the planner after the physics
  tick, with the command that tick ran under, before it draws the next command), and the
  observation then carries the *current* command;
- the observation is `lower_policy_observation` (training calls the same function);
- leg targets = default + action_scale * clip(action, +-action_clip).

The planner's parameters are not part of the exported spec: the runtime uses the
`FootstepConfig` defaults, which is what `LowerEnvConfig` trains with unless told otherwise.
"""

from __future__ import annotations

import time

import torch
from torch import Tensor

from robot_io.control.footsteps import FootstepConfig, FootstepPlanner, feet_from_observation
from robot_io.control.policy_io import action_to_targets, lower_observation
from robot_io.control.policy_runtime import OnnxPolicy, TorchPolicy
from robot_io.math3d import yaw_of
from robot_io.types import Observation


def lower_policy_observation(obs: Observation, planner: FootstepPlanner, base_vel_cmd: Tensor,
                             last_action: Tensor, default_pose: Tensor) -> Tensor:
    """The lower-body policy's observation (B, 54) float32 from the planner's current state.

    Args:
        obs: the robot's observation.
        planner: the footstep planner, already advanced for this tick.
        base_vel_cmd: (B, 3) the base-velocity command of this tick (heading frame).
        last_action: (B, 12) the policy's previous (clipped) action.
        default_pose: (29,) the robot's default joint positions.
    """
    yaw = yaw_of(obs.root_quat)
    return lower_observation(obs, planner.swing_indicator(), planner.countdown_s,
                             planner.relative_footholds(obs.root_pos, yaw), base_vel_cmd,
                             last_action, default_pose)


class PolicyLegs:
    """The legs of the learned controller: a `FootstepPlanner` and an exported lower policy.

    Args:
        policy: the loaded lower-body policy (`load_policy(dir, "lower", ...)`), already
            checked against the robot.
        default_pose: (29,) the robot's default joint positions.
        obs: the current observation of all B worlds (the planner starts on their feet).
        control_dt_s: the control period.
        footsteps: the planner's parameters (default: those training uses by default).
    """

    def __init__(self, policy: TorchPolicy | OnnxPolicy, default_pose: Tensor, obs: Observation,
                 control_dt_s: float, footsteps: FootstepConfig | None = None) -> None:
        n = obs.num_worlds
        self.policy, self.spec, self.default = policy, policy.spec, default_pose
        self.planner = FootstepPlanner(n, control_dt_s, footsteps)
        self.prev_base_vel = torch.zeros(n, 3, dtype=torch.float64)
        self.fresh = torch.ones(n, dtype=torch.bool)  # reset since their last tick
        self.last_action = torch.zeros(n, self.spec.action_dim)
        self.network_s = 0.0  # wall time of the latest policy call
        self.reset(obs)

    def reset(self, obs: Observation, ids: Tensor | None = None) -> None:
        """Stand the plan of worlds `ids` (all when None) on their measured feet; forget their
        last action."""
        ids = (torch.arange(obs.num_worlds) if ids is None
               else torch.as_tensor(ids, dtype=torch.long))
        self.planner.reset(feet_from_observation(obs)[ids], ids)
        self.fresh[ids] = True
        self.last_action[ids] = 0.0

    def step(self, base_vel: Tensor, obs: Observation) -> Tensor:
        """(B, 12) leg joint targets [rad] float64 for this tick's (B, 3) base-velocity command."""
        feet = feet_from_observation(obs)
        self.planner.step(self.prev_base_vel, feet)
        if bool(self.fresh.any()):
            # A world's first tick after its reset sees the plan of the reset (as in training):
            # standing it on the same feet again undoes the step it just took.
            ids = torch.nonzero(self.fresh).squeeze(1)
            self.planner.reset(feet[ids], ids)
            self.fresh[:] = False
        base_vel = base_vel.to(torch.float64)
        x = lower_policy_observation(obs, self.planner, base_vel, self.last_action, self.default)
        start = time.perf_counter()
        action = self.policy(x)
        self.network_s = time.perf_counter() - start
        # Cloned: ordinary tensors that `reset` may write into.
        self.last_action = action.to(torch.float32).clone()
        self.prev_base_vel = base_vel.clone()
        return action_to_targets(action, self.spec, self.default)

    def planned_touchdowns(self) -> tuple[Tensor, Tensor]:
        """The planner's touchdowns of the latest tick (`FootstepPlanner.planned_touchdowns`)."""
        return self.planner.planned_touchdowns()


__all__ = ["PolicyLegs", "lower_policy_observation"]
