"""Scene building blocks added to the robot's `MjSpec`: floor, lights, tables, boxes, walls."""

from __future__ import annotations

import mujoco

from robot_io.t1_model import WORLD_CONAFFINITY, WORLD_CONTYPE

WOOD = (0.55, 0.4, 0.25, 1.0)
GREY = (0.6, 0.6, 0.62, 1.0)


def add_environment(spec: mujoco.MjSpec) -> None:
    """Floor, sky and light (the renderer's tracking camera needs no model camera)."""
    spec.visual.headlight.ambient = (0.35, 0.35, 0.35)
    spec.visual.headlight.diffuse = (0.5, 0.5, 0.5)
    spec.visual.global_.offwidth = 1280
    spec.visual.global_.offheight = 960
    spec.add_texture(name="sky", type=mujoco.mjtTexture.mjTEXTURE_SKYBOX,
                     builtin=mujoco.mjtBuiltin.mjBUILTIN_GRADIENT, width=256, height=256,
                     rgb1=(0.55, 0.65, 0.8), rgb2=(0.1, 0.12, 0.16))
    tex = spec.add_texture(name="grid", type=mujoco.mjtTexture.mjTEXTURE_2D,
                           builtin=mujoco.mjtBuiltin.mjBUILTIN_CHECKER, width=300, height=300,
                           rgb1=(0.32, 0.36, 0.42), rgb2=(0.26, 0.3, 0.36))
    del tex
    mat = spec.add_material(name="grid")
    mat.textures[mujoco.mjtTextureRole.mjTEXROLE_RGB] = "grid"
    mat.texrepeat = (1, 1)
    mat.texuniform = True
    spec.worldbody.add_geom(name="floor", type=mujoco.mjtGeom.mjGEOM_PLANE, size=(0, 0, 0.05),
                            material="grid", contype=WORLD_CONTYPE,
                            conaffinity=WORLD_CONAFFINITY, friction=(1.0, 0.01, 0.001))
    spec.worldbody.add_light(name="sun", pos=(0, 0, 5), dir=(0.3, 0.2, -1),
                             type=mujoco.mjtLightType.mjLIGHT_DIRECTIONAL,
                             diffuse=(0.6, 0.6, 0.6), castshadow=False)


def add_box_geom(body: mujoco.MjsBody, name: str, half: tuple[float, float, float],
                 pos: tuple[float, float, float] = (0, 0, 0),
                 rgba: tuple[float, ...] = GREY, **kwargs: object) -> mujoco.MjsGeom:
    """A world-colliding box geom."""
    return body.add_geom(name=name, type=mujoco.mjtGeom.mjGEOM_BOX, size=half, pos=pos, rgba=rgba,
                         contype=WORLD_CONTYPE, conaffinity=WORLD_CONAFFINITY, **kwargs)


def add_table(spec: mujoco.MjSpec, name: str, pos_xy: tuple[float, float],
              top_half: tuple[float, float], height_m: float) -> mujoco.MjsBody:
    """A static table: a top slab and four legs; body origin on the floor under the top's centre."""
    body = spec.worldbody.add_body(name=name, pos=(pos_xy[0], pos_xy[1], 0.0))
    thick = 0.02
    add_box_geom(body, f"{name}_top", (top_half[0], top_half[1], thick),
                 (0, 0, height_m - thick), WOOD, friction=(0.8, 0.01, 0.001))
    leg_h = (height_m - 2 * thick) / 2
    for i, (sx, sy) in enumerate(((1, 1), (1, -1), (-1, 1), (-1, -1))):
        add_box_geom(body, f"{name}_leg{i}", (0.02, 0.02, leg_h),
                     (sx * (top_half[0] - 0.03), sy * (top_half[1] - 0.03), leg_h), WOOD)
    return body


def add_free_box(spec: mujoco.MjSpec, name: str, half: tuple[float, float, float],
                 mass_kg: float, rgba: tuple[float, ...]) -> mujoco.MjsBody:
    """A free-floating box object with a site at its centre."""
    body = spec.worldbody.add_body(name=name, pos=(0, 0, half[2]))
    joint = body.add_freejoint(name=name)
    # The T1 file's default class gives every joint armature and damping; a free object has none.
    joint.armature, joint.damping = 0.0, (0.0, 0.0, 0.0)
    add_box_geom(body, name, half, rgba=rgba, mass=mass_kg, friction=(1.0, 0.02, 0.001),
                 condim=4, solref=(0.01, 1.0), solimp=(0.95, 0.99, 0.001, 0.5, 2))
    body.add_site(name=name, size=(0.01, 0, 0), group=4)
    return body
