"""Lazy imports of optional dependencies with an error that says how to install them.

The core install stays small (CPU MuJoCo, torch). Everything else is an extra of the
``refine-dp`` distribution, or, for Isaac Lab and TensorRT, something the user installs by other
means. Code that needs such a module calls :func:`require` at the point of use, never at import
time, so that importing our packages never fails for lack of an optional dependency.

Example:
    mjw = require("mujoco_warp", "gpu", "the GPU backend")
"""

from __future__ import annotations

import importlib
from types import ModuleType

from robot_io.errors import MissingDependencyError

PIP_EXTRAS: frozenset[str] = frozenset({"gpu", "app", "vr", "gamepad", "export", "lerobot",
                                        "test"})
"""Extras declared in pyproject.toml: ``pip install 'refine-dp[EXTRA]'`` provides them."""

OTHER_SOURCES: dict[str, str] = {
    "isaaclab": "Isaac Lab (needs Python 3.12 and its own environment; see README)",
    "tensorrt": "TensorRT from NVIDIA's own channel",
}
"""Pseudo-extras that pip cannot install alongside refine-dp, with where to get them instead."""

OPTIONAL_MODULES: dict[str, str] = {
    "mujoco_warp": "gpu",
    "warp": "gpu",
    "PyQt6": "app",
    "vedo": "app",
    "xr": "vr",  # the import name of pyopenxr
    "pygame": "gamepad",
    "onnx": "export",
    "onnxruntime": "export",
    "pyarrow": "lerobot",
    "isaaclab": "isaaclab",
    "tensorrt": "tensorrt",
}
"""Top-level import name of each known optional module -> its extra (a key of PIP_EXTRAS or
OTHER_SOURCES)."""


def install_hint(extra: str) -> str:
    """How to get the modules of ``extra``, as a phrase for an error message.

    Raises:
        ValueError: ``extra`` is neither a pip extra nor a known other source.
    """
    if extra in PIP_EXTRAS:
        return f"install it with `pip install 'refine-dp[{extra}]'`"
    if extra in OTHER_SOURCES:
        return f"it is not pip-installable with refine-dp: install {OTHER_SOURCES[extra]}"
    known = sorted(PIP_EXTRAS | set(OTHER_SOURCES))
    raise ValueError(f"unknown extra {extra!r}; known extras: {known}")


def require(module: str, extra: str | None = None, purpose: str = "this feature") -> ModuleType:
    """Import ``module`` or raise an error naming the extra that provides it.

    Args:
        module: dotted import name, e.g. ``"mujoco_warp"`` or ``"onnxruntime"``.
        extra: the extra that installs it; looked up in OPTIONAL_MODULES by the top-level name
            when None.
        purpose: what the module is needed for, e.g. ``"the GPU backend"``.

    Returns:
        The imported module.

    Raises:
        MissingDependencyError: the module is not installed, or is installed but fails to import.
        ValueError: ``extra`` is None and the module is not in OPTIONAL_MODULES, or ``extra`` is
            unknown.
    """
    if extra is None:
        top = module.partition(".")[0]
        if top not in OPTIONAL_MODULES:
            raise ValueError(f"no extra is known for module {module!r}; pass extra= explicitly "
                             f"(known modules: {sorted(OPTIONAL_MODULES)})")
        extra = OPTIONAL_MODULES[top]
    hint = install_hint(extra)  # validate before importing, so a typo fails even when installed
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        if _is_absent(exc, module):
            msg = f"{module} is needed for {purpose}; {hint}"
        else:
            # Installed but broken (e.g. its own dependency or native library is missing).
            msg = (f"{module} is installed but could not be imported ({exc}); it is needed for "
                   f"{purpose}. Fix the installation: {hint}")
        raise MissingDependencyError(msg, name=module) from exc


def _is_absent(exc: ImportError, module: str) -> bool:
    """True when ``exc`` says ``module`` itself (or one of its parent packages) is not installed."""
    if not isinstance(exc, ModuleNotFoundError) or exc.name is None:
        return False
    return module == exc.name or module.startswith(exc.name + ".")
