"""Generated terrains kept on disk: the same generator settings and seed give the same terrain, so it is built once.

Isaac Lab's terrain generator builds a rough-terrain task's ground (hundreds of sub-terrain meshes, a million
triangles) at every start, seconds of CPU work whose result depends only on its settings and its seed. The generator
here is Isaac Lab's, used through the generator config's ``class_type``: the first run with given settings saves
the finished mesh, its colours, the sub-terrain origins and flat patches under ``$RLFORGE_CACHE/terrains`` (default
``~/.cache/rlforge/terrains``); later runs load them. Some sub-terrains draw from NumPy's global random state as
well as the generator's seed, so the key covers every generator setting, the seed, NumPy's global state and Isaac
Lab's version, and a load puts NumPy's global state where generating would have left it. The random-grid
sub-terrain draws its box heights from PyTorch's global generator, on the GPU where there is one: the key covers
PyTorch's CPU state and the current GPU's, and a load puts both where generating would have left them. A run that
loads its terrain continues exactly as one that generated it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
from isaaclab.terrains.terrain_generator import TerrainGenerator

from core.rundir import write_npz_atomic

FORMAT = 2
"""Bumped when the saved layout changes."""


def cache_dir() -> Path:
    """``$RLFORGE_CACHE/terrains``, or ``~/.cache/rlforge/terrains``: beside the converted robots."""
    from tasks.robots.usd_writer import cache_root

    return cache_root().parent / "terrains"


def _effective_seed(cfg) -> int:
    """The seed Isaac Lab's generator uses: the config's, else the first word of NumPy's global state."""
    return int(cfg.seed) if cfg.seed is not None else int(np.random.get_state()[1][0])


def _global_state() -> list[Any]:
    """NumPy's global random state as plain data."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return [name, np.asarray(keys).tolist(), int(pos), int(has_gauss), float(cached)]


def _torch_state_names() -> tuple[str, ...]:
    """PyTorch's global random generators the generator may draw from: the CPU's, and the current GPU's if any."""
    import torch

    return ("cpu", "cuda") if torch.cuda.is_available() else ("cpu",)


def _torch_states() -> dict[str, Any]:
    import torch

    return {
        name: torch.get_rng_state() if name == "cpu" else torch.cuda.get_rng_state() for name in _torch_state_names()
    }


def _set_torch_states(states: dict[str, Any]) -> None:
    import torch

    torch.set_rng_state(states["cpu"])
    if "cuda" in states:
        torch.cuda.set_rng_state(states["cuda"])


def terrain_key(cfg, simplified: bool = False) -> str:
    """Digest of everything the generated terrain depends on (call it just before generating); ``simplified``: of
    the terrain with its coplanar triangles merged (``tasks/terrain_simplify.py``)."""
    from importlib import metadata

    from isaaclab.utils import class_to_dict

    settings = class_to_dict(cfg)
    settings.pop("class_type", None)
    # Which collider the physics makes of the terrain does not change the terrain: both share one cache entry.
    for sub_terrain in settings.get("sub_terrains", {}).values():
        sub_terrain.pop("convert_to_heightfield", None)
    try:
        version = metadata.version("isaaclab")
    except metadata.PackageNotFoundError:
        version = "unknown"
    payload = json.dumps(
        {
            "settings": settings,
            "seed": _effective_seed(cfg),
            "numpy_state": _global_state(),
            "torch_state": {
                name: hashlib.sha256(state.numpy().tobytes()).hexdigest() for name, state in _torch_states().items()
            },
            "isaaclab": version,
            "format": FORMAT,
            **({"simplified": True} if simplified else {}),
        },
        sort_keys=True,
        default=repr,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


class CachedTerrainGenerator(TerrainGenerator):
    """Isaac Lab's terrain generator that loads a terrain built before with the same settings and seed."""

    simplify: bool = False
    """Merge the generated mesh's coplanar triangles before keeping it (``task.terrain.simplify``)."""

    def __init__(self, cfg, device: str = "cpu") -> None:
        path = cache_dir() / f"{terrain_key(cfg, self.simplify)}.npz"
        if path.is_file() and self._load(path, cfg, device):
            return
        super().__init__(cfg, device)
        if self.simplify:
            from tasks.terrain_simplify import simplify_terrain

            simplify_terrain(self)
        self._save(path)

    def _load(self, path: Path, cfg, device: str) -> bool:
        import torch
        import trimesh

        try:
            with np.load(path) as saved:
                mesh = trimesh.Trimesh(vertices=saved["vertices"], faces=saved["faces"], process=False)
                if "vertex_colors" in saved:
                    mesh.visual.vertex_colors = saved["vertex_colors"]
                origins = saved["origins"]
                name, pos, has_gauss, cached = json.loads(str(saved["numpy_state_rest"]))
                after = (name, saved["numpy_state_keys"], pos, has_gauss, cached)
                torch_after = {
                    name: torch.from_numpy(saved[f"torch_state/{name}"].copy()) for name in _torch_state_names()
                }
                patches = {
                    key.removeprefix("patch/"): torch.as_tensor(saved[key], device=device)
                    for key in saved.files
                    if key.startswith("patch/")
                }
        except (OSError, KeyError, ValueError) as error:
            print(f"[rlforge] terrain cache {path.name} unreadable ({error}); generating the terrain")
            return False
        np.random.set_state(after)  # where generating would have left them
        _set_torch_states(torch_after)
        self.cfg, self.device = cfg, device
        self.terrain_mesh, self.terrain_origins, self.flat_patches = mesh, origins, patches
        self.terrain_meshes = [mesh]
        print(f"[rlforge] terrain loaded from {path} ({len(mesh.faces)} triangles)")
        return True

    def _save(self, path: Path) -> None:
        arrays: dict[str, Any] = {
            "vertices": np.asarray(self.terrain_mesh.vertices),
            "faces": np.asarray(self.terrain_mesh.faces),
            "origins": np.asarray(self.terrain_origins),
            "numpy_state_keys": np.asarray(np.random.get_state()[1]),
            "numpy_state_rest": np.asarray(json.dumps([_global_state()[i] for i in (0, 2, 3, 4)])),
            **{f"torch_state/{name}": state.numpy() for name, state in _torch_states().items()},
        }
        if self.terrain_mesh.visual.kind == "vertex":
            arrays["vertex_colors"] = np.asarray(self.terrain_mesh.visual.vertex_colors)
        for name, patches in self.flat_patches.items():
            arrays[f"patch/{name}"] = patches.detach().cpu().numpy()
        try:
            write_npz_atomic(path, arrays)
        except OSError as error:  # a read-only or full cache folder costs the next run the generation, nothing else
            print(f"[rlforge] terrain not cached ({error})")


class CachedSimplifiedTerrainGenerator(CachedTerrainGenerator):
    """:class:`CachedTerrainGenerator` of the terrain with its coplanar triangles merged."""

    simplify = True
