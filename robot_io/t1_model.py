"""Our Booster T1: the official MJCF loaded into `mujoco.MjSpec`, with our parts added on top.

Added (never by editing the downloaded files):
- position actuators with the per-joint PD gains and torque limits of `robot_spec`, so that PD
  runs inside MuJoCo at the physics rate;
- a 1-DoF parallel gripper on each hand (palm, two fingers on slide joints coupled by a joint
  equality, one position actuator); the rubber-hand mesh and its collision cylinder are hidden;
- sites ``left_hand`` / ``right_hand`` at the grasp centre (x: approach, y: closing direction,
  z = x cross y; identity in the root frame means fingers pointing forward, closing sideways) and
  ``left_foot`` / ``right_foot`` at the soles, with frame sensors;
- a mocap ``harness`` body welded softly to the trunk: the reference controller's virtual
  harness. Its weld starts inactive; only the reference controller switches it on.

Collision filtering: robot geoms have contype 2 / conaffinity 1 and world geoms contype 1 /
conaffinity 3, so the robot collides with the world and objects but not with itself.
"""

from __future__ import annotations

import functools

import mujoco
import numpy as np

from robot_io.assets import MJCF_NAME, WHEEL_FILE, t1_model_dir
from robot_io.robot_spec import (T1_DEFAULT_POSE, T1_JOINTS, T1_KD, T1_KP, T1_TORQUE_LIMIT,
                                 GripperSpec, RobotSpec)

ROBOT_CONTYPE, ROBOT_CONAFFINITY = 2, 1
WORLD_CONTYPE, WORLD_CONAFFINITY = 1, 3
ROOT_BODY = "Trunk"
STAND_HEIGHT_M = 0.665  # trunk height standing in the default pose on flat ground
HAND_SITES = ("left_hand", "right_hand")
FOOT_SITES = ("left_foot", "right_foot")
GRIPPER_ACTUATORS = ("left_gripper", "right_gripper")
HARNESS_BODY = "harness"
HARNESS_EQ = "harness_weld"
# Weld (timeconst, dampratio): soft enough to look carried, stiff enough to hold a 2 kg payload.
HARNESS_SOLREF = (0.04, 1.0)

# Gripper body frame in the hand link frame (columns: approach, closing, normal axes).
_GRIP_ROT = {"left": np.array([[0, 0, 1], [1, 0, 0], [0, 1, 0]], float),
             "right": np.array([[0, 0, 1], [-1, 0, 0], [0, -1, 0]], float)}
_GRIP_POS = {"left": (0.0, 0.045, 0.0), "right": (0.0, -0.045, 0.0)}
FINGER_OPEN_Y_M = 0.065  # finger centre offset when open
FINGER_HALF = (0.04, 0.006, 0.02)  # finger box half sizes (approach, closing, normal)
GRASP_SITE_X_M = 0.10  # grasp centre along the approach axis from the gripper origin


def _mat_to_quat(mat: np.ndarray) -> np.ndarray:
    quat = np.zeros(4)
    mujoco.mju_mat2Quat(quat, np.ascontiguousarray(mat, dtype=float).reshape(9))
    return quat


def default_robot_spec(physics_dt_s: float = 0.0025, control_dt_s: float = 0.02) -> RobotSpec:
    """The `RobotSpec` of the robot `build_robot` makes, with joint limits from the MJCF.

    Physics runs at 400 Hz (8 substeps per 50 Hz control tick). Every task also works at
    200 Hz, but the grasps and the door latch are contact-rich, and a smaller step costs less
    than it seems: the solver converges in fewer iterations (measured here: a 400 Hz tick
    costs about 1.3x a 200 Hz one, not 2x).
    """
    spec = mujoco.MjSpec.from_file(str(t1_model_dir() / MJCF_NAME))
    lower, upper = [], []
    for name in T1_JOINTS:
        lo, hi = spec.joint(name).range
        lower.append(float(lo))
        upper.append(float(hi))
    return RobotSpec(name="booster_t1_29dof_grippers", joint_names=T1_JOINTS,
                     default_pose=T1_DEFAULT_POSE, joint_lower=tuple(lower),
                     joint_upper=tuple(upper), kp=T1_KP, kd=T1_KD, torque_limit=T1_TORQUE_LIMIT,
                     gripper=GripperSpec(), physics_dt_s=physics_dt_s, control_dt_s=control_dt_s,
                     model_source=WHEEL_FILE)


