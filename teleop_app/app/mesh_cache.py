"""What the 3D view draws of a MuJoCo model: one triangle mesh per visible geom (no Qt, no GL).

    shapes = geom_shapes(model, decimate=0.1)          # meshes decimated once, cached on disk
    for s in shapes: s.geom_id, s.verts, s.faces, s.rgba   # in the geom's own frame

Which geoms: the ones MuJoCo's own viewer shows by default, i.e. geom groups 0-2 with a
non-zero alpha. Our models follow that convention (`robot_io.t1_model`): the T1's collision
geoms are transparent (group 0, alpha 0) or in group 3, the hidden rubber hands and the sites
are in groups 4-5, so collision-only geoms never duplicate the visual meshes. Planes are left
out: the view draws its own floor (`floor_colors`).

Mesh decimation (VTK's quadric decimation through vedo) costs about a second for the T1's 30
meshes, so each decimated mesh is kept under `mesh_cache_dir()`
(``~/.cache/refine-dp/view_meshes/<sha256 of vertices, faces, fraction>.npz``), written
atomically; a file that cannot be read or does not hold a valid mesh is rebuilt.
"""

from __future__ import annotations

import hashlib
import io
import logging
import zipfile
from dataclasses import dataclass
from pathlib import Path

import mujoco
import numpy as np
import vedo

from robot_io.assets import cache_root
from robot_io.atomic import write_bytes_atomic

log = logging.getLogger(__name__)

VISIBLE_GROUPS = frozenset({0, 1, 2})  # MuJoCo's default mjvOption.geomgroup
MIN_FACES = 64  # small meshes keep at least this many faces (a 500-face link at 10 % is a blob)
PRIMITIVE_RES = 20  # segments around spheres, capsules and cylinders
CACHE_VERSION = b"view-mesh-v1"  # bump when the decimation changes
_DEFAULT_RGBA = (0.5, 0.5, 0.5, 1.0)  # MuJoCo's default geom rgba: the material's rgba wins

_G = mujoco.mjtGeom


@dataclass(frozen=True)
class GeomShape:
    """A triangle mesh of one geom in the geom's frame.

    Attributes:
        geom_id: the geom's index in the model.
        verts: (V, 3) float32 vertices [m], in the geom frame.
        faces: (F, 3) int32 triangles (indices into `verts`).
        rgba: the colour MuJoCo draws it with, 0..1.
    """

    geom_id: int
    verts: np.ndarray
    faces: np.ndarray
    rgba: tuple[float, float, float, float]


def mesh_cache_dir() -> Path:
    """Where decimated meshes are cached (under the project's user cache folder)."""
    return cache_root() / "view_meshes"


def visible_geoms(model: mujoco.MjModel) -> list[int]:
    """Ids of the geoms MuJoCo's viewer shows by default, planes excepted (see module doc)."""
    return [i for i in range(model.ngeom)
            if int(model.geom_group[i]) in VISIBLE_GROUPS and geom_rgba(model, i)[3] > 0
            and int(model.geom_type[i]) != _G.mjGEOM_PLANE]


def geom_rgba(model: mujoco.MjModel, geom_id: int) -> tuple[float, float, float, float]:
    """MuJoCo's rule: the material's rgba, unless the geom sets an rgba of its own."""
    rgba = tuple(float(x) for x in model.geom_rgba[geom_id])
    mat = int(model.geom_matid[geom_id])
    if mat >= 0 and np.allclose(rgba, _DEFAULT_RGBA):
        rgba = tuple(float(x) for x in model.mat_rgba[mat])
    return rgba  # type: ignore[return-value]


