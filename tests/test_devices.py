"""Teleop devices (teleop_app.devices): the keyboard and the gamepad against hand-computed
motions, the registry, and a keyboard driving a real session on the simulator."""

from __future__ import annotations

import importlib.util
import math
import sys
import threading

import pytest
import torch

from robot_io.errors import MissingDependencyError
from robot_io.math3d import quat_from_axis_angle, quat_from_yaw, quat_mul
from robot_io.protocols import CommandSource, RawInputSource, TimedSource
from robot_io.types import CommandLimits, Observation
from teleop_app.devices import DEVICES, make_device
from teleop_app.devices.errors import DeviceNotFoundError
from teleop_app.devices.gamepad import (
    GamepadConfig,
    GamepadDevice,
    GamepadLayout,
    JoystickSource,
    map_frame,
    read_frame,
)
from teleop_app.devices.keyboard import (
    KEY_MAP,
    KEY_NAMES,
    RESERVED_KEYS,
    KeyboardConfig,
    KeyboardDevice,
    help_text,
)

F64 = torch.float64
DT = 0.02
LEFT0 = (0.1, 0.25, -0.25)
RIGHT0 = (0.1, -0.25, -0.25)


class FakeClock:
    def __init__(self, t: float = 100.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def _obs(left: tuple[float, float, float] = LEFT0, right: tuple[float, float, float] = RIGHT0,
         gripper: tuple[float, float] = (0.0, 0.0)) -> Observation:
    """A one-world observation with the given hand positions (identity orientations)."""
    z3, z29 = torch.zeros(1, 3, dtype=F64), torch.zeros(1, 29, dtype=F64)
    quat = torch.zeros(1, 2, 4, dtype=F64)
    quat[..., 0] = 1.0
    root_quat = torch.tensor([[1.0, 0, 0, 0]], dtype=F64)
    return Observation(time_s=torch.zeros(1, dtype=F64), joint_pos=z29, joint_vel=z29.clone(),
                       gripper_pos=torch.tensor([gripper], dtype=F64), root_pos=z3,
                       root_quat=root_quat, root_lin_vel=z3, root_ang_vel=z3,
                       projected_gravity=torch.tensor([[0, 0, -1.0]], dtype=F64),
                       hand_pos=torch.tensor([[left, right]], dtype=F64), hand_quat=quat,
                       foot_pos=torch.zeros(1, 2, 3, dtype=F64), foot_quat=quat.clone(),
                       task={})


def _keyboard(clock: FakeClock, **config: object) -> tuple[KeyboardDevice, Observation]:
    limits = config.pop("limits", CommandLimits())
    dev = KeyboardDevice(1, limits=limits, control_dt_s=DT, config=KeyboardConfig(**config),
                         clock=clock)
    obs = _obs()
    dev.reset(obs)
    return dev, obs


def _ticks(dev: CommandSource, obs: Observation, clock: FakeClock, n: int,
           heartbeat: bool = True):
    cmd = None
    for _ in range(n):
        clock.t += DT
        if heartbeat:
            dev.heartbeat()
        cmd = dev.next_command(obs)
    return cmd


# -- keyboard --------------------------------------------------------------------------------
def test_holding_w_for_10_ticks_moves_the_left_hand_2_cm_forward() -> None:
    clock = FakeClock()
    dev, obs = _keyboard(clock)
    dev.press("1")  # the left hand
    dev.press("w")
    cmd = _ticks(dev, obs, clock, 10)
    # 0.1 m/s * 0.02 s * 10 ticks = 0.02 m.
    assert cmd.hand_pos[0, 0].tolist() == pytest.approx([0.12, 0.25, -0.25], abs=1e-12)
    assert cmd.hand_pos[0, 1].tolist() == pytest.approx(list(RIGHT0), abs=1e-12)
    assert torch.equal(cmd.base_vel, torch.zeros(1, 3, dtype=F64))
    keys = dev.raw_inputs()["keys"]
    assert keys.shape == (1, len(KEY_NAMES))
    assert keys[0, KEY_NAMES.index("w")] == 1.0 and float(keys.sum()) == 2.0  # "w" and "1"
    dev.release("w")
    dev.release("1")
    cmd = _ticks(dev, obs, clock, 5)
    assert cmd.hand_pos[0, 0, 0] == pytest.approx(0.12, abs=1e-12)  # released: it holds
    assert float(dev.raw_inputs()["keys"].sum()) == 0.0


def test_diagonal_rotation_and_both_hands() -> None:
    clock = FakeClock()
    dev, obs = _keyboard(clock)
    dev.set_keys({"3", "w", "a"})  # both hands, forward-left: capped at 0.1 m/s
    cmd = _ticks(dev, obs, clock, 10)
    d = 0.02 / math.sqrt(2)
    assert cmd.hand_pos[0, :, 0].tolist() == pytest.approx([0.1 + d, 0.1 + d], abs=1e-12)
    assert cmd.hand_pos[0, :, 1].tolist() == pytest.approx([0.25 + d, -0.25 + d], abs=1e-12)
    dev.set_keys({"c"})  # yaw + at 0.5 rad/s for 25 ticks: 0.25 rad about the root's z
    cmd = _ticks(dev, obs, clock, 25)
    expected = quat_from_yaw(torch.tensor(0.25, dtype=F64))
    assert torch.allclose(cmd.hand_quat[0], expected.expand(2, 4), atol=1e-12)
    dev.set_keys({"2", "z"})  # roll the right hand + for 10 ticks: 0.1 rad about the root's x
    cmd = _ticks(dev, obs, clock, 10)
    roll = quat_from_axis_angle(torch.tensor([1.0, 0, 0], dtype=F64),
                                torch.tensor(0.1, dtype=F64))
    assert torch.allclose(cmd.hand_quat[0, 1], quat_mul(roll, expected), atol=1e-12)
    assert torch.allclose(cmd.hand_quat[0, 0], expected, atol=1e-12)


def test_limits_cap_the_keyboards_speed_and_box() -> None:
    clock = FakeClock()
    limits = CommandLimits(max_hand_speed_mps=0.05, max_vx_mps=0.2)
    dev, obs = _keyboard(clock, limits=limits)
    dev.set_keys({"w", "up"})
    cmd = _ticks(dev, obs, clock, 10)
    assert cmd.hand_pos[0, 1, 0] == pytest.approx(0.1 + 0.01, abs=1e-12)  # 0.05 m/s cap
    assert cmd.base_vel[0].tolist() == pytest.approx([0.2, 0.0, 0.0])  # 0.3 capped at 0.2
    dev.reset(_obs(right=(0.745, -0.25, -0.25)))
    cmd = _ticks(dev, obs, clock, 10)
    assert cmd.hand_pos[0, 1, 0] == pytest.approx(0.75, abs=1e-12)  # the box's front face


def test_base_keys_and_smoothing() -> None:
    clock = FakeClock()
    dev, obs = _keyboard(clock)
    dev.set_keys({"j", "u"})
    cmd = _ticks(dev, obs, clock, 1)
    assert cmd.base_vel[0].tolist() == pytest.approx([0.0, 0.2, 0.5])
    dev.set_keys({"down", "l", "o"})
    cmd = _ticks(dev, obs, clock, 1)
    assert cmd.base_vel[0].tolist() == pytest.approx([-0.3, -0.2, -0.5])
    dev, obs = _keyboard(clock, base_smoothing_s=0.1)
    dev.press("up")
    cmd = _ticks(dev, obs, clock, 2)
    assert float(cmd.base_vel[0, 0]) == pytest.approx(0.3 * (1 - math.exp(-0.4)))


def test_gripper_toggle_and_hand_selection() -> None:
    clock = FakeClock()
    dev = KeyboardDevice(1, control_dt_s=DT, clock=clock)
    obs = _obs(gripper=(0.9, 0.0))
    dev.reset(obs)
    assert dev.selected == "right"
    dev.press("k")
    cmd = _ticks(dev, obs, clock, 1)
    assert cmd.gripper[0].tolist() == [0.9, 1.0]  # the right one closes
    dev.release("k")
    dev.press("k")
    cmd = _ticks(dev, obs, clock, 1)
    assert cmd.gripper[0].tolist() == [0.9, 0.0]
    # Both: one is open, so both close; again: both open.
    dev.set_keys({"3"})
    dev.set_keys({"3", "k"})
    cmd = _ticks(dev, obs, clock, 1)
    assert cmd.gripper[0].tolist() == [1.0, 1.0]
    dev.set_keys(set())
    dev.set_keys({"k"})
    cmd = _ticks(dev, obs, clock, 1)
    assert cmd.gripper[0].tolist() == [0.0, 0.0]
    # A held toggle key, and its auto-repeats, toggle once.
    dev.press("k")
    cmd = _ticks(dev, obs, clock, 3)
    assert cmd.gripper[0].tolist() == [0.0, 0.0]


def test_a_tap_between_two_ticks_counts_for_one_tick() -> None:
    clock = FakeClock()
    dev, obs = _keyboard(clock)
    dev.press("w")
    dev.release("w")
    cmd = _ticks(dev, obs, clock, 3)
    assert cmd.hand_pos[0, 1, 0] == pytest.approx(0.1 + 0.002, abs=1e-12)


def test_app_keys_are_not_bound() -> None:
    clock = FakeClock()
    dev, obs = _keyboard(clock)
    dev.set_keys({"space", "right", "left", "escape", "shift"})
    cmd = _ticks(dev, obs, clock, 5)
    assert torch.allclose(cmd.hand_pos[0], torch.tensor([LEFT0, RIGHT0], dtype=F64))
    assert float(dev.raw_inputs()["keys"].sum()) == 0.0
    assert not RESERVED_KEYS & set(KEY_NAMES)
    assert dev.input_time_s() == pytest.approx(clock.t)  # still operator activity


def test_input_time_heartbeat_and_stale_release() -> None:
    clock = FakeClock(10.0)
    dev, obs = _keyboard(clock)
    assert dev.input_time_s() is None
    dev.press("w", t_s=10.5)
    assert dev.input_time_s() == 10.5
    dev.heartbeat(11.0)
    dev.heartbeat(10.8)  # out of order: never goes back
    assert dev.input_time_s() == 11.0
    # No events and no heartbeat for longer than stale_release_s (0.2 s): the held key counts
    # as released, so a lost release event cannot drive the hand on.
    clock.t = 11.0
    cmd = _ticks(dev, obs, clock, 1, heartbeat=False)  # 0.02 s old: still held
    assert cmd.hand_pos[0, 1, 0] == pytest.approx(0.102, abs=1e-12)
    clock.t = 11.25
    cmd = _ticks(dev, obs, clock, 3, heartbeat=False)
    assert cmd.hand_pos[0, 1, 0] == pytest.approx(0.102, abs=1e-12)
    dev.heartbeat()  # focus back: the key must be pressed again
    cmd = _ticks(dev, obs, clock, 2)
    assert cmd.hand_pos[0, 1, 0] == pytest.approx(0.102, abs=1e-12)


def test_key_events_from_another_thread_are_never_lost() -> None:
    clock = FakeClock()
    dev, obs = _keyboard(clock)
    presses = 101

    def gui() -> None:
        for _ in range(presses):
            dev.press("k")
            dev.release("k")

    thread = threading.Thread(target=gui)
    thread.start()
    while thread.is_alive():
        dev.next_command(obs)
    thread.join()
    cmd = dev.next_command(obs)
    assert float(cmd.gripper[0, 1]) == 1.0  # an odd number of toggles: closed


def test_help_text_lists_every_key() -> None:
    lines = help_text().splitlines()
    first_words = [line.split()[0].lower() for line in lines]
    assert first_words[:len(KEY_MAP)] == list(KEY_NAMES)  # one line per key, in order
    assert any(line.startswith("Space") and "STOP" in line for line in lines)


def test_bad_keyboard_settings_are_value_errors() -> None:
    with pytest.raises(ValueError, match="initial_hand"):
        KeyboardConfig(initial_hand="middle")
    with pytest.raises(ValueError, match="hand_speed_mps"):
        KeyboardConfig(hand_speed_mps=0.0)
    with pytest.raises(TypeError, match="key names"):
        KeyboardDevice().press(87)  # a Qt key code, not a name


# -- gamepad ---------------------------------------------------------------------------------
class FakeJoystick:
    """Behaves like pygame's joystick: 6 axes (triggers rest at -1), 11 buttons, 1 hat."""

    def __init__(self) -> None:
        self.axes = [0.0, 0.0, -1.0, 0.0, 0.0, -1.0]
        self.buttons = [0] * 11
        self.hats = [(0, 0)]

    def get_numaxes(self) -> int:
        return len(self.axes)

    def get_axis(self, i: int) -> float:
        return self.axes[i]

    def get_numbuttons(self) -> int:
        return len(self.buttons)

    def get_button(self, i: int) -> int:
        return self.buttons[i]

    def get_numhats(self) -> int:
        return len(self.hats)

    def get_hat(self, i: int) -> tuple[int, int]:
        return self.hats[i]


LX, LY, LT, RX, RY, RT, LB, RB = 0, 1, 2, 3, 4, 5, 4, 5


def _gamepad(clock: FakeClock, joy: FakeJoystick | None = None,
             connected: list[bool] | None = None) -> tuple[GamepadDevice, FakeJoystick,
                                                           Observation]:
    joy = joy or FakeJoystick()
    state = connected if connected is not None else [True]
    dev = GamepadDevice(JoystickSource(joy, pump=lambda: state[0]), control_dt_s=DT,
                        clock=clock)
    obs = _obs(gripper=(0.3, 0.0))
    dev.reset(obs)
    return dev, joy, obs


def test_gamepad_sticks_drive_the_base_without_a_clutch() -> None:
    clock = FakeClock()
    dev, joy, obs = _gamepad(clock)
    joy.axes[LY], joy.axes[LX], joy.axes[RX] = -1.0, 0.55, -1.0  # up, right, turn left
    cmd = _ticks(dev, obs, clock, 1, heartbeat=False)
    # vx at its limit; 0.55 with a 0.1 deadband is half: -0.1 m/s; yaw +0.5 rad/s.
    assert cmd.base_vel[0].tolist() == pytest.approx([0.3, -0.1, 0.5])
    assert torch.allclose(cmd.hand_pos[0], torch.tensor([LEFT0, RIGHT0], dtype=F64))
    joy.axes[LY], joy.axes[LX], joy.axes[RX] = 0.05, -0.08, 0.0  # inside the deadband
    cmd = _ticks(dev, obs, clock, 1, heartbeat=False)
    assert cmd.base_vel[0].tolist() == [0.0, 0.0, 0.0]


def test_gamepad_clutch_moves_a_hand_and_stops_the_base() -> None:
    clock = FakeClock()
    dev, joy, obs = _gamepad(clock)
    joy.buttons[LB] = 1
    joy.axes[LY] = -1.0  # full up: the left hand forward at 0.1 m/s
    cmd = _ticks(dev, obs, clock, 10, heartbeat=False)
    assert cmd.hand_pos[0, 0].tolist() == pytest.approx([0.12, 0.25, -0.25], abs=1e-12)
    assert cmd.hand_pos[0, 1].tolist() == pytest.approx(list(RIGHT0), abs=1e-12)
    assert cmd.base_vel[0].tolist() == [0.0, 0.0, 0.0]
    # Right clutch: right stick up raises the right hand; D-pad up pitches the fingers up
    # (-0.5 rad/s about y); diagonal hand motion is capped like the keyboard's.
    joy.buttons[LB], joy.buttons[RB] = 0, 1
    joy.axes[LY], joy.axes[RY] = 0.0, -1.0
    joy.hats[0] = (0, 1)
    cmd = _ticks(dev, obs, clock, 10, heartbeat=False)
    assert cmd.hand_pos[0, 1].tolist() == pytest.approx([0.1, -0.25, -0.23], abs=1e-12)
    pitch = quat_from_axis_angle(torch.tensor([0.0, 1, 0], dtype=F64),
                                 torch.tensor(-0.1, dtype=F64))
    assert torch.allclose(cmd.hand_quat[0, 1], pitch, atol=1e-12)
    assert cmd.hand_pos[0, 0, 0] == pytest.approx(0.12, abs=1e-12)  # released: holds
    # Both bumpers: both hands move together.
    joy.buttons[LB] = 1
    joy.axes[RY], joy.hats[0] = 0.0, (0, 0)
    joy.axes[LX] = 1.0  # right: -y
    cmd = _ticks(dev, obs, clock, 5, heartbeat=False)
    assert cmd.hand_pos[0, :, 1].tolist() == pytest.approx([0.24, -0.26], abs=1e-12)


def test_gamepad_triggers_drive_the_grippers_once_seen_released() -> None:
    clock = FakeClock()
    joy = FakeJoystick()
    joy.axes[LT] = 0.0  # some drivers read 0 until the trigger first moves
    dev, joy, obs = _gamepad(clock, joy)
    joy.axes[RT] = 0.0  # half pulled: (0.5 - 0.05) / 0.95
    cmd = _ticks(dev, obs, clock, 1, heartbeat=False)
    assert cmd.gripper[0].tolist() == pytest.approx([0.3, 0.45 / 0.95])  # left holds 0.3
    joy.axes[LT] = -1.0
    cmd = _ticks(dev, obs, clock, 1, heartbeat=False)
    assert cmd.gripper[0, 0] == 0.0
    joy.axes[LT] = 1.0
    cmd = _ticks(dev, obs, clock, 1, heartbeat=False)
    assert float(cmd.gripper[0, 0]) == pytest.approx(1.0)


def test_gamepad_raw_inputs_input_time_and_unplugging() -> None:
    clock = FakeClock(5.0)
    connected = [True]
    dev, joy, obs = _gamepad(clock, connected=connected)
    assert dev.input_time_s() == 5.0  # reset reads the pad
    joy.axes[RX], joy.buttons[RB], joy.hats[0] = 0.25, 1, (-1, 1)
    _ticks(dev, obs, clock, 1, heartbeat=False)
    raw = dev.raw_inputs()
    assert raw["axes"].tolist() == [[0.0, 0.0, -1.0, 0.25, 0.0, -1.0]]
    assert raw["buttons"][0, RB] == 1.0 and float(raw["buttons"].sum()) == 1.0
    assert raw["hats"].tolist() == [[-1.0, 1.0]]
    assert dev.input_time_s() == pytest.approx(5.02)
    held = dev.next_command(obs)
    connected[0] = False  # unplugged: the time stops, the base stops, the hands hold
    cmd = _ticks(dev, obs, clock, 3, heartbeat=False)
    assert dev.input_time_s() == pytest.approx(5.02)
    assert torch.equal(cmd.hand_pos, held.hand_pos) and cmd.base_vel.abs().sum() == 0
    assert torch.isnan(dev.raw_inputs()["axes"]).all()


def test_pure_mapping_and_layout_check() -> None:
    joy = FakeJoystick()
    joy.axes[LY] = -0.55
    frame = read_frame(joy)
    assert frame.axes[LY] == -0.55 and frame.hats == ((0, 0),)
    intent = map_frame(frame, GamepadLayout(), GamepadConfig())
    assert intent.base_axes.tolist() == pytest.approx([0.5, 0.0, 0.0])
    assert intent.hand_axes.abs().sum() == 0 and not intent.clutch.any()
    assert intent.gripper.tolist() == [0.0, 0.0]
    joy.axes = joy.axes[:4]
    with pytest.raises(ValueError, match="right_y=4 but the pad has 4 axes"):
        GamepadDevice(JoystickSource(joy))


def test_gamepad_without_pygame_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from teleop_app.devices.gamepad import open_pygame_gamepad

    monkeypatch.setitem(sys.modules, "pygame", None)  # import pygame raises ImportError
    with pytest.raises(MissingDependencyError, match=r"refine-dp\[gamepad\]"):
        open_pygame_gamepad()


@pytest.mark.skipif(importlib.util.find_spec("pygame") is None,
                    reason="pygame (the gamepad extra) is not installed")
def test_no_gamepad_connected_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import pygame

    from teleop_app.devices.gamepad import open_pygame_gamepad

    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    pygame.joystick.init()
    past_the_last = pygame.joystick.get_count()  # 0 here; one past any pad plugged in
    with pytest.raises(DeviceNotFoundError, match="no gamepad connected at index"):
        open_pygame_gamepad(past_the_last)
    if past_the_last == 0:
        with pytest.raises(DeviceNotFoundError, match="plug one in"):
            make_device("gamepad")


# -- registry --------------------------------------------------------------------------------
def test_registry() -> None:
    assert sorted(DEVICES) == ["gamepad", "keyboard"]
    with pytest.raises(ValueError, match=r"known: \['gamepad', 'keyboard'\]"):
        make_device("spacemouse")
    dev = make_device("keyboard", num_worlds=1, limits=CommandLimits.hardware(), control_dt_s=DT)
    assert isinstance(dev, KeyboardDevice) and dev.hand_speed_mps == 0.05
    for protocol in (CommandSource, TimedSource, RawInputSource):
        assert isinstance(dev, protocol)
    pad = GamepadDevice(JoystickSource(FakeJoystick()))
    for protocol in (CommandSource, TimedSource, RawInputSource):
        assert isinstance(pad, protocol)


# -- a keyboard driving the real simulator ----------------------------------------------------
class _Inputs:
    """Collects the raw inputs and commands of every tick."""

    def __init__(self) -> None:
        self.keys: list[torch.Tensor] = []

    def episode_started(self, start: object) -> None:
        pass

    def step(self, record: object) -> None:
        self.keys.append(record.inputs["keys"][0].clone())

    def episode_ended(self, end: object) -> None:
        pass


def test_keyboard_drives_a_session_on_the_simulator() -> None:
    from robot_io.control.reference import ReferenceController
    from robot_io.env import BatchedEnv
    from robot_io.session import Session
    from robot_io.tasks.open_floor import OpenFloorTask

    env = BatchedEnv(OpenFloorTask(), 1, threads=1)
    clock = FakeClock()
    dev = KeyboardDevice(1, control_dt_s=env.control_dt_s, clock=clock)
    inputs = _Inputs()
    session = Session(env, dev, ReferenceController(env), observers=[inputs], clock=clock)
    start = session.start_episodes()
    x0_cmd = float(start.hand_pos[0, 1, 0])
    dev.heartbeat()
    dev.press("w")  # the right hand (the default) forward at 0.1 m/s
    for i in range(150):
        if i == 50:
            dev.release("w")
        clock.t += env.control_dt_s
        dev.heartbeat()
        result = session.tick()
        assert result.applied
        if i == 49:  # 50 ticks * 0.02 s * 0.1 m/s = 0.1 m, exactly, through the safety filter
            assert float(result.command.hand_pos[0, 1, 0]) == pytest.approx(x0_cmd + 0.1,
                                                                           abs=1e-9)
    assert float(result.command.hand_pos[0, 1, 0]) == pytest.approx(x0_cmd + 0.1, abs=1e-9)
    # The measured hand follows after 100 ticks (2 s) of settling.
    assert float(result.obs.hand_pos[0, 1, 0]) == pytest.approx(x0_cmd + 0.1, abs=0.01)
    w = KEY_NAMES.index("w")
    assert len(inputs.keys) == 150
    assert [float(k[w]) for k in inputs.keys] == [1.0] * 50 + [0.0] * 100
