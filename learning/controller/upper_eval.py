"""Held-out hand-pose tracking of an upper-body policy: the acceptance measurement.

Commands are drawn from a pool with a seed training never uses; each world jumps to a new target
and holds it for `hold_s`; the error is measured over the last `measure_s` of every hold, with
the robot standing, no payload and nominal servo gains (`randomised=True` keeps the training
randomisation instead).
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from learning.controller.commands import ArmPoses, sample_arm_poses
from learning.controller.upper_env import UpperBodyEnv, UpperEnvConfig
from robot_io.tasks.base import fixed

HELD_OUT_SEED = 12345


def evaluate_upper(policy: nn.Module, env_cfg: UpperEnvConfig | None = None, worlds: int = 64,
                   targets: int = 4, hold_s: float = 3.0, measure_s: float = 1.0,
                   front_only: bool = False, randomised: bool = False, seed: int = 1,
                   threads: int = 0, pool: ArmPoses | None = None) -> dict[str, float]:
    """Median / p90 hand position [m] and orientation [rad] errors after settling.

    Args:
        policy: maps (B, 93) float32 observations to (B, 14) actions (a `PolicyMLP`, or an
            `ActorCritic`'s `mean`).
    """
    base = env_cfg or UpperEnvConfig()
    cfg = replace(base, num_worlds=worlds, episode_s=targets * hold_s + 1.0,
                  hold_s=fixed(hold_s), move_s=fixed(0.0), walk_fraction=0.0,
                  front_fraction=1.0 if front_only else 0.0)
    if not randomised:
        cfg = replace(cfg, payload_kg=fixed(0.0), kp_scale=fixed(1.0), kd_scale=fixed(1.0))
    env = UpperBodyEnv(cfg, seed=seed, threads=threads,
                       pool=pool or sample_arm_poses(_robot(), 4000, HELD_OUT_SEED))
    if front_only and len(env._front_idx) == 0:
        raise ValueError("the held-out pool has no hands-in-front configuration")
    obs, _ = env.reset()
    ticks = int(round(targets * hold_s / env.dt))
    window = int(round(measure_s / env.dt))
    pos, rot = [], []
    with torch.inference_mode():
        for _ in range(ticks):
            seg = env.segment_tick.clone()
            settled = seg >= env.move_ticks + env.hold_ticks - window
            obs, _, _, _, _, info = env.step(policy(obs))
            if bool(settled.any()):
                pos.append(info["pos_err_m"][settled].reshape(-1))
                rot.append(info["rot_err_rad"][settled].reshape(-1))
    p, r = torch.cat(pos), torch.cat(rot)
    return {"pos_err_median_m": float(p.median()), "pos_err_p90_m": float(p.quantile(0.9)),
            "rot_err_median_rad": float(r.median()), "rot_err_p90_rad": float(r.quantile(0.9)),
            "samples": int(p.numel())}


def _robot():
    from robot_io.t1_model import default_robot_spec
    return default_robot_spec()


