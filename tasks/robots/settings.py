"""The task's robot settings (joint armature, passive damping, motor limits) applied to Isaac Lab's robot config."""

from __future__ import annotations

import re
from typing import Any

# Each H1 motor's peak torque (N m) and top speed (rad/s), from the <limit effort velocity> of every revolute
# joint in Unitree's URDF (h1_description). tests/test_robot_fidelity.py checks this table against it.
_URDF_LIMITS_BY_JOINT_KIND: dict[str, tuple[float, float]] = {
    "hip_yaw": (200.0, 23.0),
    "hip_roll": (200.0, 23.0),
    "hip_pitch": (200.0, 23.0),
    "knee": (300.0, 14.0),
    "ankle": (40.0, 9.0),
    "shoulder_pitch": (40.0, 9.0),
    "shoulder_roll": (40.0, 9.0),
    "shoulder_yaw": (18.0, 20.0),
    "elbow": (18.0, 20.0),
}
H1_URDF_MOTOR_LIMITS: dict[str, tuple[float, float]] = {
    f"{side}_{kind}": limits for side in ("left", "right") for kind, limits in _URDF_LIMITS_BY_JOINT_KIND.items()
} | {"torso": (200.0, 23.0)}
"""(torque N m, speed rad/s) of each H1 joint, by the joint names Isaac Lab's H1 configuration uses."""


def _group_joints(group: Any) -> list[str]:
    """The H1 joints an actuator group drives: those its name expressions match whole, as Isaac Lab matches them."""
    expressions = [group.joint_names_expr] if isinstance(group.joint_names_expr, str) else group.joint_names_expr
    return [name for name in H1_URDF_MOTOR_LIMITS if any(re.fullmatch(expr, name) for expr in expressions)]


def apply_robot_settings(articulation_cfg: Any, robot: Any) -> None:
    """Set ``task.robot``'s armature, passive damping and motor limits on every actuator group of Isaac Lab's
    ``ArticulationCfg``; Isaac Lab writes them into the simulator's joints when the robot is created.

    ``armature`` and ``joint_damping`` go to each group's ``armature`` and ``viscous_friction`` (Newton's
    ``joint_armature`` and ``joint_damping``, MuJoCo's ``dof_armature`` and ``dof_damping``); None leaves the
    model's own. ``motor_limits=urdf`` sets ``joint_effort_limit`` (MuJoCo's actuator force range on the joint) and
    ``joint_velocity_limit`` per joint from :data:`H1_URDF_MOTOR_LIMITS`; ``isaaclab`` keeps the groups' own.
    """
    for name, group in articulation_cfg.actuators.items():
        if robot.armature is not None:
            group.armature = float(robot.armature)
        if robot.joint_damping is not None:
            group.viscous_friction = float(robot.joint_damping)
        if robot.motor_limits == "urdf":
            joints = _group_joints(group)
            if not joints:
                raise ValueError(
                    f"task.robot.motor_limits=urdf holds the H1's motors; actuator group '{name}' "
                    f"({group.joint_names_expr}) drives none of its joints"
                )
            group.joint_effort_limit = {joint: H1_URDF_MOTOR_LIMITS[joint][0] for joint in joints}
            group.joint_velocity_limit = {joint: H1_URDF_MOTOR_LIMITS[joint][1] for joint in joints}
        elif robot.motor_limits != "isaaclab":
            raise ValueError(f"task.robot.motor_limits must be isaaclab or urdf, not '{robot.motor_limits}'")
