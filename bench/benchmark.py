"""Benchmark our ``train.py`` against Isaac Lab's own rsl-rl trainer on the same task, robot, envs, seed and iterations.

    python scripts/benchmark.py --quick                       # CPU, 16 envs, a few iterations: minutes
    python scripts/benchmark.py --device cuda --num-envs 4096 --iterations 20 --out bench.json
    python scripts/benchmark.py --learning                    # CPU: learning curves, 3 seeds of each trainer
    python scripts/benchmark.py --device cuda --num-envs 4096 --task h1_flat --frontend warp   # both on Warp

    # learning on two GPUs: one trainer per GPU (same settings, 2 seeds each), then one report of both
    LEARN="--learning --device cuda --num-envs 4096 --iterations 300 --seeds 0 1 --timeout 7200"
    LEARN="$LEARN --terrain-rows 10 --terrain-cols 20"        # the task's terrain (--learning's default is 4 x 4)
    CUDA_VISIBLE_DEVICES=0 python scripts/benchmark.py $LEARN --trainers ours --out learn-ours.json &
    CUDA_VISIBLE_DEVICES=1 python scripts/benchmark.py $LEARN --trainers isaaclab --out learn-isaaclab.json &
    wait
    python scripts/benchmark.py --merge learn-ours.json learn-isaaclab.json --out learning.json

``--task`` picks our task (``h1_rough``, ``h1_flat``); Isaac Lab's trainer runs the Isaac Lab task it starts from, on
our ground plane where the task is flat, and ours gets the network widths of Isaac Lab's rsl-rl settings for it. ``--frontend``
(``torch`` or ``warp``) sets both trainers' frontend (ours: ``task.frontend``, Isaac Lab's: ``--frontend``);
``--ours-frontend`` and ``--isaaclab-frontend`` set one. A frontend Isaac Lab's trainer refuses for the task (its
Warp frontend has no rough-terrain height scan) is refused before anything runs.

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

``--learning`` runs each trainer of ``--trainers`` once per seed of ``--seeds``, one run after another, and compares
three curves of rsl-rl's block: ``Mean reward``, ``Mean episode length`` and, for a task with a terrain curriculum,
``Curriculum/terrain_levels``. For each, our mean over seeds at an iteration is judged against the band (min..max)
of Isaac Lab's seeds there. A report of one trainer holds its curves only; ``--merge`` joins learning reports of
the same settings (seeds aside) and compares them. Timing and learning reports are not merged together.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.learning import format_learning, is_learning_report, merge_learning_reports, run_learning
from bench.machine import machine_info
from bench.report import PHASES, build_report, format_table, merge_reports
from bench.trainer_runs import run_trainer
from bench.trainers import FRONTENDS, TRAINERS, Settings, isaaclab_warp_refusal, project_usd, task_settings
from core.rundir import project_root


def run_benchmark(
    settings: Settings,
    workdir: Path,
    *,
    trainers: list[str],
    phases: tuple[str, ...],
    timeout_s: float,
    cache_dir: Path | None = None,
) -> dict[str, Any]:
    """Every trainer of ``trainers`` once per phase; the JSON report of them all."""
    unknown = [t for t in trainers if t not in TRAINERS] + [p for p in phases if p not in PHASES]
    if unknown:
        raise SystemExit(f"unknown trainers or phases: {unknown}")
    results = {
        t: run_trainer(t, settings, workdir=workdir, phases=phases, timeout_s=timeout_s, cache_dir=cache_dir)
        for t in trainers
    }
    return build_report(results, asdict(settings), machine_info(settings.device))


def merge_report_files(paths: list[Path]) -> dict[str, Any]:
    """The report joining the JSON reports at ``paths``: all timing reports or all learning reports.

    Raises:
        ValueError: timing and learning reports are mixed, or the reports cannot be merged (different settings)."""
    reports = [json.loads(Path(path).read_text()) for path in paths]
    learning = [str(path) for path, report in zip(paths, reports, strict=True) if is_learning_report(report)]
    timing = [str(path) for path, report in zip(paths, reports, strict=True) if not is_learning_report(report)]
    if learning and timing:
        raise ValueError(
            "cannot merge timing reports with learning reports: "
            f"learning: {', '.join(learning)}; timing: {', '.join(timing)}"
        )
    return merge_learning_reports(reports) if learning else merge_reports(reports)


LEARNING_ITERATIONS_AT_SCALE = 300
"""Iterations of ``--learning`` on a GPU by default: enough for the H1 to walk on rough terrain at 4096 envs."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line's options, with the sizes of ``--quick`` and ``--learning`` filled in."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="CPU, 16 envs, 6 iterations, 4x4 terrain: minutes")
    parser.add_argument(
        "--learning",
        action="store_true",
        help="compare learning curves (mean reward, episode length, terrain level) over --seeds of --trainers "
        "instead of timing (CPU by default: 16 envs, 4x4 terrain, 25 iterations; with --device cuda: 4096 envs, "
        f"the task's terrain, {LEARNING_ITERATIONS_AT_SCALE} iterations)",
    )
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda where nvidia-smi is, else cpu)")
    parser.add_argument("--num-envs", type=int, default=None)
    parser.add_argument("--iterations", type=int, default=None)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds of --learning")
    parser.add_argument("--terrain-rows", type=int, default=None, help="terrain generator rows (default: the task's)")
    parser.add_argument("--terrain-cols", type=int, default=None)
    parser.add_argument("--task", default="h1_rough", help="our task (conf/task/), e.g. h1_rough or h1_flat")
    parser.add_argument("--frontend", choices=FRONTENDS, default="torch", help="both trainers' environment frontend")
    parser.add_argument("--ours-frontend", choices=FRONTENDS, default=None, help="our frontend (default: --frontend)")
    parser.add_argument(
        "--isaaclab-frontend", choices=FRONTENDS, default=None, help="Isaac Lab's frontend (default: --frontend)"
    )
    parser.add_argument("--trainers", default="ours,isaaclab", help="comma-separated subset of ours,isaaclab")
    parser.add_argument(
        "--phases", default=None, help="comma-separated subset of cold,warm (default: both; --learning runs warm only)"
    )
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
        default=project_root(),
        help="source tree whose train.py is 'ours' (to compare versions of the loop)",
    )
    parser.add_argument("--ours-arg", action="append", default=[], help="extra override for our train.py")
    parser.add_argument("--isaaclab-arg", action="append", default=[], help="extra argument for Isaac Lab's trainer")
    args = parser.parse_args(argv)
    if args.learning and args.phases is not None:
        parser.error("--phases times cold and warm starts; --learning runs each seed once, warm (drop --phases)")
    args.phases = args.phases or "cold,warm"
    if args.device is None:
        args.device = "cpu" if args.quick or args.learning or shutil.which("nvidia-smi") is None else "cuda"
    # --quick is small everywhere; --learning is small on the CPU and at scale on a GPU (the task's terrain).
    small = args.quick or (args.learning and args.device == "cpu")
    if args.num_envs is None:
        args.num_envs = 16 if small else 4096
    if args.iterations is None:
        args.iterations = (25 if small else LEARNING_ITERATIONS_AT_SCALE) if args.learning else 6 if args.quick else 20
    if small and args.terrain_rows is None:
        args.terrain_rows, args.terrain_cols = 4, 4
    args.ours_frontend = args.ours_frontend or args.frontend
    args.isaaclab_frontend = args.isaaclab_frontend or args.frontend
    return args


