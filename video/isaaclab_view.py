"""Frames of one robot of an Isaac Lab environment, drawn by MuJoCo from the robot's MJCF and the terrain's mesh.

Each frame copies the robot's root pose and joint positions out of the simulator (one env, a few dozen numbers),
runs MuJoCo's forward kinematics on the MJCF and draws it over the ground the environment stands on: the terrain
mesh read from the scene's USD stage (a square patch around the robot, moved when the robot walks near its
edge), or a plane for a flat ground. A camera follows the robot with a short lag; arrows show the commanded
(green) and actual (blue) horizontal velocity, 1 m per m/s, above the robot."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from video.offscreen import Offscreen, add_arrow
from video.overlay import draw_lines, velocity_lines
from video.probe import EpisodeClock, as_tensor, base_velocities
from video.scene import ACTUAL_RGBA, COMMAND_RGBA, TerrainMesh, build_model

PATCH_HALF_SIZE_M = 12.0
"""Half the edge of the square of terrain drawn around the robot [m]."""
PATCH_MARGIN_M = 5.0
"""The patch is moved when the robot comes this close to its edge [m]."""
CAMERA = {"distance": 4.0, "azimuth": 135.0, "elevation": -18.0}
"""The following camera: metres from the robot, degrees around it and above the horizon."""
CAMERA_LAG_S = 0.3
"""Time constant of the camera's follow [s]: the robot's own motion shows against the ground."""
ARROW_HEIGHT_M = 0.9
"""Height of the velocity arrows above the robot's base [m]."""


class IsaacLabView:
    """Frames of env ``env_id`` of an Isaac Lab environment (rsl-rl's wrapper) with the robot of ``robot_file``."""

    def __init__(self, env, robot_file: str | Path, width: int, height: int, env_id: int = 0) -> None:
        import mujoco

        self._mujoco = mujoco
        self.env = env
        self.env_id = int(env_id)
        self._unwrapped = env.unwrapped
        self._robot = self._unwrapped.scene["robot"]
        self._dt = float(self._unwrapped.step_dt)
        self.robot_file = Path(robot_file)
        self.width, self.height = int(width), int(height)
        self._terrain = terrain_mesh(self._unwrapped)
        position = self._root_pose()[0]
        self._patch_center = (float(position[0]), float(position[1]))
        self._offscreen = Offscreen(self._model_around(self._patch_center), self.width, self.height)
        self._data = mujoco.MjData(self._offscreen.model)
        self._map_joints(self._offscreen.model)
        self._camera = mujoco.MjvCamera()
        self._camera.type = mujoco.mjtCamera.mjCAMERA_FREE
        self._camera.distance, self._camera.azimuth = CAMERA["distance"], CAMERA["azimuth"]
        self._camera.elevation = CAMERA["elevation"]
        self._lookat: np.ndarray | None = None
        self._clock = EpisodeClock()

    # ------------------------------------------------------------------------------------ state
    def _root_pose(self) -> tuple[np.ndarray, np.ndarray]:
        """Position [m] and orientation (w, x, y, z) of the followed robot's root in the world."""
        data = self._robot.data
        position = as_tensor(data.root_pos_w)[self.env_id].detach().cpu().double().numpy()
        x, y, z, w = as_tensor(data.root_quat_w)[self.env_id].detach().cpu().double().numpy()  # Isaac Lab: x, y, z, w
        return position, np.array([w, x, y, z])

    def _map_joints(self, model) -> None:
        """Where each simulator joint's position goes in MuJoCo's ``qpos`` (matched by name; the USD conversion
        drops ``_joint`` suffixes), and where the floating base goes."""
        mujoco = self._mujoco
        names = {name: index for index, name in enumerate(self._robot.joint_names)}
        self._joint_to_qpos: list[tuple[int, int]] = []
        self._free_qpos: int | None = None
        missing = []
        for joint_id in range(model.njnt):
            joint = model.joint(joint_id)
            kind = int(model.jnt_type[joint_id])
            if kind == mujoco.mjtJoint.mjJNT_FREE:
                if self._free_qpos is None:  # the root's; a second free body would be a loose object
                    self._free_qpos = int(model.jnt_qposadr[joint_id])
            elif kind in (mujoco.mjtJoint.mjJNT_HINGE, mujoco.mjtJoint.mjJNT_SLIDE):
                index = names.get(joint.name, names.get(joint.name.removesuffix("_joint")))
                if index is None:
                    missing.append(joint.name)
                else:
                    self._joint_to_qpos.append((index, int(model.jnt_qposadr[joint_id])))
        if missing:
            print(f"[rlforge] video: joints of {self.robot_file.name} not in the simulator, drawn at 0: {missing}")

    def _model_around(self, center: tuple[float, float]):
        terrain = None if self._terrain is None else self._terrain.patch(center, PATCH_HALF_SIZE_M)
        return build_model(self.robot_file, terrain, self.width, self.height)

    # ------------------------------------------------------------------------------------ frames
    def frame(self) -> np.ndarray:
        """The current frame: (height, width, 3) uint8."""
        mujoco = self._mujoco
        position, quaternion = self._root_pose()
        if self._terrain is not None and max(
            abs(position[0] - self._patch_center[0]), abs(position[1] - self._patch_center[1])
        ) > (PATCH_HALF_SIZE_M - PATCH_MARGIN_M):
            self._patch_center = (float(position[0]), float(position[1]))
            self._offscreen.use_model(self._model_around(self._patch_center))
            self._data = mujoco.MjData(self._offscreen.model)
        model, data = self._offscreen.model, self._data
        joints = as_tensor(self._robot.data.joint_pos)[self.env_id].detach().cpu().double().numpy()
        if self._free_qpos is not None:
            data.qpos[self._free_qpos : self._free_qpos + 3] = position
            data.qpos[self._free_qpos + 3 : self._free_qpos + 7] = quaternion
        for index, address in self._joint_to_qpos:
            data.qpos[address] = joints[index]
        mujoco.mj_kinematics(model, data)
        mujoco.mj_camlight(model, data)
        self._follow(position)

        step = int(self.env.episode_length_buf[self.env_id])
        episode = self._clock.tick(step)
        command, actual = (
            v[self.env_id].detach().cpu().double().numpy() for v in base_velocities("isaaclab", self.env)
        )
        yaw = _yaw(quaternion)
        origin = position + np.array([0.0, 0.0, ARROW_HEIGHT_M])

        def arrows(scene) -> None:
            add_arrow(scene, origin, origin + _to_world(command[:2], yaw), COMMAND_RGBA)
            add_arrow(scene, origin, origin + _to_world(actual[:2], yaw), ACTUAL_RGBA)

        pixels = self._offscreen.draw(data, self._camera, arrows)
        return draw_lines(pixels, velocity_lines(command, actual, step * self._dt, episode))

    def _follow(self, position: np.ndarray) -> None:
        """Move the camera's target toward the robot with a lag; jump when the robot was moved (a reset)."""
        target = position.copy()
        if self._lookat is None or float(np.linalg.norm(target - self._lookat)) > 2.0:
            self._lookat = target
        else:
            keep = math.exp(-self._dt / CAMERA_LAG_S)
            self._lookat = keep * self._lookat + (1.0 - keep) * target
        self._camera.lookat[:] = self._lookat

    def close(self) -> None:
        """Free the renderer."""
        self._offscreen.close()


