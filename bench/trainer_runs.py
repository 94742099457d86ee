"""One trainer run once per kernel-cache phase: its process, its parsed iterations and its figures."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from bench.logparse import parse_iterations, summarize_run
from bench.process import run_process
from bench.report import fmt
from bench.trainers import STEPS_PER_ENV, Settings, command_for, environment_for


def run_trainer(
    trainer: str,
    settings: Settings,
    *,
    workdir: Path,
    phases: tuple[str, ...],
    timeout_s: float,
    cache_dir: Path | None = None,
) -> dict[str, Any]:
    """Run ``trainer`` once per phase (cold: empty kernel cache; warm: the cache the previous phase filled).

    Returns ``command`` (of the last phase) and ``phases``: the figures of each phase's process."""
    cache = cache_dir or workdir / f"warp-cache-{trainer}"
    # The CUDA driver keeps its own cache of kernels it compiled from PTX; it is emptied with Warp's, so that a
    # cold run of one trainer does not profit from the kernels an earlier run of the other left there.
    cuda_cache = cache.parent / f"{cache.name}-cuda"
    if "cold" in phases:
        shutil.rmtree(cache, ignore_errors=True)
        shutil.rmtree(cuda_cache, ignore_errors=True)
    cache.mkdir(parents=True, exist_ok=True)
    cuda_cache.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"command": None, "phases": {}}
    for phase in phases:
        output_dir = workdir / f"{trainer}-{phase}"
        output_dir.mkdir(parents=True, exist_ok=True)
        command = command_for(trainer, settings, output_dir / "outputs")
        env = {
            **os.environ,
            "WARP_CACHE_PATH": str(cache),
            "CUDA_CACHE_PATH": str(cuda_cache),
            "PYTHONUNBUFFERED": "1",
            **environment_for(trainer, settings),
        }
        log_path = workdir / f"{trainer}-{phase}.log"
        shown = " ".join(f"{key}='{value}'" for key, value in environment_for(trainer, settings).items())
        print(
            f"[benchmark] {trainer} ({phase} kernel cache): {shown + ' ' if shown else ''}{' '.join(command)}",
            flush=True,
        )
        raw = run_process(command, env=env, cwd=output_dir, log_path=log_path, timeout_s=timeout_s)
        blocks = parse_iterations(raw["lines"])
        figures = summarize_run(
            blocks, launched=raw["launched"], env_steps_per_iteration=settings.num_envs * STEPS_PER_ENV
        )
        figures.update(
            returncode=raw["returncode"],
            wall_s=raw["wall_s"],
            peak_host_mib=raw["peak_host_mib"],
            peak_gpu_mib=raw["peak_gpu_mib"],
            log=str(log_path),
        )
        if raw["returncode"] != 0 or figures["iterations"] < settings.iterations:
            tail = "\n".join(text for _, text in raw["lines"][-40:])
            print(
                f"[benchmark] {trainer} ({phase}) ended with code {raw['returncode']} after "
                f"{figures['iterations']} of {settings.iterations} iterations:\n{tail}",
                flush=True,
            )
        print(f"[benchmark] {trainer} ({phase}): {_one_line(figures)}", flush=True)
        result["command"] = command
        result["phases"][phase] = figures
    return result


def _one_line(figures: dict[str, Any]) -> str:
    return ", ".join(
        f"{k}={fmt(v)}" for k, v in figures.items() if k not in ("mean_reward", "log") and not isinstance(v, list)
    )
