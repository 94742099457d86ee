"""Figures of Unitree's published H1 description (MJCF, URDF, STL meshes) that the project's H1 is checked against."""

from __future__ import annotations

import argparse
import json
import re
import struct
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

# Where Unitree's description sits beside a checkout, and where its figures are kept inside one.
REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_REFERENCE = REPO_ROOT.parent / "shared" / "reference" / "unitree_h1"
DEFAULT_FIXTURE = REPO_ROOT / "tests" / "data" / "h1_reference.json"
# Decimal places kept in the figures: far below every tolerance they are checked with, and stable across platforms.
DECIMALS = 9


def _rounded(values) -> list:
    return np.round(np.asarray(values, dtype=float), DECIMALS).tolist()


def _strip_suffix(name: str) -> str:
    """Unitree's joint names end in ``_joint``; Isaac Lab's H1 configuration (and this project's H1) drop it."""
    return name.removesuffix("_joint")


def read_stl_vertices(path: Path) -> np.ndarray:
    """Every triangle corner of a binary or ASCII STL file, as an (N, 3) array in the file's units (metres here)."""
    data = path.read_bytes()
    if len(data) >= 84:
        (count,) = struct.unpack("<I", data[80:84])
        if 84 + 50 * count == len(data):
            record = np.dtype([("normal", "<f4", 3), ("corners", "<f4", (3, 3)), ("attribute", "<u2")])
            triangles = np.frombuffer(data, dtype=record, count=count, offset=84)
            return triangles["corners"].reshape(-1, 3).astype(float)
    corners = [line.split()[1:4] for line in data.decode("ascii").splitlines() if line.strip().startswith("vertex")]
    return np.asarray(corners, dtype=float)


def full_inertia(diagonal, quat) -> np.ndarray:
    """The 3x3 inertia tensor in the body frame from principal moments and the (w, x, y, z) quaternion of their axes."""
    import mujoco

    rotation = np.zeros(9)
    mujoco.mju_quat2Mat(rotation, np.asarray(quat, dtype=float))
    rotation = rotation.reshape(3, 3)
    return rotation @ np.diag(diagonal) @ rotation.T


def model_figures(model) -> dict:
    """Bodies (parent, frame, mass, centre of mass, inertia) and hinge joints (axis, range, armature, damping) of a
    compiled ``mujoco.MjModel``; joint names without their ``_joint`` suffix."""
    import mujoco

    bodies = {}
    for body in range(1, model.nbody):
        parent = int(model.body_parentid[body])
        bodies[model.body(body).name] = {
            "parent": model.body(parent).name if parent else None,
            "pos": _rounded(model.body_pos[body]),
            "quat": _rounded(model.body_quat[body]),
            "mass": round(float(model.body_mass[body]), DECIMALS),
            "com": _rounded(model.body_ipos[body]),
            "inertia": _rounded(full_inertia(model.body_inertia[body], model.body_iquat[body])),
        }
    joints = {}
    for joint in range(model.njnt):
        if model.jnt_type[joint] != mujoco.mjtJoint.mjJNT_HINGE:
            continue
        dof = int(model.jnt_dofadr[joint])
        joints[_strip_suffix(model.joint(joint).name)] = {
            "body": model.body(int(model.jnt_bodyid[joint])).name,
            "axis": _rounded(model.jnt_axis[joint]),
            "range": _rounded(model.jnt_range[joint]),
            "armature": round(float(model.dof_armature[dof]), DECIMALS),
            "damping": round(float(model.dof_damping[dof]), DECIMALS),
        }
    return {"bodies": bodies, "joints": joints}


def mesh_bounds(reference: Path, body_names) -> dict[str, list[list[float]]]:
    """Axis-aligned bounds [[x, y, z] low, [x, y, z] high] of each body's mesh in its body frame (the STL's frame)."""
    bounds = {}
    for name in body_names:
        path = reference / "meshes" / f"{name}.STL"
        if path.is_file():
            vertices = read_stl_vertices(path)
            bounds[name] = [_rounded(vertices.min(axis=0)), _rounded(vertices.max(axis=0))]
    return bounds