@functools.lru_cache(maxsize=4)
def robot_model(robot: RobotSpec) -> mujoco.MjModel:
    """The robot alone, compiled: what controllers build their kinematics from (the same
    bodies, joints and sites as in any scene, without a simulator instance)."""
    return build_robot(robot).compile()


def build_robot(robot: RobotSpec) -> mujoco.MjSpec:
    """Load the official MJCF and add actuators, grippers, sites, sensors and the harness.

    Returns an `MjSpec` to which a task adds its scene before compiling.
    """
    spec = mujoco.MjSpec.from_file(str(t1_model_dir() / MJCF_NAME))
    spec.option.timestep = robot.physics_dt_s
    spec.option.integrator = mujoco.mjtIntegrator.mjINT_IMPLICITFAST
    spec.option.cone = mujoco.mjtCone.mjCONE_ELLIPTIC
    # impratio stays 1: higher values made foot touch-downs kick the legs (elliptic cones).
    spec.option.iterations = 30
    spec.option.ls_iterations = 10
    spec.njmax = -1
    spec.nconmax = -1
    for key in list(spec.keys):
        spec.delete(key)
    for geom in spec.geoms:
        if geom.contype or geom.conaffinity:
            geom.contype, geom.conaffinity = ROBOT_CONTYPE, ROBOT_CONAFFINITY
    # The official model has no collision geometry on the pelvis, so the body could slide over
    # a table top that passes between the trunk box and the thighs: add a pelvis box.
    spec.body("Waist").add_geom(name="pelvis", type=mujoco.mjtGeom.mjGEOM_BOX,
                                size=(0.07, 0.13, 0.09), pos=(0.0, 0.0, 0.02),
                                rgba=(0.4, 0.4, 0.4, 0.0), contype=ROBOT_CONTYPE,
                                conaffinity=ROBOT_CONAFFINITY, group=3, mass=0.0, density=0.0)
    _replace_actuators(spec, robot)
    for side in ("left", "right"):
        _add_gripper(spec, side, robot.gripper)
    _add_feet(spec)
    _add_harness(spec)
    spec.add_sensor(name="root_linvel", type=mujoco.mjtSensor.mjSENS_VELOCIMETER,
                    objtype=mujoco.mjtObj.mjOBJ_SITE, objname="imu")
    return spec


def _replace_actuators(spec: mujoco.MjSpec, robot: RobotSpec) -> None:
    for act in list(spec.actuators):
        spec.delete(act)
    lower, upper = robot.target_band()
    for i, name in enumerate(robot.joint_names):
        act = spec.add_actuator(name=name, target=name, trntype=mujoco.mjtTrn.mjTRN_JOINT)
        act.set_to_position(kp=robot.kp[i], kv=robot.kd[i])
        act.ctrlrange = (lower[i], upper[i])
        act.ctrllimited = True
        act.forcerange = (-robot.torque_limit[i], robot.torque_limit[i])
        act.forcelimited = True


