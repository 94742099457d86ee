"""Benchmark our ``train.py`` against Isaac Lab's own rsl-rl trainer on the same task, robot, envs, seed and iterations.

    python scripts/benchmark.py --quick                       # CPU, 16 envs, a few iterations: minutes
    python scripts/benchmark.py --device cuda --num-envs 4096 --iterations 20 --out bench.json
    python scripts/benchmark.py --learning                    # CPU: mean-reward curves, 3 seeds of each trainer

Each trainer runs as its own process, twice: first with an empty Warp kernel cache (``WARP_CACHE_PATH`` pointed at
a fresh folder), then with the cache that first run filled. Both trainers print rsl-rl's per-iteration block
(``Learning iteration N/M``, ``Steps per second``, ``Collection time``, ``Learning time``); their output is read as
it streams, each line stamped on arrival, so one parser measures both:

- start to first iteration: from launching the process to the block of iteration 0 (cold and warm cache);
- steady env-steps/s: median of rsl-rl's ``Steps per second`` over the iterations after the first, and the same
  from the wall clock between consecutive blocks (which also counts logging and checkpoint work between them);
- collection and learning time: medians over the iterations after the first;
- peak host memory: the process's peak resident set (``wait4``); peak GPU memory: the device's used memory above
  what it used before the launch, sampled by ``nvidia-smi`` every 0.2 s.

The ratios ours / Isaac Lab's follow, and everything is written as JSON (``--out``). ``--trainers`` and
``--phases`` run a part (e.g. one trainer per call on a machine that limits a call's length), and ``--merge``
joins such JSON files into one report.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
ISAACLAB_TASK = "Isaac-Velocity-Rough-H1"
TRAINERS = ("ours", "isaaclab")
PHASES = ("cold", "warm")
SCHEMA = "rlforge-benchmark/1"
STEPS_PER_ENV = 24  # rsl-rl's num_steps_per_env in both trainers' H1 rough settings

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_HEADER = re.compile(r"Learning iteration (\d+)/(\d+)")
_FIELDS = {
    "steps_per_s": re.compile(r"Steps per second:\s*([0-9.]+)"),
    "collect_s": re.compile(r"Collection time:\s*([0-9.]+)s"),
    "learn_s": re.compile(r"Learning time:\s*([0-9.]+)s"),
    "mean_reward": re.compile(r"Mean reward:\s*(-?[0-9.]+(?:e[-+]?\d+)?)"),
    "mean_episode_length": re.compile(r"Mean episode length:\s*([0-9.]+)"),
}


# ------------------------------------------------------------------------------------------------ parsing
def parse_iterations(lines: list[tuple[float, str]]) -> list[dict[str, Any]]:
    """rsl-rl's iteration blocks from timestamped output lines.

    Args:
        lines: ``(seconds, text)`` pairs in the order the process printed them; seconds on any one clock.

    Returns:
        One dict per block: ``iteration``, ``total``, ``time`` (when its header line arrived) and whichever of
        ``steps_per_s``, ``collect_s``, ``learn_s``, ``mean_reward``, ``mean_episode_length`` the block printed.
    """
    blocks: list[dict[str, Any]] = []
    for stamp, raw in lines:
        text = _ANSI.sub("", raw)
        header = _HEADER.search(text)
        if header:
            blocks.append({"iteration": int(header.group(1)), "total": int(header.group(2)), "time": stamp})
            continue
        if not blocks:
            continue
        for name, pattern in _FIELDS.items():
            if name not in blocks[-1]:
                found = pattern.search(text)
                if found:
                    blocks[-1][name] = float(found.group(1))
    return blocks


def _median(values: list[float]) -> float | None:
    return float(statistics.median(values)) if values else None


def summarize_run(blocks: list[dict[str, Any]], *, launched: float, env_steps_per_iteration: int) -> dict[str, Any]:
    """Figures of one process from its parsed blocks; ``launched`` is on the clock of the blocks' ``time``."""
    if not blocks:
        return {"iterations": 0}
    steady = blocks[1:]
    intervals = [b["time"] - a["time"] for a, b in zip(blocks, blocks[1:], strict=False) if b["time"] > a["time"]]
    first = blocks[0]
    return {
        "iterations": len(blocks),
        "start_to_first_iteration_s": first["time"] - launched,
        "first_iteration_s": (first.get("collect_s") or 0.0) + (first.get("learn_s") or 0.0),
        "steady_env_steps_per_s": _median([b["steps_per_s"] for b in steady if "steps_per_s" in b]),
        "steady_wall_env_steps_per_s": _median([env_steps_per_iteration / dt for dt in intervals]),
        "collect_s": _median([b["collect_s"] for b in steady if "collect_s" in b]),
        "learn_s": _median([b["learn_s"] for b in steady if "learn_s" in b]),
        "mean_reward": [b.get("mean_reward") for b in blocks],
    }


