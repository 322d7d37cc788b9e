"""Re-simulate a recorded episode from its initial state and commands; measure the divergence.

The episode's scene is rebuilt from its task and stored task config, and the world is put into
the recorded initial state (integration state and per-world model fields). Two modes:

Every tick is the session's (`Session.tick`: safety filter, controller, world), as when the
episode was recorded; an observer measures the gaps.

- "targets" (default, exact): each tick applies the recorded joint targets, gripper targets and
  harness pose, the simulator's inputs; `mujoco.batch` is bit-identical whatever the batch, so on
  the same machine the replay reproduces the recording exactly.
- "controller": the recorded commands go through a fresh controller of the recorded kind (or
  of the kind asked for: e.g. a reference-controller episode through the learned one). The
  controller's torch arithmetic may round differently in a batch of one than in the batch that
  recorded the episode, and contact dynamics amplify such differences, so this mode reproduces
  the recording to round-off for a while and then drifts; it shows what the controller does with
  the commands.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from datasets.dataset import Dataset
from datasets.errors import DatasetError
from robot_io.control import REGISTRY as CONTROLLERS
from robot_io.control import ControllerChoice
from robot_io.env import BatchedEnv
from robot_io.protocols import Controller, StepRecord, World
from robot_io.session import Session
from robot_io.tasks import REGISTRY
from robot_io.types import Command, HarnessTarget, JointTargets, Observation

OBS_FIELDS = ("joint_pos", "joint_vel", "gripper_pos", "root_pos", "root_quat", "hand_pos",
              "hand_quat", "foot_pos", "foot_quat")
FrameSink = Callable[[int, np.ndarray], None]
MODES = ("targets", "controller")


def _row(arrays: dict[str, np.ndarray], key: str, t: int) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(arrays[key][t:t + 1]))


class _RecordedCommands:
    """A command source that replays the recorded commands, tick by tick."""

    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        self.arrays, self.t = arrays, 0

    def reset(self, obs: Observation, ids: torch.Tensor | None = None) -> None:
        self.t = 0

    def next_command(self, obs: Observation) -> Command:
        t = min(self.t, len(self.arrays["command/base_vel"]) - 1)
        self.t += 1
        return Command(*(_row(self.arrays, f"command/{name}", t)
                         for name in Command.field_names()))


class _RecordedTargets:
    """A controller that applies the recorded joint targets, gripper targets and harness pose:
    the simulator's inputs, so the replay is exact."""

    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        self.arrays, self.t = arrays, 0

    def reset(self, obs: Observation, ids: torch.Tensor | None = None) -> None:
        self.t = 0

    def step(self, cmd: Command, obs: Observation) -> JointTargets:
        arrays, t = self.arrays, min(self.t, len(self.arrays["targets/joint_pos"]) - 1)
        self.t += 1
        harness = None
        if "targets/harness_pos" in arrays:
            harness = HarnessTarget(_row(arrays, "targets/harness_pos", t),
                                    _row(arrays, "targets/harness_quat", t))
        return JointTargets(_row(arrays, "targets/joint_pos", t),
                            _row(arrays, "targets/gripper", t), harness)


class _Divergence:
    """A step observer: the largest gaps between the replayed and the recorded ticks."""

    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        self.arrays, self.t = arrays, 0
        self.worst_obs, self.worst_state, self.worst_field = 0.0, 0.0, ""

    def episode_started(self, start: object) -> None:
        self.t = 0

    def step(self, record: StepRecord) -> None:
        t, arrays = self.t, self.arrays
        self.t += 1
        if t >= len(arrays["sim/state"]):
            return
        gap = float(np.abs(record.sim_state[0] - arrays["sim/state"][t]).max())
        self.worst_state = max(self.worst_state, gap)
        for name in OBS_FIELDS:
            gap = float(np.abs(getattr(record.obs, name)[0].numpy()
                               - arrays[f"obs/{name}"][t]).max())
            if gap > self.worst_obs:
                self.worst_obs, self.worst_field = gap, name

    def episode_ended(self, end: object) -> None:
        pass


