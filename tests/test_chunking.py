"""The chunk scheduler: hand-checked timing, and the same commands through deployment
(`PolicySource`) and fine-tuning rollouts (`ChunkEnv`)."""

from __future__ import annotations

import torch

from learning.bench_policy import BOX_PICKUP_OBS
from learning.chunking import ChunkScheduler
from learning.deploy import PolicySource
from learning.diffusion.policy import PolicyConfig
from learning.features import ACTION_DIM
from learning.normalizer import Normalizer
from learning.planner import Planner
from learning.rl.rollout import ChunkEnv
from robot_io.control.reference import ReferenceController
from robot_io.env import BatchedEnv
from robot_io.session import Session
from robot_io.t1_model import default_robot_spec


class _Clock:
    """An observation stand-in whose only feature is the tick it was made at."""

    def __init__(self, t: float) -> None:
        self.time_s = torch.tensor([t])


def _schedule() -> ChunkScheduler:
    # To = 2, Tp = 3, Ta = 2, P = 3: a chunk lasts 6 ticks, an action 3.
    return ChunkScheduler(1, lambda obs: obs.time_s.reshape(1, 1).float(), obs_dim=1,
                          obs_horizon=2, pred_horizon=3, act_steps=2, period_ticks=3,
                          action_dim=1)


def test_history_and_chunk_timing_by_hand() -> None:
    sched = _schedule()
    needs, hists, actions = [], [], []
    for t in range(13):
        need = bool(sched.observe(_Clock(t))[0])
        assert bool(sched.observe(_Clock(99))[0]) == need  # a second call at a tick: no change
        needs.append(need)
        hists.append(sched.hist[0, :, 0].tolist())
        if need:
            # chunk k holds actions 10k, 10k+1, 10k+2
            k = t // 6
            sched.set_chunk(torch.tensor([0]), torch.tensor([[[10.0 * k], [10.0 * k + 1],
                                                              [10.0 * k + 2]]]))
        actions.append(float(sched.action()[0, 0]))
    # A new chunk at ticks 0, 6 and 12 (Ta * P = 6).
    assert needs == [t % 6 == 0 for t in range(13)]
    # Tick 0: the first observation twice; then the newest appended every P = 3 ticks.
    assert hists[0] == [0.0, 0.0]
    assert hists[2] == [0.0, 0.0]
    assert hists[3] == [0.0, 3.0]
    assert hists[6] == [3.0, 6.0]
    assert hists[12] == [9.0, 12.0]
    # Action t // 3 of the chunk: 0,0,0,1,1,1 | 10,10,10,11,11,11 | 20.
    assert actions == [0, 0, 0, 1, 1, 1, 10, 10, 10, 11, 11, 11, 20]


def test_reset_restarts_the_history_and_asks_for_a_chunk() -> None:
    sched = _schedule()
    for t in range(4):
        if bool(sched.observe(_Clock(t))[0]):
            sched.set_chunk(torch.tensor([0]), torch.zeros(1, 3, 1))
        sched.action()
    sched.reset()
    assert bool(sched.observe(_Clock(50))[0])
    assert sched.hist[0, :, 0].tolist() == [50.0, 50.0]


def _planner() -> Planner:
    torch.manual_seed(0)
    cfg = PolicyConfig(obs_horizon=2, pred_horizon=4, act_steps=3, action_period_ticks=2,
                       denoising_steps=4, ddim_steps=2)
    d = BOX_PICKUP_OBS.dim
    return Planner.create(cfg, BOX_PICKUP_OBS, Normalizer(-torch.ones(d), torch.ones(d)),
                          Normalizer(-torch.ones(ACTION_DIM), torch.ones(ACTION_DIM)),
                          default_robot_spec(), "box_pickup", {})


def test_deployed_and_finetuning_paths_give_identical_commands() -> None:
    """Same policy, same seed, same observations: bit-identical commands both ways."""
    planner, worlds, seed, chunks = _planner(), 2, 5, 4
    ticks = chunks * planner.cfg.act_steps * planner.cfg.action_period_ticks

    env = BatchedEnv("box_pickup", worlds, threads=1, seed=0)
    deployed = PolicySource(planner, worlds, seed=seed, sampler="ddpm", deterministic=False)
    session = Session(env, deployed, ReferenceController(env))
    session.start_episodes()
    via_deploy = [session.tick().command.to_vector() for _ in range(ticks)]

    env2 = BatchedEnv("box_pickup", worlds, threads=1, seed=0)
    cenv = ChunkEnv(env2, ReferenceController(env2), planner.obs_spec, planner.cfg.obs_horizon,
                    planner.cfg.act_steps, planner.cfg.action_period_ticks)
    generator = torch.Generator().manual_seed(seed)
    hist = cenv.reset()
    via_finetune = []
    for _ in range(chunks):
        actions = planner.act(hist, generator, "ddpm", deterministic=False)
        before = cenv.session.ticks
        recorder = _Commands()
        cenv.session.observers.append(recorder)
        hist, step = cenv.step(actions)
        cenv.session.observers.remove(recorder)
        assert cenv.session.ticks - before == planner.cfg.act_steps * 2
        assert not bool(step.done.any())  # no episode ends in this short run
        via_finetune.extend(recorder.commands)
    assert len(via_finetune) == len(via_deploy)
    for t, (a, b) in enumerate(zip(via_deploy, via_finetune)):
        assert torch.equal(a, b), f"tick {t}: commands differ"
    # and the history the next chunk would be sampled from, at the next boundary
    deployed.schedule.observe(session.obs)
    assert torch.equal(deployed.schedule.hist, hist)


class _Commands:
    """Records the applied command of every tick."""

    def __init__(self) -> None:
        self.commands: list[torch.Tensor] = []

    def episode_started(self, start: object) -> None:
        pass

    def step(self, record) -> None:
        self.commands.append(record.command.to_vector())

    def episode_ended(self, end: object) -> None:
        pass
