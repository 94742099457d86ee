"""What finding the terrain triangles under each robot shape costs, by how the search is launched and the BVH built.

    python scripts/terrain_bvh.py --device cuda                       # the H1 rough terrain, 4096 robots
    python scripts/terrain_bvh.py --rows 2 --cols 4 --robots 64       # a small probe on the CPU

Newton's collision pipeline pairs every robot shape with the one terrain mesh and, every physics step, queries the
mesh's BVH with the shape's bounding box widened by the contact threshold (its midphase). This builds the task's
terrain with Isaac Lab's generator, stands H1s (the project's MJCF, its default pose, every collision geom) on it at
random places near the sub-terrains' origins, and times that same query (Warp's tiled BVH query, as Newton launches
it on a GPU, and the one-thread query that ``task.terrain.midphase=thread`` runs) for each BVH constructor, leaf size
and launch form asked for. The times are figures to read; the script exits with 1 only when two variants found
different triangles.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

H1_MJCF = Path(__file__).resolve().parents[1] / "tasks" / "robots" / "h1" / "h1.xml"
PELVIS_HEIGHT = 1.05
"""The pelvis's height over the ground in the MJCF's default pose (m)."""


@dataclass
class Variant:
    constructor: str
    leaf_size: int | None
    block_dim: int
    """Lanes per query: Warp's tiled query with this many, or the one-thread query with 1."""
    blocks: int = 0
    """Blocks (tiled) or threads (one-thread query) launched, each looping over every ``blocks``-th box, as Newton's
    midphase does with 4 blocks per SM; 0 launches one per box."""

    def name(self) -> str:
        leaf = "default" if self.leaf_size is None else str(self.leaf_size)
        query = "one thread" if self.block_dim == 1 else f"tiled, {self.block_dim} lanes"
        launch = "one per box" if not self.blocks else f"{self.blocks} looping"
        return f"{self.constructor}, leaf {leaf}, {query}, {launch}"


def terrain_mesh(rows: int, cols: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The vertices, triangles and sub-terrain origins of Isaac Lab's rough terrain (the H1 rough task's)."""
    from isaaclab.terrains.config.rough import ROUGH_TERRAINS_CFG
    from isaaclab.terrains.terrain_generator import TerrainGenerator

    cfg = ROUGH_TERRAINS_CFG.copy()
    cfg.num_rows, cfg.num_cols, cfg.seed = rows, cols, seed
    cfg.curriculum = True
    generator = TerrainGenerator(cfg)
    mesh = generator.terrain_mesh
    return (
        np.asarray(mesh.vertices, dtype=np.float32),
        np.asarray(mesh.faces, dtype=np.int32),
        np.asarray(generator.terrain_origins, dtype=np.float64),
    )


def h1_shape_boxes() -> np.ndarray:
    """World bounding boxes (lower, upper) of the H1's collision geoms in its default pose, pelvis at the origin's
    height ``PELVIS_HEIGHT``; shape (geoms, 2, 3)."""
    import mujoco

    model = mujoco.MjModel.from_xml_path(str(H1_MJCF))
    data = mujoco.MjData(model)
    mujoco.mj_forward(model, data)
    boxes = []
    for geom in range(model.ngeom):
        if model.geom_bodyid[geom] == 0 or (model.geom_contype[geom] == 0 and model.geom_conaffinity[geom] == 0):
            continue
        center_local, half = model.geom_aabb[geom][:3], model.geom_aabb[geom][3:]
        rotation = data.geom_xmat[geom].reshape(3, 3)
        center = data.geom_xpos[geom] + rotation @ center_local
        extent = np.abs(rotation) @ half
        boxes.append((center - extent, center + extent))
    return np.asarray(boxes)


def query_boxes(
    vertices: np.ndarray, faces: np.ndarray, origins: np.ndarray, robots: int, threshold: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper corners of every robot shape's query box: robots at random sub-terrain origins (the rows a
    curriculum starts in, up to 5), moved up to 1 m from it, yawed at random, standing on the ground under their
    pelvis."""
    import warp as wp

    rng = np.random.default_rng(seed)
    rows = min(origins.shape[0], 5)
    tiles = origins[:rows].reshape(-1, 3)
    base = tiles[rng.integers(len(tiles), size=robots)].copy()
    base[:, :2] += rng.uniform(-1.0, 1.0, size=(robots, 2))
    # The ground's height under each robot: a vertical ray onto the terrain.
    wp.init()
    mesh = wp.Mesh(
        points=wp.array(vertices, dtype=wp.vec3, device="cpu"),
        indices=wp.array(faces.ravel(), dtype=wp.int32, device="cpu"),
    )
    heights = _ground_heights(mesh, base)
    shapes = h1_shape_boxes()
    shapes[:, :, 2] -= PELVIS_HEIGHT  # standing on z = 0
    yaw = rng.uniform(-np.pi, np.pi, size=robots)
    lowers, uppers = [], []
    for r in range(robots):
        c, s = np.cos(yaw[r]), np.sin(yaw[r])
        rotation = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
        centers = (shapes[:, 0] + shapes[:, 1]) / 2 @ rotation.T
        extents = (shapes[:, 1] - shapes[:, 0]) / 2 @ np.abs(rotation).T
        ground = np.array([base[r, 0], base[r, 1], heights[r] + PELVIS_HEIGHT])
        centers = centers + ground
        lowers.append(centers - extents - threshold)
        uppers.append(centers + extents + threshold)
    return np.concatenate(lowers).astype(np.float32), np.concatenate(uppers).astype(np.float32)


