"""What a learned low-level policy sees and does: the contract shared by training and runtime.

Training (`learning.controller`) and the runtime (`robot_io.control.learned`) build the policy's
observation with the same functions here, and an exported policy carries a `PolicySpec` (JSON)
beside its weights (safetensors), so the runtime never guesses joint order, default pose, gains
or observation scaling.

Policies output joint position offsets around the default pose: target = default + scale * a,
with a clipped to +-`action_clip`; the simulator's position actuators (or the robot's PD) track
the targets.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from torch import Tensor, nn

from robot_io.control.kinematics import ChainSet, dls_step, forward_kinematics, orientation_error
from robot_io.errors import RefineDpError
from robot_io.math3d import quat_to_mat
from robot_io.robot_spec import LEFT_ARM, LEFT_LEG, RIGHT_ARM, RIGHT_LEG
from robot_io.types import Observation

SPEC_FORMAT = "refine-dp-controller-policy"
SPEC_VERSION = 1
PARTS = ("upper", "lower")
PART_JOINTS: dict[str, tuple[int, ...]] = {
    "upper": tuple(LEFT_ARM + RIGHT_ARM),
    "lower": tuple(LEFT_LEG + RIGHT_LEG),
}

# Upper-body actor (and critic) observation terms, in order, with their widths.
UPPER_OBS_TERMS: tuple[tuple[str, int], ...] = (
    ("projected_gravity", 3),
    ("arm_joint_pos", 14),      # relative to the default pose
    ("arm_joint_vel", 14),
    ("last_action", 14),
    ("hand_cmd_pos", 6),        # left, right; root frame
    ("hand_cmd_rot6d", 12),
    ("hand_pos", 6),
    ("hand_rot6d", 12),
    ("hand_pos_err", 6),        # command - current, root frame
    ("hand_rot_err", 6),        # axis-angle of R_cmd R^T, root frame
    ("arm_ik_step", 14),        # damped-least-squares joint step toward the command
)
IK_DAMPING = 0.05        # of the `arm_ik_step` term, in metres / radians of task error
IK_MAX_STEP_RAD = 0.5    # largest joint move of one arm's `arm_ik_step`


class PolicySpecError(RefineDpError, ValueError):
    """An exported policy's JSON or weights are missing, damaged or do not fit this robot."""


@dataclass(frozen=True)
class PolicySpec:
    """Everything the runtime needs to run an exported low-level policy.

    Attributes:
        part: "upper" (arms, hand-pose tracking) or "lower" (legs, locomotion).
        joint_names: the joints the actions drive, in action order.
        default_pose: those joints' default positions [rad].
        action_scale: target = default + action_scale * clip(action, +-action_clip).
        kp, kd: the PD gains the policy was trained with, per driven joint.
        obs_terms: (name, width) of the observation, in order.
        obs_mean, obs_std: observation normalisation, (obs - mean) / std, clipped to +-obs_clip.
        hidden: widths of the MLP's hidden layers; activation: "elu" or "tanh".
        control_dt_s: the control period the policy was trained at.
    """

    part: str
    joint_names: tuple[str, ...]
    default_pose: tuple[float, ...]
    action_scale: float
    action_clip: float
    kp: tuple[float, ...]
    kd: tuple[float, ...]
    obs_terms: tuple[tuple[str, int], ...]
    obs_mean: tuple[float, ...]
    obs_std: tuple[float, ...]
    obs_clip: float
    hidden: tuple[int, ...]
    activation: str
    control_dt_s: float

    def __post_init__(self) -> None:
        if self.part not in PARTS:
            raise PolicySpecError(f"policy part {self.part!r} is not one of {PARTS}")
        n = len(self.joint_names)
        for name in ("default_pose", "kp", "kd"):
            if len(getattr(self, name)) != n:
                raise PolicySpecError(f"{name} has {len(getattr(self, name))} entries, "
                                      f"joint_names has {n}")
        width = self.obs_dim
        for name in ("obs_mean", "obs_std"):
            if len(getattr(self, name)) != width:
                raise PolicySpecError(f"{name} has {len(getattr(self, name))} entries, the "
                                      f"observation terms add up to {width}")
        if self.activation not in _ACTIVATIONS:
            raise PolicySpecError(f"activation {self.activation!r} is not one of "
                                  f"{sorted(_ACTIVATIONS)}")

    @property
    def obs_dim(self) -> int:
        return sum(width for _, width in self.obs_terms)

    @property
    def action_dim(self) -> int:
        return len(self.joint_names)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["obs_terms"] = [list(t) for t in self.obs_terms]
        return {"format": SPEC_FORMAT, "version": SPEC_VERSION, **data}

    @classmethod
    def from_dict(cls, data: dict) -> PolicySpec:
        if data.get("format") != SPEC_FORMAT:
            raise PolicySpecError(f"not a refine-dp controller policy spec (format "
                                  f"{data.get('format')!r}, expected {SPEC_FORMAT!r})")
        if data.get("version") != SPEC_VERSION:
            raise PolicySpecError(f"policy spec version {data.get('version')} is not supported "
                                  f"(this refine-dp reads version {SPEC_VERSION}); re-export it")
        names = {f.name for f in fields(cls)}
        missing = sorted(names - set(data))
        if missing:
            raise PolicySpecError(f"policy spec lacks {', '.join(missing)}; re-export it")
        values = {k: data[k] for k in names}
        for key in ("joint_names", "default_pose", "kp", "kd", "obs_mean", "obs_std", "hidden"):
            values[key] = tuple(values[key])
        values["obs_terms"] = tuple((str(n), int(w)) for n, w in values["obs_terms"])
        return cls(**values)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def load(cls, path: Path) -> PolicySpec:
        try:
            data = json.loads(Path(path).read_text())
        except FileNotFoundError as err:
            raise PolicySpecError(f"policy spec {path} does not exist; export a trained "
                                  f"controller with `refine-dp export-controller`") from err
        except json.JSONDecodeError as err:
            raise PolicySpecError(f"policy spec {path} is not valid JSON ({err}); the file is "
                                  f"damaged, export it again") from err
        return cls.from_dict(data)

    def check_robot(self, joint_names: tuple[str, ...], default_pose: tuple[float, ...],
                    kp: tuple[float, ...]) -> None:
        """Refuse a policy trained for other joints, another default pose or other gains."""
        index = [joint_names.index(n) if n in joint_names else -1 for n in self.joint_names]
        if -1 in index:
            missing = [n for n, i in zip(self.joint_names, index, strict=True) if i < 0]
            raise PolicySpecError(f"the {self.part} policy drives joints this robot lacks: "
                                  f"{', '.join(missing)}")
        for name, mine, robot in (("default pose", self.default_pose, default_pose),
                                  ("kp", self.kp, kp)):
            for j, i in enumerate(index):
                if abs(mine[j] - robot[i]) > 1e-6:
                    raise PolicySpecError(
                        f"the {self.part} policy was trained with {name} {mine[j]} for joint "
                        f"{self.joint_names[j]}, this robot has {robot[i]}; retrain or use the "
                        f"robot it was trained for")


