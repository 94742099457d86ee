"""Which collider Newton gets for a generated terrain: its triangle mesh, or a heightfield sampled from it.

Isaac Lab carries the heightfield path: when every sub-terrain config sets ``convert_to_heightfield``, its
``TerrainImporter`` tags the terrain prim with ``newton:heightfield:resolution`` (the generator's
``horizontal_scale``), and ``NewtonManager._inject_terrain_heightfields`` (called by the Newton cloner before the
stage is imported) casts vertical rays onto the mesh on that grid (``newton.Heightfield.create_from_mesh``, the
highest surface at each grid point), adds the result as a static heightfield shape and leaves the mesh prim out
of the physics import. The prim stays on the stage for visuals; the env origins and the curriculum come from the
generator, not from the collider. Newton's ray casts (the height scanner) hit the heightfield, as the robots do.
"""

from __future__ import annotations

from typing import Any


def set_collision(generator_cfg: Any, collision: str) -> None:
    """Make Isaac Lab collide against the generated terrain as ``collision`` (``mesh`` or ``heightfield``).

    Isaac Lab converts only when every sub-terrain asks for it; its height-field sub-terrains ask by default, its
    mesh sub-terrains do not. Setting the flag on each one makes the choice this setting's, whatever the mix.
    """
    if collision not in ("mesh", "heightfield"):
        raise ValueError(f"task.terrain.collision must be 'mesh' or 'heightfield', not '{collision}'")
    for sub_terrain in generator_cfg.sub_terrains.values():
        if not hasattr(sub_terrain, "convert_to_heightfield"):
            raise RuntimeError(
                f"{type(sub_terrain).__name__} has no convert_to_heightfield: this Isaac Lab cannot collide "
                "against a heightfield of its terrain; use task.terrain.collision=mesh"
            )
        sub_terrain.convert_to_heightfield = collision == "heightfield"


def global_collider_types(model: Any) -> list[str]:
    """Names of the geometry types of the model's shapes that belong to no world (the ground), in shape order."""
    from newton import GeoType

    types = model.shape_type.numpy()
    worlds = model.shape_world.numpy()
    return [GeoType(int(kind)).name for kind, world in zip(types, worlds, strict=True) if world == -1]


def check_collision(model: Any, collision: str) -> None:
    """Fail loudly when the finalized Newton model's ground is not the collider ``collision`` asked for (a change
    in Isaac Lab's conversion would otherwise leave the run on the other one without a word)."""
    ground = global_collider_types(model)
    wanted, other = ("HFIELD", "MESH") if collision == "heightfield" else ("MESH", "HFIELD")
    if wanted not in ground or other in ground:
        raise RuntimeError(
            f"task.terrain.collision={collision}: the Newton model's ground shapes are {ground}, expected a "
            f"{wanted} and no {other}; Isaac Lab's terrain-to-heightfield conversion has changed"
        )


def heightfield_heights(model: Any) -> tuple[Any, Any, Any]:
    """The ground heightfield of a finalized Newton model in world coordinates: ``(x, y, z)``, with ``x`` of shape
    ``(ncol,)``, ``y`` of shape ``(nrow,)`` and ``z`` of shape ``(nrow, ncol)`` (m); ``z[row, col]`` is the height at
    ``(x[col], y[row])``."""
    import numpy as np
    from newton import GeoType

    types, worlds = model.shape_type.numpy(), model.shape_world.numpy()
    found = [
        i for i, (kind, world) in enumerate(zip(types, worlds, strict=True)) if world == -1 and kind == GeoType.HFIELD
    ]
    if len(found) != 1:
        raise RuntimeError(f"expected one ground heightfield in the Newton model, found {len(found)}")
    shape = found[0]
    field = model.shape_source[shape]
    position = model.shape_transform.numpy()[shape][:3]
    scale = model.shape_scale.numpy()[shape]
    x = position[0] + np.linspace(-field.hx, field.hx, field.ncol) * scale[0]
    y = position[1] + np.linspace(-field.hy, field.hy, field.nrow) * scale[1]
    z = position[2] + (field.min_z + np.asarray(field.data) * (field.max_z - field.min_z)) * scale[2]
    return x, y, z