# ------------------------------------------------------------------------------------------------ processes
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
    ours_root: str = str(ROOT)
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


def _gpu_used_mib() -> float | None:
    """Memory in use on GPU 0 (MiB), or None where there is no NVIDIA GPU."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", "-i", "0"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        return float(out.stdout.strip().splitlines()[0])
    except (subprocess.SubprocessError, ValueError, IndexError, OSError):
        return None


def run_process(
    command: list[str], *, env: dict[str, str], cwd: Path, log_path: Path, timeout_s: float
) -> dict[str, Any]:
    """Run one training process to its end; its output lines stamped on arrival, its peak memories."""
    baseline_gpu = _gpu_used_mib()
    peak_gpu = [baseline_gpu]
    lines: list[tuple[float, str]] = []
    done = threading.Event()
    launched = time.monotonic()
    process = subprocess.Popen(
        command,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        bufsize=1,
    )

    def read() -> None:
        with open(log_path, "w") as log:
            for line in process.stdout:
                lines.append((time.monotonic(), line.rstrip("\n")))
                log.write(line)

    def sample_gpu() -> None:
        while not done.wait(0.2):
            used = _gpu_used_mib()
            if used is not None and (peak_gpu[0] is None or used > peak_gpu[0]):
                peak_gpu[0] = used

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    sampler = threading.Thread(target=sample_gpu, daemon=True) if baseline_gpu is not None else None
    if sampler:
        sampler.start()
    killer = threading.Timer(timeout_s, process.kill)
    killer.start()
    try:
        _, status, usage = os.wait4(process.pid, 0)
    finally:
        killer.cancel()
        done.set()
    process.returncode = os.waitstatus_to_exitcode(status)
    reader.join(timeout=30)
    ended = time.monotonic()
    return {
        "returncode": process.returncode,
        "launched": launched,
        "wall_s": ended - launched,
        "lines": lines,
        # ru_maxrss is in KiB on Linux.
        "peak_host_mib": usage.ru_maxrss / 1024.0,
        "peak_gpu_mib": None if baseline_gpu is None else peak_gpu[0] - baseline_gpu,
    }


def run_trainer(
    trainer: str,
    settings: Settings,
    *,
    workdir: Path,
    phases: tuple[str, ...],
    timeout_s: float,
    cache_dir: Path | None = None,
) -> dict[str, Any]:
    """Run ``trainer`` once per phase (cold: empty kernel cache; warm: the cache the previous phase filled)."""
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
        env = {**os.environ, "WARP_CACHE_PATH": str(cache), "CUDA_CACHE_PATH": str(cuda_cache), "PYTHONUNBUFFERED": "1"}
        log_path = workdir / f"{trainer}-{phase}.log"
        print(f"[benchmark] {trainer} ({phase} kernel cache): {' '.join(command)}", flush=True)
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
        f"{k}={_fmt(v)}" for k, v in figures.items() if k not in ("mean_reward", "log") and not isinstance(v, list)
    )


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


# ------------------------------------------------------------------------------------------------ report
# (label, key in the trainer's figures) in the printed table's order; "higher" marks figures where more is better.
ROWS = [
    ("start to first iteration, cold cache (s)", "start_to_first_iteration_cold_s"),
    ("start to first iteration, warm cache (s)", "start_to_first_iteration_warm_s"),
    ("first iteration, cold cache (s)", "first_iteration_cold_s"),
    ("steady env-steps/s (rsl-rl, median)", "steady_env_steps_per_s"),
    ("steady env-steps/s (wall clock, median)", "steady_wall_env_steps_per_s"),
    ("collection per iteration (s)", "collect_s"),
    ("learning per iteration (s)", "learn_s"),
    ("peak host memory (MiB)", "peak_host_mib"),
    ("peak GPU memory (MiB)", "peak_gpu_mib"),
]


def trainer_figures(result: dict[str, Any]) -> dict[str, Any]:
    """One trainer's headline figures from its phases: steady figures from the warm run where there is one."""
    phases = result["phases"]
    cold, warm = phases.get("cold", {}), phases.get("warm", {})
    steady_source = warm if warm.get("iterations", 0) > 1 else cold
    peaks_host = [p["peak_host_mib"] for p in phases.values() if p.get("peak_host_mib") is not None]
    peaks_gpu = [p["peak_gpu_mib"] for p in phases.values() if p.get("peak_gpu_mib") is not None]
    return {
        "start_to_first_iteration_cold_s": cold.get("start_to_first_iteration_s"),
        "start_to_first_iteration_warm_s": warm.get("start_to_first_iteration_s"),
        "first_iteration_cold_s": cold.get("first_iteration_s"),
        "steady_env_steps_per_s": steady_source.get("steady_env_steps_per_s"),
        "steady_wall_env_steps_per_s": steady_source.get("steady_wall_env_steps_per_s"),
        "collect_s": steady_source.get("collect_s"),
        "learn_s": steady_source.get("learn_s"),
        "peak_host_mib": max(peaks_host) if peaks_host else None,
        "peak_gpu_mib": max(peaks_gpu) if peaks_gpu else None,
    }


