"""Task 1, box pickup: walk to a table and pick up a box (1-2 kg) with a gripper."""

from __future__ import annotations

from dataclasses import dataclass, field

import mujoco
import torch
from torch import Tensor

from robot_io.math3d import Frame, quat_from_yaw
from robot_io.scene import add_environment, add_free_box, add_table
from robot_io.tasks.base import PhysicsRanges, Range, StartRanges, Task, TaskConfig

BOX_HALF_M = (0.035, 0.035, 0.045)
BOX_RGBA = (0.85, 0.2, 0.15, 1.0)


@dataclass(frozen=True)
class BoxPickupConfig(TaskConfig):
    """Box pickup. Box offsets are relative to the table's centre; the robot starts relative to
    the box."""

    time_limit_s: float = 20.0
    start: StartRanges = field(default_factory=lambda: StartRanges(
        radius_m=Range(1.0, 1.4), polar_rad=Range(-0.35, 0.35), heading_rad=Range(-0.35, 0.35)))
    physics: PhysicsRanges = field(default_factory=PhysicsRanges)
    table_xy_m: tuple[float, float] = (0.8, 0.0)
    table_half_m: tuple[float, float] = (0.25, 0.4)
    table_height_m: float = 0.6
    box_dx_m: Range = Range(-0.2, -0.14)
    box_dy_m: Range = Range(-0.15, 0.15)
    box_yaw_rad: Range = Range(-0.3, 0.3)
    lift_height_m: float = 0.08  # success: box raised this much above its start and in a hand


def default_config() -> BoxPickupConfig:
    return BoxPickupConfig()


def place_box_on_table(task: Task, cfg: BoxPickupConfig, ids: Tensor, gen: torch.Generator,
                       qadr: int, table_xy: Tensor) -> dict[str, Tensor]:
    """Sample the box pose on a table (table_xy: (n, 2)); write it into qpos."""
    n = len(ids)
    dx, dy, yaw = (cfg.box_dx_m.sample(n, gen), cfg.box_dy_m.sample(n, gen),
                   cfg.box_yaw_rad.sample(n, gen))
    z = torch.full((n,), cfg.table_height_m + BOX_HALF_M[2] + 0.001, dtype=torch.float64)
    pos = torch.stack([table_xy[:, 0] + dx, table_xy[:, 1] + dy, z], -1)
    qpos = task.sim.qpos
    qpos[ids, qadr:qadr + 3] = pos.to(qpos)
    qpos[ids, qadr + 3:qadr + 7] = quat_from_yaw(yaw).to(qpos)
    return {"box_dx_m": dx, "box_dy_m": dy, "box_yaw_rad": yaw}


class BoxPickupTask(Task):
    name = "box_pickup"
    config: BoxPickupConfig

    def build_scene(self, spec: mujoco.MjSpec) -> None:
        cfg = self.config
        add_environment(spec)
        add_table(spec, "table", cfg.table_xy_m, cfg.table_half_m, cfg.table_height_m)
        add_free_box(spec, "box", BOX_HALF_M, mass_kg=1.5, rgba=BOX_RGBA)

    def bind_task(self, model: mujoco.MjModel) -> None:
        self.box_body = model.body("box").id
        self.box_geom = model.geom("box").id
        self.box_qadr = self.free_joint_qadr("box")
        self.box_start_z = torch.zeros(self.sim.num_worlds, dtype=torch.float64,
                                       device=self.device)

    def reset_objects(self, ids: Tensor, gen: torch.Generator) -> dict[str, Tensor]:
        cfg = self.config
        table_xy = torch.tensor(cfg.table_xy_m, dtype=torch.float64).expand(len(ids), 2)
        params = place_box_on_table(self, cfg, ids, gen, self.box_qadr, table_xy)
        params.update(randomise_object(self, ids, gen, self.box_body, self.box_geom))
        return params

    def capture_initial(self, ids: Tensor) -> None:
        self.box_start_z[ids] = self.sim.qpos[ids, self.box_qadr + 2].to(self.box_start_z)

    def anchor(self, ids: Tensor) -> tuple[Tensor, Tensor]:
        return self.object_anchor(self.box_qadr, ids)

    def observe(self, root: Frame) -> dict[str, Tensor]:
        return self.object_observation(self.box_body, root)

    def success(self) -> Tensor:
        return box_held_up(self, self.box_body, self.box_start_z, self.config.lift_height_m)


def randomise_object(task: Task, ids: Tensor, gen: torch.Generator, body: int,
                     geom: int) -> dict[str, Tensor]:
    """Per-world object mass and friction."""
    phys = task.config.physics
    mass = phys.object_mass_kg.sample(len(ids), gen)
    friction = phys.object_friction.sample(len(ids), gen)
    model_mass = task.sim.model_field("body_mass")
    inertia = task.sim.model_field("body_inertia")
    geom_friction = task.sim.model_field("geom_friction")
    sim_mass = mass.to(model_mass)
    scale = (sim_mass / model_mass[ids, body]).unsqueeze(-1)
    inertia[ids, body] = inertia[ids, body] * scale
    model_mass[ids, body] = sim_mass
    geom_friction[ids, geom, 0] = friction.to(geom_friction)
    return {"object_mass_kg": mass, "object_friction": friction}


def box_held_up(task: Task, body: int, start_z: Tensor, lift_m: float) -> Tensor:
    """(B,) the box is lifted `lift_m` above its start height and within reach of a hand."""
    pos = task.sim.xpos[:, body]
    lifted = pos[:, 2] > start_z + lift_m
    dist = (task.hand_pos_world() - pos.unsqueeze(1)).norm(dim=-1).min(dim=1).values
    return lifted & (dist < 0.12)
