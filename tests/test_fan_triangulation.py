"""Newton's fan triangulation of USD faces, vectorized (tasks/fan_triangulation.py), against Newton's own."""

from __future__ import annotations

import numpy as np
import pytest

usd_utils = pytest.importorskip("newton._src.usd.utils")
pxr = pytest.importorskip("pxr")

from tasks import fan_triangulation  # noqa: E402

NEWTONS = usd_utils.fan_triangulate_faces


@pytest.fixture
def restore_newton():
    yield
    usd_utils.fan_triangulate_faces = NEWTONS


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_polygons_give_newtons_triangles_in_order(seed):
    rng = np.random.default_rng(seed)
    counts = rng.integers(2, 9, size=500)  # 2 (no triangle) up to octagons
    indices = rng.integers(0, 10_000, size=int(counts.sum()))
    ours = fan_triangulation.triangulate(counts, indices)
    assert ours.dtype == np.int32 and ours.shape == (int((counts - 2).sum()), 3)
    np.testing.assert_array_equal(ours, NEWTONS(counts, indices))


def test_triangles_only_and_no_faces():
    indices = np.arange(3 * 1000)[::-1]
    counts = np.full(1000, 3)
    np.testing.assert_array_equal(fan_triangulation.triangulate(counts, indices), indices.reshape(-1, 3))
    assert fan_triangulation.triangulate(np.zeros(0), np.zeros(0)).shape == (0, 3)
    assert fan_triangulation.triangulate([2, 2], [0, 1, 2, 3]).shape == (0, 3)


def test_bad_faces_are_refused_with_what_is_wrong():
    with pytest.raises(ValueError, match="a face has 1 vertices"):
        fan_triangulation.triangulate([3, 1], [0, 1, 2, 3])
    with pytest.raises(ValueError, match="faces need 7 vertex indices, 6 given"):
        fan_triangulation.triangulate([3, 4], [0, 1, 2, 3, 4, 5])


def test_newtons_usd_mesh_import_uses_it_and_gets_the_same_mesh(restore_newton):
    from pxr import Usd, UsdGeom

    stage = Usd.Stage.CreateInMemory()
    mesh = UsdGeom.Mesh.Define(stage, "/Ground")
    # A quad, a pentagon and a triangle over 8 points.
    points = [(0, 0, 0), (1, 0, 0), (1, 1, 0), (0, 1, 0), (2, 0, 0), (3, 1, 0), (2, 2, 0), (1.5, 1.5, 0)]
    mesh.CreatePointsAttr(points)
    mesh.CreateFaceVertexCountsAttr([4, 5, 3])
    mesh.CreateFaceVertexIndicesAttr([0, 1, 2, 3, 1, 4, 5, 6, 7, 2, 7, 3])
    before = usd_utils.get_mesh(mesh.GetPrim(), compute_inertia=False, load_visual_materials=False)

    calls = []

    def counted(counts, indices):
        calls.append(len(counts))
        return fan_triangulation.triangulate(counts, indices)

    assert fan_triangulation.install()
    assert usd_utils.fan_triangulate_faces is fan_triangulation.triangulate
    usd_utils.fan_triangulate_faces = counted
    after = usd_utils.get_mesh(mesh.GetPrim(), compute_inertia=False, load_visual_materials=False)
    assert calls == [3], "Newton's mesh import no longer triangulates through this function"
    np.testing.assert_array_equal(np.asarray(after.indices), np.asarray(before.indices))
    np.testing.assert_array_equal(np.asarray(after.vertices), np.asarray(before.vertices))
    assert np.asarray(after.indices).size == 3 * (2 + 3 + 1)
