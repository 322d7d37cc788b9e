"""The `refine-dp` command line.

    refine-dp tasks
    refine-dp render --task NAME --out FILE.png [--seed S] [--width W] [--height H]
    refine-dp bench sim --task NAME --worlds N [--threads T] [--seconds S] [--seed S] [--json]
                        [--backend mujoco|warp] [--device D]
    refine-dp bench planners [--tasks T...] [--episodes N] [--worlds M] [--seed S] [--threads T]
                             [--json] [CONTROLLER]
    refine-dp app [--task NAME] [--source S] [--dataset DIR] [--screenshot FILE.png --exit-after S]
                  [CONTROLLER]
    refine-dp bench app [--seconds 120] [--task NAME] [--json]      (on a display, e.g. Xvfb)
    refine-dp bench runner [--task NAME] [--seconds S] [--rate-hz HZ] [--source scripted|constant]
                           [--rt-priority P] [--json]
    refine-dp bench recorder [--task NAME] [--worlds N] [--episode-s S] [--threads T]
                             [--rounds R] [--sync]
    refine-dp bench policy [--policy RUN] [--calls N] [--sampler ddim|ddpm] [--threads T] [--json]
    refine-dp bench controller-env [--part upper|lower] [--worlds N] [--threads T] [--seconds S]
                                   [--json]
    refine-dp demo [--out DIR] [--no-progress]
    refine-dp dataset info DIR | validate DIR | split DIR [--valid-fraction F] [--seed S]
    refine-dp dataset merge DEST SRC [SRC...] | delete DIR ID [ID...]
    refine-dp dataset filter SRC DEST [--task T] [--source S] [--success | --failures]
                             [--min-length N] [--max-length N]
    refine-dp dataset export DIR --format robomimic|lerobot --out PATH [--fps F]
    refine-dp dataset import FILE --format robomimic --out DIR
    refine-dp collect --task NAME --episodes N --out DIR [--source heuristic|scripted]
                      [--worlds M] [--keep-failures] [--seed S] [--threads T] [--no-progress]
                      [CONTROLLER]
    refine-dp replay DIR --episode ID [--video FILE.mp4 | --frames DIR] [--mode targets|controller]
                     [CONTROLLER]
    refine-dp eval (--policy RUN | --source heuristic|scripted) --task NAME [--episodes N]
                   [--worlds M] [--seed S] [--out DIR] [--video N] [--threads T]
                   [--sampler ddim|ddpm] [--device D] [--widen F] [--json] [--no-progress]
                   [CONTROLLER]
    refine-dp pretrain --data DIR --out RUN [--backbone dit|mlp|mlp-regressor] [--steps S] ...
    refine-dp finetune --policy RUN --out RUN2 [--method dppo|mlp-ft|residual] [--min-std S] ...
                                                   (see teleop_app/learn_cli.py)
    refine-dp eval-controller | train-controller | export-controller ...
                                                   (see teleop_app/controller_cli.py)

CONTROLLER: [--controller reference|learned] [--controller-weights DIR]
[--controller-runtime torch|onnx] (`teleop_app.controller_args`): the low-level controller,
reference by default (replay: the recorded one).

One source for every setting: each command's flags are the fields of its settings dataclass
(`COMMANDS` names the handler; its parameter's type is the dataclass), read by tyro
(`teleop_app.cli_parsing`). A field's docstring is its help and the dataclass's default is the
flag's default; `refine-dp COMMAND --help` lists them. Flags are hyphenated; a boolean `field`
has `--field` / `--no-field`; older spellings are kept as aliases (`train-controller
--iterations` for `--ppo.iterations`).

`dataset validate` exits with 1 when it finds problems (each printed on its own line).
Bad input ends with `refine-dp: error: <message>` on stderr and exit status 2: a rejected command
line raises SystemExit(2) (unknown names list the known ones), a `RefineDpError` or `ValueError`
of a handler or of a settings dataclass is caught here; anything else is a bug and keeps its
traceback. A command's modules are imported when it runs, after `check_mujoco_gl()`: MuJoCo
refuses a bad `MUJOCO_GL` while it is being imported, before any error of ours could name the
problem, and `refine-dp --help` stays fast.
"""

