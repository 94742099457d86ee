"""The MJCF/URDF-to-USD writer: flat bodies, retargeted joints, one articulation root, Isaac Lab's joint names."""

from __future__ import annotations

from pathlib import Path

import pytest

from rlforge_testing import REFERENCE_H1
from tasks.isaaclab_env import PROJECT_H1
from tasks.robots.usd_writer import convert_to_usd

H1_JOINTS = {
    f"{side}_{name}"
    for side in ("left", "right")
    for name in (
        "hip_yaw",
        "hip_roll",
        "hip_pitch",
        "knee",
        "ankle",
        "shoulder_pitch",
        "shoulder_roll",
        "shoulder_yaw",
        "elbow",
    )
} | {"torso"}


def inspect(usd_path: Path) -> dict:
    from pxr import Usd, UsdPhysics

    stage = Usd.Stage.Open(str(usd_path))
    robot = stage.GetDefaultPrim()
    bodies = [p for p in stage.Traverse() if p.HasAPI(UsdPhysics.RigidBodyAPI)]
    joints = [UsdPhysics.RevoluteJoint(p) for p in stage.Traverse() if p.IsA(UsdPhysics.RevoluteJoint)]
    roots = [p for p in stage.Traverse() if p.HasAPI(UsdPhysics.ArticulationRootAPI)]
    return {"stage": stage, "robot": robot, "bodies": bodies, "joints": joints, "roots": roots}


def check_h1(usd_path: Path) -> None:
    from pxr import UsdPhysics

    found = inspect(usd_path)
    robot = found["robot"]
    assert [r.GetPath() for r in found["roots"]] == [robot.GetPath()], (
        "the articulation root sits on the robot prim alone"
    )
    assert "NewtonArticulationRootAPI" in robot.GetMetadata("apiSchemas").GetAddedOrExplicitItems()
    assert all(b.GetParent() == robot for b in found["bodies"]), "every rigid body is a direct child of the robot prim"
    names = {b.GetName() for b in found["bodies"]}
    assert {"pelvis", "torso_link", "left_ankle_link", "right_ankle_link"} <= names and len(names) == 20
    assert {j.GetPrim().GetName() for j in found["joints"]} == H1_JOINTS
    for joint in found["joints"]:
        (body0,) = joint.GetBody0Rel().GetTargets()
        (body1,) = joint.GetBody1Rel().GetTargets()
        assert body0.GetParentPath() == robot.GetPath() and body1.GetParentPath() == robot.GetPath()
    knee = next(j for j in found["joints"] if j.GetPrim().GetName() == "left_knee")
    # H1's knee range is -0.26..2.05 rad; USD stores degrees.
    assert knee.GetLowerLimitAttr().Get() == pytest.approx(-14.897, abs=0.01)
    assert knee.GetUpperLimitAttr().Get() == pytest.approx(117.456, abs=0.01)
    torso = next(b for b in found["bodies"] if b.GetName() == "torso_link")
    assert UsdPhysics.MassAPI(torso).GetMassAttr().Get() == pytest.approx(17.789)
    assert not [p for p in found["stage"].Traverse() if "Actuator" in p.GetTypeName()]


def test_project_h1_converts_to_flat_usd(tmp_path):
    usd = convert_to_usd(PROJECT_H1, cache_dir=tmp_path)
    check_h1(usd)
    # Only primitive collision shapes: the project's model needs no mesh files.
    stage = inspect(usd)["stage"]
    assert not [p for p in stage.Traverse() if p.GetTypeName() == "Mesh"]


def test_conversion_is_cached(tmp_path):
    first = convert_to_usd(PROJECT_H1, cache_dir=tmp_path)
    stamp = first.stat().st_mtime_ns
    assert convert_to_usd(PROJECT_H1, cache_dir=tmp_path) == first
    assert first.stat().st_mtime_ns == stamp


@pytest.mark.skipif(not (REFERENCE_H1 / "mjcf" / "h1.xml").is_file(), reason="reference H1 not beside the project")
def test_reference_mjcf_converts(tmp_path):
    usd = convert_to_usd(REFERENCE_H1 / "mjcf" / "h1.xml", cache_dir=tmp_path)
    check_h1(usd)


@pytest.mark.skipif(not (REFERENCE_H1 / "urdf" / "h1.urdf").is_file(), reason="reference H1 not beside the project")
def test_reference_urdf_converts(tmp_path):
    usd = convert_to_usd(REFERENCE_H1 / "urdf" / "h1.urdf", cache_dir=tmp_path)
    found = inspect(usd)
    assert {j.GetPrim().GetName() for j in found["joints"]} >= H1_JOINTS
    assert all(b.GetParent() == found["robot"] for b in found["bodies"])


def test_missing_robot_file_says_what_to_set(tmp_path):
    with pytest.raises(FileNotFoundError, match="task.robot.file"):
        convert_to_usd(tmp_path / "nope.xml", cache_dir=tmp_path)


def test_wrong_robot_file_type(tmp_path):
    bad = tmp_path / "robot.obj"
    bad.write_text("o cube")
    with pytest.raises(ValueError, match="neither MJCF"):
        convert_to_usd(bad, cache_dir=tmp_path)
