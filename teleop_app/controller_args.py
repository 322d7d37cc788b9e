"""The `--controller`, `--controller-weights` and `--controller-runtime` options, shared by every
command that runs a low-level controller (collect, eval, finetune, replay, bench planners)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from robot_io.control import ControllerChoice

CONTROLLER_NAMES = ("reference", "learned")  # robot_io.control.CONTROLLERS, without the import
RUNTIME_NAMES = ("torch", "onnx")


def add_controller_args(p: argparse.ArgumentParser, default: str | None = "reference") -> None:
    """Add the three options to `p`; `default` None means "the recorded controller" (replay)."""
    what = "default: " + (default or "the one the episode was recorded with")
    p.add_argument("--controller", choices=CONTROLLER_NAMES, default=default,
                   help=f"low-level controller: reference (privileged, simulation only) or "
                        f"learned (exported policies) ({what})")
    p.add_argument("--controller-weights", metavar="DIR",
                   help="the learned controller's exported policy folder (upper.json + weights; "
                        "default: the policy shipped with the package)")
    p.add_argument("--controller-runtime", choices=RUNTIME_NAMES, default="torch",
                   help="the learned controller's runtime (default torch; onnx needs the "
                        "export extra)")


def controller_choice(args: argparse.Namespace) -> ControllerChoice | None:
    """The `ControllerChoice` the options ask for (None: --controller was not given and has no
    default).

    Raises:
        ValueError: weights or runtime given for the reference controller.
    """
    from robot_io.control import ControllerChoice

    name = args.controller
    weights = Path(args.controller_weights) if args.controller_weights else None
    if name is None:
        if weights is not None or args.controller_runtime != "torch":
            raise ValueError("--controller-weights and --controller-runtime need "
                             "--controller learned")
        return None
    if name == "reference" and (weights is not None or args.controller_runtime != "torch"):
        raise ValueError("--controller-weights and --controller-runtime apply to "
                         "--controller learned only")
    return ControllerChoice(name, weights, args.controller_runtime)