def _ground_heights(mesh, points: np.ndarray) -> np.ndarray:
    import warp as wp

    @wp.kernel
    def down(mesh: wp.uint64, xy: wp.array(dtype=wp.vec3), out: wp.array(dtype=float)):
        i = wp.tid()
        start = wp.vec3(xy[i][0], xy[i][1], 100.0)
        query = wp.mesh_query_ray(mesh, start, wp.vec3(0.0, 0.0, -1.0), 1000.0)
        out[i] = wp.where(query.result, 100.0 - query.t, 0.0)

    out = wp.zeros(len(points), dtype=float, device="cpu")
    wp.launch(
        down,
        len(points),
        inputs=[mesh.id, wp.array(points.astype(np.float32), dtype=wp.vec3, device="cpu"), out],
        device="cpu",
    )
    return out.numpy()


def _kernels():
    import warp as wp

    @wp.kernel(enable_backward=False)
    def tiled(
        mesh: wp.uint64,
        lowers: wp.array(dtype=wp.vec3),
        uppers: wp.array(dtype=wp.vec3),
        count: wp.array(dtype=int),
        found: wp.array(dtype=wp.int64),
        stride: int,
    ):
        block, lane = wp.tid()
        for i in range(block, lowers.shape[0], stride):
            query = wp.tile_mesh_query_aabb(mesh, lowers[i], uppers[i])
            while wp.tile_query_valid(query):
                tri = wp.untile(wp.tile_mesh_query_aabb_next(query))
                if tri >= 0:
                    wp.atomic_add(count, 0, 1)
                    wp.atomic_add(found, 0, wp.int64(tri))

    @wp.kernel(enable_backward=False)
    def single(
        mesh: wp.uint64,
        lowers: wp.array(dtype=wp.vec3),
        uppers: wp.array(dtype=wp.vec3),
        count: wp.array(dtype=int),
        found: wp.array(dtype=wp.int64),
        stride: int,
    ):
        for i in range(wp.tid(), lowers.shape[0], stride):
            query = wp.mesh_query_aabb(mesh, lowers[i], uppers[i])
            tri = int(0)  # noqa: UP018 (a Warp variable, not a constant)
            while wp.mesh_query_aabb_next(query, tri):
                wp.atomic_add(count, 0, 1)
                wp.atomic_add(found, 0, wp.int64(tri))

    return tiled, single