def _yaw(quaternion_wxyz: np.ndarray) -> float:
    w, x, y, z = quaternion_wxyz
    return math.atan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z))


def _to_world(planar: np.ndarray, yaw: float) -> np.ndarray:
    """A base-frame horizontal vector (x, y) turned by the base's heading into the world frame, z = 0."""
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([c * planar[0] - s * planar[1], s * planar[0] + c * planar[1], 0.0])


def terrain_mesh(unwrapped) -> TerrainMesh | None:
    """The ground's triangle mesh in world coordinates, read from the scene's USD stage; None for a flat plane
    (or a ground with no mesh, drawn as a plane at z = 0)."""
    from pxr import Usd, UsdGeom

    terrain = getattr(unwrapped.scene, "terrain", None)
    if terrain is None:
        return None
    stage = _stage(unwrapped)
    meshes = []
    for path in terrain.terrain_prim_paths:
        root = stage.GetPrimAtPath(path)
        if not root.IsValid():
            continue
        for prim in Usd.PrimRange(root):
            if prim.IsA(UsdGeom.Plane):
                return None
            if prim.IsA(UsdGeom.Mesh):
                meshes.append(_world_triangles(UsdGeom.Mesh(prim)))
    if not meshes:
        return None
    vertices, faces, offset = [], [], 0
    for mesh_vertices, mesh_faces in meshes:
        vertices.append(mesh_vertices)
        faces.append(mesh_faces + offset)
        offset += len(mesh_vertices)
    return TerrainMesh(np.concatenate(vertices), np.concatenate(faces).astype(np.int32))


def _stage(unwrapped):
    stage = getattr(getattr(unwrapped, "sim", None), "stage", None)
    if stage is not None:
        return stage
    import isaaclab.sim as sim_utils

    return sim_utils.get_current_stage()


def _world_triangles(mesh) -> tuple[np.ndarray, np.ndarray]:
    """A USD mesh's vertices in world coordinates and its faces as triangles (polygons split as fans)."""
    from pxr import Usd

    points = np.asarray(mesh.GetPointsAttr().Get(), dtype=np.float64)
    counts = np.asarray(mesh.GetFaceVertexCountsAttr().Get(), dtype=np.int64)
    indices = np.asarray(mesh.GetFaceVertexIndicesAttr().Get(), dtype=np.int64)
    transform = np.asarray(mesh.ComputeLocalToWorldTransform(Usd.TimeCode.Default()), dtype=np.float64)
    # USD matrices act on row vectors: world = [p, 1] @ M.
    world = points @ transform[:3, :3] + transform[3, :3]
    if len(counts) and np.all(counts == 3):
        return world, indices.reshape(-1, 3)
    triangles = []
    start = 0
    for count in counts:
        polygon = indices[start : start + count]
        triangles += [(polygon[0], polygon[k], polygon[k + 1]) for k in range(1, count - 1)]
        start += count
    return world, np.asarray(triangles, dtype=np.int64).reshape(-1, 3)


def robot_file(task) -> Path:
    """The MJCF (or URDF) a video draws the task's robot from: the task's own file, else the project's H1 (whose
    joint names are those of Isaac Lab's H1 too)."""
    from tasks.isaaclab_env import PROJECT_H1

    if task.robot.source == "file" and task.robot.file:
        return Path(task.robot.file)
    return PROJECT_H1
