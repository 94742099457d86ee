"""task.terrain.simplify: the generated terrain with its coplanar triangles merged is the same surface with fewer
triangles, kept in the terrain cache under its own key, and trains."""

from __future__ import annotations

import numpy as np
import pytest

from rlforge_testing import H1_CPU_RUN, run_train


def cast_rays(vertices, faces, origins, directions) -> np.ndarray:
    """Distance along each ray to the first triangle it hits (Warp's BVH on the CPU), -1 where it hits none."""
    import warp as wp

    wp.init()

    @wp.kernel
    def cast(mesh: wp.uint64, o: wp.array(dtype=wp.vec3), d: wp.array(dtype=wp.vec3), out: wp.array(dtype=float)):
        i = wp.tid()
        query = wp.mesh_query_ray(mesh, o[i], d[i], 1.0e6)
        out[i] = wp.where(query.result, query.t, -1.0)

    mesh = wp.Mesh(
        points=wp.array(np.asarray(vertices, dtype=np.float32), dtype=wp.vec3, device="cpu"),
        indices=wp.array(np.asarray(faces, dtype=np.int32).ravel(), dtype=wp.int32, device="cpu"),
    )
    out = wp.zeros(len(origins), dtype=float, device="cpu")
    wp.launch(
        cast,
        len(origins),
        inputs=[
            mesh.id,
            wp.array(origins.astype(np.float32), dtype=wp.vec3, device="cpu"),
            wp.array(directions.astype(np.float32), dtype=wp.vec3, device="cpu"),
            out,
        ],
        device="cpu",
    )
    return out.numpy()


def test_a_flat_grid_keeps_its_outline_and_area_with_far_fewer_triangles():
    from tasks.terrain_simplify import merge_coplanar

    n = 20  # 20 x 20 cells of 0.1 m, two triangles each, at height 0.3 m
    xs, ys = np.meshgrid(np.arange(n + 1) * 0.1, np.arange(n + 1) * 0.1, indexing="ij")
    vertices = np.c_[xs.ravel(), ys.ravel(), np.full(xs.size, 0.3)]
    index = np.arange((n + 1) ** 2).reshape(n + 1, n + 1)
    a, b, c, d = index[:-1, :-1].ravel(), index[1:, :-1].ravel(), index[1:, 1:].ravel(), index[:-1, 1:].ravel()
    faces = np.r_[np.c_[a, b, c], np.c_[a, c, d]]
    points, merged = merge_coplanar(vertices, faces)

    def area(v, f):
        t = v[f]
        return 0.5 * np.abs(np.cross(t[:, 1] - t[:, 0], t[:, 2] - t[:, 0])[:, 2]).sum()

    assert len(merged) < len(faces) / 4
    assert area(points, merged) == pytest.approx(area(vertices, faces), rel=1e-9)
    assert np.allclose(points[:, 2], 0.3)
    # The outline stays: every vertex of the square's border is still there.
    on_border = np.isclose(vertices[:, :2], 0).any(axis=1) | np.isclose(vertices[:, :2], n * 0.1).any(axis=1)
    border = vertices[on_border]
    kept = {tuple(p) for p in np.round(points, 9)}
    assert all(tuple(p) in kept for p in np.round(border, 9))