def measure(vertices, faces, lowers, uppers, variants: list[Variant], device: str, repeats: int) -> list[dict]:
    """Build the terrain BVH per constructor and leaf size, and time each variant's query of every box."""
    import warp as wp

    wp.init()
    tiled, single = _kernels()
    rows = []
    with wp.ScopedDevice(device):
        lo = wp.array(lowers, dtype=wp.vec3)
        up = wp.array(uppers, dtype=wp.vec3)
        count = wp.zeros(1, dtype=int)
        found = wp.zeros(1, dtype=wp.int64)
        points = wp.array(vertices, dtype=wp.vec3)
        indices = wp.array(faces.ravel(), dtype=wp.int32)
        built: dict[tuple, tuple] = {}
        for variant in variants:
            key = (variant.constructor, variant.leaf_size)
            if key not in built:
                wp.synchronize()
                start = time.perf_counter()
                mesh = wp.Mesh(
                    points=points, indices=indices, bvh_constructor=variant.constructor, bvh_leaf_size=variant.leaf_size
                )
                wp.synchronize()
                built[key] = (mesh, time.perf_counter() - start)
            mesh, build_s = built[key]
            times = []
            for repeat in range(repeats + 1):
                count.zero_()
                found.zero_()
                wp.synchronize()
                start = time.perf_counter()
                launched = variant.blocks or len(lowers)
                if variant.block_dim == 1:
                    wp.launch(single, launched, inputs=[mesh.id, lo, up, count, found, launched])
                else:
                    wp.launch_tiled(
                        tiled,
                        dim=[launched],
                        inputs=[mesh.id, lo, up, count, found, launched],
                        block_dim=variant.block_dim,
                    )
                wp.synchronize()
                if repeat:  # the first launch loads the module
                    times.append(time.perf_counter() - start)
            rows.append(
                {
                    "variant": variant.name(),
                    "build_s": build_s,
                    "query_ms": 1000 * statistics.median(times),
                    "triangles_found": int(count.numpy()[0]),
                    "checksum": int(found.numpy()[0]),
                }
            )
    return rows


def format_rows(rows: list[dict]) -> str:
    lines = [
        "| variant | BVH build (s) | query of every box (ms, median) | triangles found |",
        "| --- | --- | --- | --- |",
    ]
    for row in rows:
        lines.append(
            f"| {row['variant']} | {row['build_s']:.2f} | {row['query_ms']:.3f} | {row['triangles_found']:,} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="Warp device: cpu or cuda")
    parser.add_argument("--rows", type=int, default=10, help="terrain rows (the task's: 10)")
    parser.add_argument("--cols", type=int, default=20, help="terrain columns (the task's: 20)")
    parser.add_argument("--robots", type=int, default=4096, help="H1s standing on the terrain")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--threshold",
        type=float,
        default=0.02,
        help="contact threshold added to every box (m): Isaac Lab's gap of 0.01 m on each of the two shapes",
    )
    parser.add_argument(
        "--constructors",
        nargs="+",
        default=None,
        help="Warp BVH constructors (default: lbvh sah median on a GPU, sah median on the CPU)",
    )
    parser.add_argument("--leaf-sizes", nargs="+", default=["default"], help="leaf sizes: numbers or 'default'")
    parser.add_argument(
        "--block-dims",
        nargs="+",
        type=int,
        default=None,
        help="lanes per query, 1 for the one-thread query (default: 256 and 1 on a GPU, 1 on the CPU)",
    )
    parser.add_argument(
        "--blocks",
        nargs="+",
        type=int,
        default=[0],
        help="blocks launched, each looping over boxes (Newton: 4 per SM, 528 on an H200); 0: one per box",
    )
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args(argv)
    on_gpu = args.device.startswith("cuda")
    constructors = args.constructors or (["lbvh", "sah", "median"] if on_gpu else ["sah", "median"])
    block_dims = args.block_dims or ([256, 1] if on_gpu else [1])
    if not on_gpu and any(b != 1 for b in block_dims):
        parser.error("--block-dims other than 1 need a GPU: Warp runs tiles one lane wide on the CPU")
    leaf_sizes = [None if leaf == "default" else int(leaf) for leaf in args.leaf_sizes]
    start = time.perf_counter()
    vertices, faces, origins = terrain_mesh(args.rows, args.cols, args.seed)
    print(f"terrain: {args.rows} x {args.cols}, {len(faces):,} triangles ({time.perf_counter() - start:.1f} s)")
    lowers, uppers = query_boxes(vertices, faces, origins, args.robots, args.threshold, args.seed)
    print(f"query boxes: {len(lowers):,} ({args.robots} robots x {len(lowers) // args.robots} shapes)")
    variants = [
        Variant(c, leaf, b, n) for c in constructors for leaf in leaf_sizes for b in block_dims for n in args.blocks
    ]
    rows = measure(vertices, faces, lowers, uppers, variants, args.device, args.repeats)
    print(format_rows(rows))
    checks = {(row["triangles_found"], row["checksum"]) for row in rows}
    if len(checks) != 1:
        print(f"variants found different triangles: {sorted(checks)}")
        return 1
    return 0
