"""The project's H1 against Unitree's published description: inertials, frames, joints, collision shapes, settings."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rlforge_testing import REFERENCE_H1
from tasks.isaaclab_env import PROJECT_H1
from tasks.robots.reference import model_figures, read_reference
from tasks.robots.settings import H1_URDF_MOTOR_LIMITS, apply_robot_settings

# Unitree's figures, written by `python -m tasks.robots.reference` from ../shared/reference/unitree_h1: a checkout
# without that folder runs every check from them; where the folder is present, they are first checked against it.
FIXTURE = Path(__file__).resolve().parent / "data" / "h1_reference.json"

# Tolerances. The project copies Unitree's MJCF figures, so the inertial and joint tolerances only absorb rounding.
MASS_TOLERANCE_KG = 1e-4
COM_TOLERANCE_M = 1e-5
INERTIA_RELATIVE_TOLERANCE = 1e-4  # of the body's largest moment of inertia
FRAME_POSITION_TOLERANCE_M = 1e-5
FRAME_ANGLE_TOLERANCE_RAD = 1e-4
AXIS_ANGLE_TOLERANCE_RAD = 1e-6
RANGE_TOLERANCE_RAD = 1e-6
# Each face of a body's collision shapes (their union's bounding box) against its mesh's bounding box.
SHAPE_TOLERANCE_M = 0.010
# The foot's sole: its length, width and bottom decide the support polygon and the roll moment the foot resists.
SOLE_TOLERANCE_M = 0.001
FACES = ("x-", "y-", "z-", "x+", "y+", "z+")
# Faces left deliberately short of the mesh, by link kind (the body name without its side).
EXCUSED_FACES = {
    # Unitree's own MJCF collides the hip-yaw link as this cylinder (the hip motor); the rest of the link's mesh
    # lies inside the pelvis box (above) and the hip-roll sphere (forward).
    "hip_yaw_link": {"x+": "inside the hip-roll sphere", "z+": "inside the pelvis box"},
    # The ankle bracket above the sole plate and keel (z -0.045 to 0.011) never touches the ground while the sole can.
    "ankle_link": {"z+": "the ankle bracket above the sole is left out"},
}


@pytest.fixture(scope="module")
def reference() -> dict:
    return json.loads(FIXTURE.read_text())


@pytest.fixture(scope="module")
def project_model():
    import mujoco

    return mujoco.MjModel.from_xml_path(str(PROJECT_H1))


@pytest.fixture(scope="module")
def project(project_model) -> dict:
    return model_figures(project_model)


def _assert_nested_close(actual, expected, where: str = "") -> None:
    """Equal structure, numbers within 1e-7 (the fixture keeps nine decimals)."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict) and actual.keys() == expected.keys(), f"{where}: keys differ"
        for key in expected:
            _assert_nested_close(actual[key], expected[key], f"{where}.{key}")
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), f"{where}: lengths differ"
        for index, (a, e) in enumerate(zip(actual, expected, strict=True)):
            _assert_nested_close(a, e, f"{where}[{index}]")
    elif isinstance(expected, float) and not isinstance(actual, str):
        assert actual == pytest.approx(expected, abs=1e-7), f"{where}: {actual} != {expected}"
    else:
        assert actual == expected, f"{where}: {actual} != {expected}"


@pytest.mark.skipif(not (REFERENCE_H1 / "mjcf" / "h1.xml").is_file(), reason="reference H1 not beside the project")
def test_fixture_is_the_reference_files(reference):
    # Regenerate with `python -m tasks.robots.reference` when the reference description changes.
    _assert_nested_close(json.loads(json.dumps(read_reference(REFERENCE_H1))), reference, "h1_reference")


def test_same_bodies_and_joints(project, reference):
    assert project["bodies"].keys() == reference["bodies"].keys()
    assert project["joints"].keys() == reference["joints"].keys()
    for name, joint in reference["joints"].items():
        assert project["joints"][name]["body"] == joint["body"]
    for name, body in reference["bodies"].items():
        assert project["bodies"][name]["parent"] == body["parent"]