def test_the_rough_terrain_is_the_same_surface_with_fewer_triangles(compose_cfg, tmp_path, monkeypatch):
    from tasks.isaaclab_env import build_env_cfg
    from tasks.terrain_simplify import merge_coplanar

    monkeypatch.setenv("RLFORGE_CACHE", str(tmp_path / "cache"))
    cfg = compose_cfg(["task=h1_rough", "task.terrain.num_rows=2", "task.terrain.num_cols=4"])
    generator_cfg = build_env_cfg(cfg.task, "cpu", 0).scene.terrain.terrain_generator
    from isaaclab.terrains.terrain_generator import TerrainGenerator

    mesh = TerrainGenerator(generator_cfg, "cpu").terrain_mesh
    vertices, faces = np.asarray(mesh.vertices), np.asarray(mesh.faces)
    points, merged = merge_coplanar(vertices, faces)
    assert len(merged) < len(faces)

    rng = np.random.default_rng(0)
    low, high = vertices.min(0), vertices.max(0)
    n = 20000
    # Straight down from above: the heights the robots stand on and the height scanner measures.
    above = np.c_[rng.uniform(low[0], high[0], n), rng.uniform(low[1], high[1], n), np.full(n, high[2] + 1.0)]
    down = np.tile([0.0, 0.0, -1.0], (n, 1))
    before, after = cast_rays(vertices, faces, above, down), cast_rays(points, merged, above, down)
    assert (before >= 0).all() and (after >= 0).all()
    assert np.abs(before - after).max() < 1e-5
    # From inside the terrain's box in every direction: risers and box sides too. A ray that grazes a shared edge may
    # pass between two triangles of either mesh (float32), so a handful may differ.
    inside = np.c_[rng.uniform(low[0], high[0], n), rng.uniform(low[1], high[1], n), rng.uniform(low[2], high[2], n)]
    directions = rng.normal(size=(n, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    before, after = cast_rays(vertices, faces, inside, directions), cast_rays(points, merged, inside, directions)
    assert np.mean(np.abs(before - after) > 1e-4) < 1e-3


def test_the_simplified_terrain_has_its_own_cache_key_and_generator(compose_cfg, tmp_path, monkeypatch):
    from isaaclab.terrains.config.rough import ROUGH_TERRAINS_CFG

    from tasks.isaaclab_env import build_env_cfg
    from tasks.terrain_cache import CachedSimplifiedTerrainGenerator, CachedTerrainGenerator, terrain_key

    np.random.seed(0)
    plain = terrain_key(ROUGH_TERRAINS_CFG)
    np.random.seed(0)
    assert terrain_key(ROUGH_TERRAINS_CFG, simplified=True) != plain
    np.random.seed(0)
    assert terrain_key(ROUGH_TERRAINS_CFG, simplified=False) == plain

    monkeypatch.setenv("RLFORGE_CACHE", str(tmp_path / "cache"))

    def generator(*overrides):
        cfg = compose_cfg(["task=h1_rough", *overrides])
        return build_env_cfg(cfg.task, "cpu", 0).scene.terrain.terrain_generator.class_type

    assert generator() is CachedTerrainGenerator
    assert generator("task.terrain.simplify=true") is CachedSimplifiedTerrainGenerator
    from tasks.terrain_simplify import SimplifiedTerrainGenerator

    assert generator("task.terrain.simplify=true", "task.terrain.cache=false") is SimplifiedTerrainGenerator
    for ground in ("task.terrain.type=plane", "task.terrain.collision=heightfield"):
        cfg = compose_cfg(["task=h1_rough", ground, "task.terrain.simplify=true"])
        with pytest.raises(ValueError, match="simplify"):
            build_env_cfg(cfg.task, "cpu", 0)


def test_training_on_the_simplified_terrain_loads_it_from_the_cache_the_second_time(tmp_path):
    args = [
        "task=h1_rough",
        *H1_CPU_RUN,
        "task.terrain.simplify=true",
        "algo.max_iterations=1",
    ]
    env = {"RLFORGE_CACHE": str(tmp_path / "cache")}
    for attempt in ("first", "second"):
        result = run_train([*args, f"hydra.run.dir={tmp_path / attempt}"], cwd=tmp_path, env=env)
        assert result.returncode == 0, result.stderr[-3000:]
        log = (tmp_path / attempt / "startup.log").read_text() + result.stdout
        simplified = "terrain simplified" in log
        assert simplified == (attempt == "first"), log[-3000:]
    assert len(list((tmp_path / "cache" / "terrains").glob("*.npz"))) == 1