def ratios(ours: dict[str, Any], isaaclab: dict[str, Any]) -> dict[str, float | None]:
    """ours / Isaac Lab's for every headline figure both have."""
    out: dict[str, float | None] = {}
    for _, key in ROWS:
        a, b = ours.get(key), isaaclab.get(key)
        out[key] = a / b if a is not None and b not in (None, 0) else None
    return out


def build_report(results: dict[str, dict[str, Any]], settings: dict[str, Any], machine: dict[str, Any]) -> dict:
    """The JSON document: settings, machine, each trainer's runs and headline figures, and the ratios."""
    trainers = {name: {**res, "figures": trainer_figures(res)} for name, res in results.items()}
    report = {"schema": SCHEMA, "settings": settings, "machine": machine, "trainers": trainers, "ratios": None}
    if "ours" in trainers and "isaaclab" in trainers:
        report["ratios"] = ratios(trainers["ours"]["figures"], trainers["isaaclab"]["figures"])
    return report


def format_table(report: dict[str, Any]) -> str:
    """The printed table: one row per figure, one column per trainer, then ours / Isaac Lab's."""
    trainers = report["trainers"]
    header = (
        f"{'figure':<44}"
        + "".join(f"{name:>14}" for name in trainers)
        + (f"{'ours/isaaclab':>15}" if report.get("ratios") else "")
    )
    lines = [header, "-" * len(header)]
    for label, key in ROWS:
        row = f"{label:<44}" + "".join(f"{_fmt(t['figures'].get(key)):>14}" for t in trainers.values())
        if report.get("ratios"):
            value = report["ratios"].get(key)
            row += f"{'-' if value is None else f'{value:.3f}':>15}"
        lines.append(row)
    return "\n".join(lines)


def validate_report(report: dict[str, Any]) -> None:
    """Raise ValueError unless ``report`` has the shape :func:`build_report` writes."""
    for key in ("schema", "settings", "machine", "trainers", "ratios"):
        if key not in report:
            raise ValueError(f"benchmark report lacks '{key}'")
    if report["schema"] != SCHEMA:
        raise ValueError(f"unknown benchmark schema {report['schema']!r}")
    for name, trainer in report["trainers"].items():
        if name not in TRAINERS:
            raise ValueError(f"unknown trainer '{name}'")
        missing = [key for _, key in ROWS if key not in trainer.get("figures", {})]
        if missing:
            raise ValueError(f"trainer '{name}' lacks figures {missing}")
        for phase in trainer.get("phases", {}):
            if phase not in PHASES:
                raise ValueError(f"trainer '{name}' has unknown phase '{phase}'")