def geom_shapes(model: mujoco.MjModel, decimate: float = 0.1,
                cache_dir: Path | None = None) -> list[GeomShape]:
    """Meshes of every visible geom (`visible_geoms`); geom types without a mesh form here
    (height fields, SDFs) are skipped with a warning.

    Args:
        model: the scene.
        decimate: fraction of each mesh's faces to keep, in (0, 1] (1: the full meshes).
        cache_dir: the decimation cache (default `mesh_cache_dir()`).

    Raises:
        ValueError: `decimate` outside (0, 1].
    """
    if not 0.0 < decimate <= 1.0:
        raise ValueError(f"decimate is the fraction of faces kept, in (0, 1]; got {decimate}")
    cache_dir = mesh_cache_dir() if cache_dir is None else Path(cache_dir)
    shapes = []
    for gid in visible_geoms(model):
        gtype, size = int(model.geom_type[gid]), model.geom_size[gid]
        if gtype == _G.mjGEOM_MESH:
            verts, faces = model_mesh(model, int(model.geom_dataid[gid]))
            verts, faces = decimated(verts, faces, decimate, cache_dir)
        else:
            made = primitive(gtype, size)
            if made is None:
                log.warning("the 3D view does not draw geom %d (%s) of type %s", gid,
                            model.geom(gid).name, _G(gtype).name)
                continue
            verts, faces = made
        shapes.append(GeomShape(gid, verts, faces, geom_rgba(model, gid)))
    return shapes


def model_mesh(model: mujoco.MjModel, mesh_id: int) -> tuple[np.ndarray, np.ndarray]:
    """(V, 3) float32 vertices and (F, 3) int32 faces of a compiled mesh (in the geom frame:
    the compiler moved the vertices to the mesh's inertial frame and the geom pose with them)."""
    va, vn = model.mesh_vertadr[mesh_id], model.mesh_vertnum[mesh_id]
    fa, fn = model.mesh_faceadr[mesh_id], model.mesh_facenum[mesh_id]
    return (np.ascontiguousarray(model.mesh_vert[va:va + vn], np.float32),
            np.ascontiguousarray(model.mesh_face[fa:fa + fn], np.int32))


