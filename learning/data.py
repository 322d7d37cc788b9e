"""Training windows for the planner, held in memory as tensors.

Every control tick t of every episode starts one item (so each 10 Hz phase of the 50 Hz
recording is used): the observation history at ticks t - (To-1) P, ..., t - P, t and the
command chunk at ticks t, t + P, ..., t + (Tp-1) P, with P = `action_period_ticks`. Rows before
an episode's start repeat its first tick; rows past its end repeat the last tick and are masked
out of the loss. This is exactly what the deployed planner sees and emits at 10 Hz.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm import tqdm

from datasets.dataset import Dataset
from datasets.errors import DatasetError
from learning.features import COMMAND_KEYS, ObsSpec, actions_from_arrays


@dataclass
class Windows:
    """All episodes' features, concatenated: obs (N, Do), actions (N, Da) and, per row, the
    first and last row of its episode (N,)."""

    obs: Tensor
    actions: Tensor
    episode_first: Tensor
    episode_last: Tensor
    episode_ids: list[int]

    def __len__(self) -> int:
        return len(self.obs)

    def batch(self, rows: Tensor, obs_horizon: int, pred_horizon: int, period: int
              ) -> tuple[Tensor, Tensor, Tensor]:
        """Items starting at `rows` (B,): obs (B, To, Do), actions (B, Tp, Da), mask (B, Tp)."""
        back = torch.arange(-(obs_horizon - 1), 1) * period
        obs_rows = torch.maximum(rows.unsqueeze(1) + back, self.episode_first[rows].unsqueeze(1))
        ahead = rows.unsqueeze(1) + torch.arange(pred_horizon) * period
        last = self.episode_last[rows].unsqueeze(1)
        return self.obs[obs_rows], self.actions[torch.minimum(ahead, last)], ahead <= last


def load_windows(dataset: Dataset, obs_spec: ObsSpec, episode_ids: Sequence[int],
                 progress: bool = False) -> Windows:
    """Read the observation and command arrays of `episode_ids` into memory.

    Raises:
        DatasetError: no episodes, or an episode lacks an array the observation spec names
            (the dataset was recorded for another task).
    """
    ids = list(episode_ids)
    if not ids:
        raise DatasetError(f"{dataset.path}: no episodes to train on")
    keys = obs_spec.dataset_keys() + list(COMMAND_KEYS)
    obs, actions, first, last, start = [], [], [], [], 0
    for episode_id in tqdm(ids, desc="loading episodes", disable=not progress, leave=False):
        try:
            episode = dataset.episode(episode_id, keys)
        except KeyError as e:
            raise DatasetError(f"{dataset.path}: episode {episode_id} has no {e}; the dataset "
                               f"was recorded for another task than the policy's") from e
        arrays = episode.arrays
        missing = [k for k in keys if k not in arrays]
        if missing:
            raise DatasetError(f"{dataset.path}: episode {episode_id} lacks {missing}; the "
                               f"dataset was recorded for another task than the policy's")
        length = episode.attrs.length
        if length < 1:
            continue
        obs.append(obs_spec.from_arrays(arrays))
        actions.append(actions_from_arrays(arrays))
        first.append(torch.full((length,), start, dtype=torch.long))
        last.append(torch.full((length,), start + length - 1, dtype=torch.long))
        start += length
    if not obs:
        raise DatasetError(f"{dataset.path}: the chosen episodes have no steps")
    return Windows(torch.cat(obs), torch.cat(actions), torch.cat(first), torch.cat(last), ids)
