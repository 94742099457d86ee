"""Newton's fan triangulation of USD mesh faces, computed without a Python loop over the faces.

When Newton imports a USD mesh it splits every polygon into a fan of triangles. Its function builds one small
array per face in Python, which for a generated rough terrain (over a million faces, all of them already
triangles) is about a second of every start. :func:`triangulate` returns the same triangles, in the same order and
dtype, from whole-array operations; :func:`install` puts it in place of Newton's for the rest of the process.
"""

from __future__ import annotations

import numpy as np

NEWTON_MODULE = "newton._src.usd.utils"
"""Where Newton defines ``fan_triangulate_faces`` and calls it from its USD mesh import (``get_mesh``)."""


def triangulate(counts: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """Fan-triangulate polygons: face ``f`` with vertices ``v0..vn-1`` (its slice of ``indices``) gives triangles
    ``(v0, vi, vi+1)`` for ``i`` in ``1..n-2``, faces in order (a face of 2 vertices gives none). Returns
    ``(triangles, 3)`` int32, as Newton's.

    Raises:
        ValueError: a face has fewer than 2 vertices, or ``indices`` holds fewer entries than ``counts`` sums to.
    """
    counts = np.asarray(counts, dtype=np.int32)
    indices = np.asarray(indices, dtype=np.int32)
    if counts.size and int(counts.min()) < 2:
        raise ValueError(f"a face has {int(counts.min())} vertices; a face needs at least 2 (3 for a triangle)")
    if int(counts.sum(dtype=np.int64)) > indices.size:
        raise ValueError(f"faces need {int(counts.sum(dtype=np.int64))} vertex indices, {indices.size} given")
    per_face = counts.astype(np.int64) - 2
    total = int(per_face.sum())
    if total == 0:
        return np.zeros((0, 3), dtype=np.int32)
    face = np.repeat(np.arange(counts.size), per_face)
    first_triangle = np.cumsum(per_face) - per_face
    corner = np.arange(total) - first_triangle[face]  # 0..n-3 within each face
    start = (np.cumsum(counts, dtype=np.int64) - counts)[face]
    triangles = np.empty((total, 3), dtype=np.int32)
    triangles[:, 0] = indices[start]
    triangles[:, 1] = indices[start + corner + 1]
    triangles[:, 2] = indices[start + corner + 2]
    return triangles


def install() -> bool:
    """Use :func:`triangulate` for Newton's USD mesh import from now on; False (nothing changed) if this Newton has
    no such function to replace."""
    import importlib

    try:
        module = importlib.import_module(NEWTON_MODULE)
    except ImportError:
        return False
    if not callable(getattr(module, "fan_triangulate_faces", None)):
        return False
    module.fan_triangulate_faces = triangulate
    return True
