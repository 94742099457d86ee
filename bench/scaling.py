"""Multi-GPU scaling: train with 1, 2, 4, 8 processes (one per GPU) and print throughput and efficiency.

    python scripts/scaling.py --procs 1 2 4 8 --num-envs 4096 --iterations 30 --out scaling.json
    python scripts/scaling.py --device cpu --procs 1 2 --num-envs 16 --iterations 4 --task toy   # the path, on CPUs

Each point is one ``torchrun --standalone --nproc_per_node=N train.py ...`` on this machine (NCCL on GPUs, gloo on
CPUs), with ``num-envs`` environments per process, the same seed and iterations, and one shared Warp kernel cache
(the 1-process point runs first and fills it; give ``--warm-up`` to compile before any point is timed). From the run's
``metrics.jsonl``, over the iterations after the first:

- total env-steps/s: median of (env-steps of all ranks / iteration time);
- scaling efficiency: total env-steps/s at N processes / (N x the 1-process figure);
- per iteration: collection, learning and, within learning, the gradient all-reduce (median seconds).

NVLink multicast stays off (``NCCL_NVLS_ENABLE=0``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from core.rundir import METRICS, project_root

WARM_UP_DIR = "warm-up"
"""Sub-folder of the work folder where the ``--warm-up`` run lives."""


@dataclass
class ScalingSettings:
    """What every point trains with; only the number of processes differs between points."""

    task: str
    num_envs: int
    """Environments per process."""
    iterations: int
    device: str
    seed: int
    overrides: list[str] = field(default_factory=list)
    """More ``train.py`` overrides."""


def point_command(procs: int, settings: ScalingSettings, run_dir: Path, warp_cache: Path) -> list[str]:
    """The torchrun command of one point."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={procs}",
        str(project_root() / "train.py"),
        f"task={settings.task}",
        f"task.num_envs={settings.num_envs}",
        f"device={settings.device}",
        f"algo.max_iterations={settings.iterations}",
        f"algo.save_interval={10 * settings.iterations}",
        f"seed={settings.seed}",
        f"hydra.run.dir={run_dir}",
        f"warp_cache_dir={warp_cache}",
        "summary=false",
        *settings.overrides,
    ]


def summarize(metrics: list[dict[str, Any]]) -> dict[str, float]:
    """Medians over the iterations after the first (the first pays for compilation and warm-up)."""
    steady = metrics[1:] or metrics
    rates = [m["env_steps"] / (m["collect_s"] + m["learn_s"]) for m in steady]
    return {
        "iterations": len(metrics),
        "env_steps_per_iteration": steady[0]["env_steps"],
        "env_steps_per_s": statistics.median(rates),
        "collect_s": statistics.median(m["collect_s"] for m in steady),
        "learn_s": statistics.median(m["learn_s"] for m in steady),
        "allreduce_s": statistics.median(m.get("allreduce_s", 0.0) for m in steady),
    }


def run_point(procs: int, settings: ScalingSettings, work: Path, warp_cache: Path) -> dict[str, Any]:
    """Train one point in ``work`` (created if missing) and return its figures."""
    work.mkdir(parents=True, exist_ok=True)
    run_dir = work / f"procs-{procs}"
    env = {**os.environ, "NCCL_NVLS_ENABLE": "0", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    started = time.perf_counter()
    result = subprocess.run(
        point_command(procs, settings, run_dir, warp_cache), cwd=work, env=env, capture_output=True, text=True
    )
    wall_s = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"error: the {procs}-process run failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}")
    metrics = [json.loads(line) for line in (run_dir / METRICS).read_text().splitlines()]
    return {"procs": procs, "wall_s": wall_s, **summarize(metrics)}


def add_efficiency(points: list[dict[str, Any]]) -> None:
    """Scaling efficiency of every point against the 1-process point (when there is one)."""
    base = next((p for p in points if p["procs"] == 1), None)
    for point in points:
        point["efficiency"] = point["env_steps_per_s"] / (point["procs"] * base["env_steps_per_s"]) if base else None


def run_scaling(procs: list[int], settings: ScalingSettings, work: Path, *, warm_up: bool = False) -> list[dict]:
    """Every point, fewest processes first, sharing one kernel cache in ``work``; their figures and efficiency.

    ``warm_up`` first trains one 1-process iteration (in ``work/warm-up``) so that no point pays for compilation."""
    warp_cache = work / "warp-cache"
    if warm_up:
        run_point(1, replace(settings, iterations=1), work / WARM_UP_DIR, warp_cache)
    points = []
    for count in sorted(set(procs)):
        point = run_point(count, settings, work, warp_cache)
        points.append(point)
        print(f"{count} process(es): {point['env_steps_per_s']:.0f} env-steps/s", flush=True)
    add_efficiency(points)
    return points


def table(points: list[dict[str, Any]]) -> str:
    """The printed table: one row per point."""
    lines = [
        f"{'procs':>5} {'env-steps/s':>12} {'efficiency':>10} {'collect s':>10} {'learn s':>9} {'all-reduce s':>12}",
    ]
    for p in points:
        efficiency = f"{100 * p['efficiency']:.1f}%" if p["efficiency"] is not None else "-"
        lines.append(
            f"{p['procs']:>5} {p['env_steps_per_s']:>12.0f} {efficiency:>10} {p['collect_s']:>10.3f}"
            f" {p['learn_s']:>9.3f} {p['allreduce_s']:>12.4f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """The command line: check the GPUs, run every point, print the table and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--procs", type=int, nargs="+", default=[1, 2, 4, 8], help="process counts (default 1 2 4 8)")
    parser.add_argument("--task", default="h1_rough", help="task config (default h1_rough)")
    parser.add_argument("--num-envs", type=int, default=4096, help="environments per process (default 4096)")
    parser.add_argument("--iterations", type=int, default=30, help="iterations per point (default 30)")
    parser.add_argument("--device", default="cuda", help="cuda (one GPU per process) or cpu (default cuda)")
    parser.add_argument("--seed", type=int, default=42, help="seed (default 42)")
    parser.add_argument("--warm-up", action="store_true", help="compile the kernels with a 1-iteration run first")
    parser.add_argument("--work", type=Path, default=None, help="folder for the runs (default: a temporary one)")
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    parser.add_argument("overrides", nargs="*", help="more train.py overrides for every point")
    args = parser.parse_args(argv)

    if args.device.startswith("cuda"):
        import torch

        available = torch.cuda.device_count()
        too_many = [n for n in args.procs if n > available]
        if too_many:
            raise SystemExit(f"error: {too_many} processes asked for, but this machine has {available} GPU(s)")
    settings = ScalingSettings(
        task=args.task,
        num_envs=args.num_envs,
        iterations=args.iterations,
        device=args.device,
        seed=args.seed,
        overrides=args.overrides,
    )
    work = args.work or Path(tempfile.mkdtemp(prefix="rlforge-scaling-"))
    points = run_scaling(args.procs, settings, work, warm_up=args.warm_up)
    print()
    print(table(points))
    if args.out:
        args.out.write_text(
            json.dumps(
                {
                    "task": args.task,
                    "num_envs_per_process": args.num_envs,
                    "iterations": args.iterations,
                    "device": args.device,
                    "points": points,
                },
                indent=2,
            )
        )
    return 0
