"""What `make demo` runs: every task driven by its scripted commands, one PNG each, one
benchmark, then the end-to-end learning pipeline on box pickup (collect demonstrations,
pre-train a DiT, evaluate, fine-tune with DPPO, evaluate again).

Each task runs one world at its nominal start (`config.nominal()`: every random range at its
centre) under the reference controller; the PNG shows the world when the episode ended, which
is the moment of success when it succeeded (`run_episode` stops there).
"""

from __future__ import annotations

from pathlib import Path

from planners.scripted import make_scripted_source
from robot_io.control.reference import ReferenceController
from robot_io.env import BatchedEnv
from robot_io.session import run_episode
from robot_io.sim.bench import bench_sim, format_bench_line
from robot_io.sim.render import render_world, save_png
from robot_io.tasks import default_config, task_names

BENCH_TASK = "box_pickup"
BENCH_WORLDS = 64
BENCH_SECONDS = 3.0
# The pipeline's sizes: about 15 minutes on a 2-core CPU.
PIPELINE_TASK = "box_pickup"
PIPELINE_DEMOS = 50
PIPELINE_WORLDS = 50
PRETRAIN_STEPS = 3000
EVAL_EPISODES = 50
EVAL_SEED = 100
FINETUNE_ITERATIONS = 8
FINETUNE_STEPS_PER_ITER = 15


def demo_task(task: str, out_dir: Path) -> str:
    """Run one scripted episode of `task`, write `out_dir/<task>.png`; returns the report line.

    A task that `planners.scripted` has no script for yet gives a "no script" line.
    """
    try:
        source = make_scripted_source(task)
    except ValueError as exc:  # the scripted planner does not cover this task (yet)
        return f"{task}: no script ({exc})"
    env = BatchedEnv(task, num_worlds=1, task_config=default_config(task).nominal())
    result = run_episode(env, source, ReferenceController(env))
    png = save_png(render_world(env), out_dir / f"{task}.png")
    if bool(result.success[0]):
        outcome = f"success yes, time to success {int(result.steps[0]) * env.control_dt_s:.2f} s"
    else:
        outcome = f"success no (time limit {env.task.config.time_limit_s:.1f} s)"
    return f"{task}: {outcome}, image {png}"


def demo_pipeline(out_dir: Path, progress: bool = True) -> str:
    """The end-to-end job on box pickup: demonstrations -> DiT -> evaluation -> DPPO ->
    evaluation. Every stage continues from what an earlier (killed) run left in `out_dir`.

    Returns the summary lines: both success rates and where the reports and plots are.
    """
    from datasets.info import format_info, info
    from learning.deploy import PolicySource
    from learning.evaluate import evaluate
    from learning.planner import Planner
    from learning.pretrain import PretrainConfig, pretrain, with_policy
    from learning.rl.finetune import FinetuneConfig, finetune
    from teleop_app.collect import collect, format_report

    data, runs, evals = out_dir / "dataset", out_dir / "runs", out_dir / "eval"
    report = collect(PIPELINE_TASK, "heuristic", PIPELINE_DEMOS, PIPELINE_WORLDS, data,
                     progress=progress)
    print(format_report(report) + "\n" + format_info(info(data)), flush=True)
    cfg = with_policy(PretrainConfig(data=data, out=runs / "dit", backbone="dit",
                                     episodes=PIPELINE_DEMOS, steps=PRETRAIN_STEPS))
    pretrain(cfg, progress=progress)

    def evaluate_run(run: Path, name: str):
        planner = Planner.load(run)
        # Both with DDPM, the sampler DPPO fine-tunes, so that the two rates compare.
        result = evaluate(PIPELINE_TASK, lambda env: PolicySource(planner, env.num_worlds,
                                                                  sampler="ddpm",
                                                                  robot=env.robot),
                          episodes=EVAL_EPISODES, worlds=PIPELINE_WORLDS, seed=EVAL_SEED,
                          out_dir=evals / name, progress=progress, label=name)
        print(result.format(), flush=True)
        return result

    before = evaluate_run(runs / "dit", "pretrained")
    finetune(FinetuneConfig(policy=runs / "dit", out=runs / "dppo", method="dppo",
                            iterations=FINETUNE_ITERATIONS, worlds=PIPELINE_WORLDS,
                            steps_per_iter=FINETUNE_STEPS_PER_ITER), progress=progress)
    after = evaluate_run(runs / "dppo", "finetuned")
    return "\n".join([
        (f"box pickup, DiT pre-trained on {PIPELINE_DEMOS} heuristic demonstrations: success (DDPM) "
         f"{before.success_rate:.0%} over {before.episodes} episodes"),
        (f"after {FINETUNE_ITERATIONS} DPPO iterations: success {after.success_rate:.0%} over "
         f"{after.episodes} episodes"),
        (f"reports and plots: {evals / 'pretrained'} and {evals / 'finetuned'}; fine-tuning "
         f"curve {runs / 'dppo' / 'success_curve.png'}; TensorBoard logs under {runs}")])


def run_demo(out_dir: str | Path, progress: bool = True) -> None:
    """Every registered task scripted (one line and PNG each), one simulation benchmark line,
    then the end-to-end pipeline on box pickup."""
    out = Path(out_dir)
    for task in task_names():
        print(demo_task(task, out), flush=True)
    result = bench_sim(BENCH_TASK, BENCH_WORLDS, seconds=BENCH_SECONDS)
    print(format_bench_line(result), flush=True)
    print(demo_pipeline(out, progress), flush=True)
