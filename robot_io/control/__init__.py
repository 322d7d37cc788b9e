"""Low-level controllers behind the `Controller` protocol, chosen by name.

    controller = make_controller("reference", env)
    controller = make_controller("learned", env, weights=Path("out/ctrl"), runtime="onnx")
    choice = ControllerChoice("learned", Path("out/ctrl"))  # what entry points pass around
    controller = choice.build(env)

"learned" without weights uses the policy shipped with the package in `weights/` (next to this
file). Controllers are imported when built, not here: importing `robot_io.control` stays light
and does not load MuJoCo.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from robot_io.protocols import Controller, World

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


def _reference(env: World, weights: Path | None, runtime: str, device: str) -> Controller:
    if weights is not None or runtime != "torch":
        raise ValueError("controller weights and runtime apply to the 'learned' controller "
                         "only, not 'reference'")
    from robot_io.control.reference import ReferenceController

    return ReferenceController(env)


def _learned(env: World, weights: Path | None, runtime: str, device: str) -> Controller:
    from robot_io.control.learned import LearnedController

    folder = Path(weights) if weights is not None else shipped_weights()
    return LearnedController(env, folder, runtime=runtime, device=device)


REGISTRY: dict[str, Callable[[World, Path | None, str, str], Controller]] = {
    "reference": _reference,
    "learned": _learned,
}
CONTROLLERS = tuple(REGISTRY)


def make_controller(name: str, env: World, weights: Path | None = None,
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


RUNTIMES = ("torch", "onnx")  # as robot_io.control.policy_runtime.RUNTIMES (imported lazily)


@dataclass(frozen=True)
class ControllerChoice:
    """Which controller an entry point builds for its envs (the `--controller*` options).

    Attributes:
        name: "reference" or "learned".
        weights: the learned controller's exported policy folder (None: the shipped one).
        runtime: the learned controller's runtime, "torch" or "onnx".
        device: the learned controller's device.
    """

    name: str = "reference"
    weights: Path | None = None
    runtime: str = "torch"
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.name not in REGISTRY:
            raise ValueError(f"unknown controller {self.name!r}; known controllers: "
                             f"{', '.join(sorted(REGISTRY))}")
        if self.runtime not in RUNTIMES:
            raise ValueError(f"unknown controller runtime {self.runtime!r}; known runtimes: "
                             f"{', '.join(RUNTIMES)}")
        if self.name == "reference" and (self.weights is not None or self.runtime != "torch"):
            raise ValueError("controller weights and runtime apply to the 'learned' controller "
                             "only, not 'reference'")

    def build(self, env: World) -> Controller:
        """The controller for `env` (see `make_controller`)."""
        return make_controller(self.name, env, self.weights, self.runtime, self.device)

    def to_dict(self) -> dict:
        """JSON-ready: name, weights (a string or None), runtime, device."""
        return {"name": self.name, "weights": None if self.weights is None else str(self.weights),
                "runtime": self.runtime, "device": self.device}


__all__ = ["CONTROLLERS", "REGISTRY", "SHIPPED_WEIGHTS", "ControllerChoice", "make_controller",
           "shipped_weights"]
