"""Write a robot description (MJCF or URDF, compiled by MuJoCo) as a flat USD articulation for Isaac Lab."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import numpy as np

from core.rundir import writer_tag

# Bumped whenever the written USD changes shape, so cached files from an older writer are rebuilt.
WRITER_VERSION = "4"

_JOINT_SUFFIX = re.compile(r"_joint$")


def _quat_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product of two (w, x, y, z) quaternions."""
    aw, ax, ay, az = a
    bw, bx, by, bz = b
    return np.array(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ]
    )


def _quat_conj(q: np.ndarray) -> np.ndarray:
    return np.array([q[0], -q[1], -q[2], -q[3]])


def _quat_rotate(q: np.ndarray, v: np.ndarray) -> np.ndarray:
    qv = np.concatenate([[0.0], v])
    return _quat_mul(_quat_mul(q, qv), _quat_conj(q))[1:]


def _quat_from_x_to(axis: np.ndarray) -> np.ndarray:
    """The shortest rotation that takes the +X axis onto ``axis`` (unit vector)."""
    x = np.array([1.0, 0.0, 0.0])
    axis = axis / np.linalg.norm(axis)
    dot = float(np.dot(x, axis))
    if dot > 1.0 - 1e-9:
        return np.array([1.0, 0.0, 0.0, 0.0])
    if dot < -1.0 + 1e-9:
        return np.array([0.0, 0.0, 0.0, 1.0])  # half turn about Z
    cross = np.cross(x, axis)
    q = np.concatenate([[1.0 + dot], cross])
    return q / np.linalg.norm(q)


def source_digest(path: Path) -> str:
    """A digest of a robot file and every file beside or below it that it may include (meshes)."""
    digest = hashlib.sha256()
    digest.update(WRITER_VERSION.encode())
    digest.update(path.read_bytes())
    for sibling in sorted(path.parent.rglob("*")):
        if sibling.is_file() and sibling != path and sibling.suffix.lower() in {".stl", ".obj", ".xml", ".msh"}:
            digest.update(sibling.name.encode())
            digest.update(str(sibling.stat().st_size).encode())
    return digest.hexdigest()[:16]


def cache_root() -> Path:
    """Where converted robots are kept: ``$RLFORGE_CACHE`` or ``~/.cache/rlforge``."""
    return Path(os.environ.get("RLFORGE_CACHE", Path.home() / ".cache" / "rlforge")) / "robots"


def convert_to_usd(
    source: str | os.PathLike, *, cache_dir: Path | None = None, strip_joint_suffix: bool = True
) -> Path:
    """Convert an MJCF or URDF file to a flat USD articulation, once; later calls return the cached file.

    Every rigid body becomes a direct child of the robot prim (Isaac Lab's sensor paths such as
    ``{ENV_REGEX_NS}/Robot/torso_link`` expect that), joints are retargeted to those bodies, the
    articulation root sits on the robot prim alone, and actuators, sensors and keyframes are dropped.

    Args:
        source: Path to an ``.xml`` (MJCF) or ``.urdf`` file.
        cache_dir: Folder for converted files; defaults to :func:`cache_root`.
        strip_joint_suffix: Drop a trailing ``_joint`` from joint names, as Isaac Lab's regexes expect.

    Returns:
        Path of the USD file.
    """
    source = Path(source).expanduser().resolve()
    if not source.is_file():
        raise FileNotFoundError(f"robot file {source} does not exist: set task.robot.file to an MJCF or URDF file")
    if source.suffix.lower() not in {".xml", ".mjcf", ".urdf"}:
        raise ValueError(f"robot file {source} is neither MJCF (.xml) nor URDF (.urdf)")
    out_dir = (cache_dir or cache_root()) / f"{source.stem}-{source_digest(source)}"
    out_path = out_dir / f"{source.stem}.usda"
    if out_path.is_file():
        return out_path
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp_path = out_dir / f".{source.stem}.{writer_tag()}.usda"
    write_usd(load_mujoco_model(source), tmp_path, strip_joint_suffix=strip_joint_suffix)
    os.replace(tmp_path, out_path)
    return out_path


_MESH_SUFFIXES = (".stl", ".STL", ".obj", ".OBJ", ".msh")


