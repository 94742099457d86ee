"""The two trainers the benchmark compares, and the command line (and environment variables) that runs each on the
same settings: the same task, robot (:data:`OURS_ON_ISAACLABS_ROBOT`), ground, envs, seed and iterations, each
trainer with the frontend it is given (``torch``, Isaac Lab's ``ManagerBasedRLEnv``; ``warp``, its Warp frontend,
``ManagerBasedRLEnvWarp``)."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.rundir import project_root

ISAACLAB_TASK = "Isaac-Velocity-Rough-H1"
"""Isaac Lab's id of the default task, ``h1_rough``."""
TRAINERS = ("ours", "isaaclab")
FRONTENDS = ("torch", "warp")
OURS_ON_ISAACLABS_ROBOT = (
    "task.robot.armature=null",
    "task.robot.joint_damping=null",
    "task.robot.motor_limits=isaaclab",
)
"""Our robot settings that give our H1 the joints Isaac Lab's trainer gives it: the armature and passive damping of
the USD both trainers load (none: the project's H1 model states neither) and Isaac Lab's H1 effort limits. Ours
defaults to Unitree's MuJoCo armature and damping (``task.robot``), which Isaac Lab's trainer cannot be given: its H1
actuator groups leave both unset, and its command line refuses a number where its config holds None. A trainer
comparison needs one robot; ``--ours-arg task.robot.armature=0.1 --ours-arg task.robot.joint_damping=1.0`` puts ours
back on its own."""
STEPS_PER_ENV = 24  # rsl-rl's num_steps_per_env in both trainers' H1 rough settings


@dataclass
class Settings:
    """What both trainers are given."""

    device: str
    num_envs: int
    iterations: int
    seed: int
    usd_path: str
    terrain_rows: int | None = None
    terrain_cols: int | None = None
    ours_root: str = str(project_root())
    extra_ours: list[str] = field(default_factory=list)
    extra_isaaclab: list[str] = field(default_factory=list)
    task: str = "h1_rough"
    """Our task (``conf/task/``); Isaac Lab's trainer runs ``isaaclab_task``, the Isaac Lab task it starts from."""
    isaaclab_task: str = ISAACLAB_TASK
    ground_usd: str | None = None
    """For a task on flat ground: our ground plane as USD, given to Isaac Lab's trainer too (its own plane comes from
    its asset server); None for a generated terrain."""
    actor_hidden_dims: list[int] | None = None
    """Widths of the actor in Isaac Lab's rsl-rl settings for the task, given to ours too; None keeps ours."""
    critic_hidden_dims: list[int] | None = None
    """Widths of the critic in Isaac Lab's rsl-rl settings for the task, given to ours too; None keeps ours."""
    ours_frontend: str = "torch"
    """``task.frontend`` of our trainer."""
    isaaclab_frontend: str = "torch"
    """``--frontend`` of Isaac Lab's trainer."""


def command_for(trainer: str, settings: Settings, output_dir: Path) -> list[str]:
    """The command line that trains ``trainer`` with ``settings``, writing its logs under ``output_dir``."""
    python = sys.executable
    generated = settings.ground_usd is None
    if trainer == "ours":
        command = [
            python,
            str(Path(settings.ours_root) / "train.py"),
            f"task={settings.task}",
            f"device={settings.device}",
            f"task.num_envs={settings.num_envs}",
            f"seed={settings.seed}",
            f"algo.max_iterations={settings.iterations}",
            f"output_root={output_dir}",
            "summary=false",
            "console=full",  # the same per-iteration block as Isaac Lab's trainer prints, read by bench.logparse
        ]
        if settings.ours_frontend != "torch":
            command.append(f"task.frontend={settings.ours_frontend}")
        for model, dims in (("actor", settings.actor_hidden_dims), ("critic", settings.critic_hidden_dims)):
            if dims is not None:
                command.append(f"algo.{model}.hidden_dims=[{','.join(str(d) for d in dims)}]")
        command += OURS_ON_ISAACLABS_ROBOT
        if generated and settings.terrain_rows:
            command.append(f"task.terrain.num_rows={settings.terrain_rows}")
        if generated and settings.terrain_cols:
            command.append(f"task.terrain.num_cols={settings.terrain_cols}")
        return command + settings.extra_ours
    if trainer == "isaaclab":
        agent_device = "cuda:0" if settings.device == "cuda" else settings.device
        command = [
            python,
            "-m",
            "isaaclab",
            "train",
            "--rl_library",
            "rsl_rl",
            "--task",
            settings.isaaclab_task,
            "--num_envs",
            str(settings.num_envs),
            "--seed",
            str(settings.seed),
            "--max_iterations",
            str(settings.iterations),
            "--device",
            agent_device,
            f"agent.device={agent_device}",
            f"env.scene.robot.spawn.usd_path={settings.usd_path}",
        ]
        if settings.isaaclab_frontend != "torch":
            command += ["--frontend", settings.isaaclab_frontend]
        if not generated:
            command += ["env.scene.terrain.terrain_type=usd", f"env.scene.terrain.usd_path={settings.ground_usd}"]
        if generated and settings.terrain_rows:
            command.append(f"env.scene.terrain.terrain_generator.num_rows={settings.terrain_rows}")
        if generated and settings.terrain_cols:
            command.append(f"env.scene.terrain.terrain_generator.num_cols={settings.terrain_cols}")
        return command + settings.extra_isaaclab
    raise ValueError(f"trainer must be one of {TRAINERS}, not '{trainer}'")


