"""What every task shares: randomisation ranges, robot placement, and the `Task` interface.

A task is one small module: a config dataclass with `default_config()`, a scene added to the
robot's `MjSpec`, initial-state randomisation, a success predicate, a sparse reward, a time limit
and the task part of the DP observation. Task code reads and writes only the backend's torch
tensors (`robot_io.sim.backend.SimBackend`), so it runs on any backend: values are sampled on the
CPU in float64 (one generator, the same episodes on every backend) and written with
`.to(sim_tensor)` (the backend's device and dtype: float32 on Warp; a no-op on the CPU backend);
tensors a task keeps are made on `self.device`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import mujoco
import torch
from torch import Tensor

from robot_io.math3d import Frame, quat_from_yaw
from robot_io.robot_spec import RobotSpec
from robot_io.sim.backend import SimBackend
from robot_io.t1_model import ROOT_BODY, STAND_HEIGHT_M


@dataclass(frozen=True)
class Range:
    """A closed interval [lo, hi] sampled uniformly; lo == hi is a fixed value."""

    lo: float
    hi: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.lo) and math.isfinite(self.hi)) or self.lo > self.hi:
            raise ValueError(f"Range needs finite lo <= hi, got [{self.lo}, {self.hi}]")

    def sample(self, n: int, gen: torch.Generator) -> Tensor:
        """(n,) float64 samples."""
        u = torch.rand(n, generator=gen, dtype=torch.float64)
        return self.lo + (self.hi - self.lo) * u

    def widened(self, factor: float) -> Range:
        """The range scaled about its centre by `factor` (1.1 widens by 10 %)."""
        c, h = 0.5 * (self.lo + self.hi), 0.5 * (self.hi - self.lo) * factor
        return Range(c - h, c + h)

    @property
    def mid(self) -> float:
        return 0.5 * (self.lo + self.hi)


def fixed(value: float) -> Range:
    return Range(value, value)


@dataclass(frozen=True)
class StartRanges:
    """Robot start relative to the task's anchor point (the object it walks to).

    radius_m: distance from the anchor; polar_rad: direction of the robot seen from the anchor,
    0 meaning straight in front of it (on the anchor's -x side); heading_rad: robot yaw relative
    to facing the anchor.
    """

    radius_m: Range
    polar_rad: Range
    heading_rad: Range

    def widened(self, factor: float) -> StartRanges:
        return StartRanges(*(getattr(self, f.name).widened(factor)
                             for f in dataclasses.fields(self)))


@dataclass(frozen=True)
class PhysicsRanges:
    """Per-world physical parameters: object mass and friction coefficients."""

    object_mass_kg: Range = Range(1.0, 2.0)
    object_friction: Range = Range(0.8, 1.2)
    floor_friction: Range = Range(0.8, 1.2)


@dataclass(frozen=True)
class TaskConfig:
    """Fields every task config has; tasks subclass it with their own fields."""

    time_limit_s: float = 20.0
    start: StartRanges = field(default_factory=lambda: StartRanges(
        Range(1.0, 1.3), Range(-0.3, 0.3), Range(-0.3, 0.3)))
    physics: PhysicsRanges = field(default_factory=PhysicsRanges)

    def widened(self, factor: float) -> TaskConfig:
        """Curriculum step: the start ranges scaled about their centres by `factor`."""
        return dataclasses.replace(self, start=self.start.widened(factor))

    def nominal(self) -> TaskConfig:
        """The config with every random range collapsed to its centre (for scripted tests)."""
        return _collapse(self)

    def to_dict(self) -> dict:
        """A JSON-ready dict (datasets and checkpoints store it)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TaskConfig:
        """Inverse of `to_dict` for this config class; raises ValueError on unknown keys."""
        return _from_dict(cls(), data)


def _from_dict(template: object, data: object) -> object:
    """Rebuild a (nested) config dataclass from a dict, using `template` for the types."""
    if dataclasses.is_dataclass(template) and isinstance(data, dict):
        names = {f.name for f in dataclasses.fields(template) if f.init}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown {type(template).__name__} keys {unknown}; known: "
                             f"{sorted(names)}")
        return dataclasses.replace(template, **{k: _from_dict(getattr(template, k), v)
                                                for k, v in data.items()})
    if isinstance(template, tuple) and isinstance(data, list | tuple):
        return tuple(data)
    return data


def _collapse(obj: object) -> object:
    if isinstance(obj, Range):
        return fixed(obj.mid)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.replace(obj, **{f.name: _collapse(getattr(obj, f.name))
                                           for f in dataclasses.fields(obj) if f.init})
    return obj


