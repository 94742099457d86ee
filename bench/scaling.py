"""Multi-GPU scaling: train with 1, 2, 4, 8 processes (one per GPU) and print throughput and efficiency; or pack
several independent runs onto one GPU and print what they make together.

    python scripts/scaling.py --procs 1 2 4 8 --num-envs 4096 --iterations 30 --out scaling.json
    python scripts/scaling.py --device cpu --procs 1 2 --num-envs 16 --iterations 4 --task toy   # the path, on CPUs
    python scripts/scaling.py --pack 1 2 4 --num-envs 4096 --iterations 30 --out pack.json

Each point is one ``torchrun --standalone --nproc_per_node=N train.py ...`` on this machine (NCCL on GPUs, gloo on
CPUs), with ``num-envs`` environments per process, the same seed and iterations, and one shared Warp kernel cache
(the 1-process point runs first and fills it; give ``--warm-up`` to compile before any point is timed). From the run's
``metrics.jsonl``, over the iterations after the first:

- total env-steps/s: median of (env-steps of all ranks / iteration time);
- scaling efficiency: total env-steps/s at N processes / (N x the 1-process figure);
- per iteration: collection, learning and, within learning, the gradient all-reduce (median seconds; "-" where the
  all-reduce ran inside the update's CUDA graph, where it cannot be timed apart).

NVLink multicast stays off (``NCCL_NVLS_ENABLE=0``).

``--pack N [N ...]`` measures sweep points sharing a device instead: for each N, N independent ``train.py`` runs at
once on one device (``--device``: GPU 0 by default, ``cuda:1`` another, or ``cpu``), with the same settings, seeds
``seed``, ``seed + 1``, ... and a run folder each (``work/pack-N/run-i``). From each run's ``metrics.jsonl``: its
env-steps/s (median over the iterations after the first that ended while every run of the pack was training; over all
its iterations after the first where the runs did not overlap, as ``overlapped_iterations`` 0 says) and its mean
reward at its last iteration; the pack's total env-steps/s is the sum over its runs, also given relative to the 1-run
pack.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from core.rundir import METRICS, project_root

WARM_UP_DIR = "warm-up"
"""Sub-folder of the work folder where the ``--warm-up`` run lives."""
POINT_TIMEOUT_S = 1800.0
"""Seconds a scaling point, a pack or the warm-up may run before it is stopped (``--timeout``)."""
DISTRIBUTED_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
"""Removed from a packed run's environment, so that each run trains alone even when this command runs in a job."""


@dataclass
class ScalingSettings:
    """What every point trains with; only the number of processes (or of packed runs, and their seeds) differs."""

    task: str
    num_envs: int
    """Environments per process."""
    iterations: int
    """Training iterations of every run."""
    device: str
    """``train.py``'s ``device``: ``cuda`` (each rank its own GPU; a packed run GPU 0), ``cuda:<i>`` or ``cpu``."""
    seed: int
    """Seed of every point, and of a pack's first run (the others count up from it)."""
    overrides: list[str] = field(default_factory=list)
    """More ``train.py`` overrides."""


def train_arguments(settings: ScalingSettings, run_dir: Path, warp_cache: Path, seed: int) -> list[str]:
    """``train.py`` and its overrides for one run of ``settings`` with ``seed`` in ``run_dir``."""
    return [
        str(project_root() / "train.py"),
        f"task={settings.task}",
        f"task.num_envs={settings.num_envs}",
        f"device={settings.device}",
        f"algo.max_iterations={settings.iterations}",
        f"algo.save_interval={10 * settings.iterations}",
        f"seed={seed}",
        f"hydra.run.dir={run_dir}",
        f"warp_cache_dir={warp_cache}",
        "summary=false",
        *settings.overrides,
    ]


def point_command(procs: int, settings: ScalingSettings, run_dir: Path, warp_cache: Path) -> list[str]:
    """The torchrun command of one point."""
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}"]
    return [*torchrun, *train_arguments(settings, run_dir, warp_cache, settings.seed)]


def pack_command(settings: ScalingSettings, run_dir: Path, warp_cache: Path, seed: int) -> list[str]:
    """The command of one packed run: a plain single-process ``train.py``."""
    return [sys.executable, *train_arguments(settings, run_dir, warp_cache, seed)]


def _rate(metric: dict[str, Any]) -> float:
    """One iteration's env-steps per second of collection and learning."""
    return metric["env_steps"] / (metric["collect_s"] + metric["learn_s"])


