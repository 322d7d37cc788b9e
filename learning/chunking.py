"""`ChunkScheduler`: the observation history and chunk timing of a chunked planner.

One implementation serves the deployed policy (`learning.deploy.PolicySource`) and fine-tuning
rollouts (`learning.rl.rollout.ChunkEnv`), so a fine-tuned policy sees, once deployed, exactly
the inputs it was trained on. Per world, with P control ticks per action and Ta actions per
chunk:

- at an episode's first tick, the history is the first observation's features repeated To times,
  and a chunk is needed;
- every P ticks after that, the newest features are appended (the oldest dropped);
- after Ta * P ticks of a chunk, the next chunk is needed;
- tick t of a chunk executes action t // P.

Calls per control tick: `observe(obs)` (returns the worlds that need a chunk now; calling it
again at the same tick changes nothing), `set_chunk(ids, chunk)` for those, then `action()`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from robot_io.types import Observation


class ChunkScheduler:
    """History and chunk timing of `num_worlds` worlds.

    Args:
        num_worlds: B.
        featurize: Observation -> (B, Do) features.
        obs_dim: Do.
        obs_horizon, pred_horizon, act_steps: To, Tp and Ta.
        period_ticks: P, control ticks per action.
        action_dim: Da.
    """

    def __init__(self, num_worlds: int, featurize: Callable[[Observation], Tensor],
                 obs_dim: int, obs_horizon: int, pred_horizon: int, act_steps: int,
                 period_ticks: int, action_dim: int) -> None:
        if not 1 <= act_steps <= pred_horizon:
            raise ValueError(f"act_steps must be in 1..pred_horizon ({pred_horizon}), "
                             f"got {act_steps}")
        if period_ticks < 1:
            raise ValueError(f"period_ticks must be at least 1, got {period_ticks}")
        self.num_worlds, self.featurize = num_worlds, featurize
        self.act_steps, self.period = act_steps, period_ticks
        self.hist = torch.zeros(num_worlds, obs_horizon, obs_dim)
        self.chunk = torch.zeros(num_worlds, pred_horizon, action_dim)
        self.tick = torch.zeros(num_worlds, dtype=torch.long)        # ticks since episode start
        self.chunk_tick = torch.zeros(num_worlds, dtype=torch.long)  # ticks since chunk start
        self.fresh = torch.ones(num_worlds, dtype=torch.bool)
        self._observed = False  # observe() already ran for this tick
        self._need = torch.zeros(num_worlds, dtype=torch.bool)

    @property
    def chunk_ticks(self) -> int:
        """Ta * P: control ticks one chunk lasts."""
        return self.act_steps * self.period

    def reset(self, ids: Tensor | None = None) -> None:
        """Worlds `ids` (all when None) start an episode at their next tick."""
        ids = torch.arange(self.num_worlds) if ids is None else ids
        self.fresh[ids] = True
        self.tick[ids] = 0
        self._observed = False

    def observe(self, obs: Observation) -> Tensor:
        """Update the history with this tick's observation; (B,) bool, worlds needing a chunk.

        Features are computed only on ticks that use them (1 in P), not on every tick.
        """
        if self._observed:
            return self._need
        fresh = self.fresh
        on_period = (self.tick % self.period == 0) & ~fresh
        if bool((fresh | on_period).any()):
            feat = self.featurize(obs).to(self.hist)
            if bool(fresh.any()):
                self.hist[fresh] = feat[fresh].unsqueeze(1).expand(-1, self.hist.shape[1], -1)
            if bool(on_period.any()):
                self.hist[on_period] = torch.cat([self.hist[on_period, 1:],
                                                  feat[on_period].unsqueeze(1)], dim=1)
        self._need = fresh | (self.chunk_tick >= self.chunk_ticks)
        self._observed = True
        return self._need

    def set_chunk(self, ids: Tensor, chunk: Tensor) -> None:
        """(n, Tp, Da) unnormalised actions for worlds `ids`, starting at this tick."""
        self.chunk[ids] = chunk.to(self.chunk)
        self.chunk_tick[ids] = 0

    def action(self) -> Tensor:
        """(B, Da) the action of this tick; advances every world by one tick."""
        if not self._observed:
            raise RuntimeError("call observe(obs) before action() at every tick")
        if bool((self._need & (self.chunk_tick != 0)).any()):
            raise RuntimeError("a world needs a new chunk: set_chunk() before action()")
        self.fresh[:] = False
        index = (self.chunk_tick // self.period).clamp_max(self.chunk.shape[1] - 1)
        action = self.chunk[torch.arange(self.num_worlds), index]
        self.tick += 1
        self.chunk_tick += 1
        self._observed = False
        return action
