"""The terrain cache: a loaded terrain is the generated one, bit for bit, and other settings or seeds miss it."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture
def rough_cfg(tmp_path, monkeypatch):
    monkeypatch.setenv("RLFORGE_CACHE", str(tmp_path / "cache"))
    from isaaclab.terrains.config.rough import ROUGH_TERRAINS_CFG

    cfg = ROUGH_TERRAINS_CFG.copy()
    cfg.num_rows, cfg.num_cols, cfg.seed = 2, 5, 7  # five columns: the random grid (boxes) among them
    return cfg


def same_terrain(a, b) -> None:
    np.testing.assert_array_equal(a.terrain_mesh.vertices, b.terrain_mesh.vertices)
    np.testing.assert_array_equal(a.terrain_mesh.faces, b.terrain_mesh.faces)
    np.testing.assert_array_equal(a.terrain_mesh.visual.vertex_colors, b.terrain_mesh.visual.vertex_colors)
    np.testing.assert_array_equal(a.terrain_origins, b.terrain_origins)
    assert a.flat_patches.keys() == b.flat_patches.keys()
    for name in a.flat_patches:
        assert (a.flat_patches[name] == b.flat_patches[name]).all()


def test_a_cached_terrain_is_the_generated_one(rough_cfg, capsys):
    import torch
    from isaaclab.terrains.terrain_generator import TerrainGenerator

    from tasks.terrain_cache import CachedTerrainGenerator, cache_dir

    def from_the_same_start() -> None:
        # Some sub-terrains draw from NumPy's global state, the random grid from PyTorch's: each build starts from
        # the same ones.
        np.random.seed(3)
        torch.manual_seed(3)

    from_the_same_start()
    before = torch.get_rng_state()
    generated = TerrainGenerator(rough_cfg.copy())
    assert not torch.equal(torch.get_rng_state(), before), "this terrain's random grid draws from PyTorch"
    after_generating = np.random.random(4), torch.rand(4)
    from_the_same_start()
    first = CachedTerrainGenerator(rough_cfg.copy())
    assert len(list(cache_dir().glob("*.npz"))) == 1
    capsys.readouterr()
    from_the_same_start()
    second = CachedTerrainGenerator(rough_cfg.copy())
    assert "terrain loaded from" in capsys.readouterr().out
    # The global states move on as generating moves them, so what the run draws next is the same.
    np.testing.assert_array_equal(np.random.random(4), after_generating[0])
    assert torch.equal(torch.rand(4), after_generating[1])
    same_terrain(generated, first)
    same_terrain(generated, second)
    np.random.seed(4)
    torch.manual_seed(3)
    CachedTerrainGenerator(rough_cfg.copy())
    assert len(list(cache_dir().glob("*.npz"))) == 2, "another NumPy state is another terrain"
    np.random.seed(3)
    torch.manual_seed(4)
    other_torch = CachedTerrainGenerator(rough_cfg.copy())
    assert len(list(cache_dir().glob("*.npz"))) == 3, "another PyTorch state is another terrain"
    assert not np.array_equal(other_torch.terrain_mesh.vertices, generated.terrain_mesh.vertices)


def test_another_seed_or_setting_is_generated_anew(rough_cfg, capsys):
    from tasks.terrain_cache import CachedTerrainGenerator, cache_dir, terrain_key

    CachedTerrainGenerator(rough_cfg.copy())
    other_seed, other_size = rough_cfg.copy(), rough_cfg.copy()
    other_seed.seed = 8
    other_size.num_cols = 4
    assert len({terrain_key(rough_cfg), terrain_key(other_seed), terrain_key(other_size)}) == 3
    capsys.readouterr()
    CachedTerrainGenerator(other_seed)
    assert "terrain loaded from" not in capsys.readouterr().out
    assert len(list(cache_dir().glob("*.npz"))) == 2


def test_an_unreadable_cache_entry_is_generated_again(rough_cfg, capsys):
    from tasks.terrain_cache import CachedTerrainGenerator, cache_dir, terrain_key

    cache_dir().mkdir(parents=True)
    entry = cache_dir() / f"{terrain_key(rough_cfg)}.npz"
    entry.write_bytes(b"torn")
    terrain = CachedTerrainGenerator(rough_cfg.copy())
    assert "unreadable" in capsys.readouterr().out and len(terrain.terrain_mesh.faces) > 0
    assert np.load(entry)["faces"].shape[0] == len(terrain.terrain_mesh.faces), "the entry is written anew"
