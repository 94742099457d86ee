"""The MuJoCo model a video is drawn from: the robot's MJCF in one colour, a sky, a light and the ground.

Nothing here is simulated: the model only places geoms where the simulator says the robot is (its joint state is
copied in and MuJoCo's forward kinematics run), so contacts, actuators and masses do not matter."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROBOT_RGBA = (0.93, 0.42, 0.08, 1.0)
"""The robot's colour: orange, which appears nowhere else in a frame (tests find the robot by it)."""
COMMAND_RGBA = (0.10, 0.80, 0.25, 1.0)
"""The commanded-velocity arrow: green."""
ACTUAL_RGBA = (0.15, 0.45, 1.00, 1.0)
"""The actual-velocity arrow: blue."""
CHECKER_SIZE_M = 1.0
"""Edge of one square of the ground's checker pattern [m]: it shows how far and how fast the robot moves."""


@dataclass
class TerrainMesh:
    """A triangle mesh of the ground in world coordinates [m]: ``vertices`` (V, 3) and ``faces`` (F, 3)."""

    vertices: np.ndarray
    faces: np.ndarray

    def patch(self, center_xy: tuple[float, float], half_size: float) -> TerrainMesh:
        """The triangles whose centroid lies in the square of ``half_size`` [m] around ``center_xy``, reindexed."""
        centroids = self.vertices[self.faces].mean(axis=1)
        inside = (np.abs(centroids[:, 0] - center_xy[0]) <= half_size) & (
            np.abs(centroids[:, 1] - center_xy[1]) <= half_size
        )
        faces = self.faces[inside]
        used, reindexed = np.unique(faces, return_inverse=True)
        return TerrainMesh(self.vertices[used], reindexed.reshape(-1, 3).astype(np.int32))


def build_model(robot_file: str | Path, terrain: TerrainMesh | None, width: int, height: int):
    """A MuJoCo model of the robot in ``robot_file`` (MJCF or URDF) above ``terrain`` (None: a flat plane at
    z = 0), whose offscreen buffer holds ``width`` x ``height`` frames."""
    import mujoco

    spec = mujoco.MjSpec.from_file(str(robot_file))
    spec.visual.global_.offwidth = max(int(width), spec.visual.global_.offwidth)
    spec.visual.global_.offheight = max(int(height), spec.visual.global_.offheight)
    spec.visual.headlight.ambient = [0.35, 0.35, 0.35]
    spec.visual.headlight.diffuse = [0.45, 0.45, 0.45]
    spec.visual.headlight.specular = [0.05, 0.05, 0.05]
    # Clipping planes and the shadow box scale with the model's extent: fix it at the robot's size, so that a large
    # terrain patch does not push the near plane out or spread the shadow map over the whole ground.
    spec.stat.extent = 2.0
    spec.visual.map.znear = 0.01  # x extent: 2 cm
    spec.visual.map.zfar = 100.0  # x extent: 200 m
    spec.visual.map.shadowclip = 5.0  # x extent: shadows within 10 m of the light's axis
    spec.visual.quality.shadowsize = 2048
    for geom in spec.geoms:
        geom.rgba = list(ROBOT_RGBA)
        geom.material = ""
        geom.contype = 0
        geom.conaffinity = 0
    spec.add_texture(
        name="sky",
        type=mujoco.mjtTexture.mjTEXTURE_SKYBOX,
        builtin=mujoco.mjtBuiltin.mjBUILTIN_GRADIENT,
        rgb1=[0.55, 0.70, 0.90],
        rgb2=[0.92, 0.95, 1.00],
        width=256,
        height=1536,
    )
    spec.add_texture(
        name="checker",
        type=mujoco.mjtTexture.mjTEXTURE_2D,
        builtin=mujoco.mjtBuiltin.mjBUILTIN_CHECKER,
        rgb1=[0.62, 0.64, 0.66],
        rgb2=[0.50, 0.52, 0.55],
        width=256,
        height=256,
    )
    ground = spec.add_material(name="ground", specular=0.1, shininess=0.1)
    ground.textures[mujoco.mjtTextureRole.mjTEXROLE_RGB] = "checker"
    # The sun moves with the robot's root body (a fixed offset in the world), so its shadow falls wherever it walks.
    root = spec.worldbody.first_body() or spec.worldbody
    light = root.add_light(name="sun", pos=[-3.0, -4.0, 10.0], dir=[0.3, 0.4, -1.0])
    light.mode = mujoco.mjtCamLight.mjCAMLIGHT_TRACK
    light.type = mujoco.mjtLightType.mjLIGHT_DIRECTIONAL
    light.diffuse = [0.6, 0.6, 0.6]
    light.specular = [0.1, 0.1, 0.1]
    light.castshadow = True
    if terrain is None or len(terrain.faces) == 0:
        # Two checker squares per texture repeat: texrepeat counts repeats per metre of the plane.
        ground.texrepeat = [0.5 / CHECKER_SIZE_M, 0.5 / CHECKER_SIZE_M]
        ground.texuniform = True
        spec.worldbody.add_geom(
            name="ground", type=mujoco.mjtGeom.mjGEOM_PLANE, size=[0.0, 0.0, 0.05], material="ground"
        )
    else:
        vertices = np.asarray(terrain.vertices, dtype=np.float64)
        # Texture coordinates from the ground position: the checker lies flat over steps and slopes alike.
        texcoord = vertices[:, :2] / (2.0 * CHECKER_SIZE_M)
        mesh = spec.add_mesh(name="terrain")
        mesh.uservert = vertices.astype(np.float32).reshape(-1).tolist()
        mesh.userface = np.asarray(terrain.faces, dtype=np.int32).reshape(-1).tolist()
        mesh.usertexcoord = texcoord.astype(np.float32).reshape(-1).tolist()
        # An open surface has no volume: its inertia (unused here) is computed as a shell.
        mesh.inertia = mujoco.mjtMeshInertia.mjMESH_INERTIA_SHELL
        spec.worldbody.add_geom(
            name="ground",
            type=mujoco.mjtGeom.mjGEOM_MESH,
            meshname="terrain",
            material="ground",
            contype=0,
            conaffinity=0,
        )
    return spec.compile()
