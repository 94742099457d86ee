"""task.terrain.midphase=thread: Newton's search for the terrain triangles under each shape, one thread per shape,
finds exactly the triangles Newton's own kernel finds, and a training run with it is the same as one without."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rlforge_testing import H1_CPU_RUN, run_train

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif("not __import__('torch').cuda.is_available()"))]


def bumpy_mesh(rng, cells: int = 40, spacing: float = 0.1):
    """A grid of steps 0-15 cm high: the kind of ground the rough terrain is made of."""
    import newton

    xs, ys = np.meshgrid(np.arange(cells + 1) * spacing, np.arange(cells + 1) * spacing, indexing="ij")
    zs = 0.05 * np.floor(rng.uniform(0, 4, size=xs.shape))
    vertices = np.c_[xs.ravel(), ys.ravel(), zs.ravel()].astype(np.float32)
    index = np.arange((cells + 1) ** 2).reshape(cells + 1, cells + 1)
    a, b, c, d = index[:-1, :-1].ravel(), index[1:, :-1].ravel(), index[1:, 1:].ravel(), index[:-1, 1:].ravel()
    faces = np.r_[np.c_[a, b, c], np.c_[a, c, d]].astype(np.int32)
    return newton.Mesh(vertices, faces.ravel())


def shapes_over_ground(device: str):
    """A model of a bumpy mesh, a heightfield beside it, and 60 free boxes, spheres and capsules over both, some
    resting in the ground, some well above it."""
    import newton
    import warp as wp

    rng = np.random.default_rng(0)
    builder = newton.ModelBuilder()
    builder.add_shape_mesh(body=-1, mesh=bumpy_mesh(rng))
    heights = rng.uniform(0.0, 0.2, size=(21, 21)).astype(np.float32)
    builder.add_shape_heightfield(
        xform=wp.transform(wp.vec3(6.0, 2.0, 0.0), wp.quat_identity()),
        heightfield=newton.Heightfield(data=heights, nrow=21, ncol=21, hx=1.0, hy=1.0),
    )
    for i in range(60):
        x = rng.uniform(0.2, 3.8) if i % 2 else rng.uniform(5.2, 6.8)
        y = rng.uniform(0.2, 3.8) if i % 2 else rng.uniform(1.2, 2.8)
        z = rng.uniform(-0.05, 0.8)
        angle = rng.uniform(-np.pi, np.pi)
        body = builder.add_body(
            xform=wp.transform(wp.vec3(x, y, z), wp.quat_from_axis_angle(wp.vec3(0.3, 0.2, 0.9), angle))
        )
        kind = i % 3
        if kind == 0:
            builder.add_shape_box(body, hx=0.15, hy=0.015, hz=0.0125)  # a foot
        elif kind == 1:
            builder.add_shape_sphere(body, radius=0.06)
        else:
            builder.add_shape_capsule(body, radius=0.05, half_height=0.18)
    return builder.finalize(device=device)


def triangles_found(model) -> set[tuple[int, int, int]]:
    """(ground shape, other shape, triangle) for every triangle Newton's narrow phase searched up for one collide."""
    import newton

    pipeline = newton.CollisionPipeline(model, broad_phase="explicit")
    contacts = pipeline.contacts()
    pipeline.collide(model.state(), contacts)
    narrow = pipeline.narrow_phase
    count = int(narrow.triangle_pairs_count.numpy()[0])
    assert count <= narrow.triangle_pairs.shape[0], "the triangle buffer overflowed: the comparison would be partial"
    return {tuple(int(v) for v in row) for row in narrow.triangle_pairs.numpy()[:count]}


@pytest.mark.parametrize("device", DEVICES)
def test_one_thread_per_shape_finds_the_triangles_newtons_kernel_finds(device):
    import warp as wp
    from newton._src.geometry import narrow_phase

    from tasks.contact_search import find_triangles_thread_per_pair, install_midphase

    wp.init()
    model = shapes_over_ground(device)
    newtons = triangles_found(model)
    restore = install_midphase("thread")
    try:
        assert narrow_phase.narrow_phase_find_mesh_triangle_overlaps_kernel is find_triangles_thread_per_pair
        ours = triangles_found(model)
    finally:
        restore()
    assert narrow_phase.narrow_phase_find_mesh_triangle_overlaps_kernel is not find_triangles_thread_per_pair
    mesh_shape, heightfield_shape = 0, 1
    grounds = {ground for ground, _, _ in newtons}
    assert grounds == {mesh_shape, heightfield_shape}, "both grounds have shapes on them"
    assert len({other for _, other, _ in newtons}) >= 20, "many shapes touch the ground, not all"
    assert ours == newtons