_ACTIVATIONS = {"elu": nn.ELU, "tanh": nn.Tanh}


class PolicyMLP(nn.Module):
    """The actor network: normalise, MLP, clip. Built from a `PolicySpec`, no code loaded."""

    def __init__(self, spec: PolicySpec) -> None:
        super().__init__()
        self.spec = spec
        layers: list[nn.Module] = []
        width = spec.obs_dim
        for hidden in spec.hidden:
            layers += [nn.Linear(width, hidden), _ACTIVATIONS[spec.activation]()]
            width = hidden
        layers.append(nn.Linear(width, spec.action_dim))
        self.net = nn.Sequential(*layers)
        self.register_buffer("obs_mean", torch.tensor(spec.obs_mean, dtype=torch.float32))
        self.register_buffer("obs_std", torch.tensor(spec.obs_std, dtype=torch.float32))

    def forward(self, obs: Tensor) -> Tensor:
        """(B, obs_dim) raw observation -> (B, action_dim) clipped action."""
        clip = self.spec.obs_clip
        x = ((obs - self.obs_mean) / self.obs_std).clamp(-clip, clip)
        return self.net(x).clamp(-self.spec.action_clip, self.spec.action_clip)


def rot6d(quat: Tensor) -> Tensor:
    """(..., 4) wxyz -> (..., 6): the first two columns of the rotation matrix."""
    m = quat_to_mat(quat)
    return m[..., :, :2].transpose(-1, -2).reshape(*quat.shape[:-1], 6)


def arm_ik_step(chains: ChainSet, joint_pos: Tensor, hand_pos_cmd: Tensor,
                hand_quat_cmd: Tensor) -> Tensor:
    """(B, 14) the damped-least-squares joint step of both arms toward the commanded hand
    poses from the measured joints (`PART_JOINTS["upper"]` order), each arm's step scaled to at
    most `IK_MAX_STEP_RAD`. `chains`: the two hand chains from the root (left, right).

    This observation term is ours (the paper's list has none like it): it hands the policy
    the arm's local inverse kinematics, computed from the kinematic model, so a CPU-sized
    training run does not have to learn it.
    """
    pos, rot, jac = forward_kinematics(chains, joint_pos)
    err = torch.cat([hand_pos_cmd - pos,
                     orientation_error(rot, quat_to_mat(hand_quat_cmd))], -1)
    dq = dls_step(jac, err, IK_DAMPING)
    peak = dq.abs().amax(-1, keepdim=True)
    dq = dq * torch.clamp(IK_MAX_STEP_RAD / peak.clamp_min(1e-12), max=1.0)
    full = torch.zeros_like(joint_pos)
    full[:, chains.joint.reshape(-1)] = dq.reshape(joint_pos.shape[0], -1)
    return full[:, list(PART_JOINTS["upper"])]