def test_masses_and_centres_of_mass(project, reference):
    for name, body in reference["bodies"].items():
        ours = project["bodies"][name]
        assert ours["mass"] == pytest.approx(body["mass"], abs=MASS_TOLERANCE_KG), name
        assert np.allclose(ours["com"], body["com"], rtol=0, atol=COM_TOLERANCE_M), name


def test_inertias(project, reference):
    for name, body in reference["bodies"].items():
        expected = np.asarray(body["inertia"])
        difference = np.abs(np.asarray(project["bodies"][name]["inertia"]) - expected).max()
        assert difference <= INERTIA_RELATIVE_TOLERANCE * np.abs(expected).max(), f"{name}: off by {difference:.2e}"


def _rotation_angle(q1, q2) -> float:
    """The angle (rad) of the rotation between two unit quaternions, whatever their signs."""
    return 2.0 * float(np.arccos(min(1.0, abs(float(np.dot(q1, q2))))))


def test_body_frames(project, reference):
    for name, body in reference["bodies"].items():
        ours = project["bodies"][name]
        if body["parent"] is not None:  # the floating base's position is only where it starts
            assert np.allclose(ours["pos"], body["pos"], rtol=0, atol=FRAME_POSITION_TOLERANCE_M), name
        assert _rotation_angle(ours["quat"], body["quat"]) <= FRAME_ANGLE_TOLERANCE_RAD, name


def test_joint_axes_and_ranges(project, reference):
    for name, joint in reference["joints"].items():
        ours = project["joints"][name]
        cosine = float(np.dot(ours["axis"], joint["axis"]))
        assert np.arccos(min(1.0, cosine)) <= AXIS_ANGLE_TOLERANCE_RAD, name
        assert np.allclose(ours["range"], joint["range"], rtol=0, atol=RANGE_TOLERANCE_RAD), name


def test_urdf_differs_from_the_mjcf_in_ankle_and_elbow_inertials_only(reference):
    # The project takes the MJCF's inertials; docs/robot.md says why. This pins where the two files disagree.
    disagree = set()
    for name, link in reference["urdf"]["inertials"].items():
        body = reference["bodies"][name]
        inertia = np.asarray(body["inertia"])
        if (
            abs(link["mass"] - body["mass"]) > MASS_TOLERANCE_KG
            or not np.allclose(link["com"], body["com"], rtol=0, atol=COM_TOLERANCE_M)
            or np.abs(np.asarray(link["inertia"]) - inertia).max() > 1e-3 * np.abs(inertia).max()
        ):
            disagree.add(name)
    assert disagree == {f"{side}_{link}" for side in ("left", "right") for link in ("ankle_link", "elbow_link")}
    assert reference["urdf"]["inertials"]["left_ankle_link"]["mass"] == pytest.approx(0.474)
    assert reference["bodies"]["left_ankle_link"]["mass"] == pytest.approx(0.552448)


def _geom_bounds(model, geom: int) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned bounds of one collision geom in its body's frame."""
    import mujoco

    rotation = np.zeros(9)
    mujoco.mju_quat2Mat(rotation, model.geom_quat[geom])
    rotation = rotation.reshape(3, 3)
    size = model.geom_size[geom]
    kind = model.geom_type[geom]
    axis = rotation[:, 2]  # capsules and cylinders lie along their local z
    if kind == mujoco.mjtGeom.mjGEOM_BOX:
        half = np.abs(rotation) @ size
    elif kind == mujoco.mjtGeom.mjGEOM_SPHERE:
        half = np.full(3, size[0])
    elif kind == mujoco.mjtGeom.mjGEOM_CAPSULE:
        half = np.abs(axis) * size[1] + size[0]
    elif kind == mujoco.mjtGeom.mjGEOM_CYLINDER:
        half = np.abs(axis) * size[1] + size[0] * np.sqrt(np.clip(1.0 - axis**2, 0.0, 1.0))
    else:
        raise AssertionError(f"geom {geom}: the project's H1 uses primitives only")
    centre = model.geom_pos[geom]
    return centre - half, centre + half


def collision_bounds(model) -> dict[str, np.ndarray]:
    """Each body's collision shapes' joint bounding box, as [low xyz, high xyz], in the body's frame."""
    bounds: dict[str, np.ndarray] = {}
    for geom in range(model.ngeom):
        if model.geom_contype[geom] == 0 and model.geom_conaffinity[geom] == 0:
            continue
        name = model.body(int(model.geom_bodyid[geom])).name
        low, high = _geom_bounds(model, geom)
        if name in bounds:
            low, high = np.minimum(bounds[name][0], low), np.maximum(bounds[name][1], high)
        bounds[name] = np.stack([low, high])
    return bounds


