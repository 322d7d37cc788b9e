"""torchrun's environment variables -> rank, device and seed of each process (no GPU needed)."""

from __future__ import annotations

import pytest

from robot_io.sim.distributed import RankInfo, rank_info, rank_seed, warp_device


def test_outside_torchrun_it_is_rank_0_of_1_on_the_current_gpu() -> None:
    info = rank_info({})
    assert info == RankInfo(rank=0, local_rank=0, world_size=1)
    assert info.is_main and not info.is_distributed
    assert warp_device({}) == "cuda"


def test_each_torchrun_process_gets_its_local_gpu() -> None:
    # Two nodes of two GPUs: the second process of the second node.
    env = {"RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "4", "LOCAL_WORLD_SIZE": "2"}
    info = rank_info(env)
    assert info == RankInfo(rank=3, local_rank=1, world_size=4)
    assert info.is_distributed and not info.is_main
    assert warp_device(env) == "cuda:1"
    assert warp_device({"LOCAL_RANK": "0", "RANK": "0", "WORLD_SIZE": "2"}) == "cuda:0"


def test_ranks_get_different_seeds_and_rank_0_keeps_the_run_seed() -> None:
    seeds = [rank_seed(7, RankInfo(rank, rank, 4)) for rank in range(4)]
    assert seeds[0] == 7
    assert len(set(seeds)) == 4


def test_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert rank_info().local_rank == 1
    assert warp_device() == "cuda:1"


@pytest.mark.parametrize("env, message", [
    ({"LOCAL_RANK": "one"}, "LOCAL_RANK='one' is not an integer"),
    ({"RANK": "2", "WORLD_SIZE": "2"}, "inconsistent"),
    ({"RANK": "0", "LOCAL_RANK": "1", "WORLD_SIZE": "2"}, "inconsistent"),
    ({"WORLD_SIZE": "0"}, "inconsistent"),
])
def test_bad_variables_are_named(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        rank_info(env)
