"""`RobotSpec`: what datasets and checkpoints store about the robot, and compare on load."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

# Joint and actuator order of the official t1_29dof.xml (head, left arm, right arm, waist, legs).
T1_JOINTS: tuple[str, ...] = (
    "AAHead_yaw", "Head_pitch",
    "Left_Shoulder_Pitch", "Left_Shoulder_Roll", "Left_Elbow_Pitch", "Left_Elbow_Yaw",
    "Left_Wrist_Pitch", "Left_Wrist_Yaw", "Left_Hand_Roll",
    "Right_Shoulder_Pitch", "Right_Shoulder_Roll", "Right_Elbow_Pitch", "Right_Elbow_Yaw",
    "Right_Wrist_Pitch", "Right_Wrist_Yaw", "Right_Hand_Roll",
    "Waist",
    "Left_Hip_Pitch", "Left_Hip_Roll", "Left_Hip_Yaw", "Left_Knee_Pitch", "Left_Ankle_Pitch",
    "Left_Ankle_Roll",
    "Right_Hip_Pitch", "Right_Hip_Roll", "Right_Hip_Yaw", "Right_Knee_Pitch", "Right_Ankle_Pitch",
    "Right_Ankle_Roll",
)
LEFT_ARM = tuple(range(2, 9))
RIGHT_ARM = tuple(range(9, 16))
WAIST = (16,)
LEFT_LEG = tuple(range(17, 23))
RIGHT_LEG = tuple(range(23, 29))

_ARM_L = (0.2, -1.35, 0.0, -0.5, 0.0, 0.0, 0.0)
_ARM_R = (0.2, 1.35, 0.0, 0.5, 0.0, 0.0, 0.0)
_LEG = (-0.2, 0.0, 0.0, 0.4, -0.25, 0.0)
T1_DEFAULT_POSE: tuple[float, ...] = (0.0, 0.0) + _ARM_L + _ARM_R + (0.0,) + _LEG + _LEG


def _per_group(head: float, arm: float, waist: float, hip_pitch: float, hip_other: float,
               knee: float, ankle: float) -> tuple[float, ...]:
    leg = (hip_pitch, hip_other, hip_other, knee, ankle, ankle)
    return (head, head) + (arm,) * 14 + (waist,) + leg + leg


# PD gains and torque limits of the published T1 walking setup (validated in plain MuJoCo).
T1_KP = _per_group(head=5.0, arm=20.0, waist=200.0, hip_pitch=200.0, hip_other=200.0, knee=200.0,
                   ankle=50.0)
T1_KD = _per_group(head=0.5, arm=0.5, waist=5.0, hip_pitch=5.0, hip_other=5.0, knee=5.0,
                   ankle=3.0)
T1_TORQUE_LIMIT = _per_group(head=7.0, arm=18.0, waist=30.0, hip_pitch=45.0, hip_other=30.0,
                             knee=60.0, ankle=12.0)


@dataclass(frozen=True)
class GripperSpec:
    """Our 1-DoF parallel gripper: command 0 (open) .. 1 (closed) maps to finger travel."""

    travel_m: float = 0.055
    kp_n_per_m: float = 1500.0
    kd_n_s_per_m: float = 20.0
    force_limit_n: float = 40.0


@dataclass(frozen=True)
class RobotSpec:
    """Joint order, default pose, limits, gains and rates of the robot as built.

    Datasets and checkpoints store `to_dict()`; loading compares with `differences()`.
    """

    name: str
    joint_names: tuple[str, ...]
    default_pose: tuple[float, ...]
    joint_lower: tuple[float, ...]
    joint_upper: tuple[float, ...]
    kp: tuple[float, ...]
    kd: tuple[float, ...]
    torque_limit: tuple[float, ...]
    gripper: GripperSpec = field(default_factory=GripperSpec)
    physics_dt_s: float = 0.0025
    control_dt_s: float = 0.02
    planner_dt_s: float = 0.1
    model_source: str = ""

    def __post_init__(self) -> None:
        n = len(self.joint_names)
        for name in ("default_pose", "joint_lower", "joint_upper", "kp", "kd", "torque_limit"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"RobotSpec.{name} has {len(getattr(self, name))} entries, "
                                 f"expected one per joint ({n})")
        ratio = self.control_dt_s / self.physics_dt_s
        if abs(ratio - round(ratio)) > 1e-9 or round(ratio) < 1:
            raise ValueError(f"control_dt_s={self.control_dt_s} must be a whole multiple of "
                             f"physics_dt_s={self.physics_dt_s}")

    @property
    def num_joints(self) -> int:
        return len(self.joint_names)

    @property
    def substeps(self) -> int:
        """Physics steps per control step."""
        return int(round(self.control_dt_s / self.physics_dt_s))

    def target_band(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Range of PD position targets: the joint range widened by torque_limit / kp.

        A target further past a joint limit cannot add force (the torque limit is reached
        first), while one inside this band lets a weak servo hold a load near its limit.
        """
        pad = [t / k for t, k in zip(self.torque_limit, self.kp)]
        return (tuple(lo - p for lo, p in zip(self.joint_lower, pad)),
                tuple(hi + p for hi, p in zip(self.joint_upper, pad)))

    def to_dict(self) -> dict:
        """A JSON-ready dict (tuples become lists)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> RobotSpec:
        """Inverse of `to_dict`; raises ValueError naming unknown or missing keys."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown RobotSpec keys {unknown}; known: {sorted(names)}")
        kwargs = {}
        for key, value in data.items():
            if key == "gripper":
                kwargs[key] = GripperSpec(**value)
            elif isinstance(value, list):
                kwargs[key] = tuple(value)
            else:
                kwargs[key] = value
        return cls(**kwargs)

    def differences(self, other: RobotSpec, tol: float = 1e-9) -> list[str]:
        """Human-readable list of what differs between two specs (empty when equal)."""
        out: list[str] = []
        mine, theirs = self.to_dict(), other.to_dict()
        for key in mine:
            a, b = mine[key], theirs[key]
            if key == "joint_names" and a != b:
                out.append(f"joint_names: {_first_diff(a, b)}")
            elif isinstance(a, list | tuple) and isinstance(b, list | tuple):
                if len(a) != len(b):
                    out.append(f"{key}: {len(a)} entries vs {len(b)}")
                else:
                    bad = [i for i, (x, y) in enumerate(zip(a, b)) if not _close(x, y, tol)]
                    if bad:
                        i = bad[0]
                        label = self.joint_names[i] if len(a) == self.num_joints else str(i)
                        out.append(f"{key}: {len(bad)} entries differ, first {label}: "
                                   f"{a[i]} vs {b[i]}")
            elif isinstance(a, dict):
                for sub in a:
                    if not _close(a[sub], b.get(sub), tol):
                        out.append(f"{key}.{sub}: {a[sub]} vs {b.get(sub)}")
            elif not _close(a, b, tol):
                out.append(f"{key}: {a!r} vs {b!r}")
        return out


def _close(a: object, b: object, tol: float) -> bool:
    if isinstance(a, float | int) and isinstance(b, float | int):
        return math.isclose(float(a), float(b), rel_tol=tol, abs_tol=tol)
    return a == b


def _first_diff(a: list | tuple, b: list | tuple) -> str:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return f"position {i}: {x!r} vs {y!r}"
    return f"{len(a)} names vs {len(b)}"