class Task:
    """Base of the four tasks. Subclasses set `name`, implement the scene and the predicates.

    Life cycle: `build_scene(spec)` before compiling, `bind(model, sim, robot)` after creating
    the backend, then `reset(ids, gen)` / `observe()` / `success()` every tick.
    """

    name: str = ""
    config: TaskConfig
    flat_terrain: bool = True  # False when `terrain_height` is not zero everywhere

    def __init__(self, config: TaskConfig) -> None:
        self.config = config
        self.sim: SimBackend | None = None

    # -- to implement -------------------------------------------------------------------------
    def build_scene(self, spec: mujoco.MjSpec) -> None:
        raise NotImplementedError

    def reset_objects(self, ids: Tensor, gen: torch.Generator) -> dict[str, Tensor]:
        """Randomise object state and parameters of worlds `ids`; return the sampled values."""
        raise NotImplementedError

    def anchor(self, ids: Tensor) -> tuple[Tensor, Tensor]:
        """(n, 2) anchor xy and (n,) anchor facing yaw the robot is placed relative to."""
        raise NotImplementedError

    def observe(self, root: Frame) -> dict[str, Tensor]:
        raise NotImplementedError

    def success(self) -> Tensor:
        """(B,) bool: the task is accomplished in this state."""
        raise NotImplementedError

    # -- shared -------------------------------------------------------------------------------
    def bind(self, model: mujoco.MjModel, sim: SimBackend, robot: RobotSpec) -> None:
        """Resolve names to indices once the model is compiled and the backend exists."""
        self.model, self.sim, self.robot = model, sim, robot
        self.root_qadr = int(model.joint(model.body(ROOT_BODY).jntadr[0]).qposadr[0])
        self.root_vadr = int(model.joint(model.body(ROOT_BODY).jntadr[0]).dofadr[0])
        self._floor_geom = model.geom("floor").id
        self._hand_sensor = [int(model.sensor(f"{side}_hand_pos").adr[0])
                             for side in ("left", "right")]
        self.bind_task(model)

    def bind_task(self, model: mujoco.MjModel) -> None:
        """Task-specific name resolution (optional)."""

    @property
    def device(self) -> torch.device:
        """The simulator's device: where the task's tensors live."""
        return self.sim.qpos.device

    def capture_initial(self, ids: Tensor) -> None:
        """Remember what the success predicate needs from the initial state of worlds `ids`
        (e.g. an object's start height); called after every reset and after a recorded initial
        state is restored. Default: nothing."""

    def reward(self) -> Tensor:
        """Sparse task reward: 1 when the success predicate holds, else 0."""
        return self.success().to(torch.float64)

    def terrain_height(self, xy: Tensor, ids: Tensor | None = None) -> Tensor:
        """Ground height under world points xy (n, P, 2) -> (n, P) of worlds `ids` (all when
        None); flat floor by default."""
        return torch.zeros(xy.shape[:-1], dtype=xy.dtype, device=xy.device)

    def reset(self, ids: Tensor, gen: torch.Generator) -> dict[str, Tensor]:
        """Randomise objects, physics and the robot's start for worlds `ids`."""
        params = self.reset_objects(ids, gen)
        params.update(self._reset_physics(ids, gen))
        params.update(self._place_robot(ids, gen))
        return params

    def _reset_physics(self, ids: Tensor, gen: torch.Generator) -> dict[str, Tensor]:
        friction = self.config.physics.floor_friction.sample(len(ids), gen)
        field = self.sim.model_field("geom_friction")
        field[ids, self._floor_geom, 0] = friction.to(field)
        return {"floor_friction": friction}

    def _place_robot(self, ids: Tensor, gen: torch.Generator) -> dict[str, Tensor]:
        start = self.config.start
        n = len(ids)
        radius, polar, heading = (start.radius_m.sample(n, gen), start.polar_rad.sample(n, gen),
                                  start.heading_rad.sample(n, gen))
        anchor_xy, anchor_yaw = (a.to(radius) for a in self.anchor(ids))
        direction = anchor_yaw + torch.pi + polar  # 0: in front of the anchor, facing it
        x = anchor_xy[:, 0] + radius * torch.cos(direction)
        y = anchor_xy[:, 1] + radius * torch.sin(direction)
        yaw = direction + torch.pi + heading
        qpos = self.sim.qpos
        a = self.root_qadr
        ground = self.terrain_height(torch.stack([x, y], -1).reshape(n, 1, 2), ids).reshape(n)
        qpos[ids, a:a + 3] = torch.stack([x, y, ground + STAND_HEIGHT_M + 0.005], -1).to(qpos)
        qpos[ids, a + 3:a + 7] = quat_from_yaw(yaw).to(qpos)
        return {"start_radius_m": radius, "start_polar_rad": polar, "start_heading_rad": heading}

    def hand_pos_world(self) -> Tensor:
        """(B, 2, 3) world positions of the left and right grasp sites."""
        data = self.sim.sensordata
        return torch.stack([data[:, a:a + 3] for a in self._hand_sensor], 1)

    def body_pose(self, body_id: int) -> tuple[Tensor, Tensor]:
        """(B, 3), (B, 4) world pose of a body, float64."""
        return (self.sim.xpos[:, body_id].to(torch.float64),
                self.sim.xquat[:, body_id].to(torch.float64))

    def object_anchor(self, qadr: int, ids: Tensor) -> tuple[Tensor, Tensor]:
        """`anchor()` for a task whose robot walks to a free object (qpos address `qadr`): its
        xy, approached from the world's -x side."""
        return self.sim.qpos[ids, qadr:qadr + 2], torch.zeros(len(ids), dtype=torch.float64)

    def object_observation(self, body: int, root: Frame) -> dict[str, Tensor]:
        """{"object_pos", "object_quat"}: a body's pose in the root frame."""
        pos, quat = root.to_local(*self.body_pose(body))
        return {"object_pos": pos, "object_quat": quat}

    def free_joint_qadr(self, name: str) -> int:
        return int(self.model.joint(name).qposadr[0])
