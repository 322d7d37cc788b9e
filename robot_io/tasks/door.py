"""Task 3, door opening and traversal: press the lever handle past the latch, push the door, walk
through the doorway.

The latch is physical: a bolt fixed to the handle's shaft reaches past the door's edge into a
slot of the frame, where a strike block stops the door from swinging. Turning the handle
rotates the bolt out of the slot (past `latch_angle_rad`, set by the geometry) and frees the
door. The handle springs back when released. The door opens away from the robot (+x).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import mujoco
import torch
from torch import Tensor

from robot_io.math3d import Frame
from robot_io.scene import GREY, WOOD, add_box_geom, add_environment
from robot_io.tasks.base import PhysicsRanges, Range, StartRanges, Task, TaskConfig

DOOR_X_M = 0.0  # the wall plane
HALF_OPENING_M = 0.45
PANEL_HALF = (0.02, 0.43, 1.0)
HANDLE_Z_M = 0.7
HANDLE_FROM_EDGE_M = 0.06
LEVER_LENGTH_M = 0.12
BOLT_LENGTH_M = 0.13
# Bolt and strike are smooth metal: MuJoCo takes the larger friction of a pair, so both are low.
LATCH_FRICTION = (0.05, 0.005, 0.0001)
HINGE_Y_M = HALF_OPENING_M - 0.005
EDGE_Y_M = HINGE_Y_M - 2 * PANEL_HALF[1] - 0.005  # world y of the door's free edge
SHAFT_Y_M = EDGE_Y_M + HANDLE_FROM_EDGE_M
# The bolt tip leaves the strike (its face at y = -HALF_OPENING_M) once its reach along -y,
# BOLT_LENGTH * cos(angle), is shorter than the shaft's distance to that face.
LATCH_ANGLE_RAD = math.acos((SHAFT_Y_M + HALF_OPENING_M) / BOLT_LENGTH_M)


@dataclass(frozen=True)
class DoorConfig(TaskConfig):
    """Door task. The robot starts relative to the handle."""

    time_limit_s: float = 30.0
    start: StartRanges = field(default_factory=lambda: StartRanges(
        radius_m=Range(0.9, 1.3), polar_rad=Range(-0.3, 0.3), heading_rad=Range(-0.3, 0.3)))
    physics: PhysicsRanges = field(default_factory=lambda: PhysicsRanges(
        object_mass_kg=Range(4.0, 8.0)))
    hinge_damping: Range = Range(0.5, 2.0)
    handle_stiffness: Range = Range(0.3, 0.8)  # N m / rad, the return spring
    through_m: float = 0.6  # success: the trunk is this far past the wall, inside the doorway


def default_config() -> DoorConfig:
    return DoorConfig()


class DoorTask(Task):
    name = "door"
    config: DoorConfig

    def build_scene(self, spec: mujoco.MjSpec) -> None:
        add_environment(spec)
        _add_frame_and_walls(spec)
        door = spec.worldbody.add_body(name="door", pos=(DOOR_X_M, HINGE_Y_M, 0.0))
        door.add_joint(name="door_hinge", type=mujoco.mjtJoint.mjJNT_HINGE, axis=(0, 0, 1),
                       range=(0.0, 1.9), limited=True, damping=1.0, frictionloss=0.3)
        add_box_geom(door, "door_panel", PANEL_HALF, (0, -PANEL_HALF[1] - 0.005, 1.0 + 0.005),
                     WOOD, mass=6.0)
        shaft = (-PANEL_HALF[0] - 0.03, SHAFT_Y_M - HINGE_Y_M, HANDLE_Z_M)
        handle = door.add_body(name="handle", pos=(0, shaft[1], shaft[2]))
        # Positive angle: the lever's free end (toward the hinge, +y) goes down.
        handle.add_joint(name="handle_hinge", type=mujoco.mjtJoint.mjJNT_HINGE, axis=(-1, 0, 0),
                         range=(0.0, 1.25), limited=True, stiffness=0.5, springref=0.0,
                         damping=0.05, armature=0.01)
        metal = (0.75, 0.75, 0.8, 1.0)
        add_box_geom(handle, "handle_rose", (0.03, 0.015, 0.015), (shaft[0] + 0.01, 0, 0), metal,
                     mass=0.1)
        add_box_geom(handle, "handle_lever", (0.012, LEVER_LENGTH_M / 2, 0.012),
                     (shaft[0] - 0.015, LEVER_LENGTH_M / 2, 0), metal, mass=0.15,
                     friction=(1.2, 0.02, 0.001))
        handle.add_site(name="handle_tip", pos=(shaft[0] - 0.015, LEVER_LENGTH_M - 0.02, 0),
                        size=(0.01, 0, 0), group=4)
        # The bolt lives inside the door's thickness, pointing past the edge (-y).
        add_box_geom(handle, "latch_bolt", (0.008, BOLT_LENGTH_M / 2, 0.008),
                     (0, -BOLT_LENGTH_M / 2, 0), metal, mass=0.05, friction=LATCH_FRICTION)

    def bind_task(self, model: mujoco.MjModel) -> None:
        self.door_body = model.body("door").id
        self.panel_geom = model.geom("door_panel").id
        self.door_qadr = int(model.joint("door_hinge").qposadr[0])
        self.handle_qadr = int(model.joint("handle_hinge").qposadr[0])
        self.door_dof = int(model.joint("door_hinge").dofadr[0])
        self.handle_jnt = model.joint("handle_hinge").id
        self.handle_site = model.site("handle_tip").id
        self.handle_body = model.body("handle").id

    def reset_objects(self, ids: Tensor, gen: torch.Generator) -> dict[str, Tensor]:
        cfg, n = self.config, len(ids)
        self.sim.qpos[ids, self.door_qadr] = 0.0
        self.sim.qpos[ids, self.handle_qadr] = 0.0
        mass = cfg.physics.object_mass_kg.sample(n, gen)
        damping = cfg.hinge_damping.sample(n, gen)
        stiffness = cfg.handle_stiffness.sample(n, gen)
        for name, index, value in (("body_mass", self.door_body, mass),
                                   ("dof_damping", self.door_dof, damping),
                                   ("jnt_stiffness", self.handle_jnt, stiffness)):
            field = self.sim.model_field(name)
            field[ids, index] = value.to(field)
        return {"door_mass_kg": mass, "door_damping": damping, "handle_stiffness": stiffness}

    def anchor(self, ids: Tensor) -> tuple[Tensor, Tensor]:
        xy = torch.tensor([DOOR_X_M - 0.05, self.handle_y], dtype=torch.float64)
        return xy.expand(len(ids), 2), torch.zeros(len(ids), dtype=torch.float64)

    @property
    def handle_y(self) -> float:
        return SHAFT_Y_M + LEVER_LENGTH_M / 2

    def goal_pos(self) -> Tensor:
        """(B, 3) a point beyond the doorway the robot must reach."""
        b = self.sim.num_worlds
        return torch.tensor([DOOR_X_M + self.config.through_m + 0.2, 0.0, 0.0],
                            dtype=torch.float64, device=self.device).expand(b, 3)

    def angles(self) -> tuple[Tensor, Tensor]:
        """(B,) door and handle angles [rad]."""
        return self.sim.qpos[:, self.door_qadr], self.sim.qpos[:, self.handle_qadr]

    def observe(self, root: Frame) -> dict[str, Tensor]:
        pos, quat = self.body_pose(self.handle_body)
        rel_pos, rel_quat = root.to_local(pos, quat)
        goal, _ = root.to_local(self.goal_pos())
        door, handle = self.angles()
        return {"handle_pos": rel_pos, "handle_quat": rel_quat, "goal_pos": goal,
                "door_angle": door.unsqueeze(-1), "handle_angle": handle.unsqueeze(-1)}

    def success(self) -> Tensor:
        """The trunk has passed `through_m` beyond the wall within the doorway's width."""
        root = self.sim.qpos[:, self.root_qadr:self.root_qadr + 3]
        past = root[:, 0] > DOOR_X_M + self.config.through_m
        inside = root[:, 1].abs() < HALF_OPENING_M + 0.5
        return past & inside


def _add_frame_and_walls(spec: mujoco.MjSpec) -> None:
    """Posts with a latch slot on the strike side, a lintel and side walls."""
    wall = spec.worldbody.add_body(name="wall", pos=(DOOR_X_M, 0, 0))
    h, t = 1.05, 0.06
    post_y = HALF_OPENING_M + 0.05
    add_box_geom(wall, "post_hinge", (t, 0.05, h), (0, post_y, h), GREY)
    # Strike side: two half posts leave a slot (|x| < 0.012) for the bolt; the far one is the
    # strike that stops a latched door.
    for name, x in (("post_front", -(t + 0.012) / 2 - 0.006), ("strike", (t + 0.012) / 2 + 0.006)):
        add_box_geom(wall, name, ((t - 0.012) / 2, 0.05, h), (x, -post_y, h), GREY,
                     friction=LATCH_FRICTION)
    add_box_geom(wall, "lintel", (t, post_y + 0.05, 0.05), (0, 0, 2 * h + 0.05), GREY)
    for side in (1, -1):
        add_box_geom(wall, f"wall_{'l' if side > 0 else 'r'}", (0.05, 1.0, h),
                     (0, side * (post_y + 1.05), h), (0.8, 0.8, 0.78, 1.0))
