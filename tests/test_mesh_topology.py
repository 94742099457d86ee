"""Newton's mesh topology kept on disk: a model finalized with kept topology is the one Newton builds without it,
and a changed mesh or a broken entry falls back to Newton's own analysis."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="module")
def terrain_arrays():
    """A small generated rough terrain's vertices and triangles (Isaac Lab's generator, as training uses it)."""
    from isaaclab.terrains.config.rough import ROUGH_TERRAINS_CFG
    from isaaclab.terrains.terrain_generator import TerrainGenerator

    cfg = ROUGH_TERRAINS_CFG.copy()
    cfg.num_rows, cfg.num_cols, cfg.seed = 1, 2, 11
    np.random.seed(0)
    mesh = TerrainGenerator(cfg).terrain_mesh
    return np.asarray(mesh.vertices, dtype=np.float32), np.asarray(mesh.faces, dtype=np.int32)


@pytest.fixture
def small_threshold(monkeypatch, tmp_path):
    monkeypatch.setenv("RLFORGE_CACHE", str(tmp_path / "cache"))
    import tasks.mesh_topology as topology

    monkeypatch.setattr(topology, "MIN_TRIANGLES", 1000)
    return topology


def newton_mesh(vertices, faces):
    from newton import Mesh

    return Mesh(vertices=vertices.copy(), indices=faces.reshape(-1).copy(), compute_inertia=False)


def finalized(mesh, cache=None):
    """A Newton model with ``mesh`` as a static collider, finalized on the CPU (with ``cache`` around it)."""
    import newton

    builder = newton.ModelBuilder()
    builder.add_shape_mesh(body=-1, mesh=mesh)
    if cache is not None:
        cache.before_finalize(builder)
    model = builder.finalize(device="cpu")
    if cache is not None:
        cache.after_finalize()
    return model


def test_kept_topology_gives_the_model_newton_builds(small_threshold, terrain_arrays, monkeypatch):
    from newton import Mesh

    topology = small_threshold
    vertices, faces = terrain_arrays
    assert len(faces) >= topology.MIN_TRIANGLES
    plain = finalized(newton_mesh(vertices, faces))

    computed = []
    newtons_own = Mesh._canonical_vertex_ids

    def counted(mesh):
        computed.append(mesh)
        return newtons_own(mesh)

    monkeypatch.setattr(Mesh, "_canonical_vertex_ids", counted)
    first = topology.TopologyCache()
    finalized(newton_mesh(vertices, faces), first)
    assert (first.loaded, first.saved) == (0, 1)
    assert len(list(topology.cache_dir().glob("*.npz"))) == 1
    assert len(computed) == 1, "the vertex ids were computed more than once for the finalize and the save"

    second = topology.TopologyCache()
    mesh = newton_mesh(vertices, faces)
    model = finalized(mesh, second)
    assert (second.loaded, second.saved) == (1, 0)
    assert len(computed) == 1, "the kept vertex ids were computed again"
    reference = newton_mesh(vertices, faces)
    np.testing.assert_array_equal(mesh._edges, reference.edges)
    assert mesh._is_watertight == reference.is_watertight
    np.testing.assert_array_equal(mesh._canonical_vertex_ids(), newtons_own(reference))
    for name in (
        "mesh_edge_indices",
        "shape_edge_range",
        "_shape_mesh_properties",
        "mesh_edge_centers",
        "mesh_edge_halves",
    ):
        np.testing.assert_array_equal(getattr(model, name).numpy(), getattr(plain, name).numpy(), err_msg=name)
    # New vertices: the ids follow them, as Newton's own would.
    mesh.vertices = vertices[::-1].copy()
    np.testing.assert_array_equal(mesh._canonical_vertex_ids(), newtons_own(mesh))


def test_a_changed_mesh_misses_the_kept_topology(small_threshold, terrain_arrays):
    topology = small_threshold
    vertices, faces = terrain_arrays
    topology.save(newton_mesh(vertices, faces))
    moved = vertices.copy()
    moved[0, 2] += 0.01
    assert not topology.load(newton_mesh(moved, faces))
    assert not topology.load(newton_mesh(vertices, faces[::-1].copy()))
    assert topology.load(newton_mesh(vertices, faces))


def test_small_meshes_are_left_to_newton(small_threshold, terrain_arrays):
    import newton
    import warp as wp

    topology = small_threshold
    vertices, faces = terrain_arrays
    builder = newton.ModelBuilder()
    builder.add_shape_mesh(body=-1, mesh=newton_mesh(vertices, faces[:500].copy()))
    big = newton_mesh(vertices, faces)
    builder.add_shape_mesh(body=-1, mesh=big)
    builder.add_shape_mesh(body=-1, mesh=big, xform=wp.transform((5.0, 0.0, 0.0), wp.quat_identity()))
    assert topology.large_meshes(builder) == [big]


def test_a_broken_entry_is_reported_and_newton_computes(small_threshold, terrain_arrays, capsys):
    topology = small_threshold
    vertices, faces = terrain_arrays
    path = topology.save(newton_mesh(vertices, faces))
    path.write_bytes(b"not an archive")
    mesh = newton_mesh(vertices, faces)
    assert not topology.load(mesh)
    assert "unreadable" in capsys.readouterr().out
    assert mesh._edges is None  # left for Newton to compute

    # An entry whose edges name vertices the mesh does not have (another mesh's) is refused.
    np.savez(path, edges=np.array([[0, len(vertices)]], dtype=np.int32), watertight=np.asarray(True))
    assert not topology.load(mesh)
    assert "does not fit" in capsys.readouterr().out
    cache = topology.TopologyCache()
    model = finalized(mesh, cache)
    assert (cache.loaded, cache.saved) == (0, 1)
    np.testing.assert_array_equal(
        model.mesh_edge_indices.numpy(), finalized(newton_mesh(vertices, faces)).mesh_edge_indices.numpy()
    )
    assert topology.load(newton_mesh(vertices, faces))  # rewritten with Newton's own result


@pytest.mark.slow
def test_a_second_start_takes_the_terrain_topology_from_the_cache(small_threshold, compose_cfg, capsys):
    """Two builds of h1_rough in this process, as two starts: the first keeps the terrain mesh's topology, the
    second finds it, and both finalize the same collision model."""
    from isaaclab_newton.physics import NewtonManager

    from tasks.registry import build_env

    cfg = compose_cfg(["task=h1_rough", "task.num_envs=2", "task.terrain.num_rows=2", "task.terrain.num_cols=2"])
    edges = []
    for expected in ("0 large mesh(es) from the cache, 1 kept", "1 large mesh(es) from the cache, 0 kept"):
        handle = build_env(cfg.task, "cpu", 5)
        try:
            assert expected in capsys.readouterr().out
            edges.append(NewtonManager.get_model().mesh_edge_indices.numpy())
        finally:
            handle.close()
    np.testing.assert_array_equal(edges[0], edges[1])
    assert len(list(small_threshold.cache_dir().glob("*.npz"))) == 1


def test_a_newton_without_the_fields_is_left_alone_and_said_so(small_threshold, terrain_arrays):
    topology = small_threshold
    vertices, faces = terrain_arrays

    import newton

    builder = newton.ModelBuilder()
    builder.add_shape_mesh(body=-1, mesh=newton_mesh(vertices, faces))
    mesh = builder.shape_source[0]
    del mesh._edges  # as a Newton that keeps no edges on the mesh
    cache = topology.TopologyCache()
    cache.before_finalize(builder)
    assert cache.unsupported and (cache.loaded, cache.saved) == (0, 0)
    assert "not kept" in cache.describe()
    assert not list(topology.cache_dir().glob("*.npz"))
