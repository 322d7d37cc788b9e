"""Low-level controllers behind the `Controller` protocol, chosen by name.

    controller = make_controller("reference", env)
    controller = make_controller("learned", env, weights=Path("out/ctrl"), runtime="onnx")

"learned" without weights uses the policy shipped with the package in `weights/` (next to this
file). Controllers are imported when built, not here: importing `robot_io.control` stays light
and does not load MuJoCo.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from robot_io.env import BatchedEnv
    from robot_io.protocols import Controller

SHIPPED_WEIGHTS = Path(__file__).resolve().parent / "weights"
"""The trained upper-body policy shipped inside the package (empty until one is trained)."""


def shipped_weights() -> Path:
    """The shipped weights folder.

    Raises:
        PolicySpecError: the package ships no trained policy (yet).
    """
    from robot_io.control.policy_io import PolicySpecError

    if not (SHIPPED_WEIGHTS / "upper.json").is_file():
        raise PolicySpecError(
            f"no trained controller is shipped with this package ({SHIPPED_WEIGHTS} holds no "
            f"upper.json); pass --controller-weights DIR (weights=DIR), or train one with "
            f"`refine-dp train-controller`")
    return SHIPPED_WEIGHTS


def _reference(env: BatchedEnv, weights: Path | None, runtime: str, device: str) -> Controller:
    if weights is not None or runtime != "torch":
        raise ValueError("controller weights and runtime apply to the 'learned' controller "
                         "only, not 'reference'")
    from robot_io.control.reference import ReferenceController

    return ReferenceController(env)


def _learned(env: BatchedEnv, weights: Path | None, runtime: str, device: str) -> Controller:
    from robot_io.control.learned import LearnedController

    folder = Path(weights) if weights is not None else shipped_weights()
    return LearnedController(env, folder, runtime=runtime, device=device)


REGISTRY: dict[str, Callable[[BatchedEnv, Path | None, str, str], Controller]] = {
    "reference": _reference,
    "learned": _learned,
}
CONTROLLERS = tuple(REGISTRY)


def make_controller(name: str, env: BatchedEnv, weights: Path | None = None,
                    runtime: str = "torch", device: str = "cpu") -> Controller:
    """Build the controller `name` for `env`.

    Args:
        name: "reference" (privileged, simulation only) or "learned" (exported policies).
        env: the worlds it controls.
        weights: the learned controller's exported policy folder (None: the shipped one).
        runtime: the learned controller's runtime, "torch" or "onnx".
        device: the learned controller's torch device (or ONNX provider: "cpu" / "cuda").

    Raises:
        ValueError: an unknown name (lists the known ones), or weights / runtime for the
            reference controller.
        PolicySpecError: the learned controller's weights are missing, damaged or unfit.
    """
    if name not in REGISTRY:
        raise ValueError(f"unknown controller {name!r}; known controllers: "
                         f"{', '.join(sorted(REGISTRY))}")
    return REGISTRY[name](env, weights, runtime, device)


__all__ = ["CONTROLLERS", "REGISTRY", "SHIPPED_WEIGHTS", "make_controller", "shipped_weights"]