from __future__ import annotations

import importlib
import inspect
import sys
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from robot_io.errors import RefineDpError
from robot_io.sim.gl_setup import check_mujoco_gl
from teleop_app.cli_parsing import PROG, parse


@dataclass(frozen=True)
class Command:
    """One command: a line of help, and its handler, imported when the command runs.

    Attributes:
        help: the line `refine-dp --help` shows.
        handler: "module:function"; the function's one parameter is annotated with the command's
            settings dataclass, and it returns an exit status or None (0).
    """

    help: str
    handler: str


@dataclass(frozen=True)
class Group:
    """Commands under one name (`refine-dp bench sim`).

    Attributes:
        help: the line `refine-dp --help` shows.
        commands: the commands by name.
    """

    help: str
    commands: dict[str, Command]


_SIM, _DATA = "teleop_app.commands", "teleop_app.dataset_cli"
_LEARN, _CTRL = "teleop_app.learn_cli", "teleop_app.controller_cli"

COMMANDS: dict[str, Command | Group] = {
    "tasks": Command("list the registered tasks", f"{_SIM}:cmd_tasks"),
    "render": Command("write a PNG of a task's initial state", f"{_SIM}:cmd_render"),
    "demo": Command("what `make demo` runs", f"{_SIM}:cmd_demo"),
    "collect": Command("record demonstrations into a dataset", f"{_SIM}:cmd_collect"),
    "replay": Command("re-simulate a recorded episode, report the divergence",
                      f"{_SIM}:cmd_replay"),
    "dataset": Group("inspect, curate and convert datasets", {
        "info": Command("episodes, steps, tasks, sources and success rate",
                        f"{_DATA}:cmd_dataset_info"),
        "validate": Command("check every file; exit 1 when there are problems",
                            f"{_DATA}:cmd_dataset_validate"),
        "split": Command("write a seeded train/valid split (splits.json)",
                         f"{_DATA}:cmd_dataset_split"),
        "merge": Command("copy the episodes of SRC... into DEST (same robot spec)",
                         f"{_DATA}:cmd_dataset_merge"),
        "filter": Command("write a new dataset with the matching episodes",
                          f"{_DATA}:cmd_dataset_filter"),
        "delete": Command("remove episodes by id", f"{_DATA}:cmd_dataset_delete"),
        "export": Command("write a robomimic HDF5 file or a LeRobot v3 folder",
                          f"{_DATA}:cmd_dataset_export"),
        "import": Command("build a dataset from a robomimic HDF5 file",
                          f"{_DATA}:cmd_dataset_import"),
    }),
    "pretrain": Command("pre-train a planner policy on a dataset", f"{_LEARN}:cmd_pretrain"),
    "finetune": Command("fine-tune a planner with RL in simulation", f"{_LEARN}:cmd_finetune"),
    "eval": Command("evaluate a policy or planner: success, tracking, plots", f"{_SIM}:cmd_eval"),
    "train-controller": Command("train a low-level policy with PPO (upper: hand poses; lower: "
                                "locomotion), export the best", f"{_CTRL}:cmd_train_controller"),
    "export-controller": Command("export a training run's latest actor (JSON + safetensors + "
                                 "ONNX)", f"{_CTRL}:cmd_export_controller"),
    "eval-controller": Command("evaluate a low-level controller: velocity, foothold and hand "
                               "tracking, falls, latency", f"{_CTRL}:cmd_eval_controller"),
    "app": Command("the desktop app: drive the T1, record episodes, run planners",
                   "teleop_app.app_cli:cmd_app"),
    "bench": Group("benchmarks", {
        "sim": Command("batched env vs bare mujoco.batch physics, same process",
                       f"{_SIM}:cmd_bench_sim"),
        "planners": Command("heuristic planners' success rate", f"{_SIM}:cmd_bench_planners"),
        "recorder": Command("the recorder's share of the session loop",
                            f"{_SIM}:cmd_bench_recorder"),
        "runner": Command("one world paced in real time: late ticks and jitter",
                          f"{_SIM}:cmd_bench_runner"),
        "app": Command("the live app under an operator's keys: late ticks, view FPS, key latency",
                       "teleop_app.app.bench_app:cmd_bench_app"),
        "policy": Command("planner latency per chunk at batch 1 (CPU)",
                          f"{_LEARN}:cmd_bench_policy"),
        "controller-env": Command("controller-training env vs bare physics, same process",
                                  f"{_CTRL}:cmd_bench_controller_env"),
    }),
}

