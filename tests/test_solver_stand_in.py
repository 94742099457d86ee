"""The terrain's stand-in in the MuJoCo model: a closed box around the mesh, and the same simulation as with the
mesh itself when Newton computes the contacts."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.solver_stand_in import StandIns, box_of


def test_the_box_is_closed_faces_outward_and_bounds_the_vertices():
    rng = np.random.default_rng(3)
    vertices = rng.uniform([-4.0, -2.0, -1.0], [6.0, 3.0, 0.5], size=(500, 3))
    corners, faces = box_of(vertices)
    assert corners.shape == (8, 3) and faces.shape == (12, 3)
    np.testing.assert_allclose(corners.min(axis=0), vertices.min(axis=0), rtol=1e-6)
    np.testing.assert_allclose(corners.max(axis=0), vertices.max(axis=0), rtol=1e-6)
    # Closed: every edge is shared by exactly two triangles, once in each direction.
    directed = {(int(a), int(b)) for face in faces for a, b in zip(face, np.roll(face, -1), strict=True)}
    assert len(directed) == 36 and all((b, a) in directed for a, b in directed)
    # Outward: the signed volume of the triangles about the centre is the box's volume.
    centre = corners.mean(axis=0)
    a, b, c = (corners[faces[:, k]] - centre for k in range(3))
    volume = np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6.0
    np.testing.assert_allclose(volume, np.prod(corners.max(axis=0) - corners.min(axis=0)), rtol=1e-5)


def test_nothing_replaced_is_said_with_the_reason():
    record = StandIns(skipped=["MuJoCo computes the contacts"])
    assert "every mesh as it is (MuJoCo computes the contacts)" in record.describe()
    assert "1 large static mesh(es) (1,200 triangles)" in StandIns(meshes=1, triangles=1200).describe()


def _rollout(compose_cfg, stand_in: bool, steps: int = 30):
    """Build h1_rough (2 envs, 2 x 2 terrain) on the CPU, step it with a fixed action sequence; return the
    observations of every step, the done flags and the MuJoCo model's mesh face count."""
    import torch
    from isaaclab_newton.physics import NewtonManager

    from tasks.registry import build_env

    cfg = compose_cfg(
        [
            "task=h1_rough",
            "task.num_envs=2",
            "task.terrain.num_rows=2",
            "task.terrain.num_cols=2",
            f"task.terrain.solver_stand_in={str(stand_in).lower()}",
        ]
    )
    torch.manual_seed(5)
    handle = build_env(cfg.task, "cpu", 5)
    try:
        env = handle.env
        faces = int(NewtonManager._solver.mj_model.nmeshface)
        actions = torch.Generator().manual_seed(9)
        seen = []
        for _ in range(steps):
            action = 0.5 * torch.randn((env.num_envs, env.num_actions), generator=actions)
            obs, _, dones, _ = env.step(action)
            seen.append((obs["policy"].clone(), dones.clone()))
        return seen, faces
    finally:
        handle.close()


@pytest.mark.slow
def test_the_stand_in_simulates_what_the_mesh_does(compose_cfg, monkeypatch, capsys):
    """The same start, seed and actions with the terrain's mesh and with its box in MuJoCo's model: the same
    observations (base motion, joints, the height scan) at every step, bit for bit."""
    import tasks.solver_stand_in as stand_in

    monkeypatch.setattr(stand_in, "MIN_TRIANGLES", 1000)  # the 2 x 2 terrain has fewer than the default
    with_mesh, mesh_faces = _rollout(compose_cfg, stand_in=False)
    assert "MuJoCo model:" not in capsys.readouterr().out
    with_box, box_faces = _rollout(compose_cfg, stand_in=True)
    assert "1 large static mesh(es)" in capsys.readouterr().out
    assert box_faces < mesh_faces - 1000, (box_faces, mesh_faces)
    for step, ((obs_a, done_a), (obs_b, done_b)) in enumerate(zip(with_mesh, with_box, strict=True)):
        assert torch_equal(obs_a, obs_b), f"observations differ at step {step}"
        assert torch_equal(done_a, done_b), f"episode ends differ at step {step}"


def torch_equal(a, b) -> bool:
    import torch

    return bool(torch.equal(a, b))
