"""RobotSpec round trip and its difference report; the built model matches it."""

from __future__ import annotations

import dataclasses
import json

import pytest

from robot_io.robot_spec import RobotSpec
from robot_io.t1_model import build_robot, default_robot_spec


def test_round_trip_through_json() -> None:
    spec = default_robot_spec()
    back = RobotSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert back == spec
    assert back.differences(spec) == []


def test_differences_name_what_differs() -> None:
    spec = default_robot_spec()
    kp = list(spec.kp)
    kp[3] = 99.0
    other = dataclasses.replace(spec, kp=tuple(kp), control_dt_s=0.04)
    diffs = spec.differences(other)
    assert any("kp: 1 entries differ, first Left_Shoulder_Roll: 20.0 vs 99.0" in d for d in diffs)
    assert any(d.startswith("control_dt_s") for d in diffs)


def test_bad_specs_are_rejected() -> None:
    spec = default_robot_spec()
    with pytest.raises(ValueError, match="whole multiple"):
        dataclasses.replace(spec, control_dt_s=0.021)
    with pytest.raises(ValueError, match="one per joint"):
        dataclasses.replace(spec, kp=spec.kp[:-1])
    with pytest.raises(ValueError, match="unknown RobotSpec keys"):
        RobotSpec.from_dict({**spec.to_dict(), "extra": 1})


def test_model_actuators_follow_spec() -> None:
    spec = default_robot_spec()
    model = build_robot(spec).compile()
    for i, name in enumerate(spec.joint_names):
        act = model.actuator(name)
        assert act.gainprm[0] == pytest.approx(spec.kp[i])
        assert act.biasprm[2] == pytest.approx(-spec.kd[i])
        assert act.forcerange[1] == pytest.approx(spec.torque_limit[i])
    assert model.actuator("right_gripper").ctrlrange[1] == pytest.approx(spec.gripper.travel_m)
    assert model.opt.timestep == pytest.approx(spec.physics_dt_s)
    assert spec.substeps == round(spec.control_dt_s / spec.physics_dt_s)
