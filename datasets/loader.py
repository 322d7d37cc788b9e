"""Training data: normalisation statistics and a torch dataset of (obs history, action chunk).

Column order: the keys in the order given, each field flattened row-major per step, so
`obs/hand_pos` (T, 2, 3) gives 6 columns: left x, y, z, then right x, y, z. `column_names`
spells the order out, e.g. "obs/hand_pos[1,0]" is the right hand's x.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset as TorchDataset

from datasets.dataset import Dataset
from datasets.errors import DatasetError


@dataclass(frozen=True)
class Stats:
    """Per-column statistics of a field over all steps, each (D,) float64."""

    min: np.ndarray
    max: np.ndarray
    mean: np.ndarray
    std: np.ndarray


def compute_stats(dataset: Dataset, keys: Sequence[str],
                  episode_ids: Sequence[int] | None = None) -> dict[str, Stats]:
    """min/max/mean/std per flattened column of each key, over every step of the episodes."""
    ids = list(dataset.episode_ids() if episode_ids is None else episode_ids)
    if not ids:
        raise DatasetError(f"{dataset.path} has no episodes to compute statistics from")
    acc: dict[str, list[np.ndarray]] = {}
    for episode_id in ids:
        episode = dataset.episode(episode_id, keys)
        for key in keys:
            flat = episode.arrays[key].reshape(episode.attrs.length, -1).astype(np.float64)
            if len(flat) == 0:
                continue
            part = [flat.sum(0), (flat ** 2).sum(0), flat.min(0), flat.max(0), len(flat)]
            if key not in acc:
                acc[key] = part
            else:
                a = acc[key]
                acc[key] = [a[0] + part[0], a[1] + part[1], np.minimum(a[2], part[2]),
                            np.maximum(a[3], part[3]), a[4] + part[4]]
    out = {}
    for key in keys:
        if key not in acc:
            raise DatasetError(f"{dataset.path}: the episodes have no steps of {key!r}")
        s, s2, lo, hi, n = acc[key]
        mean = s / n
        out[key] = Stats(min=lo, max=hi, mean=mean, std=np.sqrt(np.maximum(s2 / n - mean**2, 0)))
    return out


def column_names(dataset: Dataset, keys: Sequence[str], episode_id: int | None = None
                 ) -> list[str]:
    """The names of the flattened columns, e.g. ["obs/hand_pos[0,0]", ...]."""
    ids = dataset.episode_ids()
    if not ids:
        raise DatasetError(f"{dataset.path} has no episodes")
    episode = dataset.episode(ids[0] if episode_id is None else episode_id, keys)
    names = []
    for key in keys:
        shape = episode.arrays[key].shape[1:]
        names += ([f"{key}[{','.join(map(str, i))}]" for i in np.ndindex(*shape)] if shape
                  else [key])
    return names


class WindowDataset(TorchDataset):
    """Item i: an observation history ending at step t and the action chunk starting at t.

    Items run over every step t of every episode (in episode id order). Episodes are read on
    first use and kept as float32 (T, D) arrays (about 0.4 GB for 1000 x 500 steps of 200
    columns); each DataLoader worker keeps its own cache.

    Args:
        dataset: the dataset.
        obs_keys, action_keys: fields concatenated (flattened per step, in this order) into
            the observation (Do columns) and the action (Da columns).
        obs_horizon: To, steps of observation history (t-To+1 .. t; before step 0 the first row
            is repeated).
        pred_horizon: Tp, steps of actions (t .. t+Tp-1; past the end the last action is
            repeated and the mask is False).
        episode_ids: the episodes to use (default: all).

    Item: (obs (To, Do) float32, action (Tp, Da) float32, action_pad_mask (Tp,) bool, True on
    real steps).
    """

    def __init__(self, dataset: Dataset, obs_keys: Sequence[str], action_keys: Sequence[str],
                 obs_horizon: int, pred_horizon: int,
                 episode_ids: Sequence[int] | None = None) -> None:
        if obs_horizon < 1 or pred_horizon < 1:
            raise ValueError(f"obs_horizon and pred_horizon must be >= 1, got {obs_horizon}, "
                             f"{pred_horizon}")
        if not obs_keys or not action_keys:
            raise ValueError("obs_keys and action_keys must each name at least one field")
        self.dataset = dataset
        self.obs_keys, self.action_keys = list(obs_keys), list(action_keys)
        self.obs_horizon, self.pred_horizon = obs_horizon, pred_horizon
        known = set(dataset.episode_ids())
        self.episode_ids = list(dataset.episode_ids() if episode_ids is None else episode_ids)
        missing = [i for i in self.episode_ids if i not in known]
        if missing:
            raise DatasetError(f"{dataset.path} has no episodes {missing[:10]}")
        lengths = [dataset.attrs(i).length for i in self.episode_ids]
        # ends[k] = first item index after episode k: item i is in episode searchsorted(ends, i).
        self._ends = np.cumsum(lengths)
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        return int(self._ends[-1]) if len(self._ends) else 0

    def _load(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(T, Do) and (T, Da) float32 arrays of the k-th episode."""
        if k not in self._cache:
            episode = self.dataset.episode(self.episode_ids[k], self.obs_keys + self.action_keys)
            t = episode.attrs.length

            def stack(keys: list[str]) -> np.ndarray:
                return np.concatenate([episode.arrays[key].reshape(t, -1) for key in keys],
                                      axis=1).astype(np.float32)
            self._cache[k] = (stack(self.obs_keys), stack(self.action_keys))
        return self._cache[k]

    def locate(self, index: int) -> tuple[int, int]:
        """(episode id, step t) of item `index`."""
        k, t = self._locate(index)
        return self.episode_ids[k], t

    def _locate(self, index: int) -> tuple[int, int]:
        if not 0 <= index < len(self):
            raise IndexError(f"item {index} out of range [0, {len(self)})")
        k = int(np.searchsorted(self._ends, index, side="right"))
        start = int(self._ends[k - 1]) if k else 0
        return k, index - start

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor, Tensor]:
        k, t = self._locate(int(index))
        obs, action = self._load(k)
        length = len(obs)
        obs_rows = np.clip(np.arange(t - self.obs_horizon + 1, t + 1), 0, length - 1)
        steps = np.arange(t, t + self.pred_horizon)
        mask = steps < length
        action_rows = np.minimum(steps, length - 1)
        return (torch.from_numpy(obs[obs_rows]), torch.from_numpy(action[action_rows]),
                torch.from_numpy(mask))
