"""The topology Newton derives from a large collision mesh, kept on disk: its unique edges, whether it is closed, and
which of its vertices coincide.

When Newton finalizes a model it computes, for every collidable triangle mesh, the mesh's unique edges (for
edge contacts), whether every edge is shared by exactly two triangles (which picks the collision kernels'
inside test), and an id per vertex that folds coincident vertices together (which endpoints each edge owns);
Newton recomputes the ids at each use. For a generated rough terrain, a million triangles, that is two sorts of
three million edges and up to three sorts of its vertices: seconds of every start, and a pure function of the
mesh's vertices and triangles. This module keeps all three on disk under ``$RLFORGE_CACHE/mesh_topology``
(default ``~/.cache/rlforge/mesh_topology``), keyed by a digest of the mesh's vertices and triangles and Newton's
version: before the model is finalized, a mesh whose topology was kept gets it back (Newton then finds it
computed); after, what Newton computed for the others is saved.

Only meshes of at least :data:`MIN_TRIANGLES` are kept (a robot's links are small). Newton keeps
the first two results in the mesh's private ``_edges`` and ``_is_watertight`` fields, computed lazily and cleared
whenever the geometry changes; :func:`supported` checks they exist, and a Newton without them runs as before. The
vertex ids come from the mesh's private ``_canonical_vertex_ids()``, which is given the kept ids (or, on a first
start, remembers what it computed) for as long as the mesh keeps the same vertex array.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from core.rundir import write_npz_atomic

FORMAT = 2
"""Bumped when the saved layout changes."""
MIN_TRIANGLES = 100_000
"""Meshes with fewer triangles are left to Newton (their analysis costs a small share of a start)."""


def cache_dir() -> Path:
    """``$RLFORGE_CACHE/mesh_topology``, or ``~/.cache/rlforge/mesh_topology``: beside the terrains."""
    from tasks.robots.usd_writer import cache_root

    return cache_root().parent / "mesh_topology"


def _newton_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("newton")
    except metadata.PackageNotFoundError:
        return "unknown"


def mesh_key(mesh: Any) -> str:
    """Digest of what the topology depends on: the mesh's vertices and triangles, Newton's version, the format."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{FORMAT}:{_newton_version()}:".encode())
    for array in (mesh.vertices, mesh.indices):
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(memoryview(array).cast("B"))
    return digest.hexdigest()


def supported(mesh: Any) -> bool:
    """Whether this Newton keeps a mesh's edges and closedness where the cache can fill them in."""
    return hasattr(mesh, "_edges") and hasattr(mesh, "_is_watertight") and hasattr(type(mesh), "edges")


def _keeps_vertex_ids(mesh: Any) -> bool:
    return callable(getattr(type(mesh), "_canonical_vertex_ids", None)) and hasattr(mesh, "_vertices")


def remember_vertex_ids(mesh: Any, ids: np.ndarray | None = None) -> None:
    """Make ``mesh._canonical_vertex_ids()`` answer ``ids`` (or, without them, what Newton computes at the first call)
    while the mesh keeps its vertex array; a mesh given new vertices computes them again, as Newton does."""
    if not _keeps_vertex_ids(mesh):
        return
    compute = type(mesh)._canonical_vertex_ids
    vertices = mesh._vertices
    kept = [ids]

    def canonical_vertex_ids() -> np.ndarray:
        if mesh._vertices is not vertices:
            return compute(mesh)
        if kept[0] is None:
            kept[0] = compute(mesh)
        return kept[0]

    mesh._canonical_vertex_ids = canonical_vertex_ids


def large_meshes(builder: Any) -> list[Any]:
    """The distinct triangle meshes of ``builder``'s shapes with at least :data:`MIN_TRIANGLES` triangles."""
    from newton import Mesh

    seen: dict[int, Any] = {}
    for source in builder.shape_source:
        if isinstance(source, Mesh) and id(source) not in seen and len(source.indices) >= 3 * MIN_TRIANGLES:
            seen[id(source)] = source
    return list(seen.values())


def entry_path(mesh: Any, folder: Path | None = None) -> Path:
    """Where ``mesh``'s topology is kept: under ``folder`` (default :func:`cache_dir`), named by :func:`mesh_key`."""
    return (folder or cache_dir()) / f"{mesh_key(mesh)}.npz"


