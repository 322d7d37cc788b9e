"""Hand-written, time-indexed command sequences for each task at its nominal start.

They are open loop: keyframes of (time, base velocity, right-hand pose, right gripper) in the
root frame, linearly interpolated, for the task config returned by `config.nominal()` (every
random range collapsed to its centre). They serve as the main job's scripted demo and as the
tests that show each task can be solved through the command interface. The left hand rests.
Closed-loop, randomised planners live in `planners.heuristic`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from robot_io.math3d import quat_from_axis_angle, quat_mul
from robot_io.types import Command, Observation

LEFT_REST = (0.1, 0.25, -0.25)
RIGHT_REST = (0.1, -0.25, -0.25)


@dataclass(frozen=True)
class Key:
    """A keyframe. Velocities in the heading frame, hand pose in the root frame.

    yaw_rad / pitch_rad: rotations of the right hand about the root z and y axes (in that
    order) applied to the identity grasp orientation (fingers forward, closing sideways).
    """

    t_s: float
    vel: tuple[float, float, float] = (0.0, 0.0, 0.0)
    hand: tuple[float, float, float] = RIGHT_REST
    grip: float = 0.0
    pitch_rad: float = 0.0
    yaw_rad: float = 0.0


# The right hand reaches best a little right of the trunk's centre line (y about -0.15 m), so
# the approach walks also sidestep left to bring the object there.
GRASP_Y = -0.15


def _box_script(approach_s: float) -> list[Key]:
    pre, at, up = (0.25, -0.25, 0.02), (0.30, GRASP_Y, 0.02), (0.435, GRASP_Y, 0.0)
    t = approach_s
    walk = (0.3, -GRASP_Y / approach_s, 0.0)
    return [Key(0.0), Key(0.8, hand=pre), Key(1.0, walk, pre),
            Key(t + 1.0, walk, pre), Key(t + 1.1, hand=pre), Key(t + 1.9, hand=at),
            Key(t + 2.9, hand=up), Key(t + 3.4, hand=up, grip=1.0), Key(t + 3.9, hand=up, grip=1.0),
            Key(t + 4.9, hand=(0.40, GRASP_Y, 0.15), grip=1.0)]


def box_pickup_script() -> list[Key]:
    return _box_script(approach_s=2.4)


def pick_place_script() -> list[Key]:
    keys = _box_script(approach_s=2.4)
    held = (0.40, GRASP_Y, 0.15)
    t = keys[-1].t_s
    quarter = -math.pi / 2
    # Back off, quarter turn right, walk to table B, quarter turn right: the place spot is then
    # in front of the right hand. Short ramps keep the integrated motion close to the plan.
    seq = [((-0.32, 0, 0), 1.0), ((0, 0, quarter / 2.0), 2.0), ((0.4, 0, 0), 2.9 / 0.4),
           ((0, 0, quarter / 2.0), 2.0)]
    for vel, duration in seq:
        keys += [Key(t + 0.02, vel, held, 1.0), Key(t + 0.02 + duration, vel, held, 1.0),
                 Key(t + 0.04 + duration, (0, 0, 0), held, 1.0)]
        t += duration + 0.04
    place, low = (0.36, GRASP_Y, 0.15), (0.36, GRASP_Y, 0.02)
    keys += [Key(t + 1.0, hand=place, grip=1.0), Key(t + 2.0, hand=low, grip=1.0),
             Key(t + 2.5, hand=low, grip=0.0), Key(t + 3.3, hand=(0.18, GRASP_Y, 0.07)),
             Key(t + 4.0, hand=RIGHT_REST)]
    return keys


def door_script() -> list[Key]:
    # Walk up with the fingers closed into a paddle, press the lever down past the latch, push
    # the door ajar while holding it, let go, move to the doorway's middle and walk through,
    # the hand pushing the door open ahead of the body. The hand is yawed inward (0.4 rad),
    # where the right arm reaches highest.
    y, yaw = -0.125, 0.4  # presses near the lever's free end, clear of its pivot
    up, above, pressed = (0.3, y, 0.12), (0.40, y, 0.12), (0.40, y, -0.01)
    pushed, free, lead = (0.52, y, -0.01), (0.52, y, 0.1), (0.5, y, 0.05)
    walk = (0.3, 0.18 / 2.3, 0.0)

    def k(t: float, vel: tuple[float, float, float], hand: tuple[float, float, float]) -> Key:
        return Key(t, vel, hand, 1.0, yaw_rad=yaw)

    still = (0.0, 0.0, 0.0)
    return [Key(0.0), k(1.0, still, up), k(1.02, walk, up), k(3.3, walk, up), k(3.32, still, up),
            k(4.2, still, above), k(5.2, still, pressed), k(6.2, still, pushed),
            k(6.8, still, free), k(6.82, (0.1, 0.1, 0), free), k(8.0, (0.1, 0.1, 0), lead),
            k(8.02, (0.3, 0, 0), lead), k(14.0, (0.3, 0, 0), lead), k(14.02, still, lead)]


def stair_script() -> list[Key]:
    pre, at, grasp = (0.25, -0.25, 0.0), (0.30, GRASP_Y, 0.0), (0.43, GRASP_Y, -0.005)
    walk = (0.3, -GRASP_Y / 4.7, 0.0)
    return [Key(0.0), Key(0.8, hand=pre), Key(1.0, walk, pre), Key(5.7, walk, pre),
            Key(5.8, hand=pre), Key(6.8, hand=at), Key(7.8, hand=grasp),
            Key(8.3, hand=grasp, grip=1.0), Key(8.8, hand=grasp, grip=1.0),
            Key(9.8, hand=(0.40, GRASP_Y, 0.12), grip=1.0)]


SCRIPTS = {"box_pickup": box_pickup_script, "pick_place": pick_place_script,
           "door": door_script, "stair": stair_script}


class ScriptedSource:
    """A `CommandSource` that plays one keyframe script in every world, timed by obs.time_s."""

    def __init__(self, keys: list[Key]) -> None:
        if not keys or any(b.t_s <= a.t_s for a, b in zip(keys, keys[1:])):
            raise ValueError("keyframes must be non-empty with strictly increasing times")
        f64 = torch.float64
        self.times = torch.tensor([k.t_s for k in keys], dtype=f64)
        self.vel = torch.tensor([k.vel for k in keys], dtype=f64)
        self.hand = torch.tensor([k.hand for k in keys], dtype=f64)
        self.grip = torch.tensor([k.grip for k in keys], dtype=f64)
        self.pitch = torch.tensor([k.pitch_rad for k in keys], dtype=f64)
        self.yaw = torch.tensor([k.yaw_rad for k in keys], dtype=f64)

    def reset(self, obs: Observation, ids: Tensor | None = None) -> None:
        """Stateless: the script is indexed by each world's episode time."""

    def next_command(self, obs: Observation) -> Command:
        t = obs.time_s.clamp(self.times[0], self.times[-1])
        i = torch.searchsorted(self.times, t, right=True).clamp(1, len(self.times) - 1)
        t0, t1 = self.times[i - 1], self.times[i]
        a = ((t - t0) / (t1 - t0)).unsqueeze(-1)
        lerp = lambda x: x[i - 1] + (x[i] - x[i - 1]) * a  # noqa: E731
        b = obs.num_worlds
        pitch = lerp(self.pitch.unsqueeze(-1)).squeeze(-1)
        yaw = lerp(self.yaw.unsqueeze(-1)).squeeze(-1)
        y_axis = torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64).expand(b, 3)
        z_axis = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64).expand(b, 3)
        right_quat = quat_mul(quat_from_axis_angle(z_axis, yaw),
                              quat_from_axis_angle(y_axis, pitch))
        identity = torch.tensor([1.0, 0, 0, 0], dtype=torch.float64).expand(b, 4)
        left = torch.tensor(LEFT_REST, dtype=torch.float64).expand(b, 3)
        return Command(
            base_vel=lerp(self.vel),
            hand_pos=torch.stack([left, lerp(self.hand)], 1),
            hand_quat=torch.stack([identity, right_quat], 1),
            gripper=torch.stack([torch.zeros(b, dtype=torch.float64),
                                 lerp(self.grip.unsqueeze(-1)).squeeze(-1)], 1))


def make_scripted_source(task: str) -> ScriptedSource:
    """The scripted source of a task; raises ValueError listing the scripted tasks."""
    if task not in SCRIPTS:
        raise ValueError(f"no script for task {task!r}; scripted tasks: "
                         f"{', '.join(sorted(SCRIPTS))}")
    return ScriptedSource(SCRIPTS[task]())