def _find_mesh(reference: str, urdf: Path) -> Path | None:
    """A local mesh file for a URDF mesh reference (``package://pkg/meshes/x.dae``, relative or absolute).

    Looks beside the URDF and in its parent folders' ``meshes/`` for the same name, then for the same stem with a
    format MuJoCo reads (STL, OBJ), since MuJoCo cannot read COLLADA.
    """
    relative = reference.split("://", 1)[1].split("/", 1)[-1] if "://" in reference else reference
    name = Path(relative).name
    stem = Path(relative).stem
    folders = [urdf.parent, urdf.parent / "meshes", urdf.parent.parent / "meshes", urdf.parent.parent]
    for folder in folders:
        candidates = [folder / relative, folder / name] + [folder / f"{stem}{suffix}" for suffix in _MESH_SUFFIXES]
        for candidate in candidates:
            if candidate.is_file() and candidate.suffix.lower() != ".dae":
                return candidate.resolve()
    return None


def _prepare_urdf(source: Path, work_dir: Path) -> Path:
    """A copy of a URDF that MuJoCo compiles: visuals dropped, collision meshes pointed at local files."""
    import xml.etree.ElementTree as ET

    tree = ET.parse(source)
    for link in tree.getroot().iter("link"):
        for visual in link.findall("visual"):
            link.remove(visual)
        for mesh in link.iter("mesh"):
            found = _find_mesh(mesh.get("filename", ""), source)
            if found is None:
                raise FileNotFoundError(
                    f"{source}: collision mesh '{mesh.get('filename')}' not found beside the URDF or in a meshes/ "
                    "folder (MuJoCo reads STL and OBJ)"
                )
            mesh.set("filename", str(found))
    # Keep every link a body (fixed links become fixed joints), so link names survive for Isaac Lab's regexes.
    extension = tree.getroot().find("mujoco")
    if extension is None:
        extension = ET.SubElement(tree.getroot(), "mujoco")
    compiler = extension.find("compiler")
    if compiler is None:
        compiler = ET.SubElement(extension, "compiler")
    compiler.set("fusestatic", "false")
    compiler.set("discardvisual", "true")
    compiler.attrib.pop("meshdir", None)  # mesh paths are absolute now
    prepared = work_dir / source.name
    tree.write(prepared)
    return prepared


def load_mujoco_model(source: Path):
    """Compile an MJCF or URDF file with MuJoCo, dropping what a simulator-independent model does not need."""
    import tempfile

    import mujoco

    if source.suffix.lower() == ".urdf":
        with tempfile.TemporaryDirectory() as work_dir:
            spec = mujoco.MjSpec.from_file(str(_prepare_urdf(source, Path(work_dir))))
        # A URDF's root link is fixed to the world in MuJoCo; a legged robot's base floats.
        for body in spec.worldbody.bodies:
            if not body.joints:
                body.add_freejoint()
    else:
        spec = mujoco.MjSpec.from_file(str(source))
    # Actuators, sensors and keyframes belong to MuJoCo's own runtime; Isaac Lab sets drives itself.
    for actuator in list(spec.actuators):
        spec.delete(actuator)
    for sensor in list(spec.sensors):
        spec.delete(sensor)
    for key in list(spec.keys):
        spec.delete(key)
    return spec.compile()


