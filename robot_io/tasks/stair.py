"""Task 4, stair-assisted retrieval: step onto a raised platform (10-15 cm) to reach an object on
a pedestal, and take it.

The platform height is sampled per world through a per-world model field (the platform body's
position), and the reference controller reads it through `terrain_height`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import mujoco
import torch
from torch import Tensor

from robot_io.math3d import Frame, quat_from_yaw
from robot_io.scene import add_box_geom, add_environment, add_free_box, add_table
from robot_io.tasks.base import PhysicsRanges, Range, StartRanges, Task, TaskConfig
from robot_io.tasks.box_pickup import box_held_up, randomise_object

PLATFORM_X_M = (0.5, 1.7)  # front and back edge
PLATFORM_HALF_Y_M = 0.8
PLATFORM_THICK_M = 0.3
PEDESTAL_X_M = 1.3
OBJECT_HALF_M = (0.03, 0.03, 0.06)


@dataclass(frozen=True)
class StairConfig(TaskConfig):
    """Stair-assisted retrieval. The robot starts relative to the object."""

    time_limit_s: float = 30.0
    start: StartRanges = field(default_factory=lambda: StartRanges(
        radius_m=Range(1.7, 2.0), polar_rad=Range(-0.2, 0.2), heading_rad=Range(-0.25, 0.25)))
    physics: PhysicsRanges = field(default_factory=lambda: PhysicsRanges(
        object_mass_kg=Range(0.5, 1.0)))
    platform_height_m: Range = Range(0.10, 0.15)
    pedestal_height_m: float = 0.58  # above the platform
    object_dy_m: Range = Range(-0.12, 0.12)
    object_yaw_rad: Range = Range(-0.3, 0.3)
    lift_height_m: float = 0.06


def default_config() -> StairConfig:
    return StairConfig()


class StairTask(Task):
    name = "stair"
    config: StairConfig
    flat_terrain = False

    def build_scene(self, spec: mujoco.MjSpec) -> None:
        cfg = self.config
        add_environment(spec)
        depth = PLATFORM_X_M[1] - PLATFORM_X_M[0]
        platform = spec.worldbody.add_body(
            name="platform", pos=(sum(PLATFORM_X_M) / 2, 0, cfg.platform_height_m.mid
                                  - PLATFORM_THICK_M / 2))
        add_box_geom(platform, "platform", (depth / 2, PLATFORM_HALF_Y_M, PLATFORM_THICK_M / 2),
                     rgba=(0.45, 0.47, 0.5, 1.0), friction=(1.0, 0.01, 0.001))
        # The pedestal is a small table riding on the platform (moved with it at reset).
        pedestal = add_table(spec, "pedestal", (PEDESTAL_X_M, 0.0), (0.18, 0.25),
                             cfg.pedestal_height_m)
        pedestal.pos = (PEDESTAL_X_M, 0.0, cfg.platform_height_m.mid)
        add_free_box(spec, "object", OBJECT_HALF_M, mass_kg=0.75, rgba=(0.2, 0.4, 0.9, 1.0))

    def bind_task(self, model: mujoco.MjModel) -> None:
        self.platform = model.body("platform").id
        self.pedestal = model.body("pedestal").id
        self.obj_body = model.body("object").id
        self.obj_geom = model.geom("object").id
        self.obj_qadr = self.free_joint_qadr("object")
        self.obj_start_z = torch.zeros(self.sim.num_worlds, dtype=torch.float64,
                                       device=self.device)

    def platform_height(self) -> Tensor:
        """(B,) the platform's top height in every world."""
        return self.sim.model_field("body_pos")[:, self.platform, 2] + PLATFORM_THICK_M / 2

    def terrain_height(self, xy: Tensor, ids: Tensor | None = None) -> Tensor:
        on = ((xy[..., 0] >= PLATFORM_X_M[0]) & (xy[..., 0] <= PLATFORM_X_M[1])
              & (xy[..., 1].abs() <= PLATFORM_HALF_Y_M))
        height = self.platform_height() if ids is None else self.platform_height()[ids]
        return torch.where(on, height.unsqueeze(-1).to(xy), torch.zeros_like(xy[..., 0]))

    def reset_objects(self, ids: Tensor, gen: torch.Generator) -> dict[str, Tensor]:
        cfg, n = self.config, len(ids)
        height = cfg.platform_height_m.sample(n, gen)
        body_pos = self.sim.model_field("body_pos")
        body_pos[ids, self.platform, 2] = (height - PLATFORM_THICK_M / 2).to(body_pos)
        body_pos[ids, self.pedestal, 2] = height.to(body_pos)
        dy, yaw = cfg.object_dy_m.sample(n, gen), cfg.object_yaw_rad.sample(n, gen)
        z = height + cfg.pedestal_height_m + OBJECT_HALF_M[2] + 0.001
        pos = torch.stack([torch.full_like(dy, PEDESTAL_X_M - 0.08), dy, z], -1)
        qpos = self.sim.qpos
        qpos[ids, self.obj_qadr:self.obj_qadr + 3] = pos.to(qpos)
        qpos[ids, self.obj_qadr + 3:self.obj_qadr + 7] = quat_from_yaw(yaw).to(qpos)
        params = {"platform_height_m": height, "object_dy_m": dy, "object_yaw_rad": yaw}
        params.update(randomise_object(self, ids, gen, self.obj_body, self.obj_geom))
        return params

    def capture_initial(self, ids: Tensor) -> None:
        self.obj_start_z[ids] = self.sim.qpos[ids, self.obj_qadr + 2].to(self.obj_start_z)

    def anchor(self, ids: Tensor) -> tuple[Tensor, Tensor]:
        return self.object_anchor(self.obj_qadr, ids)

    def observe(self, root: Frame) -> dict[str, Tensor]:
        b = root.pos.shape[0]
        edge = torch.zeros(b, 3, dtype=torch.float64, device=self.device)
        edge[:, 0] = PLATFORM_X_M[0]
        edge[:, 2] = self.platform_height()
        edge_rel, _ = root.to_local(edge)
        return {**self.object_observation(self.obj_body, root), "platform_edge_pos": edge_rel}

    def success(self) -> Tensor:
        """The object is lifted off the pedestal and held, the robot standing on the platform."""
        held = box_held_up(self, self.obj_body, self.obj_start_z, self.config.lift_height_m)
        feet_z = self.sim.sensordata[:, self._foot_z_adr]
        on_platform = (feet_z > self.platform_height().unsqueeze(-1) - 0.03).all(dim=1)
        return held & on_platform

    @property
    def _foot_z_adr(self) -> list[int]:
        return [int(self.model.sensor(f"{s}_foot_pos").adr[0]) + 2 for s in ("left", "right")]
