"""The command boundary: validates, clamps and remembers what was applied, per world."""

from __future__ import annotations

import torch
from torch import Tensor

from robot_io.types import Command, CommandLimits, check_shapes, clamp_command


class CommandGate:
    """Rejects NaN/inf commands and clamps speeds and hand poses to `limits`.

    Args:
        limits: the limits to enforce.
        num_worlds: B.
        dt_s: time between two commands (the control period), for the hand speed limit.
    """

    def __init__(self, limits: CommandLimits, num_worlds: int, dt_s: float) -> None:
        self.limits, self.num_worlds, self.dt_s = limits, num_worlds, dt_s
        self._prev_hand: Tensor | None = None
        self._fresh = torch.ones(num_worlds, dtype=torch.bool)

    def reset(self, ids: Tensor | None = None) -> None:
        """The next command of worlds `ids` is not speed-limited against the previous one."""
        if ids is None:
            self._fresh[:] = True
        else:
            self._fresh[ids] = True

    def __call__(self, cmd: Command) -> Command:
        """The command that will be applied (raises `SafetyLimitError` on NaN / inf)."""
        check_shapes(cmd, self.num_worlds)
        if any(getattr(cmd, n).dtype != torch.float64 for n in Command.field_names()):
            cmd = Command(*(getattr(cmd, n).to(torch.float64) for n in Command.field_names()))
        prev = None
        if self._prev_hand is not None:
            prev = torch.where(self._fresh[:, None, None], cmd.hand_pos, self._prev_hand)
        applied = clamp_command(cmd, self.limits, prev, self.dt_s)
        self._prev_hand = applied.hand_pos.clone()
        self._fresh[:] = False
        return applied
