"""What `refine-dp eval-controller` measures, tick by tick, in the session loop.

`ControllerMetrics` is a `StepObserver` of the session plus an `after_tick` hook (the session's
`on_step`), which sees the observation *after* each tick: the command of tick t is compared with
the state the tick produced (as `learning.evaluate` does). Per tick and world it measures

- base velocity: commanded (vx, vy) in the heading frame and yaw rate against the achieved trunk
  velocity, on ticks at least `settle_s` after that world's last velocity change;
- hands: position [m] and orientation [rad] error of each hand against its command in the root
  frame (`learning.evaluate.tick_metrics`), on all ticks and on "settled" ticks (that hand's
  command unchanged for at least `settle_s`), and the hands' world-frame speed;
- footholds: where a foot touched down against where the controller planned it (below);
- falls: the trunk below `FallCriteria.min_trunk_height_m` above the ground, or tilted more than
  `FallCriteria.max_tilt_rad` (the runner then ends that world's episode and resets it).

Planned footholds. A controller that plans footholds exposes them by implementing
`PlansFootholds.planned_touchdowns()`. The reference controller (and the learned controller,
whose legs are a reference controller until a lower-body policy exists: its `legs` attribute)
is read through its `Gait`. A touchdown is planned when a swing ends; the foot's actual
foothold is its sole's planar pose `touchdown_delay_s` later, when it has landed and carries
weight (a stance foot does not move while planted).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor

from learning.evaluate import HandState, tick_metrics
from robot_io.control.gait import Gait
from robot_io.math3d import mat_to_quat, quat_mul, quat_rotate, wrap_angle, yaw_of
from robot_io.session import EpisodeEnd, EpisodeStart, StepRecord
from robot_io.types import Command, JointTargets, Observation

_CHANGED_EPS = 1e-9  # a command component moving more than this is a new command


# -- pure per-tick maths --------------------------------------------------------------------------
@dataclass(frozen=True)
class FallCriteria:
    """When a robot counts as fallen."""

    min_trunk_height_m: float = 0.45  # trunk origin above the ground under it
    max_tilt_rad: float = math.radians(60.0)  # angle between the trunk's z axis and vertical


def trunk_tilt_rad(projected_gravity: Tensor) -> Tensor:
    """(B,) angle between the trunk's z axis and the vertical, from gravity in the root frame."""
    return torch.acos((-projected_gravity[:, 2]).clamp(-1.0, 1.0))


def fallen(obs: Observation, ground_height_m: Tensor, criteria: FallCriteria) -> Tensor:
    """(B,) bool: the trunk is too low above `ground_height_m` (B,) or tilted too far."""
    low = obs.root_pos[:, 2] - ground_height_m < criteria.min_trunk_height_m
    return low | (trunk_tilt_rad(obs.projected_gravity) > criteria.max_tilt_rad)


def heading_velocity(obs: Observation) -> Tensor:
    """(B, 3) achieved vx, vy [m/s] in the heading frame and yaw rate [rad/s] of the trunk."""
    lin = quat_rotate(obs.root_quat, obs.root_lin_vel)  # world frame
    ang = quat_rotate(obs.root_quat, obs.root_ang_vel)
    yaw = yaw_of(obs.root_quat)
    c, s = torch.cos(yaw), torch.sin(yaw)
    return torch.stack([c * lin[:, 0] + s * lin[:, 1], -s * lin[:, 0] + c * lin[:, 1],
                        ang[:, 2]], -1)


def sole_poses(obs: Observation) -> Tensor:
    """(B, 2, 3) planar world poses (x, y, yaw) of the left and right sole sites."""
    quat = obs.root_quat.unsqueeze(1).expand(-1, 2, -1)
    pos = obs.root_pos.unsqueeze(1) + quat_rotate(quat, obs.foot_pos)
    return torch.cat([pos[..., :2], yaw_of(quat_mul(quat, obs.foot_quat)).unsqueeze(-1)], -1)


def summarise(values: np.ndarray) -> dict[str, float | int]:
    """median, mean and p90 of a sample (NaN when it is empty) and its size."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return {"median": math.nan, "mean": math.nan, "p90": math.nan, "samples": 0}
    return {"median": float(np.median(values)), "mean": float(values.mean()),
            "p90": float(np.percentile(values, 90)), "samples": int(values.size)}


# -- planned footholds ----------------------------------------------------------------------------
@runtime_checkable
class PlansFootholds(Protocol):
    """A controller that plans discrete footholds and says when each foot should land."""

    def planned_touchdowns(self) -> tuple[Tensor, Tensor]:
        """After the latest `step`: (B, 2) bool, the feet (left, right) whose planned swing
        ended at that tick, and (B, 2, 3) their planned footholds: world x, y [m] and the sole
        site's yaw [rad] (as `sole_poses` measures it). Rows of other feet are ignored."""


