"""task.terrain.collision=heightfield: Newton collides against a heightfield of the generated terrain, whose heights
are the mesh's at its grid points, and the robots, the height scan and training behave as on the mesh."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from rlforge_testing import H1_CPU_RUN, only_run, run_train

SMALL_H1 = (
    "task=h1_rough",
    "task.num_envs=2",
    "task.terrain.num_rows=2",
    "task.terrain.num_cols=2",
    "task.kernels.precompile=false",
    "task.observation_noise=false",
)
# No randomization: both robots start at their env origins, facing +x, in the default pose, so the two colliders see
# one motion.
NO_RANDOMNESS = (
    *(
        f"task.events.{name}.enabled=false"
        for name in (
            "physics_material",
            "add_base_mass",
            "base_external_force_torque",
            "reset_robot_joints",
            "push_robot",
        )
    ),
    "+task.events.reset_base.params.pose_range={}",
    "+task.events.reset_base.params.velocity_range={}",
)
SETTLE_STEPS = 50
"""Policy steps (0.02 s each) the robots stand with zero actions before their heights are compared."""


def test_collision_is_a_typed_setting_defaulting_to_the_mesh(compose_cfg):
    assert compose_cfg(["task=h1_rough"]).task.terrain.collision == "mesh"
    assert compose_cfg(["task=h1_rough", "task.terrain.collision=heightfield"]).task.terrain.collision == "heightfield"
    with pytest.raises(Exception, match="collision"):
        compose_cfg(["task=h1_rough", "task.terrain.collision=voxels"])


@pytest.mark.parametrize("collision", ["mesh", "heightfield"])
def test_every_sub_terrain_asks_isaac_lab_for_the_chosen_collider(compose_cfg, collision, tmp_path, monkeypatch):
    from tasks.isaaclab_env import build_env_cfg

    monkeypatch.setenv("RLFORGE_CACHE", str(tmp_path / "cache"))
    cfg = compose_cfg(["task=h1_rough", f"task.terrain.collision={collision}"])
    sub_terrains = build_env_cfg(cfg.task, "cpu", 0).scene.terrain.terrain_generator.sub_terrains.values()
    assert {sub.convert_to_heightfield for sub in sub_terrains} == {collision == "heightfield"}


def test_a_plane_refuses_the_heightfield(compose_cfg):
    from tasks.isaaclab_env import build_env_cfg

    cfg = compose_cfg(["task=h1_rough", "task.terrain.type=plane", "task.terrain.collision=heightfield"])
    with pytest.raises(ValueError, match="collision=heightfield"):
        build_env_cfg(cfg.task, "cpu", 0)


def test_both_colliders_share_one_cached_terrain():
    from isaaclab.terrains.config.rough import ROUGH_TERRAINS_CFG

    from tasks.terrain_cache import terrain_key
    from tasks.terrain_heightfield import set_collision

    mesh, heightfield = ROUGH_TERRAINS_CFG.copy(), ROUGH_TERRAINS_CFG.copy()
    set_collision(mesh, "mesh")
    set_collision(heightfield, "heightfield")
    np.random.seed(0)
    key = terrain_key(mesh)
    np.random.seed(0)
    assert terrain_key(heightfield) == key


def test_the_check_names_a_ground_that_is_not_the_chosen_one():
    from types import SimpleNamespace

    from newton import GeoType

    from tasks.terrain_heightfield import check_collision

    def model(*types):
        return SimpleNamespace(
            shape_type=SimpleNamespace(numpy=lambda: np.array([int(GeoType.BOX), *map(int, types)])),
            shape_world=SimpleNamespace(numpy=lambda: np.array([0] + [-1] * len(types))),
        )

    check_collision(model(GeoType.MESH), "mesh")
    check_collision(model(GeoType.HFIELD), "heightfield")
    with pytest.raises(RuntimeError, match=r"\['MESH'\]"):
        check_collision(model(GeoType.MESH), "heightfield")
    with pytest.raises(RuntimeError, match="HFIELD"):
        check_collision(model(GeoType.HFIELD), "mesh")


# -------------------------------------------------------------------------- environments (simulator)
def terrain_mesh_from_stage() -> tuple[np.ndarray, np.ndarray]:
    """The generated terrain's vertices (world frame, m) and triangles, as the terrain prim on the stage holds them."""
    from isaaclab.sim.utils.stage import get_current_stage
    from pxr import Usd, UsdGeom

    stage = get_current_stage()
    meshes = [prim for prim in Usd.PrimRange(stage.GetPrimAtPath("/World/ground")) if prim.IsA(UsdGeom.Mesh)]
    assert len(meshes) == 1, [str(prim.GetPath()) for prim in meshes]
    mesh = UsdGeom.Mesh(meshes[0])
    points = np.asarray(mesh.GetPointsAttr().Get(), dtype=np.float64)
    counts = np.asarray(mesh.GetFaceVertexCountsAttr().Get())
    assert (counts == 3).all()
    transform = np.array(UsdGeom.XformCache().GetLocalToWorldTransform(meshes[0]), dtype=np.float64).reshape(4, 4)
    vertices = points @ transform[:3, :3] + transform[3, :3]
    return vertices, np.asarray(mesh.GetFaceVertexIndicesAttr().Get()).reshape(-1, 3)


