"""Which process of a torchrun job this is, and which GPU its Warp worlds run on.

torchrun starts one process per GPU and tells each its place through environment variables:
RANK (0 .. WORLD_SIZE-1 over all nodes), LOCAL_RANK (0 .. GPUs per node - 1) and WORLD_SIZE.
Each process simulates its own worlds on `cuda:LOCAL_RANK` and seeds them with `rank_seed`, so
no two processes simulate the same episodes. A trainer calls, in this order:

    info = rank_info()
    torch.cuda.set_device(info.local_rank)
    torch.distributed.init_process_group("nccl")  # when info.world_size > 1
    env = BatchedEnv(task, worlds, seed=rank_seed(seed, info), backend="warp",
                     device=warp_device())

Outside torchrun (no variables) this is rank 0 of 1 on "cuda".
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class RankInfo:
    """This process's place in a torchrun job."""

    rank: int
    local_rank: int
    world_size: int

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """The process that logs and writes checkpoints."""
        return self.rank == 0


def rank_info(environ: Mapping[str, str] | None = None) -> RankInfo:
    """RANK, LOCAL_RANK and WORLD_SIZE from `environ` (default: os.environ); 0, 0, 1 if unset.

    Raises:
        ValueError: a variable is not an integer, or they are inconsistent.
    """
    env = os.environ if environ is None else environ
    values = {}
    for name, default in (("RANK", 0), ("LOCAL_RANK", 0), ("WORLD_SIZE", 1)):
        text = env.get(name, "")
        try:
            values[name] = int(text) if text.strip() else default
        except ValueError:
            raise ValueError(f"environment variable {name}={text!r} is not an integer") from None
    rank, local_rank, world_size = values["RANK"], values["LOCAL_RANK"], values["WORLD_SIZE"]
    if world_size < 1 or not 0 <= rank < world_size or not 0 <= local_rank <= rank:
        raise ValueError(f"inconsistent torchrun variables RANK={rank}, LOCAL_RANK={local_rank}, "
                         f"WORLD_SIZE={world_size}: need 0 <= LOCAL_RANK <= RANK < WORLD_SIZE")
    return RankInfo(rank=rank, local_rank=local_rank, world_size=world_size)


def warp_device(environ: Mapping[str, str] | None = None) -> str:
    """The Warp / torch device of this process: "cuda:LOCAL_RANK" under torchrun, else "cuda"."""
    env = os.environ if environ is None else environ
    if "LOCAL_RANK" not in env:
        return "cuda"
    return f"cuda:{rank_info(env).local_rank}"


def rank_seed(seed: int, info: RankInfo) -> int:
    """A per-process seed: the same run seed gives each rank different episodes."""
    return seed + 1_000_003 * info.rank