def merge_reports(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """Join reports of the same settings (say one trainer or phase each) into one; later phases win."""
    if not reports:
        raise ValueError("nothing to merge")
    settings = reports[0]["settings"]
    results: dict[str, dict[str, Any]] = {}
    for report in reports:
        validate_report(report)
        if report["settings"] != settings:
            raise ValueError(f"cannot merge runs of different settings: {report['settings']} vs {settings}")
        for name, trainer in report["trainers"].items():
            into = results.setdefault(name, {"command": trainer["command"], "phases": {}})
            into["phases"].update(trainer["phases"])
    return build_report(results, settings, reports[-1]["machine"])


def machine_info(device: str) -> dict[str, Any]:
    """Where the benchmark ran."""
    info: dict[str, Any] = {
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": device,
    }
    try:
        info["cpu_model"] = next(
            line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")
        )
    except (OSError, StopIteration):
        pass
    if shutil.which("nvidia-smi"):
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
        )
        info["gpu"] = out.stdout.strip()
    try:
        info["load_average"] = os.getloadavg()
    except OSError:
        pass
    return info


# ------------------------------------------------------------------------------------------------ learning
def learning_comparison(curves: dict[str, dict[int, list[float | None]]]) -> dict[str, Any]:
    """Our mean reward curve (mean over our seeds) against the band of Isaac Lab's seeds, iteration by iteration.

    Args:
        curves: ``{"ours": {seed: [reward per iteration]}, "isaaclab": {...}}``; None where no episode had ended.
    """
    ours = list(curves["ours"].values())
    theirs = list(curves["isaaclab"].values())
    length = min(len(c) for c in ours + theirs)
    rows = []
    for i in range(length):
        mine = [c[i] for c in ours if c[i] is not None]
        band = [c[i] for c in theirs if c[i] is not None]
        if len(mine) < len(ours) or len(band) < len(theirs):
            continue  # an iteration before some run's first finished episode
        mean = statistics.mean(mine)
        rows.append(
            {
                "iteration": i,
                "ours_mean": mean,
                "ours_min": min(mine),
                "ours_max": max(mine),
                "isaaclab_mean": statistics.mean(band),
                "isaaclab_min": min(band),
                "isaaclab_max": max(band),
                "within": min(band) <= mean <= max(band),
            }
        )
    inside = sum(r["within"] for r in rows)
    return {
        "iterations_compared": len(rows),
        "iterations_within": inside,
        "fraction_within": inside / len(rows) if rows else None,
        "rows": rows,
    }


def run_learning(args: argparse.Namespace, settings: Settings, workdir: Path) -> dict[str, Any]:
    """Both trainers over ``args.seeds``; their mean reward per iteration and the comparison."""
    curves: dict[str, dict[int, list[float | None]]] = {name: {} for name in TRAINERS}
    runs: dict[str, dict[int, Any]] = {name: {} for name in TRAINERS}
    for seed in args.seeds:
        for trainer in TRAINERS:
            seeded = Settings(**{**settings.__dict__, "seed": seed})
            # Kernels compiled once per trainer are reused by its later seeds: only learning is compared here.
            result = run_trainer(
                trainer,
                seeded,
                workdir=workdir / f"seed{seed}",
                phases=("warm",),
                timeout_s=args.timeout,
                cache_dir=workdir / f"warp-cache-{trainer}",
            )
            phase = result["phases"]["warm"]
            curves[trainer][seed] = phase["mean_reward"]
            runs[trainer][seed] = {"command": result["command"], **{k: v for k, v in phase.items()}}
    comparison = learning_comparison(curves)
    return {
        "schema": SCHEMA + "/learning",
        "settings": {**settings.__dict__, "seeds": args.seeds},
        "machine": machine_info(settings.device),
        "curves": curves,
        "runs": runs,
        "comparison": comparison,
    }


