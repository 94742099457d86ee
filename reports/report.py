"""Account for a run or a whole sweep: a terminal table, a PNG and an HTML page with the same figures.

    python scripts/report.py outputs/h1_rough/2026-11-24_10-00-00
    python scripts/report.py outputs/multirun/2026-11-24_10-00-00 --rank-by Metrics/base_velocity/error_vel_xy --lowest
    python scripts/report.py <run> --table training_job --instance-type ml.g5.2xlarge   # priced as a Training Job
    python scripts/report.py outputs/multirun/2026-11-24_10-00-00 --videos      # a clip per point, beside its curves

Writes report.png, report.html and report.json into the run (or sweep) directory unless --out says elsewhere. Runs
with clips (logger.video_interval, play.py --video) show them beside their curves; --videos makes the missing ones.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from core import accounting
from reports.figure import figure
from reports.page import html_grid, html_page, html_rows
from reports.ranking import rank_value, sort_value
from reports.rows import attempt_grid, phase_grid, run_rows
from reports.text import duration, grid, money, number, text_table
from video.files import newest_clip


def report(
    target: Path,
    *,
    out_dir: Path | None = None,
    prices_path: Path | None = None,
    instance_type: str | None = None,
    table: str | None = None,
    rank_key: str | None = None,
    lowest_first: bool = False,
    make_clips: bool = False,
    clip_seconds: float = 10.0,
    clip_envs: int = 4,
) -> dict[str, Any]:
    """Print the report of a run or sweep directory and write its PNG, HTML and JSON; returns the JSON data.

    Each run's clip is shown beside its curves when it has one; ``make_clips`` plays the newest checkpoint of a run
    without one (``clip_envs`` envs, at most ``clip_seconds`` of env 0) to make it."""
    target = Path(target).resolve()
    prices = accounting.load_prices(prices_path)
    if accounting.is_run_dir(target):
        paths = [target]
    else:
        paths = accounting.sweep_points(target)
        if not paths:
            raise SystemExit(f"{target} is neither a run directory (no ledger.jsonl) nor a folder of runs")
    points = []
    for path in paths:
        acc = accounting.account(path, prices, instance_type=instance_type, table=table)
        points.append((path.name, path, acc))
    out_dir = Path(out_dir).resolve() if out_dir else target
    key = rank_key or next((acc.objective_key for *_, acc in points if acc.objective_key), None)
    png = figure(points, key, out_dir / "report.png")
    data: dict[str, Any] = {"target": str(target), "runs": []}

    if len(points) == 1:
        sections = _run_sections(target, points[0][2])
        data["runs"].append({**points[0][2].as_dict(), "overrides": accounting.read_overrides(target)})
    else:
        sections = _sweep_sections(target, points, key, lowest_first, data)

    gait = _gait_section(points, out_dir, make_clips, clip_seconds, clip_envs, data)
    if gait is not None:
        sections.insert(1, gait)
    page = out_dir / "report.html"
    page.write_text(html_page(f"rlforge report: {target.name}", sections, png))
    (out_dir / "report.json").write_text(json.dumps(data, indent=2, default=str))
    print(f"\n  figure  {png}\n  page    {page}\n  data    {out_dir / 'report.json'}")
    return data


def _gait_section(
    points: list[tuple[str, Path, accounting.RunAccount]],
    out_dir: Path,
    make_clips: bool,
    clip_seconds: float,
    clip_envs: int,
    data: dict[str, Any],
) -> tuple[str, str] | None:
    """The runs' clips beside their curves, as an HTML section; None when no run has a clip and none is made."""
    from reports.gait import gait_section

    if not make_clips and all(newest_clip(path) is None for _, path, _ in points):
        return None
    overrides = accounting.varying_overrides({name: accounting.read_overrides(path) for name, path, _ in points})
    table, clips = gait_section(
        [(name, path, overrides[name]) for name, path, _ in points],
        out_dir,
        make=make_clips,
        seconds=clip_seconds,
        num_envs=clip_envs,
    )
    data["clips"] = clips
    print("\n" + grid(["point", "clip"], [[c["point"], c["clip"] or "-"] for c in clips]))
    return ("Gait: clips and curves", table)


def _run_sections(target: Path, acc: accounting.RunAccount) -> list[tuple[str, str]]:
    """Print the figures, attempts and SageMaker phases of the run at ``target``; return them as HTML sections."""
    rows = run_rows(acc)
    print(f"\nrun report: {target}\n")
    print(text_table(rows))
    attempt_header, attempts = attempt_grid(acc)
    print("\n" + grid(attempt_header, attempts))
    sections = [("Figures", html_rows(rows)), ("Attempts", html_grid(attempt_header, attempts))]
    if acc.sagemaker_phases:
        phase_header, phases = phase_grid(acc)
        print("\n" + grid(phase_header, phases))
        sections.append(("SageMaker phases", html_grid(phase_header, phases)))
    return sections