def _add_gripper(spec: mujoco.MjSpec, side: str, grip: GripperSpec) -> None:
    hand = spec.body(f"{side}_hand_link")
    for geom in hand.geoms:
        # The rubber hand is replaced by our gripper: hide its mesh, drop its collision.
        geom.contype, geom.conaffinity = 0, 0
        geom.group = 5
    rot = _GRIP_ROT[side]
    body = hand.add_body(name=f"{side}_gripper", pos=_GRIP_POS[side], quat=_mat_to_quat(rot))
    dark, light = (0.15, 0.15, 0.17, 1.0), (0.85, 0.45, 0.1, 1.0)
    body.add_geom(name=f"{side}_palm", type=mujoco.mjtGeom.mjGEOM_BOX, size=(0.025, 0.075, 0.028),
                  pos=(0.025, 0, 0), rgba=dark, mass=0.25, contype=ROBOT_CONTYPE,
                  conaffinity=ROBOT_CONAFFINITY)
    body.add_site(name=f"{side}_hand", pos=(GRASP_SITE_X_M, 0, 0), size=(0.012, 0, 0),
                  rgba=(0.1, 0.8, 0.1, 0.6), group=4)
    joints = []
    for sign, tag in ((1.0, "a"), (-1.0, "b")):
        finger = body.add_body(name=f"{side}_finger_{tag}",
                               pos=(0.05 + FINGER_HALF[0], sign * FINGER_OPEN_Y_M, 0))
        jname = f"{side}_finger_{tag}"
        finger.add_joint(name=jname, type=mujoco.mjtJoint.mjJNT_SLIDE, axis=(0, -sign, 0),
                         range=(0.0, grip.travel_m), limited=True, armature=0.05, damping=2.0)
        finger.add_geom(name=f"{side}_finger_{tag}", type=mujoco.mjtGeom.mjGEOM_BOX,
                        size=FINGER_HALF, rgba=light, mass=0.05, friction=(1.5, 0.02, 0.001),
                        condim=4, contype=ROBOT_CONTYPE, conaffinity=ROBOT_CONAFFINITY,
                        solref=(0.01, 1.0), solimp=(0.95, 0.99, 0.001, 0.5, 2))
        joints.append(jname)
    eq = spec.add_equality(name=f"{side}_finger_couple", type=mujoco.mjtEq.mjEQ_JOINT,
                           name1=joints[1], name2=joints[0])
    eq.data[:5] = (0.0, 1.0, 0.0, 0.0, 0.0)
    eq.solref = (0.005, 1.0)
    act = spec.add_actuator(name=f"{side}_gripper", target=joints[0],
                            trntype=mujoco.mjtTrn.mjTRN_JOINT)
    act.set_to_position(kp=grip.kp_n_per_m, kv=grip.kd_n_s_per_m)
    act.ctrlrange = (0.0, grip.travel_m)
    act.ctrllimited = True
    act.forcerange = (-grip.force_limit_n, grip.force_limit_n)
    act.forcelimited = True
    for suffix, kind in (("pos", mujoco.mjtSensor.mjSENS_FRAMEPOS),
                         ("quat", mujoco.mjtSensor.mjSENS_FRAMEQUAT)):
        spec.add_sensor(name=f"{side}_hand_{suffix}", type=kind, objtype=mujoco.mjtObj.mjOBJ_SITE,
                        objname=f"{side}_hand")


def _add_feet(spec: mujoco.MjSpec) -> None:
    for side in ("left", "right"):
        foot = spec.body(f"{side}_foot_link")
        foot.add_site(name=f"{side}_foot", pos=(0.01, 0, -0.04), size=(0.01, 0, 0), group=4)
        for suffix, kind in (("pos", mujoco.mjtSensor.mjSENS_FRAMEPOS),
                             ("quat", mujoco.mjtSensor.mjSENS_FRAMEQUAT)):
            spec.add_sensor(name=f"{side}_foot_{suffix}", type=kind,
                            objtype=mujoco.mjtObj.mjOBJ_SITE, objname=f"{side}_foot")


def _add_harness(spec: mujoco.MjSpec) -> None:
    harness = spec.worldbody.add_body(name=HARNESS_BODY, mocap=True, pos=(0, 0, STAND_HEIGHT_M))
    harness.add_site(name="harness", size=(0.02, 0, 0), rgba=(1, 0.2, 0.2, 0.4), group=4)
    eq = spec.add_equality(name=HARNESS_EQ, type=mujoco.mjtEq.mjEQ_WELD,
                           objtype=mujoco.mjtObj.mjOBJ_BODY, name1=ROOT_BODY, name2=HARNESS_BODY)
    eq.active = False
    eq.solref = HARNESS_SOLREF
    # weld data: anchor(3), relpose pos(3), quat(4), torquescale
    eq.data[:11] = (0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1)