def write_usd(model, out_path: Path, *, strip_joint_suffix: bool = True) -> None:
    """Write a compiled ``mujoco.MjModel`` as a flat USD articulation at ``out_path``."""
    import mujoco
    from pxr import Gf, Sdf, Usd, UsdGeom, UsdPhysics, Vt

    data = mujoco.MjData(model)
    mujoco.mj_kinematics(model, data)

    root_body = next((b for b in range(1, model.nbody) if model.body_parentid[b] == 0), None)
    if root_body is None:
        raise ValueError("the robot file has no body under the world")
    # Express every pose relative to the root body, so the robot prim's origin is the base link.
    root_pos = data.xpos[root_body].copy()
    root_quat_inv = _quat_conj(data.xquat[root_body])

    def local_pose(body: int) -> tuple[np.ndarray, np.ndarray]:
        pos = _quat_rotate(root_quat_inv, data.xpos[body] - root_pos)
        quat = _quat_mul(root_quat_inv, data.xquat[body])
        return pos, quat / np.linalg.norm(quat)

    def name_of(obj_type, index: int, fallback: str) -> str:
        name = mujoco.mj_id2name(model, obj_type, index) or fallback
        return re.sub(r"[^A-Za-z0-9_]", "_", name)

    stage = Usd.Stage.CreateNew(str(out_path))
    UsdGeom.SetStageUpAxis(stage, UsdGeom.Tokens.z)
    UsdGeom.SetStageMetersPerUnit(stage, 1.0)
    UsdPhysics.SetStageKilogramsPerUnit(stage, 1.0)
    robot_name = re.sub(r"[^A-Za-z0-9_]", "_", model.names[: model.names.index(b"\0")].decode() or "robot")
    robot = UsdGeom.Xform.Define(stage, f"/{robot_name}")
    stage.SetDefaultPrim(robot.GetPrim())
    UsdPhysics.ArticulationRootAPI.Apply(robot.GetPrim())
    robot.GetPrim().AddAppliedSchema("NewtonArticulationRootAPI")

    body_paths: dict[int, Sdf.Path] = {}
    poses: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for body in range(1, model.nbody):
        name = name_of(mujoco.mjtObj.mjOBJ_BODY, body, f"body_{body}")
        xform = UsdGeom.Xform.Define(stage, robot.GetPath().AppendChild(name))
        pos, quat = local_pose(body)
        poses[body] = (pos, quat)
        xform.AddTranslateOp().Set(Gf.Vec3d(*pos))
        xform.AddOrientOp().Set(Gf.Quatf(*quat.astype(float)))
        prim = xform.GetPrim()
        UsdPhysics.RigidBodyAPI.Apply(prim)
        mass_api = UsdPhysics.MassAPI.Apply(prim)
        mass_api.CreateMassAttr(float(model.body_mass[body]))
        mass_api.CreateCenterOfMassAttr(Gf.Vec3f(*model.body_ipos[body].astype(float)))
        mass_api.CreateDiagonalInertiaAttr(Gf.Vec3f(*model.body_inertia[body].astype(float)))
        mass_api.CreatePrincipalAxesAttr(Gf.Quatf(*model.body_iquat[body].astype(float)))
        body_paths[body] = xform.GetPath()

    for geom in range(model.ngeom):
        body = int(model.geom_bodyid[geom])
        if body == 0 or (model.geom_contype[geom] == 0 and model.geom_conaffinity[geom] == 0):
            continue  # world geometry and visual-only geometry are not part of the articulation
        _write_geom(stage, model, geom, body_paths[body].AppendChild(f"collision_{geom}"), Gf, UsdGeom, UsdPhysics, Vt)

    joints_scope = UsdGeom.Scope.Define(stage, robot.GetPath().AppendChild("joints"))
    for body in range(1, model.nbody):
        parent = int(model.body_parentid[body])
        if model.body_jntnum[body] == 0 and parent != 0:
            # A link welded to its parent (URDF fixed joint): keep it a body, held by a fixed joint.
            fixed = UsdPhysics.FixedJoint.Define(
                stage, joints_scope.GetPath().AppendChild(f"fixed_{body_paths[body].name}")
            )
            fixed.CreateBody0Rel().SetTargets([body_paths[parent]])
            fixed.CreateBody1Rel().SetTargets([body_paths[body]])
            parent_pos, parent_quat = poses[parent]
            child_pos, child_quat = poses[body]
            fixed.CreateLocalPos0Attr(Gf.Vec3f(*_quat_rotate(_quat_conj(parent_quat), child_pos - parent_pos)))
            fixed.CreateLocalRot0Attr(Gf.Quatf(*_quat_mul(_quat_conj(parent_quat), child_quat)))
            fixed.CreateLocalPos1Attr(Gf.Vec3f(0.0, 0.0, 0.0))
            fixed.CreateLocalRot1Attr(Gf.Quatf(1.0, 0.0, 0.0, 0.0))
    for joint in range(model.njnt):
        jtype = model.jnt_type[joint]
        if jtype == mujoco.mjtJoint.mjJNT_FREE:
            continue
        body = int(model.jnt_bodyid[joint])
        parent = int(model.body_parentid[body])
        name = name_of(mujoco.mjtObj.mjOBJ_JOINT, joint, f"joint_{joint}")
        if strip_joint_suffix:
            name = _JOINT_SUFFIX.sub("", name)
        path = joints_scope.GetPath().AppendChild(name)
        if jtype == mujoco.mjtJoint.mjJNT_HINGE:
            usd_joint = UsdPhysics.RevoluteJoint.Define(stage, path)
        elif jtype == mujoco.mjtJoint.mjJNT_SLIDE:
            usd_joint = UsdPhysics.PrismaticJoint.Define(stage, path)
        else:
            raise ValueError(f"joint {name}: ball joints are not supported; use three hinges")
        # The joint frame: at the anchor, with +X along the joint axis, in the child body frame.
        anchor = model.jnt_pos[joint].astype(float)
        frame_rot = _quat_from_x_to(model.jnt_axis[joint].astype(float))
        child_pos, child_quat = poses[body]
        if parent == 0:
            raise ValueError(f"joint {name} attaches the root body to the world; only floating bases are supported")
        parent_pos, parent_quat = poses[parent]
        # Same frame expressed in the parent body: parent^-1 * child * frame.
        anchor_root = child_pos + _quat_rotate(child_quat, anchor)
        pos0 = _quat_rotate(_quat_conj(parent_quat), anchor_root - parent_pos)
        rot0 = _quat_mul(_quat_conj(parent_quat), _quat_mul(child_quat, frame_rot))
        usd_joint.CreateBody0Rel().SetTargets([body_paths[parent]])
        usd_joint.CreateBody1Rel().SetTargets([body_paths[body]])
        usd_joint.CreateLocalPos0Attr(Gf.Vec3f(*pos0))
        usd_joint.CreateLocalRot0Attr(Gf.Quatf(*(rot0 / np.linalg.norm(rot0))))
        usd_joint.CreateLocalPos1Attr(Gf.Vec3f(*anchor))
        usd_joint.CreateLocalRot1Attr(Gf.Quatf(*frame_rot))
        usd_joint.CreateAxisAttr("X")
        drive_kind = "angular" if jtype == mujoco.mjtJoint.mjJNT_HINGE else "linear"
        if model.jnt_limited[joint]:
            lower, upper = (float(v) for v in model.jnt_range[joint])
            if drive_kind == "angular":
                lower, upper = np.degrees(lower), np.degrees(upper)
            usd_joint.CreateLowerLimitAttr(float(lower))
            usd_joint.CreateUpperLimitAttr(float(upper))
        drive = UsdPhysics.DriveAPI.Apply(usd_joint.GetPrim(), drive_kind)
        drive.CreateTypeAttr("force")
        drive.CreateStiffnessAttr(0.0)
        drive.CreateDampingAttr(0.0)
    stage.GetRootLayer().Save()