def face_gaps(shape: np.ndarray, mesh: np.ndarray) -> dict[str, float]:
    """How far each face of the shapes' box lies outside (+) or inside (-) the mesh's box, in metres."""
    outward = np.concatenate([mesh[0] - shape[0], shape[1] - mesh[1]])
    return dict(zip(FACES, outward.tolist(), strict=True))


def _link_kind(body: str) -> str:
    return body.removeprefix("left_").removeprefix("right_")


def test_collision_shapes_match_mesh_bounds(project_model, reference):
    shapes = collision_bounds(project_model)
    assert shapes.keys() == reference["mesh_bounds"].keys(), "every body with a mesh has collision shapes"
    off = []
    for body, mesh in reference["mesh_bounds"].items():
        excused = EXCUSED_FACES.get(_link_kind(body), {})
        for face, gap in face_gaps(shapes[body], np.asarray(mesh)).items():
            if face in excused:
                assert gap < 0, f"{body} {face}: an excused face may fall short of the mesh, not beyond it"
            elif abs(gap) > SHAPE_TOLERANCE_M:
                off.append(f"{body} {face}: {gap * 1000:+.1f} mm")
    assert not off, "collision shapes off their mesh's bounds by more than 10 mm: " + "; ".join(off)


@pytest.mark.parametrize("side", ["left", "right"])
def test_foot_contact_is_the_sole(project_model, reference, side):
    body = f"{side}_ankle_link"
    shape = collision_bounds(project_model)[body]
    mesh = np.asarray(reference["mesh_bounds"][body])
    gaps = face_gaps(shape, mesh)
    for face in ("x-", "x+", "y-", "y+", "z-"):
        assert abs(gaps[face]) <= SOLE_TOLERANCE_M, (
            f"{body} {face} is {gaps[face] * 1000:+.1f} mm off the sole; the H1 has no ankle roll, so the foot's "
            f"half-width ({shape[1][1]:.3f} m against the sole's {mesh[1][1]:.3f} m) sets the roll moment it resists"
        )


def test_written_usd_carries_the_sole(tmp_path):
    from pxr import Usd, UsdGeom

    from tasks.robots.usd_writer import convert_to_usd

    stage = Usd.Stage.Open(str(convert_to_usd(PROJECT_H1, cache_dir=tmp_path)))
    (foot,) = [p for p in stage.GetDefaultPrim().GetChild("left_ankle_link").GetChildren() if p.IsA(UsdGeom.Cube)]
    ops = {op.GetOpName(): op.Get() for op in UsdGeom.Xformable(foot).GetOrderedXformOps()}
    size = UsdGeom.Cube(foot).GetSizeAttr().Get()
    assert np.allclose(np.asarray(ops["xformOp:scale"]) * size, [0.30, 0.03, 0.025], atol=1e-6)
    assert np.allclose(np.asarray(ops["xformOp:translate"]), [0.05, 0.0, -0.0575], atol=1e-6)


def test_urdf_motor_limits_are_the_urdfs(reference):
    urdf = {name: (limit["effort"], limit["velocity"]) for name, limit in reference["urdf"]["limits"].items()}
    assert H1_URDF_MOTOR_LIMITS == urdf
    # Unitree's MJCF bounds its motors' torque to the same figures.
    assert {name: effort for name, (effort, _) in urdf.items()} == reference["mjcf_motor_torque"]


def test_default_armature_and_damping_are_unitree_mjcfs(reference):
    from core.config import MotorLimits, RobotConfig

    robot = RobotConfig()
    assert {joint["armature"] for joint in reference["joints"].values()} == {robot.armature}
    assert {joint["damping"] for joint in reference["joints"].values()} == {robot.joint_damping}
    assert robot.motor_limits == MotorLimits.isaaclab


def _isaaclab_h1():
    from isaaclab_assets import H1_MINIMAL_CFG

    return H1_MINIMAL_CFG.copy()


