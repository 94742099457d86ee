"""How Newton searches the terrain mesh for the triangles under each robot shape (its collision midphase).

Every physics step, each robot shape that Newton pairs with the terrain queries the terrain mesh's BVH with its
bounding box widened by the contact threshold; the triangles found go on to the contact computation. With Newton's
own kernel that search was half of the GPU's time in an H1 rough iteration (``docs/benchmarks.md``): the 256
threads of a block share one shape's query, and a fixed number of blocks (four per SM) take the pairs in turn, so
about 500 shapes are searched at once. Most of a robot's shapes are far above the ground and find nothing, which a
whole block spends as long on as one thread would. ``task.terrain.midphase=thread`` (the default) replaces that
kernel with this module's, the same search with one thread per pair and the same launch, so that every thread of
it searches a shape of its own. It finds the same triangles; the order in which threads append them differs, as it
already does from one GPU run to the next. ``bench/terrain_bvh.py`` times both searches by themselves.
"""

from __future__ import annotations

import warp as wp
from newton._src.geometry.collision_core import _compute_mesh_vs_convex_query_aabb, _mesh_triangle_is_front_facing_local
from newton._src.geometry.types import GeoType
from newton._src.utils.heightfield import HeightfieldData, heightfield_vs_convex_midphase

from core.config import TerrainMidphase

_KERNEL_NAME = "narrow_phase_find_mesh_triangle_overlaps_kernel"
_installed: list[object] = []
"""Newton's own kernel once per live installation (environments built one after another in a process may overlap)."""


@wp.kernel(enable_backward=False)
def find_triangles_thread_per_pair(
    shape_types: wp.array[int],
    shape_transform: wp.array[wp.transform],
    shape_source: wp.array[wp.uint64],
    shape_gap: wp.array[float],
    shape_data: wp.array[wp.vec4],
    shape_collision_radius: wp.array[float],
    shape_collision_aabb_lower: wp.array[wp.vec3],
    shape_collision_aabb_upper: wp.array[wp.vec3],
    shape_heightfield_index: wp.array[wp.int32],
    heightfield_data: wp.array[HeightfieldData],
    heightfield_elevations: wp.array[wp.float32],
    shape_pairs_mesh: wp.array[wp.vec2i],
    shape_pairs_mesh_count: wp.array[int],
    num_blocks: int,
    triangle_pairs: wp.array[wp.vec3i],
    triangle_pairs_count: wp.array[int],
):
    """Newton's midphase inputs and outputs, launched as Newton launches its own (``num_blocks`` blocks of
    ``block_dim`` threads): every thread takes every (blocks x block_dim)-th mesh or heightfield pair and appends
    ``(mesh_or_heightfield_shape, other_shape, triangle)`` for each triangle whose box the pair's query box
    overlaps (front-facing triangles of a mesh, as Newton keeps)."""
    block, lane = wp.tid()
    width = wp.block_dim()
    count = shape_pairs_mesh_count[0]
    for i in range(block * width + lane, count, num_blocks * width):
        pair = shape_pairs_mesh[i]
        shape_a = pair[0]
        shape_b = pair[1]
        type_a = shape_types[shape_a]
        type_b = shape_types[shape_b]
        if type_a == GeoType.HFIELD:
            heightfield_vs_convex_midphase(
                shape_a,
                shape_b,
                heightfield_data[shape_heightfield_index[shape_a]],
                heightfield_elevations,
                shape_transform,
                shape_collision_aabb_lower,
                shape_collision_aabb_upper,
                shape_data,
                shape_gap,
                triangle_pairs,
                triangle_pairs_count,
            )
            continue
        mesh_shape = int(-1)  # noqa: UP018 (a Warp variable, not a constant)
        other = int(-1)  # noqa: UP018 (a Warp variable, not a constant)
        if type_a == GeoType.MESH and type_b != GeoType.MESH:
            mesh_shape = shape_a
            other = shape_b
        elif type_b == GeoType.MESH and type_a != GeoType.MESH:
            mesh_shape = shape_b
            other = shape_a
        else:
            continue  # mesh against mesh goes through another path
        mesh_id = shape_source[mesh_shape]
        if mesh_id == wp.uint64(0):
            continue
        threshold = shape_gap[other] + shape_gap[mesh_shape] + shape_data[other][3] + shape_data[mesh_shape][3]
        lower, upper, center = _compute_mesh_vs_convex_query_aabb(
            mesh_shape,
            other,
            shape_transform[mesh_shape],
            shape_transform[other],
            shape_types,
            shape_data,
            shape_source,
            threshold,
        )
        query = wp.mesh_query_aabb(mesh_id, lower, upper)
        triangle = int(0)  # noqa: UP018 (a Warp variable, not a constant)
        while wp.mesh_query_aabb_next(query, triangle):
            if _mesh_triangle_is_front_facing_local(mesh_id, center, triangle):
                slot = wp.atomic_add(triangle_pairs_count, 0, 1)
                if slot < triangle_pairs.shape[0]:
                    triangle_pairs[slot] = wp.vec3i(mesh_shape, other, triangle)


def install_midphase(midphase: str):
    """Have Newton's narrow phase search with ``midphase`` from now on; returns the function that undoes it (Newton's
    own kernel is back once every environment that installed this one has undone it)."""
    names = [m.value for m in TerrainMidphase]
    if midphase not in names:
        raise ValueError(f"task.terrain.midphase must be one of {', '.join(names)}, not '{midphase}'")
    from newton._src.geometry import narrow_phase

    current = getattr(narrow_phase, _KERNEL_NAME, None)
    if current is None or not hasattr(narrow_phase, "NarrowPhase"):
        raise RuntimeError(
            "task.terrain.midphase=thread replaces Newton's midphase kernel, which this Newton does not have "
            "(use task.terrain.midphase=tiled)"
        )
    if midphase == TerrainMidphase.tiled:
        return lambda: None
    _installed.append(_installed[0] if _installed else current)
    setattr(narrow_phase, _KERNEL_NAME, find_triangles_thread_per_pair)

    def undo() -> None:
        newtons = _installed.pop()
        if not _installed:
            setattr(narrow_phase, _KERNEL_NAME, newtons)

    return undo