class GaitTouchdowns:
    """`PlansFootholds` for a reference `Gait`: a swing ends when its leg index drops to -1.

    Args:
        gait: the gait (its swing bookkeeping is read after every controller step).
        foot_yaw_offset_rad: (2,) sole yaw of each foot when the gait's foot yaw is zero.
    """

    def __init__(self, gait: Gait, foot_yaw_offset_rad: Tensor) -> None:
        self.gait = gait
        self.offset = foot_yaw_offset_rad.to(torch.float64)
        # The gait keeps its swing leg private: read only, here, to find touchdown ticks.
        self.prev_leg = torch.from_numpy(gait._swing_leg.copy())

    def reset(self, ids: Tensor) -> None:
        """Worlds `ids` were reset (no swing in progress)."""
        self.prev_leg[ids] = torch.from_numpy(self.gait._swing_leg.copy())[ids]

    def planned_touchdowns(self) -> tuple[Tensor, Tensor]:
        leg = torch.from_numpy(self.gait._swing_leg.copy())
        rows = torch.nonzero((self.prev_leg >= 0) & (leg != self.prev_leg)).squeeze(1)
        landed = torch.zeros(len(leg), 2, dtype=torch.bool)
        landed[rows, self.prev_leg[rows]] = True
        self.prev_leg = leg
        return landed, self._planned()

    def _planned(self) -> Tensor:
        yaw = wrap_angle(self.gait.feet_yaw + self.offset)
        return torch.cat([self.gait.feet[..., :2], yaw.unsqueeze(-1)], -1).clone()


def foothold_source(controller: Any) -> tuple[Any | None, str]:
    """Where a controller's planned footholds come from: (source, "") or (None, the reason).

    The source has `planned_touchdowns()` and, for a gait, `reset(ids)`.
    """
    if isinstance(controller, PlansFootholds):
        return controller, ""
    for owner in (controller, getattr(controller, "legs", None)):
        gait = getattr(owner, "gait", None)
        if isinstance(gait, Gait) and hasattr(owner, "nominal_foot_rot"):
            return GaitTouchdowns(gait, yaw_of(mat_to_quat(owner.nominal_foot_rot))), ""
    return None, (f"the {type(controller).__name__} exposes no planned footholds (it has no "
                  f"planned_touchdowns(); see docs/controller.md)")


# -- the observer ---------------------------------------------------------------------------------
def _cat(parts: list[Tensor]) -> np.ndarray:
    return torch.cat(parts).numpy() if parts else np.zeros(0, dtype=np.float64)