def test_settings_reach_every_actuator_group():
    from omegaconf import OmegaConf

    articulation = _isaaclab_h1()
    robot = OmegaConf.create({"armature": 0.1, "joint_damping": 1.0, "motor_limits": "urdf"})
    apply_robot_settings(articulation, robot)
    joints = {}
    for group in articulation.actuators.values():
        assert group.armature == 0.1 and group.viscous_friction == 1.0
        for joint, effort in group.joint_effort_limit.items():
            joints[joint] = (effort, group.joint_velocity_limit[joint])
    assert joints == H1_URDF_MOTOR_LIMITS, "every H1 joint gets its motor's limits, from the group that drives it"


def test_isaaclab_limits_and_null_dynamics_leave_the_groups_alone():
    from omegaconf import OmegaConf

    def joint_properties(articulation) -> dict:
        return {
            name: (group.armature, group.viscous_friction, group.joint_effort_limit, group.joint_velocity_limit)
            for name, group in articulation.actuators.items()
        }

    articulation = _isaaclab_h1()
    before = joint_properties(articulation)
    robot = OmegaConf.create({"armature": None, "joint_damping": None, "motor_limits": "isaaclab"})
    apply_robot_settings(articulation, robot)
    assert joint_properties(articulation) == before
    assert articulation.actuators["feet"].joint_effort_limit == 100


@pytest.mark.slow
def test_settings_reach_the_simulator(compose_cfg, tmp_path, monkeypatch):
    """Build the H1 task on the CPU and read armature, damping, torque limits and the foot back from Newton and
    MuJoCo-Warp, then step it."""
    import torch

    from tasks.isaaclab_env import build

    monkeypatch.setenv("RLFORGE_CACHE", str(tmp_path / "cache"))
    cfg = compose_cfg(
        [
            "task=h1_flat",
            "task.num_envs=2",
            "task.kernels.precompile=false",
            "task.robot.armature=0.05",
            "task.robot.joint_damping=2.0",
            "task.robot.motor_limits=urdf",
        ]
    )
    handle = build(cfg.task, "cpu", 0)
    try:
        from isaaclab_newton.physics import NewtonManager

        solver = NewtonManager._solver
        mj_model, mjw_model = solver.mj_model, solver.mjw_model
        armature, damping = mjw_model.dof_armature.numpy(), mjw_model.dof_damping.numpy()
        torque = mjw_model.jnt_actfrcrange.numpy()
        seen = set()
        for joint in range(mj_model.njnt):
            name = mj_model.joint(joint).name.rsplit("_joints_", 1)[-1]
            if name not in H1_URDF_MOTOR_LIMITS:
                continue  # the floating base
            seen.add(name)
            dof = int(mj_model.jnt_dofadr[joint])
            assert np.allclose(armature[..., dof], 0.05) and np.allclose(damping[..., dof], 2.0), name
            assert np.allclose(torque[..., joint, :], [-H1_URDF_MOTOR_LIMITS[name][0], H1_URDF_MOTOR_LIMITS[name][0]])
        assert seen == H1_URDF_MOTOR_LIMITS.keys()

        robot = handle.env.unwrapped.scene["robot"]
        velocity = dict(zip(robot.joint_names, robot.data.joint_vel_limits.torch[0].tolist(), strict=True))
        assert velocity == {name: limits[1] for name, limits in H1_URDF_MOTOR_LIMITS.items()}

        model = NewtonManager.get_model()
        scales, transforms = model.shape_scale.numpy(), model.shape_transform.numpy()
        feet = [i for i, label in enumerate(model.shape_label) if "/env_0/Robot/left_ankle_link/" in label]
        assert len(feet) == 1
        assert np.allclose(scales[feet[0]], [0.15, 0.015, 0.0125], atol=1e-6)
        assert np.allclose(transforms[feet[0]][:3], [0.05, 0.0, -0.0575], atol=1e-6)

        # Zero actions hold the default pose: 0.2 s later the robot still stands on its feet.
        env = handle.env
        for _ in range(10):
            _, rewards, _, _ = env.step(torch.zeros(env.num_envs, env.num_actions))
        assert torch.isfinite(rewards).all()
        assert (robot.data.root_pos_w.torch[:, 2] > 0.8).all()
    finally:
        handle.close()
