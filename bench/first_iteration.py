"""Measure time to first iteration with an empty Warp kernel cache, then again with the cache kept.

    python scripts/measure_first_iteration.py                          # h1_flat, 4 envs, CPU, 1 iteration
    python scripts/measure_first_iteration.py --task h1_rough --num-envs 8 --runs 3
    python scripts/measure_first_iteration.py --imports 3 [--device cuda]  # what importing the stack costs

Every run is a real ``train.py`` process with ``warp_cache_dir`` pointing at one fresh folder: the first run
compiles every kernel into it, the later ones find them there. Figures come from each run's ledger, measured
from the process start (interpreter start-up and imports included); nothing here is a pass/fail test.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from core import ledger
from core.rundir import project_root


@dataclass
class StartSettings:
    """What every measured run trains."""

    task: str
    device: str
    num_envs: int
    steps: int
    """``algo.num_steps_per_env``."""
    iterations: int
    overrides: list[str] = field(default_factory=list)
    """More ``train.py`` overrides."""


def run_once(workdir: Path, cache: Path, settings: StartSettings, index: int) -> dict[str, float]:
    """One training process; its start-up figures from its ledger."""
    output_root = workdir / f"outputs_{index}"
    command = [
        sys.executable,
        str(project_root() / "train.py"),
        f"task={settings.task}",
        f"device={settings.device}",
        f"task.num_envs={settings.num_envs}",
        f"algo.num_steps_per_env={settings.steps}",
        f"algo.max_iterations={settings.iterations}",
        f"warp_cache_dir={cache}",
        f"output_root={output_root}",
        "summary=false",
    ]
    if settings.task == "h1_rough":
        command += ["task.terrain.num_rows=2", "task.terrain.num_cols=2"]
    command += settings.overrides
    launched = time.time()
    result = subprocess.run(command, cwd=workdir, capture_output=True, text=True)
    finished = time.time()
    if result.returncode != 0:
        sys.exit(f"run {index} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    run_dir = next(p for p in (output_root / settings.task).iterdir() if p.is_dir())
    first = {e["event"]: e for e in reversed(ledger.read(run_dir))}
    start = float(first["process_start"]["at"])
    return {
        "launch_to_first_iteration_s": float(first["first_iteration"]["time"]) - launched,
        "process_to_first_iteration_s": float(first["first_iteration"]["time"]) - start,
        "process_to_simulator_ready_s": float(first["simulator_ready"]["time"]) - start,
        "total_s": finished - launched,
        "cache_files": sum(1 for p in cache.rglob("*") if p.is_file()),
    }


def measure(settings: StartSettings, runs: int, cache: Path | None = None) -> list[dict[str, float]]:
    """``runs`` runs in a row sharing one kernel cache that starts empty (``cache``, or a new folder)."""
    with tempfile.TemporaryDirectory(prefix="rlforge-ttfi-") as tmp:
        workdir = Path(tmp)
        cache = cache or workdir / "warp-cache"
        cache.mkdir(parents=True, exist_ok=True)
        if any(cache.iterdir()):
            sys.exit(f"{cache} is not empty; the first run must start with an empty cache")
        rows = []
        for index in range(runs):
            figures = run_once(workdir, cache, settings, index)
            rows.append(figures)
            state = "empty cache" if index == 0 else "kept cache"
            print(
                f"run {index + 1} ({state}): first iteration {figures['process_to_first_iteration_s']:.1f}s "
                f"after process start",
                flush=True,
            )
    return rows


IMPORT_GROUPS: dict[str, list[str]] = {
    "Hydra": ["hydra", "omegaconf"],
    "PyTorch": ["torch"],
    "Warp, Newton, MuJoCo-Warp": ["warp", "newton", "mujoco_warp", "newton.solvers:SolverMuJoCo"],
    "Isaac Lab": [
        "isaaclab.envs",
        "isaaclab_newton.physics.newton_manager",
        "isaaclab_newton.sensors.ray_caster.newton_raycast_sensor",
        "isaaclab_newton.assets",
    ],
    "learner (rsl-rl, TensorDict, torch._dynamo)": ["algos.ppo", "torch._dynamo"],
}
"""What a training start imports, in the order it does, grouped by library. Every group is imported by any
``train.py`` start (torch._dynamo by PyTorch's optimizer at its first use, if TensorDict has not imported it)."""

_IMPORT_CHILD = """
import importlib, json, sys, time
groups, device = json.loads(sys.argv[1]), sys.argv[2]
times = {}
for group, names in groups.items():
    began = time.perf_counter()
    for name in names:
        module, _, attribute = name.partition(":")
        loaded = importlib.import_module(module)
        if attribute:
            getattr(loaded, attribute)
    times[group] = time.perf_counter() - began
began = time.perf_counter()
import torch, warp
warp.init()
if device.startswith("cuda"):
    torch.zeros(1, device=device)
    warp.get_device(device).context
times["device start (PyTorch and Warp)"] = time.perf_counter() - began
print(json.dumps(times))
"""


def measure_imports(runs: int, device: str, groups: dict[str, list[str]] | None = None) -> list[dict[str, float]]:
    """Seconds each group of ``groups`` (default :data:`IMPORT_GROUPS`; ``module`` or ``module:attribute``) takes
    to import in a new process, then the device's start, in ``runs`` processes one after another: the part of a
    start that precedes building anything."""
    rows = []
    for _ in range(runs):
        result = subprocess.run(
            [sys.executable, "-c", _IMPORT_CHILD, json.dumps(groups or IMPORT_GROUPS), device],
            cwd=project_root(),
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            sys.exit(f"importing the stack failed:\n{result.stderr[-3000:]}")
        rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
    return rows


def format_imports(rows: list[dict[str, float]], device: str) -> str:
    """One line a group (median and range over the processes), then their sum."""
    lines = [f"\nimporting the stack in a new process, {len(rows)} process(es), device {device}"]
    header = f"{'':<46} {'median':>8} {'range':>14}"
    lines += [header, "-" * len(header)]
    for group in rows[0]:
        values = [row[group] for row in rows]
        lines.append(f"{group:<46} {statistics.median(values):>7.2f}s {min(values):>6.2f}-{max(values):.2f}s")
    totals = [sum(row.values()) for row in rows]
    lines.append(f"{'all of it':<46} {statistics.median(totals):>7.2f}s {min(totals):>6.2f}-{max(totals):.2f}s")
    return "\n".join(lines)


def format_rows(settings: StartSettings, rows: list[dict[str, float]]) -> str:
    """The printed table of every run, then how much sooner the kept cache made the first iteration."""
    lines = [
        f"\ntask={settings.task} device={settings.device} task.num_envs={settings.num_envs} "
        f"algo.num_steps_per_env={settings.steps} algo.max_iterations={settings.iterations}"
    ]
    header = (
        f"{'run':<4} {'cache':<7} {'to simulator ready':>19} {'to first iteration':>19} {'launch to 1st it.':>18} "
        f"{'whole run':>10} {'cache files':>12}"
    )
    lines += [header, "-" * len(header)]
    for index, figures in enumerate(rows):
        lines.append(
            f"{index + 1:<4} {'empty' if index == 0 else 'kept':<7} {figures['process_to_simulator_ready_s']:>18.1f}s "
            f"{figures['process_to_first_iteration_s']:>18.1f}s {figures['launch_to_first_iteration_s']:>17.1f}s "
            f"{figures['total_s']:>9.1f}s {figures['cache_files']:>12}"
        )
    if len(rows) > 1:
        cold, warm = rows[0]["process_to_first_iteration_s"], rows[-1]["process_to_first_iteration_s"]
        lines.append(f"\nkept cache: first iteration {cold - warm:.1f}s sooner ({warm / cold:.0%} of the cold time)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """The command line: measure, then print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="h1_flat", choices=["h1_flat", "h1_rough"])
    parser.add_argument("--num-envs", type=int, default=4)
    parser.add_argument("--steps", type=int, default=4, help="algo.num_steps_per_env")
    parser.add_argument("--iterations", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--runs", type=int, default=2, help="runs in a row sharing the cache (the first is cold)")
    parser.add_argument("overrides", nargs="*", help="more train.py overrides, e.g. task.kernels.backward=true")
    parser.add_argument("--cache", type=Path, help="kernel cache folder to use; must be empty (default: a new one)")
    parser.add_argument(
        "--imports",
        type=int,
        metavar="N",
        help="instead of training: import the stack in N new processes and print what each library took",
    )
    args = parser.parse_args(argv)
    if args.imports is not None:
        if args.imports < 1:
            parser.error(f"--imports takes a number of processes of at least 1, not {args.imports}")
        # Nothing is trained: a training option given with --imports would do nothing.
        given = [
            f"--{name.replace('_', '-')}"
            for name in ("task", "num_envs", "steps", "iterations", "runs", "cache")
            if getattr(args, name) != parser.get_default(name)
        ] + (["train.py overrides"] if args.overrides else [])
        if given:
            parser.error(f"--imports trains nothing and takes only --device; drop {', '.join(given)}")
        print(format_imports(measure_imports(args.imports, args.device), args.device))
        return 0
    settings = StartSettings(
        task=args.task,
        device=args.device,
        num_envs=args.num_envs,
        steps=args.steps,
        iterations=args.iterations,
        overrides=args.overrides,
    )
    rows = measure(settings, args.runs, args.cache)
    print(format_rows(settings, rows))
    return 0