def _sweep_sections(
    target: Path,
    points: list[tuple[str, Path, accounting.RunAccount]],
    key: str | None,
    lowest_first: bool,
    data: dict[str, Any],
) -> list[tuple[str, str]]:
    """Print a sweep's totals and its points ranked by ``key``; add the points to ``data``; return HTML sections."""
    overrides = accounting.varying_overrides({name: accounting.read_overrides(path) for name, path, _ in points})
    ranked = sorted(points, key=lambda p: sort_value(rank_value(p[1], p[2], key), lowest_first))
    header = [
        "rank",
        "point",
        f"final {key}",
        "iters",
        "redone",
        "interrupts",
        "to 1st iter",
        "wall-clock",
        "useful",
        "cost",
        "overrides",
    ]
    rows_grid = []
    for rank, (name, path, acc) in enumerate(ranked, start=1):
        rows_grid.append(
            [
                str(rank),
                name,
                number(rank_value(path, acc, key)),
                str(acc.iterations_completed),
                str(acc.iterations_redone),
                str(acc.interruptions),
                duration(acc.time_to_first_iteration_s),
                duration(acc.wall_clock_s),
                f"{100 * acc.useful_fraction:.0f}%",
                money(acc.cost, acc.currency),
                " ".join(overrides[name]),
            ]
        )
        data["runs"].append(
            {
                **acc.as_dict(),
                "point": name,
                "rank": rank,
                "rank_value": rank_value(path, acc, key),
                "overrides": overrides[name],
            }
        )
    billed = sum(acc.billed_s for *_, acc in points)
    useful = sum(acc.useful_s for *_, acc in points)
    costs = [acc.cost for *_, acc in points]
    total_cost = sum(costs) if all(c is not None for c in costs) else None
    currency = points[0][2].currency
    totals = [
        ("sweep", str(target)),
        ("points", str(len(points))),
        ("ranked by", f"{key} ({'lowest' if lowest_first else 'highest'} first, mean of the last 5 iterations)"),
        ("billed time, all points", duration(billed)),
        ("useful-training fraction, all points", f"{100 * useful / billed:.1f}%" if billed else "-"),
        ("estimated cost, all points", money(total_cost, currency)),
        (
            "cost per useful training hour",
            money(total_cost / (useful / 3600) if total_cost is not None and useful else None, currency),
        ),
    ]
    print(f"\nsweep report: {target}\n")
    print(text_table(totals))
    print("\n" + grid(header, rows_grid))
    sections = [("Sweep", html_rows(totals)), ("Points, ranked", html_grid(header, rows_grid))]
    for name, _, acc in points:
        sections.append((f"Point {name}", html_rows(run_rows(acc))))
    data.update(ranked_by=key, lowest_first=lowest_first)
    return sections


def main(argv: list[str] | None = None) -> int:
    """The command line: report on the target directory."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("target", type=Path, help="a run directory, or a sweep directory holding run directories")
    parser.add_argument("--out", type=Path, help="folder for report.png/.html/.json (default: the target)")
    parser.add_argument("--prices", type=Path, help="price table (default: conf/prices.yaml)")
    parser.add_argument("--instance-type", help="price the runs as this instance type instead of the recorded one")
    parser.add_argument(
        "--table",
        choices=["local", "hyperpod", "training_job"],
        help="price table and billing model (default: the one of the run's launcher)",
    )
    parser.add_argument("--rank-by", help="metric that ranks sweep points (default: the runs' objective)")
    parser.add_argument("--lowest", action="store_true", help="rank the lowest value first (errors, costs)")
    parser.add_argument(
        "--videos",
        action="store_true",
        help="make a clip for every run that has none, from its newest checkpoint (needs the simulator and EGL)",
    )
    parser.add_argument("--video-seconds", type=float, default=10.0, help="longest clip made by --videos (default 10)")
    parser.add_argument("--video-envs", type=int, default=4, help="envs played for a clip made by --videos (default 4)")
    args = parser.parse_args(argv)
    report(
        args.target,
        out_dir=args.out,
        prices_path=args.prices,
        instance_type=args.instance_type,
        table=args.table,
        rank_key=args.rank_by,
        lowest_first=args.lowest,
        make_clips=args.videos,
        clip_seconds=args.video_seconds,
        clip_envs=args.video_envs,
    )
    return 0