def load(mesh: Any, folder: Path | None = None, *, path: Path | None = None) -> bool:
    """Give ``mesh`` its kept topology (from ``path``, default :func:`entry_path`); False when none was kept (or it is
    unreadable, or stale)."""
    path = path or entry_path(mesh, folder)
    if not path.is_file():
        return False
    try:
        with np.load(path) as saved:
            edges = saved["edges"]
            watertight = bool(saved["watertight"])
            ids = saved["vertex_ids"] if "vertex_ids" in saved.files else None
    except (OSError, KeyError, ValueError) as error:
        print(f"[rlforge] mesh topology {path.name} unreadable ({error}); Newton computes it")
        return False
    vertices = len(mesh.vertices)
    if (
        edges.ndim != 2
        or edges.shape[1] != 2
        or (len(edges) and int(edges.max()) >= vertices)
        or (ids is not None and (ids.shape != (vertices,) or (vertices and int(ids.max()) >= vertices)))
    ):
        print(f"[rlforge] mesh topology {path.name} does not fit its mesh; Newton computes it")
        return False
    mesh._edges = edges
    mesh._is_watertight = watertight
    remember_vertex_ids(mesh, ids)
    return True


def save(mesh: Any, folder: Path | None = None, *, path: Path | None = None) -> Path | None:
    """Keep what Newton computed for ``mesh`` (computing it if Newton has not) at ``path`` (default
    :func:`entry_path`); None if it could not be written."""
    path = path or entry_path(mesh, folder)
    try:
        topology = {"edges": np.asarray(mesh.edges), "watertight": np.asarray(bool(mesh.is_watertight))}
        if _keeps_vertex_ids(mesh):
            topology["vertex_ids"] = np.asarray(mesh._canonical_vertex_ids())
        write_npz_atomic(path, topology)
    except OSError as error:  # a read-only or full cache folder costs the next start the analysis, nothing else
        print(f"[rlforge] mesh topology not kept ({error})")
        return None
    return path


class TopologyCache:
    """Fills in kept topology before Newton finalizes the model, and keeps what it computed after."""

    def __init__(self, folder: Path | None = None) -> None:
        self.folder = folder
        self.loaded = 0
        self.saved = 0
        self.unsupported = False
        self._missed: list[tuple[Any, Path]] = []  # meshes without kept topology, each with where to keep it

    def before_finalize(self, builder: Any) -> None:
        """Load the kept topology of ``builder``'s large meshes; remember the others."""
        for mesh in large_meshes(builder):
            if not supported(mesh):
                self.unsupported = True
                return
            path = entry_path(mesh, self.folder)  # one digest of the mesh for both the load and the save
            if load(mesh, path=path):
                self.loaded += 1
            else:
                remember_vertex_ids(mesh)  # computed once for Newton's uses and the save, not at each
                self._missed.append((mesh, path))

    def after_finalize(self) -> None:
        """Keep the topology Newton computed for the meshes that had none kept."""
        missed, self._missed = self._missed, []
        for mesh, path in missed:
            if save(mesh, path=path) is not None:
                self.saved += 1

    def describe(self) -> str:
        if self.unsupported:
            return "[rlforge] mesh topology: not kept (this Newton's meshes have no fields to fill in)"
        return f"[rlforge] mesh topology: {self.loaded} large mesh(es) from the cache, {self.saved} kept for next time"


def install(folder: Path | None = None) -> TopologyCache:
    """Register the cache with Isaac Lab's Newton manager for the next model it finalizes."""
    from isaaclab.physics import PhysicsEvent
    from isaaclab.sim import SimulationContext
    from isaaclab_newton.physics import NewtonManager
    from isaaclab_newton.physics.newton_manager_cfg import NewtonBuilderCfg

    cache = TopologyCache(folder)

    def before(_payload: Any = None) -> None:
        # The builder the manager finalizes: the simulation's shared one for its physics settings.
        sim = SimulationContext.instance()
        cache.before_finalize(sim.get_or_create_backend(NewtonBuilderCfg(physics_cfg=sim.cfg.physics)))

    def after(_payload: Any = None) -> None:
        cache.after_finalize()

    # Run last among MODEL_INIT callbacks (after any that add shapes), and first when physics is ready. Closing the
    # simulation clears every callback, so these end with the environment they were registered for.
    NewtonManager.register_callback(before, PhysicsEvent.MODEL_INIT, order=1_000_000, wrap_weak_ref=False)
    NewtonManager.register_callback(after, PhysicsEvent.PHYSICS_READY, order=-1_000_000, wrap_weak_ref=False)
    return cache
