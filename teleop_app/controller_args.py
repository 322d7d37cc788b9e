"""The `--controller`, `--controller-weights` and `--controller-runtime` options, shared by every
command that runs a low-level controller (collect, eval, replay, bench planners,
eval-controller; finetune shows the same fields of its `FinetuneConfig`).

A settings dataclass declares `controller: Controller = ControllerChoice()` (replay:
`controller: RecordedController = None`); tyro builds the `robot_io.control.ControllerChoice` from
the three flags through `controller_from_flags`. The names and defaults are
`robot_io.control`'s.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import tyro

from robot_io.control import CONTROLLERS, RUNTIMES, ControllerChoice

_DEFAULT = ControllerChoice()

CONTROLLER_HELP = ("low-level controller: reference (privileged, simulation only) or learned "
                   "(exported policies)")
WEIGHTS_HELP = ("the learned controller's exported policy folder (upper.json + weights; None: the "
                "policy shipped with the package)")
RUNTIME_HELP = "the learned controller's runtime (onnx needs the export extra)"

ControllerName = Literal[CONTROLLERS]  # type: ignore[valid-type]
RuntimeName = Literal[RUNTIMES]  # type: ignore[valid-type]


def _hint(default: str) -> str:
    return f"(default: {default})"  # not tyro's "(default if used: ...)": the flags are used


_Name = Annotated[ControllerName, tyro.conf.arg(help=CONTROLLER_HELP, help_behavior_hint=_hint)]
_Weights = Annotated[Path | None, tyro.conf.arg(metavar="DIR", help=WEIGHTS_HELP,
                                                help_behavior_hint=_hint)]
_Runtime = Annotated[RuntimeName, tyro.conf.arg(help=RUNTIME_HELP, help_behavior_hint=_hint)]
_Recorded = Annotated[ControllerName | None, tyro.conf.arg(
    help=CONTROLLER_HELP + "; None: the one the episode was recorded with",
    metavar="{" + ",".join(CONTROLLERS) + "}", help_behavior_hint=_hint)]


def controller_from_flags(controller: _Name = _DEFAULT.name,
                          controller_weights: _Weights = _DEFAULT.weights,
                          controller_runtime: _Runtime = _DEFAULT.runtime) -> ControllerChoice:
    """The `ControllerChoice` the three flags ask for.

    Raises:
        ValueError: weights or a runtime given for the reference controller.
    """
    if controller == "reference" and (controller_weights is not None
                                      or controller_runtime != _DEFAULT.runtime):
        raise ValueError("--controller-weights and --controller-runtime apply to "
                         "--controller learned only")
    return ControllerChoice(controller, controller_weights, controller_runtime)


def recorded_or_flags(controller: _Recorded = None,
                      controller_weights: _Weights = _DEFAULT.weights,
                      controller_runtime: _Runtime = _DEFAULT.runtime
                      ) -> ControllerChoice | None:
    """The `ControllerChoice` the flags ask for, or None: the one the episode was recorded with.

    Raises:
        ValueError: weights or a runtime given without `--controller learned`.
    """
    if controller is None:
        if controller_weights is not None or controller_runtime != _DEFAULT.runtime:
            raise ValueError("--controller-weights and --controller-runtime need "
                             "--controller learned")
        return None
    return controller_from_flags(controller, controller_weights, controller_runtime)


Controller = Annotated[ControllerChoice,
                       tyro.conf.arg(name="", constructor=controller_from_flags)]
"""A settings field of type `ControllerChoice` read from the three flags."""

RecordedController = Annotated[ControllerChoice | None,
                               tyro.conf.arg(name="", constructor=recorded_or_flags)]
"""The same, None when `--controller` is not given (replay: the recorded controller)."""
