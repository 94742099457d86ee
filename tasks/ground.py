"""A flat ground written locally, since Isaac Lab's own ground plane is a file on its asset server."""

from __future__ import annotations

import os
from pathlib import Path

from core.rundir import writer_tag
from tasks.robots.usd_writer import cache_root

_VERSION = "1"


def flat_ground_usd(static_friction: float = 1.0, dynamic_friction: float = 1.0) -> Path:
    """An infinite collision plane (z up) with a friction material, written once into the cache."""
    from pxr import Usd, UsdGeom, UsdPhysics, UsdShade

    out_dir = cache_root().parent / "ground"
    out_path = out_dir / f"flat-v{_VERSION}-{static_friction:g}-{dynamic_friction:g}.usda"
    if out_path.is_file():
        return out_path
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp_path = out_dir / f".{out_path.name}.{writer_tag()}.usda"
    stage = Usd.Stage.CreateNew(str(tmp_path))
    UsdGeom.SetStageUpAxis(stage, UsdGeom.Tokens.z)
    UsdGeom.SetStageMetersPerUnit(stage, 1.0)
    root = UsdGeom.Xform.Define(stage, "/ground")
    stage.SetDefaultPrim(root.GetPrim())
    plane = UsdGeom.Plane.Define(stage, "/ground/plane")
    plane.CreateAxisAttr(UsdGeom.Tokens.z)
    plane.CreateWidthAttr(1000.0)
    plane.CreateLengthAttr(1000.0)
    UsdPhysics.CollisionAPI.Apply(plane.GetPrim())
    material = UsdShade.Material.Define(stage, "/ground/physics_material")
    physics_material = UsdPhysics.MaterialAPI.Apply(material.GetPrim())
    physics_material.CreateStaticFrictionAttr(static_friction)
    physics_material.CreateDynamicFrictionAttr(dynamic_friction)
    physics_material.CreateRestitutionAttr(0.0)
    UsdShade.MaterialBindingAPI.Apply(plane.GetPrim()).Bind(material, UsdShade.Tokens.weakerThanDescendants, "physics")
    stage.GetRootLayer().Save()
    os.replace(tmp_path, out_path)
    return out_path