def environment_for(trainer: str, settings: Settings) -> dict[str, str]:
    """Environment variables ``trainer`` needs beyond the benchmark's own. Isaac Lab's Warp frontend records its
    managers as CUDA graphs unless told otherwise, which fails on the CPU; ours turns that off itself there."""
    if trainer == "isaaclab" and settings.isaaclab_frontend == "warp" and not settings.device.startswith("cuda"):
        from isaaclab_experimental.utils.manager_call_switch import ManagerCallMode, ManagerCallSwitch

        return {ManagerCallSwitch.ENV_VAR: json.dumps({"default": int(ManagerCallMode.WARP_NOT_CAPTURED)})}
    return {}


def task_settings(task: str) -> dict[str, Any]:
    """The :class:`Settings` fields that follow from our task ``task``: the Isaac Lab task it starts from, our ground
    plane where the task is flat, and the network widths of Isaac Lab's rsl-rl settings for it (H1 flat's are narrower
    than rough's, ours are rough's unless told)."""
    from isaaclab_tasks.utils import resolve_task_config

    from runner.compose import compose_config
    from tasks.ground import flat_ground_usd

    composed = compose_config([f"task={task}"]).task
    if composed.kind != "isaaclab" or not composed.isaaclab_id:
        raise ValueError(f"task '{task}' is not an Isaac Lab task; the benchmark compares Isaac Lab tasks")
    _, runner_cfg = resolve_task_config(composed.isaaclab_id, "rsl_rl_cfg_entry_point", overrides=[])
    return {
        "task": task,
        "isaaclab_task": str(composed.isaaclab_id),
        "ground_usd": str(flat_ground_usd()) if composed.terrain.type == "plane" else None,
        "actor_hidden_dims": list(runner_cfg.actor.hidden_dims),
        "critic_hidden_dims": list(runner_cfg.critic.hidden_dims),
    }


def isaaclab_warp_refusal(isaaclab_task: str) -> str | None:
    """Why Isaac Lab's own ``--frontend warp`` cannot build ``isaaclab_task`` (its missing Warp terms), or None when
    it can: its own check, run on a fresh copy of the task's config. Terms it would take from this project
    (``tasks/warp_terms.py``, once registered in this process) count as missing: its trainer does not have them."""
    from isaaclab_experimental.envs.frontend import WarpFrontend
    from isaaclab_tasks.utils import resolve_task_config

    from tasks import warp_terms

    env_cfg, _ = resolve_task_config(isaaclab_task, None, overrides=[])
    refusal = WarpFrontend.check_compatibility(env_cfg)
    if refusal:
        return refusal
    ours = [
        f"{'.'.join(path)}: Isaac Lab has no Warp version (this project's is {warp_terms.__name__}.{term.func.__name__})"
        for path, term in WarpFrontend._walk_terms(env_cfg)
        if getattr(term, "func", None) is not None and (term.func.__module__ or "") == warp_terms.__name__
    ]
    return "\n  ".join(ours) or None


def project_usd() -> str:
    """Our H1 as USD (converted once, then cached): the robot both trainers are given."""
    from tasks.isaaclab_env import PROJECT_H1
    from tasks.robots.usd_writer import convert_to_usd

    return str(convert_to_usd(PROJECT_H1))