def mesh_height_range(vertices, faces, x, y, eps: float = 1e-3) -> tuple[np.ndarray, np.ndarray]:
    """Lowest and highest surface of a 2.5D triangle mesh within ``eps`` (m) of each grid point ``(x[col], y[row])``:
    ``(low, high)``, each ``(len(y), len(x))``. The two differ only beside a vertical face (a stair riser)."""
    triangles = vertices[faces]
    (x0, y0), (x1, y1), (x2, y2) = (triangles[:, k, :2].T for k in range(3))
    area = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)
    keep = np.abs(area) > 1e-9  # vertical faces have no footprint: the faces beside them bound the height
    triangles, area = triangles[keep], area[keep]
    dx, dy = x[1] - x[0], y[1] - y[0]
    lo_col = np.ceil((triangles[:, :, 0].min(1) - eps - x[0]) / dx).astype(int).clip(0, len(x) - 1)
    hi_col = np.floor((triangles[:, :, 0].max(1) + eps - x[0]) / dx).astype(int).clip(0, len(x) - 1)
    lo_row = np.ceil((triangles[:, :, 1].min(1) - eps - y[0]) / dy).astype(int).clip(0, len(y) - 1)
    hi_row = np.floor((triangles[:, :, 1].max(1) + eps - y[0]) / dy).astype(int).clip(0, len(y) - 1)
    ncols, nrows = (hi_col - lo_col + 1).clip(0), (hi_row - lo_row + 1).clip(0)
    per_triangle = ncols * nrows
    tri = np.repeat(np.arange(len(triangles)), per_triangle)
    local = np.arange(per_triangle.sum()) - np.repeat(np.cumsum(per_triangle) - per_triangle, per_triangle)
    col = lo_col[tri] + local % ncols[tri]
    row = lo_row[tri] + local // ncols[tri]
    px, py = x[col], y[row]
    a, b, c = triangles[tri, 0], triangles[tri, 1], triangles[tri, 2]
    w1 = ((px - a[:, 0]) * (c[:, 1] - a[:, 1]) - (c[:, 0] - a[:, 0]) * (py - a[:, 1])) / area[tri]
    w2 = ((b[:, 0] - a[:, 0]) * (py - a[:, 1]) - (px - a[:, 0]) * (b[:, 1] - a[:, 1])) / area[tri]
    w0 = 1.0 - w1 - w2
    # eps in barycentric units, per triangle: its distance tolerance over the triangle's size.
    size = np.maximum(np.ptp(triangles[tri][:, :, :2], axis=1).max(1), 1e-6)
    inside = np.minimum(np.minimum(w0, w1), w2) >= -eps / size
    z = w0 * a[:, 2] + w1 * b[:, 2] + w2 * c[:, 2]
    flat = row * len(x) + col
    low = np.full(len(x) * len(y), np.inf)
    high = np.full(len(x) * len(y), -np.inf)
    np.minimum.at(low, flat[inside], z[inside])
    np.maximum.at(high, flat[inside], z[inside])
    return low.reshape(len(y), len(x)), high.reshape(len(y), len(x))