def decimated(verts: np.ndarray, faces: np.ndarray, fraction: float,
              cache_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """`verts, faces` reduced to about `fraction` of the faces (at least `MIN_FACES`), from the
    cache when it holds them, else computed and cached (a cache that cannot be written is
    logged and skipped)."""
    target = max(round(fraction * len(faces)), min(len(faces), MIN_FACES))
    if target >= len(faces):
        return verts, faces
    path = Path(cache_dir) / f"{cache_key(verts, faces, fraction)}.npz"
    cached = _load(path, len(faces))
    if cached is not None:
        return cached
    mesh = vedo.Mesh([verts, faces]).decimate(fraction=target / len(faces), preserve_volume=True)
    out = (np.ascontiguousarray(mesh.vertices, np.float32),
           np.ascontiguousarray(np.asarray(mesh.cells, dtype=np.int32).reshape(-1, 3)))
    buf = io.BytesIO()
    np.savez(buf, verts=out[0], faces=out[1])
    try:
        write_bytes_atomic(path, buf.getvalue())
    except OSError as exc:
        log.warning("cannot cache a decimated mesh at %s: %s", path, exc)
    return out


def cache_key(verts: np.ndarray, faces: np.ndarray, fraction: float) -> str:
    """sha256 (hex) of the mesh data and the fraction kept."""
    h = hashlib.sha256(CACHE_VERSION)
    h.update(np.ascontiguousarray(verts, np.float32).tobytes())
    h.update(np.ascontiguousarray(faces, np.int32).tobytes())
    h.update(repr(float(fraction)).encode())
    return h.hexdigest()


def _load(path: Path, full_faces: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The cached mesh at `path`, or None when missing or damaged (then it is rebuilt)."""
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            verts = np.ascontiguousarray(data["verts"], np.float32)
            faces = np.ascontiguousarray(data["faces"], np.int32)
        valid = (verts.ndim == 2 and verts.shape[1] == 3 and faces.ndim == 2
                 and faces.shape[1] == 3 and 0 < len(faces) <= full_faces
                 and faces.min() >= 0 and faces.max() < len(verts)
                 and bool(np.isfinite(verts).all()))
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        log.warning("rebuilding a damaged mesh cache file %s (%s)", path, exc)
        return None
    if not valid:
        log.warning("rebuilding a mesh cache file that holds no valid mesh: %s", path)
        return None
    return verts, faces


def primitive(gtype: int, size: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Triangles of a primitive geom in its frame (MuJoCo's sizes: half extents, radii,
    half lengths along z), or None for a type drawn elsewhere or not at all."""
    r = float(size[0])
    if gtype == _G.mjGEOM_BOX:
        shape = vedo.Box(length=2 * size[0], width=2 * size[1], height=2 * size[2])
    elif gtype == _G.mjGEOM_SPHERE:
        shape = vedo.Sphere(r=r, res=PRIMITIVE_RES)
    elif gtype == _G.mjGEOM_ELLIPSOID:
        shape = vedo.Sphere(r=1.0, res=PRIMITIVE_RES)
        shape = vedo.Mesh([shape.vertices * np.asarray(size[:3]), _triangles(shape)])
    elif gtype == _G.mjGEOM_CYLINDER:
        shape = vedo.Cylinder(r=r, height=2 * size[1], res=PRIMITIVE_RES)
    elif gtype == _G.mjGEOM_CAPSULE:
        half = float(size[1])
        shape = vedo.merge(vedo.Cylinder(r=r, height=2 * half, cap=False, res=PRIMITIVE_RES),
                           vedo.Sphere(pos=(0, 0, half), r=r, res=PRIMITIVE_RES),
                           vedo.Sphere(pos=(0, 0, -half), r=r, res=PRIMITIVE_RES))
    else:
        return None
    return np.ascontiguousarray(shape.vertices, np.float32), _triangles(shape)


def _triangles(mesh: vedo.Mesh) -> np.ndarray:
    """(F, 3) int32 triangles of a mesh whose cells may be quads or polygons."""
    tri = mesh.clone().triangulate()
    return np.ascontiguousarray(np.asarray(tri.cells, dtype=np.int32).reshape(-1, 3))


def floor_colors(model: mujoco.MjModel) -> tuple[tuple[float, float, float],
                                                   tuple[float, float, float]]:
    """Two checker colours for the floor: the first plane's checker texture when it has one
    (MuJoCo's builtin checker: corner texels), else its rgba and a slightly darker shade."""
    planes = [i for i in range(model.ngeom) if int(model.geom_type[i]) == _G.mjGEOM_PLANE]
    if not planes:
        return (0.3, 0.34, 0.4), (0.26, 0.3, 0.36)
    gid = planes[0]
    rgb = np.asarray(geom_rgba(model, gid)[:3])
    mat = int(model.geom_matid[gid])
    tex = int(model.mat_texid[mat, mujoco.mjtTextureRole.mjTEXROLE_RGB]) if mat >= 0 else -1
    if tex >= 0 and int(model.tex_nchannel[tex]) >= 3:
        h, w = int(model.tex_height[tex]), int(model.tex_width[tex])
        c, start = int(model.tex_nchannel[tex]), int(model.tex_adr[tex])
        texels = model.tex_data[start:start + h * w * c].reshape(h, w, c)
        first, second = texels[0, 0, :3] / 255.0, texels[0, w - 1, :3] / 255.0
        return tuple(rgb * first), tuple(rgb * second)  # type: ignore[return-value]
    return tuple(rgb), tuple(0.85 * rgb)  # type: ignore[return-value]


def overlay_meshes(frame_m: float = 0.12) -> dict[str, vedo.Mesh]:
    """The overlay shapes, each in its own frame: "frame" (x, y, z axes coloured red, green,
    blue, `frame_m` long), "sphere" (a gripper marker), "shaft" (along x from 0 to 1, scaled to
    the arrow's length) and "head" (a cone along x from 0)."""
    axes, colors = [], []
    for axis, rgb in enumerate(((230, 30, 30), (30, 200, 30), (40, 80, 240))):
        direction = np.eye(3)[axis]
        axes.append(vedo.Cylinder(pos=0.5 * frame_m * direction, r=0.008, height=frame_m,
                                  axis=direction, res=12).triangulate())
        colors.append(np.tile((*rgb, 255), (axes[-1].ncells, 1)))
    frame = vedo.merge(*axes)
    frame.cellcolors = np.concatenate(colors).astype(np.uint8)
    yellow = (1.0, 0.85, 0.1)
    return {
        "frame": frame,
        "sphere": vedo.Sphere(r=0.03, res=16),  # opaque: translucency cost 25 % of a frame
        "shaft": vedo.Cylinder(pos=(0.5, 0, 0), r=0.018, height=1.0, axis=(1, 0, 0),
                               res=12).color(yellow),
        "head": vedo.Cone(pos=(0.05, 0, 0), r=0.05, height=0.1, axis=(1, 0, 0),
                          res=16).color(yellow),
    }