def main(argv: list[str] | None = None) -> int:
    """The command line: merge reports, compare learning, or time both trainers; print and write the report."""
    args = parse_args(argv)
    if args.merge:
        try:
            report = merge_report_files(args.merge)
        except ValueError as error:
            raise SystemExit(f"[benchmark] {error}") from None
        print(format_learning(report) if is_learning_report(report) else format_table(report))
        if args.out:
            args.out.write_text(json.dumps(report, indent=2))
        return 0
    trainers = [t for t in args.trainers.split(",") if t]
    unknown = [t for t in trainers if t not in TRAINERS]
    if unknown or not trainers:
        raise SystemExit(f"--trainers must be a comma-separated subset of {','.join(TRAINERS)}, not {args.trainers!r}")
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
        ours_frontend=args.ours_frontend,
        isaaclab_frontend=args.isaaclab_frontend,
        **task_settings(args.task),
    )
    if "isaaclab" in trainers and settings.isaaclab_frontend == "warp":
        refusal = isaaclab_warp_refusal(settings.isaaclab_task)
        if refusal:
            raise SystemExit(
                f"Isaac Lab's trainer cannot run {settings.isaaclab_task} with --frontend warp:\n  {refusal}\n"
                f"Use --isaaclab-frontend torch (ours still runs task.frontend={settings.ours_frontend}), or a task "
                "its Warp frontend supports (--task h1_flat)."
            )
    print(
        f"[benchmark] {settings.task}: ours with task.frontend={settings.ours_frontend}, Isaac Lab's "
        f"{settings.isaaclab_task} with --frontend {settings.isaaclab_frontend}",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="rlforge-bench-") as tmp:
        workdir = (args.workdir or Path(tmp)).resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        if args.learning:
            report = run_learning(
                settings,
                workdir,
                seeds=args.seeds,
                timeout_s=args.timeout,
                trainers=trainers,
                cache_dir=args.warp_cache,
            )
            print(format_learning(report))
        else:
            report = run_benchmark(
                settings,
                workdir,
                trainers=trainers,
                phases=tuple(p for p in args.phases.split(",") if p),
                timeout_s=args.timeout,
                cache_dir=args.warp_cache,
            )
            print(format_table(report))
        if args.out:
            args.out.write_text(json.dumps(report, indent=2))
            print(f"[benchmark] wrote {args.out}")
    return 0
