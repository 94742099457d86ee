"""The two trainers the benchmark compares, and the command line that runs each on the same settings."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from core.rundir import project_root

ISAACLAB_TASK = "Isaac-Velocity-Rough-H1"
TRAINERS = ("ours", "isaaclab")
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


def command_for(trainer: str, settings: Settings, output_dir: Path) -> list[str]:
    """The command line that trains ``trainer`` with ``settings``, writing its logs under ``output_dir``."""
    python = sys.executable
    if trainer == "ours":
        command = [
            python,
            str(Path(settings.ours_root) / "train.py"),
            "task=h1_rough",
            f"device={settings.device}",
            f"task.num_envs={settings.num_envs}",
            f"seed={settings.seed}",
            f"algo.max_iterations={settings.iterations}",
            f"output_root={output_dir}",
            "summary=false",
            "console=full",  # the same per-iteration block as Isaac Lab's trainer prints, read by bench.logparse
        ]
        if settings.terrain_rows:
            command.append(f"task.terrain.num_rows={settings.terrain_rows}")
        if settings.terrain_cols:
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
            ISAACLAB_TASK,
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
        if settings.terrain_rows:
            command.append(f"env.scene.terrain.terrain_generator.num_rows={settings.terrain_rows}")
        if settings.terrain_cols:
            command.append(f"env.scene.terrain.terrain_generator.num_cols={settings.terrain_cols}")
        return command + settings.extra_isaaclab
    raise ValueError(f"trainer must be one of {TRAINERS}, not '{trainer}'")


def project_usd() -> str:
    """Our H1 as USD (converted once, then cached): the robot both trainers are given."""
    from tasks.isaaclab_env import PROJECT_H1
    from tasks.robots.usd_writer import convert_to_usd

    return str(convert_to_usd(PROJECT_H1))