DESCRIPTION = "REFINE-DP for the Booster T1."


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (a rejected command line exits with 2)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    path, command, rest = find_command(argv)
    try:
        check_mujoco_gl()
        handler = load_handler(command)
        settings = parse(settings_type(handler), rest, prog=" ".join([PROG, *path]),
                         description=command.help)
        status = handler(settings)
    except (RefineDpError, ValueError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    return status or 0


def find_command(argv: Sequence[str]) -> tuple[list[str], Command, list[str]]:
    """The command `argv` names: its path of names, itself, and the arguments left for it.

    Raises:
        SystemExit: 0 after printing a group's help (`-h`, `--help`); 2 after
            `refine-dp: error: ...` when the name is missing or unknown (it lists the known ones).
    """
    node: Command | Group = Group(DESCRIPTION, COMMANDS)
    path: list[str] = []
    rest = list(argv)
    while isinstance(node, Group):
        if rest and rest[0] in ("-h", "--help"):
            print(group_help(path, node))
            raise SystemExit(0)
        if not rest or rest[0].startswith("-"):
            print(group_help(path, node), file=sys.stderr)
            _reject(f"missing {_placeholder(path)}; choose from {', '.join(node.commands)}")
        name = rest.pop(0)
        if name not in node.commands:
            where = "command" if not path else f"{' '.join(path)} command"
            _reject(f"unknown {where} {name!r}; known: {', '.join(node.commands)}")
        path.append(name)
        node = node.commands[name]
    return path, node, rest


def _reject(message: str) -> typing.NoReturn:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def _placeholder(path: Sequence[str]) -> str:
    """COMMAND at the top, else the group's word for its commands (bench WHAT, dataset ACTION)."""
    return {(): "COMMAND", ("bench",): "WHAT", ("dataset",): "ACTION"}.get(tuple(path), "NAME")


def group_help(path: Sequence[str], group: Group) -> str:
    """The help of `refine-dp` or of a group: its commands, one line each."""
    prog, word = " ".join([PROG, *path]), _placeholder(path)
    rows = []
    for name, node in group.commands.items():
        if isinstance(node, Group):
            name = f"{name} {_placeholder([*path, name])}"
        rows.append((name, node.help))
    width = max(len(name) for name, _ in rows) + 2
    lines = [f"usage: {prog} {word} [OPTIONS]", "", group.help, "", "commands:"]
    lines += [f"  {name:<{width}}{text}" for name, text in rows]
    lines += ["", f"`{prog} {word} --help` lists the options of a command and their defaults."]
    return "\n".join(lines)


def load_handler(command: Command) -> Callable[[typing.Any], int | None]:
    """Import the handler of `command`."""
    module, _, name = command.handler.partition(":")
    return getattr(importlib.import_module(module), name)


def settings_type(handler: Callable[[typing.Any], int | None]) -> type:
    """The settings dataclass a handler takes (its one parameter's annotation)."""
    (param,) = inspect.signature(handler).parameters
    return typing.get_type_hints(handler)[param]


if __name__ == "__main__":
    sys.exit(main())