def _write_geom(stage, model, geom: int, path, Gf, UsdGeom, UsdPhysics, Vt) -> None:
    """Write one MuJoCo collision geom as a USD collision shape under its body."""
    import mujoco

    gtype = model.geom_type[geom]
    size = model.geom_size[geom].astype(float)
    if gtype == mujoco.mjtGeom.mjGEOM_SPHERE:
        shape = UsdGeom.Sphere.Define(stage, path)
        shape.CreateRadiusAttr(size[0])
    elif gtype == mujoco.mjtGeom.mjGEOM_CAPSULE:
        shape = UsdGeom.Capsule.Define(stage, path)
        shape.CreateRadiusAttr(size[0])
        shape.CreateHeightAttr(2.0 * size[1])
        shape.CreateAxisAttr("Z")
    elif gtype == mujoco.mjtGeom.mjGEOM_CYLINDER:
        shape = UsdGeom.Cylinder.Define(stage, path)
        shape.CreateRadiusAttr(size[0])
        shape.CreateHeightAttr(2.0 * size[1])
        shape.CreateAxisAttr("Z")
    elif gtype == mujoco.mjtGeom.mjGEOM_BOX:
        shape = UsdGeom.Cube.Define(stage, path)
        shape.CreateSizeAttr(2.0)
    elif gtype == mujoco.mjtGeom.mjGEOM_MESH:
        mesh_id = int(model.geom_dataid[geom])
        v0, nv = int(model.mesh_vertadr[mesh_id]), int(model.mesh_vertnum[mesh_id])
        f0, nf = int(model.mesh_faceadr[mesh_id]), int(model.mesh_facenum[mesh_id])
        shape = UsdGeom.Mesh.Define(stage, path)
        shape.CreatePointsAttr(Vt.Vec3fArray.FromNumpy(model.mesh_vert[v0 : v0 + nv].astype(np.float32)))
        shape.CreateFaceVertexCountsAttr(Vt.IntArray([3] * nf))
        shape.CreateFaceVertexIndicesAttr(
            Vt.IntArray.FromNumpy(model.mesh_face[f0 : f0 + nf].reshape(-1).astype(np.int32))
        )
        UsdPhysics.MeshCollisionAPI.Apply(shape.GetPrim()).CreateApproximationAttr("convexHull")
    else:
        return  # planes, height fields and ellipsoids do not occur on robot bodies
    shape.AddTranslateOp().Set(Gf.Vec3d(*model.geom_pos[geom].astype(float)))
    shape.AddOrientOp().Set(Gf.Quatf(*model.geom_quat[geom].astype(float)))
    if gtype == mujoco.mjtGeom.mjGEOM_BOX:
        shape.AddScaleOp().Set(Gf.Vec3f(*size))
    UsdPhysics.CollisionAPI.Apply(shape.GetPrim())
