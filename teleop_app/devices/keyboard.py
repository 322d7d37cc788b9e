"""`KeyboardDevice`: teleoperation from key states forwarded by a widget (Qt-free).

The widget maps its key codes to plain names ("w", "up", "1", ...), ignores auto-repeat, and
calls `press` / `release` (or `set_keys`) from the GUI thread; it calls `heartbeat` on a timer
(every 50 ms or so) while it has keyboard focus, because holding a key sends no events and the
safety watchdog must not take a held key for a dead operator; on losing focus it calls
`set_keys(set())`. The session's loop thread calls `next_command` once per tick.

Bindings follow Isaac Lab's `Se3Keyboard` for the hand (W/S x, A/D y, Q/E z, Z/X roll, T/G
pitch, C/V yaw, K gripper toggle) and its `Se2Keyboard` arrow keys for walking forward and back;
sideways walking and turning, which Se2Keyboard puts on Left/Right arrows and Z/X, go to J/L
and U/O here, because the app keeps Left/Right for discarding and saving episodes (Shift+Right:
save as a failure), Esc for ending the recording and Space for STOP. 1/2/3 select the hand.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import Tensor

from robot_io.protocols import Clock
from robot_io.types import Command, CommandLimits, Observation
from teleop_app.devices import retarget

RESERVED_KEYS = frozenset({"left", "right", "escape", "space"})
"""Keys the app itself uses (discard/save an episode, end recording, STOP): never bound here."""

HANDS = ("left", "right", "both")


@dataclass(frozen=True)
class KeyBinding:
    """One key: it drives `axis` of `group` with `sign` while held, or fires on its press.

    group "hand": axis 0..2 = x, y, z motion, 3..5 = roll, pitch, yaw (root frame);
    group "base": axis 0..2 = vx, vy, yaw rate (heading frame);
    group "gripper": toggles the selected hands' grippers; group "select": axis 0, 1, 2 selects
    the left hand, the right hand or both.
    """

    key: str
    group: str
    axis: int
    sign: float
    help: str


KEY_MAP: tuple[KeyBinding, ...] = (
    KeyBinding("w", "hand", 0, 1.0, "hand forward (+x)"),
    KeyBinding("s", "hand", 0, -1.0, "hand back (-x)"),
    KeyBinding("a", "hand", 1, 1.0, "hand left (+y)"),
    KeyBinding("d", "hand", 1, -1.0, "hand right (-y)"),
    KeyBinding("q", "hand", 2, 1.0, "hand up (+z)"),
    KeyBinding("e", "hand", 2, -1.0, "hand down (-z)"),
    KeyBinding("z", "hand", 3, 1.0, "hand roll + (about x)"),
    KeyBinding("x", "hand", 3, -1.0, "hand roll - (about x)"),
    KeyBinding("t", "hand", 4, 1.0, "hand pitch + (about y)"),
    KeyBinding("g", "hand", 4, -1.0, "hand pitch - (about y)"),
    KeyBinding("c", "hand", 5, 1.0, "hand yaw + (about z)"),
    KeyBinding("v", "hand", 5, -1.0, "hand yaw - (about z)"),
    KeyBinding("k", "gripper", 0, 0.0, "toggle gripper (open/close)"),
    KeyBinding("1", "select", 0, 0.0, "move the left hand"),
    KeyBinding("2", "select", 1, 0.0, "move the right hand"),
    KeyBinding("3", "select", 2, 0.0, "move both hands"),
    KeyBinding("up", "base", 0, 1.0, "walk forward"),
    KeyBinding("down", "base", 0, -1.0, "walk back"),
    KeyBinding("j", "base", 1, 1.0, "walk left"),
    KeyBinding("l", "base", 1, -1.0, "walk right"),
    KeyBinding("u", "base", 2, 1.0, "turn left"),
    KeyBinding("o", "base", 2, -1.0, "turn right"),
)
"""Every bound key, in the order of the recorded raw key vector (`inputs/keys`)."""

KEY_NAMES: tuple[str, ...] = tuple(b.key for b in KEY_MAP)
_INDEX = {name: i for i, name in enumerate(KEY_NAMES)}
_BOUND = frozenset(KEY_NAMES)


def help_text() -> str:
    """The key map as aligned lines for the help overlay (the app's own keys last)."""
    rows = [(b.key.upper() if len(b.key) == 1 else b.key.capitalize(), b.help) for b in KEY_MAP]
    rows += [("Space", "STOP (app)"), ("Right", "save episode: success (app)"),
             ("Shift+Right", "save episode: failure (app)"),
             ("Left", "discard and re-record (app)"), ("Esc", "end recording (app)")]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {text}" for k, text in rows)


@dataclass(frozen=True)
class KeyboardConfig:
    """Speeds of the keyboard device (each is capped by the session's `CommandLimits`).

    Attributes:
        hand_speed_mps: hand speed while a move key is held (diagonals are not faster).
        hand_rate_rps: hand rotation rate while a rotate key is held.
        base_vx_mps, base_vy_mps, base_yaw_rate_rps: base velocity while a walk key is held.
        base_smoothing_s: time constant of the base velocity's low-pass (0: none).
        stale_release_s: keys count as released once no event or heartbeat came for this long,
            so that a lost release event (focus moved away) cannot drive a hand on.
        initial_hand: the hand selected at construction: "left", "right" or "both".
    """

    hand_speed_mps: float = 0.1
    hand_rate_rps: float = 0.5
    base_vx_mps: float = 0.3
    base_vy_mps: float = 0.2
    base_yaw_rate_rps: float = 0.5
    base_smoothing_s: float = 0.0
    stale_release_s: float = 0.2
    initial_hand: str = "right"

    def __post_init__(self) -> None:
        for name in ("hand_speed_mps", "hand_rate_rps", "base_vx_mps", "base_vy_mps",
                     "base_yaw_rate_rps", "stale_release_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.base_smoothing_s < 0:
            raise ValueError(f"base_smoothing_s must be >= 0, got {self.base_smoothing_s}")
        if self.initial_hand not in HANDS:
            raise ValueError(f"initial_hand must be one of {HANDS}, got {self.initial_hand!r}")


class KeyboardDevice:
    """A `CommandSource`, `TimedSource` and `RawInputSource` driven by key states.

    Every world of the batch gets the same keys (the app drives one robot: B = 1).

    Args:
        num_worlds: B.
        limits: the session's command limits: speeds are capped by them and hands are kept in
            their box.
        control_dt_s: the session's control period (a held key moves a hand by speed * dt per
            tick).
        config: speeds and options.
        clock: seconds on the session's clock, for key events given without a time.
    """

    def __init__(self, num_worlds: int = 1, limits: CommandLimits | None = None,
                 control_dt_s: float = 0.02, config: KeyboardConfig | None = None,
                 clock: Clock = time.monotonic) -> None:
        if num_worlds < 1:
            raise ValueError(f"num_worlds must be at least 1, got {num_worlds}")
        if control_dt_s <= 0:
            raise ValueError(f"control_dt_s must be positive, got {control_dt_s}")
        self.num_worlds, self.dt_s, self.clock = num_worlds, control_dt_s, clock
        self.limits = limits or CommandLimits()
        self.config = cfg = config or KeyboardConfig()
        self.hand_speed_mps = min(cfg.hand_speed_mps, self.limits.max_hand_speed_mps)
        self.base_max = (min(cfg.base_vx_mps, self.limits.max_vx_mps),
                         min(cfg.base_vy_mps, self.limits.max_vy_mps),
                         min(cfg.base_yaw_rate_rps, self.limits.max_yaw_rate_rps))
        self.box_min = torch.tensor(self.limits.hand_box_min_m, dtype=torch.float64)
        self.box_max = torch.tensor(self.limits.hand_box_max_m, dtype=torch.float64)
        # Shared with the GUI thread, under _lock: held keys, keys pressed since the last tick
        # (a tap between two ticks still counts for one tick), toggle presses, input time.
        self._lock = threading.Lock()
        self._held: set[str] = set()
        self._tapped: set[str] = set()
        self._presses: list[str] = []
        self._input_time_s: float | None = None
        # Loop-thread state.
        n = num_worlds
        self.selected = cfg.initial_hand
        self.hand_pos = torch.zeros(n, 2, 3, dtype=torch.float64)
        self.hand_quat = torch.zeros(n, 2, 4, dtype=torch.float64)
        self.hand_quat[..., 0] = 1.0
        self.gripper = torch.zeros(n, 2, dtype=torch.float64)
        self.base_vel = torch.zeros(n, 3, dtype=torch.float64)
        self._keys = torch.zeros(n, len(KEY_NAMES), dtype=torch.float64)

    # -- GUI thread ----------------------------------------------------------------------------
    def press(self, key: str, t_s: float | None = None) -> None:
        """A key went down at t_s (default: now). Repeats of a held key are ignored."""
        name = _name(key)
        self._update(lambda held: held | {name}, t_s)

    def release(self, key: str, t_s: float | None = None) -> None:
        """A key went up at t_s (default: now)."""
        name = _name(key)
        self._update(lambda held: held - {name}, t_s)

    def set_keys(self, pressed: Iterable[str], t_s: float | None = None) -> None:
        """The full set of keys held now (names; unbound names are ignored but count as
        operator input)."""
        keys = {_name(k) for k in pressed}
        self._update(lambda held: keys, t_s)

    def _update(self, held_now: Callable[[set[str]], set[str]], t_s: float | None) -> None:
        """Replace the held keys by held_now(held) and stamp the input time, under the lock."""
        t = self.clock() if t_s is None else float(t_s)
        with self._lock:
            keys = held_now(self._held) & _BOUND
            new = keys - self._held
            self._presses.extend(sorted(new))
            self._tapped |= new
            self._held = keys
            self._stamp(t)

    def heartbeat(self, t_s: float | None = None) -> None:
        """The widget still has focus at t_s: held keys are still held (call it on a timer)."""
        t = self.clock() if t_s is None else float(t_s)
        with self._lock:
            self._stamp(t)

    def _stamp(self, t: float) -> None:
        if self._input_time_s is None or t > self._input_time_s:
            self._input_time_s = t

    # -- loop thread ---------------------------------------------------------------------------
    def input_time_s(self) -> float | None:
        """The newest key event or heartbeat, on the session's clock (None: none yet)."""
        with self._lock:
            return self._input_time_s

    def raw_inputs(self) -> dict[str, Tensor]:
        """{"keys": (B, len(KEY_NAMES))}: 1 where a bound key was held during the last tick,
        in `KEY_NAMES` order."""
        return {"keys": self._keys.clone()}

    def reset(self, obs: Observation, ids: Tensor | None = None) -> None:
        """Worlds `ids` hold their hands where they are, grippers as measured, base still."""
        ids = torch.arange(self.num_worlds) if ids is None else torch.as_tensor(ids).long()
        self.hand_pos[ids] = obs.hand_pos[ids].cpu().to(torch.float64)
        self.hand_quat[ids] = obs.hand_quat[ids].cpu().to(torch.float64)
        self.gripper[ids] = obs.gripper_pos[ids].cpu().to(torch.float64).clamp(0.0, 1.0)
        self.base_vel[ids] = 0.0

    def next_command(self, obs: Observation) -> Command:
        """Integrate the held keys over one tick and apply the presses since the last tick."""
        keys, presses = self._take_keys()
        self._keys[:] = torch.tensor([float(k in keys) for k in KEY_NAMES], dtype=torch.float64)
        for key in presses:
            self._on_press(key)
        hand_axes, base_axes = _axes(keys)
        self._move_hands(hand_axes)
        target = retarget.base_velocity(base_axes, *self.base_max).expand(self.num_worlds, 3)
        self.base_vel = retarget.smooth_position(self.base_vel, target, self.dt_s,
                                                 self.config.base_smoothing_s)
        return Command(base_vel=self.base_vel.clone(), hand_pos=self.hand_pos.clone(),
                       hand_quat=self.hand_quat.clone(), gripper=self.gripper.clone())

    def _take_keys(self) -> tuple[set[str], list[str]]:
        """The keys held during this tick and the presses since the last one (brief lock)."""
        now = self.clock()
        with self._lock:
            stale = (self._input_time_s is None
                     or now - self._input_time_s > self.config.stale_release_s)
            if stale:
                self._held = set()
            keys = self._held | self._tapped
            presses, self._presses, self._tapped = self._presses, [], set()
        return keys, presses

    def _on_press(self, key: str) -> None:
        binding = KEY_MAP[_INDEX[key]]
        if binding.group == "select":
            self.selected = HANDS[binding.axis]
        elif binding.group == "gripper":
            sides = self._sides()
            # Toggle the selected grippers together: close all when any is open.
            close = bool((self.gripper[:, sides] < 0.5).any())
            self.gripper[:, sides] = 1.0 if close else 0.0

    def _sides(self) -> list[int]:
        return {"left": [0], "right": [1], "both": [0, 1]}[self.selected]

    def _move_hands(self, hand_axes: Tensor) -> None:
        if not bool(hand_axes.any()):
            return
        # A speed per key, capped at that speed: a diagonal is not faster.
        speed, rate = self.hand_speed_mps, self.config.hand_rate_rps
        sides = self._sides()
        pos, quat = retarget.jog_hand(self.hand_pos[:, sides], self.hand_quat[:, sides],
                                      hand_axes[:3] * speed, hand_axes[3:] * rate, self.dt_s,
                                      speed, rate, self.box_min, self.box_max)
        self.hand_pos[:, sides], self.hand_quat[:, sides] = pos, quat


def _axes(keys: set[str]) -> tuple[Tensor, Tensor]:
    """Hand axes (6,) and base axes (3,) in {-1, 0, 1} from the held keys."""
    hand = torch.zeros(6, dtype=torch.float64)
    base = torch.zeros(3, dtype=torch.float64)
    for key in keys:
        b = KEY_MAP[_INDEX[key]]
        if b.group == "hand":
            hand[b.axis] += b.sign
        elif b.group == "base":
            base[b.axis] += b.sign
    return hand, base


def _name(key: str) -> str:
    if not isinstance(key, str):
        raise TypeError(f"key names are strings like 'w' or 'up', got {key!r}")
    return key.lower()


def _check_bindings() -> None:
    """The key map binds no key twice and none of the app's own keys."""
    if len(set(KEY_NAMES)) != len(KEY_NAMES):
        raise ValueError(f"a key is bound twice in KEY_MAP: {KEY_NAMES}")
    clash = RESERVED_KEYS & set(KEY_NAMES)
    if clash:
        raise ValueError(f"KEY_MAP binds keys the app reserves: {sorted(clash)}")


_check_bindings()