def test_newtons_kernel_is_back_once_every_installation_is_undone():
    from newton._src.geometry import narrow_phase

    from tasks.contact_search import find_triangles_thread_per_pair, install_midphase

    newtons = narrow_phase.narrow_phase_find_mesh_triangle_overlaps_kernel
    first, second = install_midphase("thread"), install_midphase("thread")
    first()  # the first environment closes while the second still runs
    assert narrow_phase.narrow_phase_find_mesh_triangle_overlaps_kernel is find_triangles_thread_per_pair
    second()
    assert narrow_phase.narrow_phase_find_mesh_triangle_overlaps_kernel is newtons
    install_midphase("tiled")()
    assert narrow_phase.narrow_phase_find_mesh_triangle_overlaps_kernel is newtons


def test_a_midphase_name_this_project_does_not_have_is_refused():
    from tasks.contact_search import install_midphase

    with pytest.raises(ValueError, match="tiled, thread"):
        install_midphase("tiles")


def test_a_misspelt_midphase_fails_while_the_config_is_composed(compose_cfg):
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException, match="midphase"):
        compose_cfg(["task=h1_rough", "task.terrain.midphase=per_thread"])


@pytest.mark.parametrize("ground", ["task.terrain.type=plane", "task.physics=physx"])
def test_newtons_midphase_asked_where_no_terrain_search_runs_is_refused(compose_cfg, ground, tmp_path, monkeypatch):
    from tasks.isaaclab_env import build_env_cfg

    monkeypatch.setenv("RLFORGE_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ValueError, match="midphase=tiled .* runs with task.physics=newton_mjwarp and"):
        build_env_cfg(compose_cfg(["task=h1_rough", ground, "task.terrain.midphase=tiled"]).task, "cpu", 0)
    assert build_env_cfg(compose_cfg(["task=h1_rough", "task.terrain.midphase=tiled"]).task, "cpu", 0)


@pytest.mark.slow
def test_training_with_either_midphase_is_the_same_to_the_bit_on_the_cpu(tmp_path):
    metrics = {}
    for midphase in ("tiled", "thread"):
        run_dir = tmp_path / midphase
        result = run_train(
            [
                "task=h1_rough",
                *H1_CPU_RUN,
                "algo.max_iterations=2",
                "seed=3",
                f"task.terrain.midphase={midphase}",
                f"hydra.run.dir={run_dir}",
            ],
            cwd=tmp_path,
            env={"RLFORGE_CACHE": str(tmp_path / "cache")},
        )
        assert result.returncode == 0, result.stderr[-3000:]
        said = "[rlforge] terrain midphase: thread" in (run_dir / "startup.log").read_text() + result.stdout
        assert said == (midphase == "thread")
        rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        metrics[midphase] = [
            {k: v for k, v in row.items() if k.startswith(("Loss/", "Episode_", "Train/"))} for row in rows
        ]
    assert len(metrics["thread"]) == 2
    assert metrics["thread"] == metrics["tiled"]


def test_the_bvh_benchmark_times_every_variant_on_the_same_triangles(capsys):
    from bench.terrain_bvh import main

    assert main(["--rows", "1", "--cols", "2", "--robots", "8", "--repeats", "1", "--blocks", "0", "4"]) == 0
    out = capsys.readouterr().out
    table = [line for line in out.splitlines() if line.startswith("| sah") or line.startswith("| median")]
    assert len(table) == 4, out
    found = {line.rsplit("|", 2)[-2].strip() for line in table}
    assert len(found) == 1 and found != {"0"}, out


def test_the_bvh_benchmark_refuses_tiles_on_the_cpu():
    from bench.terrain_bvh import main

    with pytest.raises(SystemExit):
        main(["--block-dims", "32"])
