"""A box in place of the terrain's triangle mesh in the MuJoCo model Newton's MuJoCo solver builds.

Newton's MuJoCo solver (``SolverMuJoCo``) writes every shape of the Newton model into a MuJoCo model, meshes
included, and MuJoCo compiles each mesh as it would for its own collisions: it removes repeated vertices, takes
the convex hull, computes the mass properties and builds a bounding-volume tree of the faces. For the generated
rough terrain (about 1.2 million triangles on the default 10 x 20 grid) that is two to four seconds of every start,
and MuJoCo-Warp then holds the whole mesh on the device. When Newton's own collision pipeline computes the
contacts (``use_mujoco_contacts=False``, the H1 tasks' setting), MuJoCo never uses that mesh: the contacts
arrive from Newton, the ray caster casts against Newton's mesh, and the video builds a model of its own.

:func:`install` makes Isaac Lab's MuJoCo-Warp manager hand the solver a stand-in for each large static mesh:
the eight corners of the mesh's bounding box, twelve triangles, scaled and placed as the mesh is. The geom keeps
its index, body, friction and collision masks. ``task.terrain.solver_stand_in=false`` gives MuJoCo the mesh.
``tests/test_solver_stand_in.py`` checks that the simulated states are the same either way.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

MIN_TRIANGLES = 100_000
"""Meshes with fewer triangles keep their own geometry in the MuJoCo model (a robot's links are small)."""

_BOX_FACES = np.array(
    [
        [0, 2, 1], [0, 3, 2],  # bottom (z min)
        [4, 5, 6], [4, 6, 7],  # top (z max)
        [0, 1, 5], [0, 5, 4],  # y min
        [3, 7, 6], [3, 6, 2],  # y max
        [0, 4, 7], [0, 7, 3],  # x min
        [1, 2, 6], [1, 6, 5],  # x max
    ],
    dtype=np.int32,
)  # fmt: skip


def box_of(vertices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The bounding box of ``vertices`` as a closed triangle mesh: (8 x 3 corners, 12 x 3 outward triangles)."""
    low, high = vertices.min(axis=0), vertices.max(axis=0)
    xs, ys = (low[0], high[0], high[0], low[0]), (low[1], low[1], high[1], high[1])  # counter-clockwise from above
    corners = np.array([[xs[i], ys[i], z] for z in (low[2], high[2]) for i in range(4)], dtype=np.float32)
    return corners, _BOX_FACES.copy()


@dataclass
class StandIns:
    """What the installed hook did: how many meshes it replaced and how many triangles MuJoCo was spared."""

    meshes: int = 0
    triangles: int = 0
    skipped: list[str] = field(default_factory=list)

    def describe(self) -> str:
        if not self.meshes:
            why = f" ({'; '.join(self.skipped)})" if self.skipped else ""
            return f"[rlforge] MuJoCo model: every mesh as it is{why}"
        return (
            f"[rlforge] MuJoCo model: {self.meshes} large static mesh(es) ({self.triangles:,} triangles) given as their "
            "bounding box; Newton computes their contacts"
        )


def large_static_meshes(model: Any, min_triangles: int | None = None) -> list[int]:
    """Indices of ``model``'s shapes that are triangle meshes of at least ``min_triangles`` (default
    :data:`MIN_TRIANGLES`) on no body (static)."""
    from newton import Mesh

    min_triangles = MIN_TRIANGLES if min_triangles is None else min_triangles
    bodies = model.shape_body.numpy()
    return [
        shape
        for shape, source in enumerate(model.shape_source)
        if isinstance(source, Mesh) and int(bodies[shape]) == -1 and len(source.indices) >= 3 * min_triangles
    ]


@contextlib.contextmanager
def stand_ins(model: Any, record: StandIns, min_triangles: int | None = None) -> Iterator[None]:
    """While inside, ``model.shape_source`` holds a box for each large static mesh; the meshes are put back after."""
    from newton import Mesh

    shapes = large_static_meshes(model, min_triangles)
    originals = {shape: model.shape_source[shape] for shape in shapes}
    boxes: dict[int, Any] = {}  # one box per distinct mesh, as Newton shares one MuJoCo mesh per source
    try:
        for shape, mesh in originals.items():
            if id(mesh) not in boxes:
                vertices, faces = box_of(np.asarray(mesh.vertices))
                boxes[id(mesh)] = Mesh(vertices, faces.flatten(), compute_inertia=False, maxhullvert=mesh.maxhullvert)
                record.meshes += 1
                record.triangles += len(mesh.indices) // 3
            model.shape_source[shape] = boxes[id(mesh)]
        yield
    finally:
        for shape, mesh in originals.items():
            model.shape_source[shape] = mesh


def install(min_triangles: int | None = None) -> tuple[StandIns, Any]:
    """Make Isaac Lab's MuJoCo-Warp manager build its solvers with stand-ins; returns the record and the function
    that puts the manager back as it was."""
    from isaaclab_newton.physics.mjwarp_manager import NewtonMJWarpManager

    record = StandIns()
    original = NewtonMJWarpManager.__dict__["_create_solver"]
    create = original.__func__

    def _create_solver(cls, model, solver_cfg):
        if getattr(solver_cfg, "use_mujoco_contacts", True):
            record.skipped.append("MuJoCo computes the contacts")
            return create(cls, model, solver_cfg)
        with stand_ins(model, record, min_triangles):
            return create(cls, model, solver_cfg)

    NewtonMJWarpManager._create_solver = classmethod(_create_solver)

    def uninstall() -> None:
        NewtonMJWarpManager._create_solver = original

    return record, uninstall