def urdf_figures(urdf: Path) -> dict:
    """Each link's inertial (mass, centre of mass, inertia tensor) and each revolute joint's effort and velocity
    limits, as the URDF states them."""
    root = ET.parse(urdf).getroot()
    inertials = {}
    for link in root.iter("link"):
        inertial = link.find("inertial")
        if inertial is None:
            continue
        moments = {key: float(value) for key, value in inertial.find("inertia").attrib.items()}
        tensor = [
            [moments["ixx"], moments["ixy"], moments["ixz"]],
            [moments["ixy"], moments["iyy"], moments["iyz"]],
            [moments["ixz"], moments["iyz"], moments["izz"]],
        ]
        origin = inertial.find("origin")
        if origin is not None and any(float(v) for v in origin.get("rpy", "0 0 0").split()):
            raise ValueError(f"{urdf}: link {link.get('name')} has a rotated inertial frame, which is not read here")
        inertials[link.get("name")] = {
            "mass": float(inertial.find("mass").get("value")),
            "com": _rounded([float(v) for v in origin.get("xyz").split()]),
            "inertia": _rounded(tensor),
        }
    limits = {}
    for joint in root.iter("joint"):
        limit = joint.find("limit")
        if joint.get("type") == "revolute" and limit is not None:
            limits[_strip_suffix(joint.get("name"))] = {
                "effort": float(limit.get("effort")),
                "velocity": float(limit.get("velocity")),
            }
    return {"inertials": inertials, "limits": limits}


def mjcf_motor_ranges(mjcf: Path) -> dict[str, float]:
    """Each motor's torque bound (the upper end of its ``ctrlrange``, N m) in the MJCF, by joint."""
    root = ET.parse(mjcf).getroot()
    return {_strip_suffix(motor.get("joint")): float(motor.get("ctrlrange").split()[1]) for motor in root.iter("motor")}


def read_reference(reference: Path = DEFAULT_REFERENCE) -> dict:
    """All figures the fidelity checks need, read from Unitree's description folder (``mjcf/``, ``urdf/``,
    ``meshes/``). The MJCF is compiled by MuJoCo, so frames and inertias are what a simulator receives."""
    import mujoco

    mjcf = reference / "mjcf" / "h1.xml"
    figures = model_figures(mujoco.MjModel.from_xml_path(str(mjcf)))
    figures["mesh_bounds"] = mesh_bounds(reference, figures["bodies"])
    figures["mjcf_motor_torque"] = mjcf_motor_ranges(mjcf)
    figures["urdf"] = urdf_figures(reference / "urdf" / "h1.urdf")
    figures["source"] = (
        "Unitree Robotics h1_description (BSD-3-Clause): mjcf/h1.xml compiled by MuJoCo, urdf/h1.urdf, meshes/*.STL; "
        "written by `python -m tasks.robots.reference`"
    )
    return figures


def write_fixture(reference: Path = DEFAULT_REFERENCE, out: Path = DEFAULT_FIXTURE) -> Path:
    """Write :func:`read_reference`'s figures as JSON at ``out`` (sorted keys, so a regeneration diffs cleanly)."""
    text = json.dumps(read_reference(reference), indent=1, sort_keys=True)
    # One line per vector or matrix: first the innermost lists of numbers, then lists of those.
    text = re.sub(r"\[\s+([^\[\]{}]*?)\s+\]", lambda match: "[" + " ".join(match.group(1).split()) + "]", text)
    text = re.sub(
        r"\[\s+((?:[^\[\]{}]|\[[^\[\]{}]*\])*?)\s+\]", lambda match: "[" + " ".join(match.group(1).split()) + "]", text
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description="Write the figures of Unitree's H1 description as a JSON fixture.")
    parser.add_argument("--reference", type=Path, default=DEFAULT_REFERENCE, help="Unitree's h1 description folder")
    parser.add_argument("--out", type=Path, default=DEFAULT_FIXTURE, help="JSON file to write")
    args = parser.parse_args()
    print(f"wrote {write_fixture(args.reference, args.out)}")


if __name__ == "__main__":
    main()