class ControllerMetrics:
    """A `StepObserver` (episode bookkeeping) whose `after_tick` is the session's `on_step`.

    Only worlds in an episode the session counts are measured: a world the session no longer
    restarts is still stepped, but not measured.

    Args:
        env: the worlds (world count, control period, ground height, episode step counters).
        controller: the controller evaluated (read for its planned footholds).
        settle_s: a command unchanged this long is settled.
        touchdown_delay_s: the actual foothold is measured this long after a planned touchdown.
        falls: when a robot counts as fallen.
        trace_world: the world whose commanded and achieved base velocity are kept over time.
        on_end: called with this observer after each batch of episode ends (a progress bar).
    """

    def __init__(self, env: Any, controller: Any, settle_s: float = 1.0,
                 touchdown_delay_s: float = 0.1, falls: FallCriteria | None = None,
                 trace_world: int = 0,
                 on_end: Callable[[ControllerMetrics], None] | None = None) -> None:
        n, f64 = env.num_worlds, torch.float64
        self.env, self.dt, self.on_end = env, env.control_dt_s, on_end
        self.settle_ticks = round(settle_s / self.dt)
        self.delay_ticks = max(1, round(touchdown_delay_s / self.dt))
        self.criteria = falls or FallCriteria()
        self.feet, self.feet_note = foothold_source(controller)
        self.trace_world = trace_world
        self.active = torch.zeros(n, dtype=torch.bool)
        self.ticks = torch.zeros(n, dtype=torch.long)  # measured ticks of the current episode
        self.episode_ids = torch.full((n,), -1, dtype=torch.long)
        self.since_vel = torch.zeros(n, dtype=torch.long)
        self.since_hand = torch.zeros(n, 2, dtype=torch.long)
        self.prev_vel = torch.full((n, 3), math.nan, dtype=f64)
        self.prev_hand = torch.full((n, 2, 7), math.nan, dtype=f64)  # position and quaternion
        self.before = HandState(torch.zeros(n, 3, dtype=f64), torch.zeros(n, 4, dtype=f64),
                                torch.zeros(n, 2, 3, dtype=f64), torch.zeros(n, 2, 4, dtype=f64))
        self.fell = torch.zeros(n, dtype=torch.bool)
        self.fall_steps = torch.zeros(n, dtype=torch.long)
        self.pending_tick = torch.full((n, 2), -1, dtype=torch.long)
        self.pending_plan = torch.zeros(n, 2, 3, dtype=f64)
        self.measured_ticks = 0
        self.samples: dict[str, list[Tensor]] = {k: [] for k in (
            "vel_err", "hand_pos", "hand_rot", "hand_pos_settled", "hand_rot_settled",
            "ee_speed", "foot_pos", "foot_yaw")}
        self.fall_events: list[dict] = []
        self.episodes: list[dict] = []
        # The trace world's time line: its measured time, commanded and achieved velocity.
        self.trace_time_s = 0.0
        self.trace: dict[str, list] = {"time_s": [], "command": [], "achieved": [], "resets": []}

    # -- StepObserver ---------------------------------------------------------------------------
    def episode_started(self, start: EpisodeStart) -> None:
        ids, obs = start.world_ids, start.obs
        self.active[ids] = True
        self.episode_ids[ids] = start.episode_ids
        for counter in (self.ticks, self.since_vel, self.since_hand, self.fall_steps):
            counter[ids] = 0
        self.prev_vel[ids] = math.nan  # the first command counts as a change
        self.prev_hand[ids] = math.nan
        self.fell[ids] = False
        self.pending_tick[ids] = -1
        for name in ("root_pos", "root_quat", "hand_pos", "hand_quat"):
            getattr(self.before, name)[ids] = getattr(obs, name)[ids].to(torch.float64)
        if isinstance(self.feet, GaitTouchdowns):  # a controller's own planner resets itself
            self.feet.reset(ids)
        if bool((ids == self.trace_world).any()) and self.trace["time_s"]:
            self.trace["resets"].append(self.trace_time_s)

    def step(self, record: StepRecord) -> None:
        """Nothing: the tick is measured in `after_tick`, once its outcome is observed."""

    def episode_ended(self, end: EpisodeEnd) -> None:
        ids = end.world_ids
        for i, world in enumerate(ids.tolist()):
            fell = bool(self.fell[world])
            reason = ("success" if bool(end.success[i]) else "fall" if fell
                      else "unstable" if bool(end.unstable[i]) else "timeout")
            steps = int(self.fall_steps[world]) if fell else int(end.steps[i])
            self.episodes.append({"episode": int(end.episode_ids[i]), "world": world,
                                  "success": bool(end.success[i]), "end_reason": reason,
                                  "steps": steps, "time_s": steps * self.dt})
        self.active[ids] = False
        self.pending_tick[ids] = -1
        if self.on_end is not None:
            self.on_end(self)

    # -- per tick -------------------------------------------------------------------------------
    def after_tick(self, tick: int, obs: Observation, cmd: Command,
                   sent: JointTargets) -> Tensor:
        """Measure the tick that just ran (`obs` is its outcome); returns (B,) bool, the
        measured worlds that fell at this tick."""
        act = self.active.clone()
        self.ticks += act
        self.measured_ticks += int(act.sum())
        self._velocity(obs, cmd, act)
        self._hands(obs, cmd, act)
        if self.feet is not None:
            self._footholds(obs, act)
        down = self._falls(obs, act)
        return down

    def _velocity(self, obs: Observation, cmd: Command, act: Tensor) -> None:
        achieved = heading_velocity(obs)
        vel = cmd.base_vel.to(torch.float64)
        changed = ~((vel - self.prev_vel).abs().amax(-1) <= _CHANGED_EPS)  # NaN: changed
        self.since_vel = torch.where(changed, 0, self.since_vel + 1)
        self.prev_vel = vel.clone()
        use = act & (self.since_vel >= self.settle_ticks)
        self.samples["vel_err"].append((achieved - vel)[use])
        w = self.trace_world
        if bool(act[w]):
            self.trace_time_s += self.dt
            self.trace["time_s"].append(self.trace_time_s)
            self.trace["command"].append(vel[w].tolist())
            self.trace["achieved"].append(achieved[w].tolist())

    def _hands(self, obs: Observation, cmd: Command, act: Tensor) -> None:
        after = HandState(*(getattr(obs, k).to(torch.float64).clone()
                            for k in ("root_pos", "root_quat", "hand_pos", "hand_quat")))
        m = tick_metrics(cmd.hand_pos, cmd.hand_quat, self.before, after, self.dt)
        hand = torch.cat([cmd.hand_pos, cmd.hand_quat], -1).to(torch.float64)
        changed = ~((hand - self.prev_hand).abs().amax(-1) <= _CHANGED_EPS)
        self.since_hand = torch.where(changed, 0, self.since_hand + 1)
        self.prev_hand = hand.clone()
        both = act.unsqueeze(1).expand(-1, 2)
        settled = both & (self.since_hand >= self.settle_ticks)
        s = self.samples
        s["hand_pos"].append(m.hand_pos_err_m[both])
        s["hand_rot"].append(m.hand_rot_err_rad[both])
        s["hand_pos_settled"].append(m.hand_pos_err_m[settled])
        s["hand_rot_settled"].append(m.hand_rot_err_rad[settled])
        s["ee_speed"].append(m.ee_speed_mps[both])
        self.before = after

    def _footholds(self, obs: Observation, act: Tensor) -> None:
        landed, planned = self.feet.planned_touchdowns()
        due = (self.pending_tick >= 0) & (
            self.ticks.unsqueeze(1) >= self.pending_tick + self.delay_ticks)
        if bool(due.any()):
            diff = sole_poses(obs)[due] - self.pending_plan[due]
            self.samples["foot_pos"].append(diff[:, :2].norm(dim=-1))
            self.samples["foot_yaw"].append(wrap_angle(diff[:, 2]).abs())
            self.pending_tick[due] = -1
        new = landed & act.unsqueeze(1)
        self.pending_tick = torch.where(new, self.ticks.unsqueeze(1), self.pending_tick)
        self.pending_plan[new] = planned.to(torch.float64)[new]

    def _falls(self, obs: Observation, act: Tensor) -> Tensor:
        task = self.env.task
        if task.flat_terrain:
            ground = torch.zeros(obs.num_worlds, dtype=torch.float64)
        else:
            ground = task.terrain_height(obs.root_pos[:, None, :2].to(torch.float64))[:, 0]
        down = fallen(obs, ground, self.criteria) & act & ~self.fell
        for world in torch.nonzero(down).squeeze(1).tolist():
            self.fall_events.append({"world": world, "episode": int(self.episode_ids[world]),
                                     "time_s": int(self.ticks[world]) * self.dt})
        self.fall_steps = torch.where(down, self.env.episode_steps, self.fall_steps)
        self.fell |= down
        return down

    # -- results --------------------------------------------------------------------------------
    def pooled(self, name: str) -> np.ndarray:
        """All samples of one measurement (a key of `samples`), as one array."""
        return _cat(self.samples[name])

    def summary(self) -> dict[str, Any]:
        """The measurements as a JSON-ready dict (NaN where a sample is empty)."""
        vel = self.pooled("vel_err").reshape(-1, 3)
        sim_time_s = self.measured_ticks * self.dt
        hours = sim_time_s / 3600.0
        feet = None
        if self.feet is not None:
            feet = {"position_m": summarise(self.pooled("foot_pos")),
                    "yaw_rad": summarise(self.pooled("foot_yaw"))}
        return {
            "sim_time_s": sim_time_s,
            "base_velocity_error": {
                "vx_mps": summarise(np.abs(vel[:, 0])), "vy_mps": summarise(np.abs(vel[:, 1])),
                "yaw_rate_rps": summarise(np.abs(vel[:, 2])),
                "planar_mps": summarise(np.linalg.norm(vel[:, :2], axis=-1))},
            "foot_placement_error": feet,
            "foot_placement_note": self.feet_note or None,
            "hand_position_error_m": {"all": summarise(self.pooled("hand_pos")),
                                      "settled": summarise(self.pooled("hand_pos_settled"))},
            "hand_orientation_error_rad": {"all": summarise(self.pooled("hand_rot")),
                                           "settled": summarise(self.pooled("hand_rot_settled"))},
            "ee_speed_mps": summarise(self.pooled("ee_speed")),
            "falls": {"count": len(self.fall_events),
                      "per_hour": len(self.fall_events) / hours if hours > 0 else math.nan,
                      "events": list(self.fall_events)},
        }
