"""The generated terrain with its coplanar triangles merged: the same surface, fewer triangles (``task.terrain.simplify``).

Isaac Lab's generator builds the rough terrain on a 0.1 m grid: a flat step top, the ground between boxes or a
vertical riser is many small triangles in one plane. Newton finds the triangles each robot shape may touch by a
BVH query of the whole mesh, and turns each one it finds into contact candidates, so the number and size of the
triangles set part of every physics step's cost (``docs/benchmarks.md``, *Physics settings tried*).

The merge is ``fast_simplification``'s lossless decimation (an Isaac Lab dependency): it collapses only the edges
whose collapse moves no point off the planes of the triangles around them (a quadric error of zero) and flips no
triangle, and here it keeps every vertex of an open border (the terrain's outline and the seams between
sub-terrains) where it is. Every point of the surface stays where it was; the robots stand and the height scanner
measures on the same heights. What changes is the triangulation, and so how Newton splits a contact patch into
candidates before it reduces them.
"""

from __future__ import annotations

import numpy as np
from isaaclab.terrains.terrain_generator import TerrainGenerator


def merge_coplanar(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(vertices, faces)`` of the same surface with coplanar neighbouring triangles merged."""
    import fast_simplification

    points, merged = fast_simplification.simplify(
        np.asarray(vertices, dtype=np.float64),
        np.ascontiguousarray(faces, dtype=np.int32),
        lossless=True,
        preserve_border=True,
    )
    return points, np.asarray(merged, dtype=np.int64)


def simplify_terrain(generator) -> None:
    """Replace a finished Isaac Lab terrain generator's mesh by its merged version (vertex colours carried over from
    the nearest original vertex), and say what it saved."""
    import time

    import trimesh
    from scipy.spatial import cKDTree

    began = time.perf_counter()
    mesh = generator.terrain_mesh
    points, faces = merge_coplanar(mesh.vertices, mesh.faces)
    merged = trimesh.Trimesh(vertices=points, faces=faces, process=False)
    if mesh.visual.kind == "vertex":
        _, nearest = cKDTree(np.asarray(mesh.vertices)).query(points)
        merged.visual.vertex_colors = np.asarray(mesh.visual.vertex_colors)[nearest]
    print(
        f"[rlforge] terrain simplified: {len(mesh.faces):,} -> {len(faces):,} triangles "
        f"(coplanar ones merged) in {time.perf_counter() - began:.1f} s"
    )
    generator.terrain_mesh = merged
    generator.terrain_meshes = [merged]


class SimplifiedTerrainGenerator(TerrainGenerator):
    """Isaac Lab's terrain generator that merges the finished terrain's coplanar triangles (without the terrain
    cache; with it, :class:`tasks.terrain_cache.CachedSimplifiedTerrainGenerator` keeps the merged mesh)."""

    def __init__(self, cfg, device: str = "cpu") -> None:
        super().__init__(cfg, device)
        simplify_terrain(self)