def format_learning(report: dict[str, Any]) -> str:
    comparison = report["comparison"]
    lines = [
        f"{'iteration':>9} {'ours mean':>10} {'isaaclab min':>13} {'isaaclab mean':>14} {'isaaclab max':>13}"
        f" {'within':>7}"
    ]
    for row in comparison["rows"]:
        lines.append(
            f"{row['iteration']:>9} {row['ours_mean']:>10.3f} {row['isaaclab_min']:>13.3f} "
            f"{row['isaaclab_mean']:>14.3f} {row['isaaclab_max']:>13.3f} {str(row['within']):>7}"
        )
    lines.append(
        f"our mean reward lies within Isaac Lab's spread of {len(report['curves']['isaaclab'])} seeds at "
        f"{comparison['iterations_within']} of {comparison['iterations_compared']} iterations"
    )
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ main
def project_usd() -> str:
    """Our H1 as USD (converted once, then cached): the robot both trainers are given."""
    sys.path.insert(0, str(ROOT))
    from tasks.isaaclab_env import PROJECT_H1
    from tasks.robots.usd_writer import convert_to_usd

    return str(convert_to_usd(PROJECT_H1))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="CPU, 16 envs, 6 iterations, 4x4 terrain: minutes")
    parser.add_argument(
        "--learning",
        action="store_true",
        help="compare mean reward curves over --seeds instead of timing (CPU by default)",
    )
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda where nvidia-smi is, else cpu)")
    parser.add_argument("--num-envs", type=int, default=None)
    parser.add_argument("--iterations", type=int, default=None)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds of --learning")
    parser.add_argument("--terrain-rows", type=int, default=None, help="terrain generator rows (default: the task's)")
    parser.add_argument("--terrain-cols", type=int, default=None)
    parser.add_argument("--trainers", default="ours,isaaclab", help="comma-separated subset of ours,isaaclab")
    parser.add_argument("--phases", default="cold,warm", help="comma-separated subset of cold,warm")
    parser.add_argument("--usd", default=None, help="robot USD for both trainers (default: our converted H1)")
    parser.add_argument("--workdir", type=Path, default=None, help="keep logs and runs here (default: a temp dir)")
    parser.add_argument(
        "--warp-cache",
        type=Path,
        default=None,
        help="kernel cache folder of every run (default: one per trainer under the workdir)",
    )
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds allowed per training process")
    parser.add_argument("--out", type=Path, default=None, help="write the JSON report here")
    parser.add_argument("--merge", type=Path, nargs="+", default=None, help="join these JSON reports, run nothing")
    parser.add_argument(
        "--ours-root",
        type=Path,
        default=ROOT,
        help="source tree whose train.py is 'ours' (to compare versions of the loop)",
    )
    parser.add_argument("--ours-arg", action="append", default=[], help="extra override for our train.py")
    parser.add_argument("--isaaclab-arg", action="append", default=[], help="extra argument for Isaac Lab's trainer")
    args = parser.parse_args(argv)
    if args.device is None:
        args.device = "cpu" if args.quick or args.learning or shutil.which("nvidia-smi") is None else "cuda"
    small = args.quick or args.learning
    if args.num_envs is None:
        args.num_envs = 16 if small else 4096
    if args.iterations is None:
        args.iterations = 25 if args.learning else 6 if args.quick else 20
    if small and args.terrain_rows is None:
        args.terrain_rows, args.terrain_cols = 4, 4
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.merge:
        report = merge_reports([json.loads(path.read_text()) for path in args.merge])
        print(format_table(report))
        if args.out:
            args.out.write_text(json.dumps(report, indent=2))
        return 0
    settings = Settings(
        device=args.device,
        num_envs=args.num_envs,
        iterations=args.iterations,
        seed=args.seed,
        usd_path=args.usd or project_usd(),
        terrain_rows=args.terrain_rows,
        terrain_cols=args.terrain_cols,
        ours_root=str(args.ours_root.resolve()),
        extra_ours=args.ours_arg,
        extra_isaaclab=args.isaaclab_arg,
    )
    with tempfile.TemporaryDirectory(prefix="rlforge-bench-") as tmp:
        workdir = (args.workdir or Path(tmp)).resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        if args.learning:
            report = run_learning(args, settings, workdir)
            print(format_learning(report))
        else:
            trainers = [t for t in args.trainers.split(",") if t]
            phases = tuple(p for p in args.phases.split(",") if p)
            unknown = [t for t in trainers if t not in TRAINERS] + [p for p in phases if p not in PHASES]
            if unknown:
                sys.exit(f"unknown trainers or phases: {unknown}")
            results = {
                t: run_trainer(
                    t, settings, workdir=workdir, phases=phases, timeout_s=args.timeout, cache_dir=args.warp_cache
                )
                for t in trainers
            }
            report = build_report(results, settings.__dict__, machine_info(args.device))
            print(format_table(report))
        if args.out:
            args.out.write_text(json.dumps(report, indent=2))
            print(f"[benchmark] wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
