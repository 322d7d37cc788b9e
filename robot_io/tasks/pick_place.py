"""Task 2, long-horizon pick-and-place: take the box from table A, carry it to table B, place it."""

from __future__ import annotations

from dataclasses import dataclass, field

import mujoco
import torch
from torch import Tensor

from robot_io.math3d import Frame
from robot_io.scene import add_environment, add_free_box, add_table
from robot_io.tasks.base import PhysicsRanges, Range, StartRanges, Task
from robot_io.tasks.box_pickup import (BOX_HALF_M, BOX_RGBA, BoxPickupConfig, place_box_on_table,
                                       randomise_object)


@dataclass(frozen=True)
class PickPlaceConfig(BoxPickupConfig):
    """Pick-and-place. Table B's centre is sampled per world (a per-world model field)."""

    time_limit_s: float = 45.0
    start: StartRanges = field(default_factory=lambda: StartRanges(
        radius_m=Range(1.0, 1.4), polar_rad=Range(-0.35, 0.35), heading_rad=Range(-0.35, 0.35)))
    physics: PhysicsRanges = field(default_factory=PhysicsRanges)
    table_b_x_m: Range = Range(-0.8, -0.4)
    table_b_y_m: Range = Range(-2.8, -2.4)
    place_tolerance_m: float = 0.2  # box centre within this of table B's place spot (xy)


def default_config() -> PickPlaceConfig:
    return PickPlaceConfig()


class PickPlaceTask(Task):
    name = "pick_place"
    config: PickPlaceConfig

    def build_scene(self, spec: mujoco.MjSpec) -> None:
        cfg = self.config
        add_environment(spec)
        add_table(spec, "table", cfg.table_xy_m, cfg.table_half_m, cfg.table_height_m)
        add_table(spec, "table_b", (cfg.table_b_x_m.mid, cfg.table_b_y_m.mid), cfg.table_half_m,
                  cfg.table_height_m)
        target = spec.worldbody.add_body(name="place_target")  # moved with table B at reset
        target.add_site(name="place_target", size=(0.05, 0.05, 0.002),
                        type=mujoco.mjtGeom.mjGEOM_CYLINDER, rgba=(0.1, 0.7, 0.2, 0.5))
        add_free_box(spec, "box", BOX_HALF_M, mass_kg=1.5, rgba=BOX_RGBA)

    def bind_task(self, model: mujoco.MjModel) -> None:
        self.box_body = model.body("box").id
        self.box_geom = model.geom("box").id
        self.box_qadr = self.free_joint_qadr("box")
        self.table_b = model.body("table_b").id
        self.target = model.body("place_target").id

    def place_spot(self) -> Tensor:
        """(B, 3) world point on table B where the box's centre should end up."""
        table = self.sim.model_field("body_pos")[:, self.table_b]
        # Table B faces the robot's side of the room: the spot is near its +x edge.
        offset = torch.tensor([0.12, 0.0, 0.0], dtype=torch.float64, device=table.device)
        spot = table + offset
        spot[:, 2] = self.config.table_height_m + BOX_HALF_M[2]
        return spot

    def reset_objects(self, ids: Tensor, gen: torch.Generator) -> dict[str, Tensor]:
        cfg = self.config
        n = len(ids)
        bx, by = cfg.table_b_x_m.sample(n, gen), cfg.table_b_y_m.sample(n, gen)
        body_pos = self.sim.model_field("body_pos")
        body_pos[ids, self.table_b, 0] = bx.to(body_pos)
        body_pos[ids, self.table_b, 1] = by.to(body_pos)
        spot = self.place_spot()[ids]
        lift = torch.tensor([0, 0, BOX_HALF_M[2] - 0.003], dtype=torch.float64, device=spot.device)
        body_pos[ids, self.target] = (spot - lift).to(body_pos)
        table_xy = torch.tensor(cfg.table_xy_m, dtype=torch.float64).expand(n, 2)
        params = place_box_on_table(self, cfg, ids, gen, self.box_qadr, table_xy)
        params.update(randomise_object(self, ids, gen, self.box_body, self.box_geom))
        params.update({"table_b_x_m": bx, "table_b_y_m": by})
        return params

    def anchor(self, ids: Tensor) -> tuple[Tensor, Tensor]:
        return self.object_anchor(self.box_qadr, ids)

    def observe(self, root: Frame) -> dict[str, Tensor]:
        target, _ = root.to_local(self.place_spot())
        return {**self.object_observation(self.box_body, root), "target_pos": target}

    def success(self) -> Tensor:
        """The box rests upright on table B near the spot, and no hand holds it."""
        pos, quat = self.body_pose(self.box_body)
        spot = self.place_spot()
        near = (pos[:, :2] - spot[:, :2]).norm(dim=-1) < self.config.place_tolerance_m
        on_table = (pos[:, 2] - spot[:, 2]).abs() < 0.02
        upright = (1 - 2 * (quat[:, 1] ** 2 + quat[:, 2] ** 2)) > 0.9  # body z stays up
        still = self.sim.qvel[:, self.box_dof:self.box_dof + 3].norm(dim=-1) < 0.05
        free = (self.hand_pos_world() - pos.unsqueeze(1)).norm(dim=-1).min(dim=1).values > 0.1
        return near & on_table & upright & still & free

    @property
    def box_dof(self) -> int:
        return int(self.model.joint("box").dofadr[0])