def upper_observation(obs: Observation, hand_pos_cmd: Tensor, hand_quat_cmd: Tensor,
                      last_action: Tensor, default_pose: Tensor,
                      chains: ChainSet) -> Tensor:
    """The upper-body policy's observation, (B, 107) float32, terms as `UPPER_OBS_TERMS`.

    Args:
        obs: the robot's observation (hand poses in the root frame).
        hand_pos_cmd, hand_quat_cmd: (B, 2, 3), (B, 2, 4) commanded hand poses, root frame.
        last_action: (B, 14) the policy's previous (clipped) action.
        default_pose: (29,) the robot's default joint positions.
        chains: the hand chains (`hand_chains(model, robot)`), for the IK-step term.
    """
    b = obs.num_worlds
    arms = list(PART_JOINTS["upper"])
    cur_rot, cmd_rot = quat_to_mat(obs.hand_quat), quat_to_mat(hand_quat_cmd)
    rot_err = orientation_error(cur_rot, cmd_rot)
    terms = [
        obs.projected_gravity,
        obs.joint_pos[:, arms] - default_pose[arms],
        obs.joint_vel[:, arms],
        last_action.to(obs.joint_pos.dtype),
        hand_pos_cmd.reshape(b, 6),
        rot6d(hand_quat_cmd).reshape(b, 12),
        obs.hand_pos.reshape(b, 6),
        rot6d(obs.hand_quat).reshape(b, 12),
        (hand_pos_cmd - obs.hand_pos).reshape(b, 6),
        rot_err.reshape(b, 6),
        arm_ik_step(chains, obs.joint_pos, hand_pos_cmd, hand_quat_cmd),
    ]
    return torch.cat(terms, dim=-1).to(torch.float32)


def hand_chains(model, joint_names: tuple[str, ...]) -> ChainSet:
    """The two hand chains (left, right) from the root body, as `upper_observation` needs."""
    from robot_io.control.kinematics import build_chains
    from robot_io.t1_model import ROOT_BODY

    return build_chains(model, ROOT_BODY, ["left_hand", "right_hand"], list(joint_names),
                        frozen={})


def action_to_targets(action: Tensor, spec: PolicySpec, default_pose: Tensor) -> Tensor:
    """(B, action_dim) -> (B, action_dim) joint position targets [rad], float64."""
    index = list(PART_JOINTS[spec.part])
    clipped = action.to(torch.float64).clamp(-spec.action_clip, spec.action_clip)
    return default_pose[index] + spec.action_scale * clipped


# Lower-body actor observation terms, in order, with their widths. The foot-placement command
# comes from `robot_io.control.footsteps.FootstepPlanner`. Besides the paper's terms we give the
# base-velocity command the planner works from (the base-velocity reward depends on it).
LOWER_OBS_TERMS: tuple[tuple[str, int], ...] = (
    ("swing_foot", 2),          # one-hot (left, right); zeros while standing
    ("step_countdown", 1),      # time to the swing foot's touchdown [s]; 0 while standing
    ("foothold_rel", 6),        # planned footholds (x, y, yaw) left, right; root heading frame
    ("base_vel_cmd", 3),        # vx, vy [m/s], yaw rate [rad/s]; heading frame
    ("base_ang_vel", 3),        # root frame
    ("projected_gravity", 3),
    ("leg_joint_pos", 12),      # relative to the default pose
    ("leg_joint_vel", 12),
    ("last_action", 12),
)


def lower_observation(obs: Observation, swing_foot: Tensor, countdown_s: Tensor,
                      footholds_rel: Tensor, base_vel_cmd: Tensor, last_action: Tensor,
                      default_pose: Tensor) -> Tensor:
    """The lower-body policy's observation, (B, 54) float32, terms as `LOWER_OBS_TERMS`.

    Args:
        obs: the robot's observation.
        swing_foot: (B, 2) one-hot swing foot (`FootstepPlanner.swing_indicator()`).
        countdown_s: (B,) time to touchdown (`FootstepPlanner.countdown_s`).
        footholds_rel: (B, 2, 3) planned footholds in the root heading frame
            (`FootstepPlanner.relative_footholds`).
        base_vel_cmd: (B, 3) the base-velocity command.
        last_action: (B, 12) the policy's previous (clipped) action.
        default_pose: (29,) the robot's default joint positions.
    """
    b = obs.num_worlds
    legs = list(PART_JOINTS["lower"])
    dtype = obs.joint_pos.dtype
    terms = [
        swing_foot.to(dtype),
        countdown_s.to(dtype).reshape(b, 1),
        footholds_rel.to(dtype).reshape(b, 6),
        base_vel_cmd.to(dtype),
        obs.root_ang_vel,
        obs.projected_gravity,
        obs.joint_pos[:, legs] - default_pose[legs],
        obs.joint_vel[:, legs],
        last_action.to(dtype),
    ]
    return torch.cat(terms, dim=-1).to(torch.float32)
