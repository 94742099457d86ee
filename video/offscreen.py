"""MuJoCo's renderer, offscreen in a headless OpenGL context: a model and its data in, an RGB frame out."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from video.gl import open_context

MAX_GEOMS = 2000
"""Geoms one frame can hold: the robot's, the ground and the drawn arrows."""


class Offscreen:
    """Draws frames of ``width`` x ``height`` pixels of a MuJoCo model; :meth:`use_model` swaps the model."""

    def __init__(self, model, width: int, height: int) -> None:
        import mujoco

        self._mujoco = mujoco
        self.width, self.height = int(width), int(height)
        self._context = open_context(self.width, self.height)
        self._rect = mujoco.MjrRect(0, 0, self.width, self.height)
        self._option = mujoco.MjvOption()
        self._perturb = mujoco.MjvPerturb()
        self._pixels = np.empty((self.height, self.width, 3), dtype=np.uint8)
        self.model = None
        self._scene = None
        self._render_context = None
        self.use_model(model)

    def use_model(self, model) -> None:
        """Draw ``model`` from now on (its meshes and textures are uploaded to the context again)."""
        mujoco = self._mujoco
        self._context.make_current()
        if self._render_context is not None:
            self._render_context.free()
        self.model = model
        self._scene = mujoco.MjvScene(model, maxgeom=MAX_GEOMS)
        self._scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = True
        self._scene.flags[mujoco.mjtRndFlag.mjRND_SKYBOX] = True
        self._render_context = mujoco.MjrContext(model, mujoco.mjtFontScale.mjFONTSCALE_150)
        mujoco.mjr_setBuffer(mujoco.mjtFramebuffer.mjFB_OFFSCREEN, self._render_context)

    def draw(self, data, camera, decorate: Callable[[object], None] | None = None) -> np.ndarray:
        """The frame of ``data`` (forward kinematics already run) seen by ``camera`` (an ``MjvCamera``), as
        (height, width, 3) uint8; ``decorate(scene)`` may add geoms (arrows) before it is drawn."""
        mujoco = self._mujoco
        self._context.make_current()
        mujoco.mjv_updateScene(
            self.model, data, self._option, self._perturb, camera, mujoco.mjtCatBit.mjCAT_ALL, self._scene
        )
        if decorate is not None:
            decorate(self._scene)
        mujoco.mjr_render(self._rect, self._scene, self._render_context)
        mujoco.mjr_readPixels(self._pixels, None, self._rect, self._render_context)
        return np.flipud(self._pixels).copy()  # OpenGL's rows start at the bottom

    def close(self) -> None:
        """Free the GL resources (also safe to call twice)."""
        if self._render_context is not None:
            self._context.make_current()
            self._render_context.free()
            self._render_context = None
        if self._context is not None:
            self._context.free()
            self._context = None


def add_arrow(scene, start: np.ndarray, end: np.ndarray, rgba: tuple[float, ...], width: float = 0.03) -> None:
    """Append an arrow geom from ``start`` to ``end`` (world frame, metres) to ``scene`` when there is room."""
    import mujoco

    if scene.ngeom >= scene.maxgeom or float(np.linalg.norm(end - start)) < 1e-3:
        return
    geom = scene.geoms[scene.ngeom]
    mujoco.mjv_initGeom(
        geom,
        mujoco.mjtGeom.mjGEOM_ARROW,
        np.zeros(3),
        np.zeros(3),
        np.eye(3).reshape(-1),
        np.asarray(rgba, dtype=np.float32),
    )
    mujoco.mjv_connector(geom, mujoco.mjtGeom.mjGEOM_ARROW, width, start.astype(np.float64), end.astype(np.float64))
    scene.ngeom += 1
