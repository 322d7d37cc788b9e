"""The import direction of DESIGN.md, checked on the source with ``ast``.

robot_io <- planners, datasets <- learning <- teleop_app. Nothing imports teleop_app, and no Qt
binding is imported below teleop_app. Every import statement counts, including the ones inside
functions, and so do ``importlib.import_module``, ``__import__`` and ``robot_io.optional.require``
called with a literal module name (the lazy ways to import something).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

ALLOWED: dict[str, frozenset[str]] = {
    "robot_io": frozenset(),
    "planners": frozenset({"robot_io"}),
    "datasets": frozenset({"robot_io"}),
    "learning": frozenset({"robot_io", "planners", "datasets"}),
    "teleop_app": frozenset({"robot_io", "planners", "datasets", "learning"}),
}
"""Our top-level package -> the other packages of ours it may import."""

QT_MODULES = frozenset({"PyQt6", "PySide6", "PyQt5", "PySide2", "qtpy"})
QT_ALLOWED_IN = frozenset({"teleop_app"})
DYNAMIC_IMPORTERS = frozenset({"import_module", "__import__", "require"})


@dataclass(frozen=True)
class Edge:
    """One import found in a source file."""

    file: Path
    line: int
    importer: str  # dotted module name of the file
    imported: str  # absolute dotted name of what it imports


def module_name(root: Path, file: Path) -> str:
    """Dotted module name of ``file`` relative to ``root`` (``pkg/__init__.py`` -> ``pkg``)."""
    parts = list(file.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve_relative(importer: str, is_package: bool, level: int, module: str | None) -> str:
    # The package a relative import starts from: the module itself for __init__, else its parent.
    base = importer.split(".") if is_package else importer.split(".")[:-1]
    base = base[:max(len(base) - (level - 1), 0)]
    return ".".join([*base, *([module] if module else [])])


def _dynamic_target(node: ast.Call) -> str | None:
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
    if name not in DYNAMIC_IMPORTERS or not node.args:
        return None
    first = node.args[0]
    if isinstance(first, ast.Constant) and isinstance(first.value, str) and first.value:
        return first.value
    return None


def imports_of(root: Path, file: Path) -> list[Edge]:
    """Every module imported anywhere in ``file`` (relative imports made absolute)."""
    importer = module_name(root, file)
    is_package = file.name == "__init__.py"
    edges: list[Edge] = []
    for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"), filename=str(file))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = _resolve_relative(importer, is_package, node.level, node.module)
            else:
                base = node.module or ""
            # `from pkg import mod` may import a submodule: count pkg.mod as well as pkg.
            targets = [base] + [f"{base}.{a.name}" for a in node.names if a.name != "*" and base]
        elif isinstance(node, ast.Call) and (dynamic := _dynamic_target(node)):
            targets = [dynamic]
        edges += [Edge(file, node.lineno, importer, t) for t in targets if t]
    return edges


def source_files(root: Path, packages: frozenset[str] | set[str]) -> list[Path]:
    """The .py files of our top-level packages under ``root``."""
    return sorted(p for pkg in packages if (root / pkg).is_dir()
                  for p in (root / pkg).rglob("*.py") if "__pycache__" not in p.parts)


def violations(root: Path, allowed: dict[str, frozenset[str]] = ALLOWED) -> list[str]:
    """Human-readable layer violations of the packages under ``root``; empty when clean."""
    found: list[str] = []
    seen: set[tuple[str, str]] = set()
    for file in source_files(root, set(allowed)):
        for edge in imports_of(root, file):
            src = edge.importer.split(".")[0]
            dst = edge.imported.split(".")[0]
            where = f"{edge.file.relative_to(root)}:{edge.line}"
            if (where, dst) in seen:  # `from x import a, b` yields x, x.a, x.b: report once
                continue
            seen.add((where, dst))
            if dst in allowed and dst != src and dst not in allowed[src]:
                found.append(f"{where}: {src} must not import {edge.imported} "
                             f"({src} may import: {sorted(allowed[src]) or 'nothing of ours'})")
            if dst in QT_MODULES and src not in QT_ALLOWED_IN:
                found.append(f"{where}: {edge.imported} (Qt) imported below teleop_app")
    return found


def test_import_direction_of_the_repository() -> None:
    assert violations(REPO_ROOT) == []


def test_the_checker_sees_the_real_code() -> None:
    """Guards against a vacuous pass: files are found and their imports are parsed."""
    files = source_files(REPO_ROOT, set(ALLOWED))
    assert sum(1 for f in files if f.relative_to(REPO_ROOT).parts[0] == "robot_io") >= 5
    edges = {(e.importer, e.imported) for f in files for e in imports_of(REPO_ROOT, f)}
    assert ("robot_io.assets", "robot_io.errors") in edges
    assert ("robot_io.optional", "robot_io.errors") in edges


def _write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_checker_reports_bad_imports(tmp_path: Path) -> None:
    _write(tmp_path, "robot_io/__init__.py", "")
    _write(tmp_path, "robot_io/sub/__init__.py", "")
    # Hidden inside a function, as lazy imports are.
    _write(tmp_path, "robot_io/sub/lazy.py", "def f():\n    from learning.dp import Policy\n")
    _write(tmp_path, "robot_io/sub/rel.py", "from ...planners import box\n")
    _write(tmp_path, "robot_io/gui.py", "import importlib\nimportlib.import_module('PyQt6.QtCore')\n")
    _write(tmp_path, "learning/__init__.py", "import teleop_app.cli\nfrom . import dp\n")
    _write(tmp_path, "learning/dp.py", "from robot_io.sub import lazy\nfrom ..datasets import io\n")
    _write(tmp_path, "teleop_app/ui.py", "from PyQt6 import QtWidgets\nimport learning, planners\n")
    found = violations(tmp_path)
    assert len(found) == 4, found
    assert any(v.startswith("robot_io/sub/lazy.py:2: robot_io must not import learning.dp") for v in found)
    assert any(v.startswith("robot_io/sub/rel.py:1: robot_io must not import planners") for v in found)
    assert any(v.startswith("robot_io/gui.py:2: PyQt6.QtCore (Qt)") for v in found)
    assert any(v.startswith("learning/__init__.py:1: learning must not import teleop_app.cli")
               for v in found)


@pytest.mark.parametrize("importer,is_package,level,module,expected", [
    ("a.b.c", False, 1, "d", "a.b.d"),
    ("a.b.c", False, 2, None, "a"),
    ("a.b", True, 1, "d", "a.b.d"),
    ("a.b", True, 2, "d", "a.d"),
    ("a.b", False, 3, "x", "x"),  # beyond the top level: still reported as an import of x
])
def test_relative_imports_resolve(importer: str, is_package: bool, level: int, module: str | None,
                                  expected: str) -> None:
    assert _resolve_relative(importer, is_package, level, module) == expected


# The places that build simulated worlds: everything else is typed against
# `robot_io.protocols.World` and works on a robot or a fake one too.
SIMULATOR_CONSTRUCTION_SITES = frozenset({
    "robot_io.sim.bench", "robot_io.sim.bench_runner", "robot_io.sim.distributed",
    "planners.heuristic.bench",
    "datasets.replay", "datasets.bench_recorder", "learning.evaluate", "learning.rl.finetune",
    "learning.controller.lower_env", "learning.controller.upper_env",
    "learning.controller.evaluate",
})
"""Beside these, the composition root (teleop_app) builds worlds."""
WORLD_USERS = ("robot_io.session", "robot_io.safety", "robot_io.protocols", "robot_io.runner",
               "robot_io.control", "datasets.recorder", "learning.deploy", "learning.chunking",
               "learning.rl.rollout")


def _env_importers() -> set[str]:
    files = source_files(REPO_ROOT, set(ALLOWED))
    return {e.importer for f in files for e in imports_of(REPO_ROOT, f)
            if e.imported in ("robot_io.env", "robot_io.env.BatchedEnv")}


def test_only_construction_sites_import_the_simulator_env() -> None:
    importers = {i for i in _env_importers() if not i.startswith("teleop_app")}
    assert "robot_io.sim.bench" in importers  # the checker sees real imports
    assert importers <= SIMULATOR_CONSTRUCTION_SITES, sorted(importers -
                                                             SIMULATOR_CONSTRUCTION_SITES)
    for module in WORLD_USERS:
        assert not any(i == module or i.startswith(module + ".") for i in importers), module


def test_observers_and_the_session_import_no_mujoco() -> None:
    """A recorder, a GUI or a robot backend implements the protocols without MuJoCo."""
    import subprocess
    import sys

    code = ("import sys; import robot_io.protocols, robot_io.safety, robot_io.session, "
            "robot_io.fake_robot, datasets.recorder; print('mujoco' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO_ROOT, check=True)
    assert out.stdout.strip() == "False", out.stderr