def run_env(compose_cfg, collision: str) -> dict:
    """Build h1_rough with ``collision``, stand the robots still for SETTLE_STEPS, return what the tests compare."""
    from isaaclab_newton.physics import NewtonManager

    from tasks.registry import build_env
    from tasks.terrain_heightfield import global_collider_types, heightfield_heights

    cfg = compose_cfg([*SMALL_H1, *NO_RANDOMNESS, f"task.terrain.collision={collision}"])
    handle = build_env(cfg.task, "cpu", 5)
    try:
        env, unwrapped = handle.env, handle.env.unwrapped
        model = NewtonManager.get_model()
        out = {"ground": global_collider_types(model), "origins": unwrapped.scene.env_origins.clone()}
        if collision == "heightfield":
            out["field"] = heightfield_heights(model)
            out["mesh"] = terrain_mesh_from_stage()
        manager = unwrapped.observation_manager
        names = manager._group_obs_term_names["policy"]
        dims = manager._group_obs_term_dim["policy"]
        start = sum(int(np.prod(d)) for d in dims[: names.index("height_scan")])
        scan = slice(start, start + int(np.prod(dims[names.index("height_scan")])))
        obs = env.get_observations()
        out["scan_at_start"] = obs["policy"][:, scan].clone()
        zeros = torch.zeros(env.num_envs, env.num_actions)
        for _ in range(SETTLE_STEPS):
            obs, _, dones, _ = env.step(zeros)
            assert not dones.any(), "a robot standing still fell or timed out"
        out["root_height"] = unwrapped.scene["robot"].data.root_pos_w.torch[:, 2].clone()
        out["scan_settled"] = obs["policy"][:, scan].clone()
        return out
    finally:
        handle.close()


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    """The mesh run and the heightfield run of one terrain, one after another in this process."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from rlforge_testing import CONF
    from runner.setup import register

    register()
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setenv("RLFORGE_CACHE", str(tmp_path_factory.mktemp("cache")))

    def compose_cfg(overrides):
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            return compose(config_name="train", overrides=overrides)

    try:
        yield {collision: run_env(compose_cfg, collision) for collision in ("mesh", "heightfield")}
    finally:
        GlobalHydra.instance().clear()
        monkeypatch.undo()


def flat_envs(run: dict, radius: float = 0.8) -> list[int]:
    """Envs whose origin has ground level to 1 mm within ``radius`` (m) in the heightfield."""
    x, y, z = run["field"]
    flat = []
    for env, origin in enumerate(run["origins"].numpy()):
        near = z[np.ix_(np.abs(y - origin[1]) <= radius, np.abs(x - origin[0]) <= radius)]
        if near.size and np.ptp(near) < 1e-3:
            flat.append(env)
    return flat


def test_newton_collides_against_the_chosen_ground(both):
    assert both["mesh"]["ground"] == ["MESH"]
    assert both["heightfield"]["ground"] == ["HFIELD"]


def test_heightfield_heights_are_the_meshs_at_its_grid_points(both):
    x, y, z = both["heightfield"]["field"]
    vertices, faces = both["heightfield"]["mesh"]
    assert np.allclose(np.diff(x), 0.1, atol=1e-4) and np.allclose(np.diff(y), 0.1, atol=1e-4), "horizontal_scale"
    assert x[0] == pytest.approx(vertices[:, 0].min(), abs=1e-4) and x[-1] == pytest.approx(vertices[:, 0].max())
    low, high = mesh_height_range(vertices, faces, x, y)
    assert np.isfinite(high).all(), "every grid point lies on the terrain"
    tolerance = 3e-3
    assert (z >= low - tolerance).all() and (z <= high + tolerance).all()
    off_edges = high - low < 1e-4
    assert off_edges.mean() > 0.9
    assert np.abs(z - high)[off_edges].max() < tolerance
    assert np.ptp(z) > 0.1, "the terrain is rough"


def test_a_robot_on_flat_ground_rests_at_the_meshs_height(both):
    flat = flat_envs(both["heightfield"])
    assert flat, "no env starts on flat ground"
    mesh, heightfield = both["mesh"]["root_height"], both["heightfield"]["root_height"]
    assert torch.equal(both["mesh"]["origins"], both["heightfield"]["origins"])
    assert (heightfield[flat] - mesh[flat]).abs().max() < 0.01


def test_the_height_scan_is_the_meshs(both):
    mesh, heightfield = both["mesh"], both["heightfield"]
    flat = flat_envs(heightfield)
    for moment in ("scan_at_start", "scan_settled"):
        assert mesh[moment].unique().numel() > 1 or moment == "scan_settled"
        torch.testing.assert_close(heightfield[moment][flat], mesh[moment][flat], atol=1e-3, rtol=0)
    # Off flat ground the scans differ only where a ray falls between grid points beside a vertical step.
    difference = (heightfield["scan_at_start"] - mesh["scan_at_start"]).abs()
    assert difference.median() < 1e-3


@pytest.mark.slow
def test_h1_rough_trains_on_the_heightfield(tmp_path):
    args = [
        "task=h1_rough",
        *H1_CPU_RUN,
        f"output_root={tmp_path / 'outputs'}",
        "task.terrain.collision=heightfield",
        "algo.max_iterations=2",
    ]
    result = run_train(args, cwd=tmp_path, timeout=900, env={"RLFORGE_CACHE": str(tmp_path / "cache")})
    assert result.returncode == 0, result.stderr[-4000:]
    run_dir = only_run(tmp_path / "outputs" / "h1_rough")
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["iteration"] for m in metrics] == [1, 2]
    assert all("Curriculum/terrain_levels" in m for m in metrics)
    assert "collision: heightfield" in (run_dir / "config.yaml").read_text()