def summarize(metrics: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over the iterations after the first (the first pays for compilation and warm-up).

    ``allreduce_s`` is None when no iteration could time its all-reduce (a graphed distributed update)."""
    steady = metrics[1:] or metrics
    allreduce = [value for value in (m.get("allreduce_s", 0.0) for m in steady) if value is not None]
    return {
        "iterations": len(metrics),
        "env_steps_per_iteration": steady[0]["env_steps"],
        "env_steps_per_s": statistics.median(_rate(m) for m in steady),
        "collect_s": statistics.median(m["collect_s"] for m in steady),
        "learn_s": statistics.median(m["learn_s"] for m in steady),
        "allreduce_s": statistics.median(allreduce) if allreduce else None,
    }


def run_point(
    procs: int, settings: ScalingSettings, work: Path, warp_cache: Path, timeout_s: float = POINT_TIMEOUT_S
) -> dict[str, Any]:
    """Train one point in ``work`` (created if missing) and return its figures.

    Its output goes to ``work/procs-<N>.log`` as it comes. A point still running after ``timeout_s`` is stopped with
    every process it started, and the error says how far its iterations got."""
    work.mkdir(parents=True, exist_ok=True)
    run_dir = work / f"procs-{procs}"
    log = work / f"procs-{procs}.log"
    env = {**os.environ, "NCCL_NVLS_ENABLE": "0", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    started = time.perf_counter()
    with open(log, "w") as output:
        process = subprocess.Popen(
            point_command(procs, settings, run_dir, warp_cache),
            cwd=work,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: a timeout stops torchrun and every rank
        )
        try:
            code = process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            code = None
        finally:  # timed out or interrupted: torchrun and every rank stop with this command
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    wall_s = time.perf_counter() - started
    if code is None:
        done = len(_read_metrics(run_dir))
        raise SystemExit(
            f"error: the {procs}-process run was still running after {timeout_s:.0f} s (--timeout) with "
            f"{done} of {settings.iterations} iterations logged"
            + (" (it trained them all but did not exit)" if done >= settings.iterations else "")
            + f"; its output ({log}) ended with:\n{log.read_text(errors='replace')[-4000:]}"
        )
    if code != 0:
        raise SystemExit(
            f"error: the {procs}-process run failed; its output ({log}) ended with:\n"
            f"{log.read_text(errors='replace')[-6000:]}"
        )
    return {"procs": procs, "wall_s": wall_s, **summarize(_read_metrics(run_dir))}


def _read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The run's ``metrics.jsonl`` records (none where it wrote none)."""
    path = run_dir / METRICS
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def add_efficiency(points: list[dict[str, Any]]) -> None:
    """Scaling efficiency of every point against the 1-process point (when there is one)."""
    base = next((p for p in points if p["procs"] == 1), None)
    for point in points:
        point["efficiency"] = point["env_steps_per_s"] / (point["procs"] * base["env_steps_per_s"]) if base else None


def kernel_cache(settings: ScalingSettings, work: Path, warm_up: bool, timeout_s: float = POINT_TIMEOUT_S) -> Path:
    """The kernel cache every run in ``work`` shares; with ``warm_up``, filled first by one 1-process iteration in
    ``work/warm-up``."""
    warp_cache = work / "warp-cache"
    if warm_up:
        run_point(1, replace(settings, iterations=1), work / WARM_UP_DIR, warp_cache, timeout_s)
    return warp_cache


def run_scaling(
    procs: list[int],
    settings: ScalingSettings,
    work: Path,
    *,
    warm_up: bool = False,
    timeout_s: float = POINT_TIMEOUT_S,
    on_point: Callable[[list[dict]], None] | None = None,
) -> list[dict]:
    """Every point, fewest processes first, sharing one kernel cache in ``work``; their figures and efficiency.

    ``warm_up`` first trains one 1-process iteration (in ``work/warm-up``) so that no point pays for compilation.
    ``on_point`` is given the points so far (efficiency included) after each one, so that a later point that fails
    loses none of the earlier figures."""
    warp_cache = kernel_cache(settings, work, warm_up, timeout_s)
    points = []
    for count in sorted(set(procs)):
        print(f"{count} process(es): training (output in {work / f'procs-{count}.log'})", flush=True)
        point = run_point(count, settings, work, warp_cache, timeout_s)
        points.append(point)
        add_efficiency(points)
        print(f"{count} process(es): {point['env_steps_per_s']:.0f} env-steps/s", flush=True)
        if on_point is not None:
            on_point(points)
    return points


def table(points: list[dict[str, Any]]) -> str:
    """The printed table: one row per point."""
    lines = [
        f"{'procs':>5} {'env-steps/s':>12} {'efficiency':>10} {'collect s':>10} {'learn s':>9} {'all-reduce s':>12}",
    ]
    for p in points:
        efficiency = f"{100 * p['efficiency']:.1f}%" if p["efficiency"] is not None else "-"
        allreduce = f"{p['allreduce_s']:.4f}" if p["allreduce_s"] is not None else "-"
        lines.append(
            f"{p['procs']:>5} {p['env_steps_per_s']:>12.0f} {efficiency:>10} {p['collect_s']:>10.3f}"
            f" {p['learn_s']:>9.3f} {allreduce:>12}"
        )
    return "\n".join(lines)


def summarize_pack(runs: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Each packed run's figures from its metrics, the runs' iterations compared by the time each ended.

    The window where every run was training opens when the last run ends its first iteration and closes when the
    first run ends its last. A run's ``env_steps_per_s`` is the median over its iterations after the first that
    ended in that window (``overlapped_iterations`` of them); where none did, over all its iterations after the first.
    ``final_mean_reward`` is the mean episode reward at its last iteration (None if no episode had ended)."""
    opens = max(m[0]["time"] for m in runs)
    closes = min(m[-1]["time"] for m in runs)
    figures = []
    for metrics in runs:
        steady = metrics[1:] or metrics
        overlapped = [m for m in steady if opens <= m["time"] <= closes]
        figures.append(
            {
                **summarize(metrics),
                "env_steps_per_s": statistics.median(_rate(m) for m in overlapped or steady),
                "overlapped_iterations": len(overlapped),
                "final_iteration": metrics[-1]["iteration"],
                "final_mean_reward": metrics[-1].get("Train/mean_reward"),
            }
        )
    return figures


def run_pack(
    runs: int, settings: ScalingSettings, work: Path, warp_cache: Path, timeout_s: float = POINT_TIMEOUT_S
) -> dict[str, Any]:
    """Train ``runs`` independent runs at once on ``settings.device`` (seeds ``settings.seed + i``, folders
    ``work/pack-<runs>/run-<i>``) and return the pack's figures; runs still going after ``timeout_s`` are stopped."""
    pack_dir = work / f"pack-{runs}"
    pack_dir.mkdir(parents=True, exist_ok=True)
    env = {key: value for key, value in os.environ.items() if key not in DISTRIBUTED_VARIABLES}
    env["OMP_NUM_THREADS"] = os.environ.get("OMP_NUM_THREADS", "1")
    run_dirs = [pack_dir / f"run-{index}" for index in range(runs)]
    logs = [pack_dir / f"run-{index}.log" for index in range(runs)]
    started = time.perf_counter()
    processes: list[subprocess.Popen] = []
    try:
        for index, (run_dir, log) in enumerate(zip(run_dirs, logs, strict=True)):
            command = pack_command(settings, run_dir, warp_cache, settings.seed + index)
            with open(log, "w") as output:
                processes.append(
                    subprocess.Popen(command, cwd=pack_dir, env=env, stdout=output, stderr=subprocess.STDOUT, text=True)
                )
        deadline = started + timeout_s
        codes = [process.wait(timeout=max(0.0, deadline - time.perf_counter())) for process in processes]
    except subprocess.TimeoutExpired:
        raise SystemExit(
            f"error: the {runs}-run pack was still running after {timeout_s:.0f} s (--timeout); its runs' output is "
            f"in {pack_dir}/run-<i>.log"
        ) from None
    finally:
        # Timed out or interrupted (Ctrl-C, a failed launch): the runs started here stop with this command.
        for process in processes:
            if process.poll() is None:
                process.terminate()
                process.wait()
    wall_s = time.perf_counter() - started
    failed = [index for index, code in enumerate(codes) if code != 0]
    if failed:
        tail = logs[failed[0]].read_text()[-4000:]
        raise SystemExit(f"error: run(s) {failed} of the {runs}-run pack failed; run {failed[0]} ended with:\n{tail}")
    metrics = [[json.loads(line) for line in (run_dir / METRICS).read_text().splitlines()] for run_dir in run_dirs]
    per_run = summarize_pack(metrics)
    for index, figures in enumerate(per_run):
        figures.pop("allreduce_s")  # a single process has none
        figures.update(seed=settings.seed + index, run_dir=str(run_dirs[index]))
    return {
        "runs": runs,
        "wall_s": wall_s,
        "total_env_steps_per_s": sum(run["env_steps_per_s"] for run in per_run),
        "per_run": per_run,
    }


def add_pack_gain(packs: list[dict[str, Any]]) -> None:
    """Total env-steps/s of every pack relative to the 1-run pack (when there is one)."""
    base = next((p for p in packs if p["runs"] == 1), None)
    for pack in packs:
        pack["total_vs_one_run"] = pack["total_env_steps_per_s"] / base["total_env_steps_per_s"] if base else None


def run_packing(
    counts: list[int],
    settings: ScalingSettings,
    work: Path,
    *,
    warm_up: bool = False,
    timeout_s: float = POINT_TIMEOUT_S,
) -> list[dict]:
    """Every pack, fewest runs first, sharing one kernel cache in ``work``; their figures and gain over one run.

    ``warm_up`` first trains one 1-iteration run (in ``work/warm-up``) so that no pack pays for compilation; the
    warm-up and each pack are stopped after ``timeout_s``."""
    warp_cache = kernel_cache(settings, work, warm_up, timeout_s)
    packs = []
    for count in sorted(set(counts)):
        pack = run_pack(count, settings, work, warp_cache, timeout_s)
        packs.append(pack)
        print(f"{count} run(s) at once: {pack['total_env_steps_per_s']:.0f} env-steps/s in all", flush=True)
    add_pack_gain(packs)
    return packs


def pack_table(packs: list[dict[str, Any]]) -> str:
    """The printed table of ``--pack``: one row per pack, each run's rate and final mean reward in run order."""
    lines = [f"{'runs':>4} {'total env-steps/s':>17} {'vs 1 run':>8}  {'per-run env-steps/s':<30} final mean reward"]
    for pack in packs:
        gain = f"{pack['total_vs_one_run']:.2f}x" if pack["total_vs_one_run"] is not None else "-"
        rates = " / ".join(f"{run['env_steps_per_s']:.0f}" for run in pack["per_run"])
        rewards = " / ".join(
            f"{run['final_mean_reward']:.2f}" if run["final_mean_reward"] is not None else "-"
            for run in pack["per_run"]
        )
        lines.append(f"{pack['runs']:>4} {pack['total_env_steps_per_s']:>17.0f} {gain:>8}  {rates:<30} {rewards}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """The command line: check the GPUs, run every point (or pack), print the table and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    counts = parser.add_mutually_exclusive_group()
    counts.add_argument("--procs", type=int, nargs="+", default=[1, 2, 4, 8], help="process counts (default 1 2 4 8)")
    counts.add_argument(
        "--pack", type=int, nargs="+", default=None, help="numbers of independent runs to train at once on one device"
    )
    parser.add_argument("--task", default="h1_rough", help="task config (default h1_rough)")
    parser.add_argument("--num-envs", type=int, default=4096, help="environments per process (default 4096)")
    parser.add_argument("--iterations", type=int, default=30, help="iterations per point (default 30)")
    parser.add_argument(
        "--device", default="cuda", help="cuda (one GPU per process; with --pack GPU 0), cuda:<i> with --pack, or cpu"
    )
    parser.add_argument("--seed", type=int, default=42, help="seed (default 42)")
    parser.add_argument("--warm-up", action="store_true", help="compile the kernels with a 1-iteration run first")
    parser.add_argument("--work", type=Path, default=None, help="folder for the runs (default: a temporary one)")
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    parser.add_argument(
        "--timeout",
        type=float,
        default=POINT_TIMEOUT_S,
        help=f"seconds a scaling point, a pack or the warm-up may run before it is stopped "
        f"(default {POINT_TIMEOUT_S:.0f})",
    )
    parser.add_argument("overrides", nargs="*", help="more train.py overrides for every point")
    args = parser.parse_args(argv)

    if min(args.pack or args.procs) < 1:
        raise SystemExit("error: every count must be at least 1")
    if args.device.startswith("cuda"):
        import torch

        available = torch.cuda.device_count()
        if not available:
            raise SystemExit(f"error: --device {args.device}, but this machine has no GPU")
        too_many = [n for n in args.procs if n > available] if args.pack is None else []
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
    if args.pack is not None:
        packs = run_packing(args.pack, settings, work, warm_up=args.warm_up, timeout_s=args.timeout)
        print()
        print(pack_table(packs))
        if args.out:
            described = {"task": args.task, "num_envs_per_run": args.num_envs, "iterations": args.iterations}
            args.out.write_text(json.dumps({**described, "device": args.device, "packs": packs}, indent=2))
        return 0
    described = {
        "task": args.task,
        "num_envs_per_process": args.num_envs,
        "iterations": args.iterations,
        "device": args.device,
    }

    def write(points: list[dict]) -> None:
        if args.out:
            args.out.write_text(json.dumps({**described, "points": points}, indent=2))

    points = run_scaling(args.procs, settings, work, warm_up=args.warm_up, timeout_s=args.timeout, on_point=write)
    print()
    print(table(points))
    return 0