@dataclass(frozen=True)
class ReplayReport:
    """Largest absolute differences between replay and recording, over all ticks."""

    episode_id: int
    steps: int
    max_obs_divergence: float
    max_state_divergence: float
    worst_field: str
    recorded_success: bool
    replayed_success: bool
    controller: str = ""  # the controller the commands went through ("" in targets mode)


def _controller(kind: str, choice: ControllerChoice | None, env: World) -> Controller:
    """The asked-for controller, else a default one of the recorded kind."""
    if choice is None:
        if kind not in CONTROLLERS:
            raise DatasetError(f"episode was recorded with controller {kind!r}, unknown here; "
                               f"known controllers: {', '.join(sorted(CONTROLLERS))}")
        choice = ControllerChoice(kind)
    return choice.build(env)


def replay_episode(path: str | Path, episode_id: int, frame_sink: FrameSink | None = None,
                   render_every: int = 1, width: int = 640, height: int = 480,
                   mode: str = "targets", controller: ControllerChoice | None = None
                   ) -> ReplayReport:
    """Replay one episode of the dataset at `path`.

    Args:
        path: the dataset folder.
        episode_id: the episode.
        mode: "targets" (exact) or "controller" (see the module docstring).
        frame_sink: called with (tick, image) for rendered frames, or None to skip rendering.
        render_every: render one tick in this many.
        width, height: frame size.
        controller: in "controller" mode, the controller to use (default: one of the recorded
            kind; a learned one with the shipped weights).

    Raises:
        DatasetError: the episode lacks simulator state (e.g. it was imported) or names an
            unknown task or controller.
        PolicySpecError: the learned controller's weights are missing, damaged or unfit.
    """
    if mode not in MODES:
        raise ValueError(f"unknown replay mode {mode!r}; modes: {', '.join(MODES)}")
    if controller is not None and mode != "controller":
        raise ValueError("a controller applies to replay mode 'controller' only")
    dataset = Dataset.open(path)
    episode = dataset.episode(episode_id)
    attrs, arrays = episode.attrs, episode.arrays
    if "sim/state" not in arrays:
        raise DatasetError(f"episode {episode_id} in {path} has no sim/state (imported from "
                           f"another format?): it cannot be re-simulated")
    if attrs.task not in REGISTRY:
        raise DatasetError(f"episode {episode_id} is of task {attrs.task!r}, unknown here; known "
                           f"tasks: {', '.join(sorted(REGISTRY))}")
    _, factory = REGISTRY[attrs.task]
    config = type(factory()).from_dict(attrs.task_config)
    env = BatchedEnv(attrs.task, num_worlds=1, threads=1, task_config=config,
                     robot=dataset.robot_spec)
    fields = {key.split("/", 2)[2]: value[None] for key, value in arrays.items()
              if key.startswith("sim/model_fields/")}
    env.restore(torch.tensor([0]), arrays["sim/state"][:1], fields)
    low_level = (_controller(attrs.controller, controller, env) if mode == "controller"
                 else _RecordedTargets(arrays))
    divergence = _Divergence(arrays)
    session = Session(env, _RecordedCommands(arrays), low_level, observers=[divergence],
                      auto_restart=False)
    session.start_episodes(torch.tensor([0]), reset_world=False)
    renderer = None
    if frame_sink is not None:
        from robot_io.sim.render import WorldRenderer
        renderer = WorldRenderer(env, width=width, height=height)
    success = False
    try:
        for t in range(attrs.length):
            if renderer is not None and t % render_every == 0:
                frame_sink(t, renderer.render(0))
            ended = session.tick().ended
            success = success or (ended is not None and bool(ended.success[0]))
    finally:
        if renderer is not None:
            renderer.close()
    worst_obs, worst_state, worst_field = divergence.worst_obs, divergence.worst_state, \
        divergence.worst_field
    return ReplayReport(episode_id=episode_id, steps=int(attrs.length),
                        max_obs_divergence=worst_obs, max_state_divergence=worst_state,
                        worst_field=worst_field, recorded_success=bool(attrs.success),
                        replayed_success=success,
                        controller="" if mode == "targets" else
                        (controller.name if controller is not None else attrs.controller))
