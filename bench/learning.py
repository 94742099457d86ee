"""Whether our trainer learns like Isaac Lab's: mean reward per iteration over several seeds of each."""

from __future__ import annotations

import statistics
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from bench.machine import machine_info
from bench.report import SCHEMA
from bench.trainer_runs import run_trainer
from bench.trainers import TRAINERS, Settings


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


def run_learning(settings: Settings, workdir: Path, *, seeds: list[int], timeout_s: float) -> dict[str, Any]:
    """Both trainers over ``seeds``; their mean reward per iteration and the comparison, as a JSON document."""
    curves: dict[str, dict[int, list[float | None]]] = {name: {} for name in TRAINERS}
    runs: dict[str, dict[int, Any]] = {name: {} for name in TRAINERS}
    for seed in seeds:
        for trainer in TRAINERS:
            # Kernels compiled once per trainer are reused by its later seeds: only learning is compared here.
            result = run_trainer(
                trainer,
                replace(settings, seed=seed),
                workdir=workdir / f"seed{seed}",
                phases=("warm",),
                timeout_s=timeout_s,
                cache_dir=workdir / f"warp-cache-{trainer}",
            )
            phase = result["phases"]["warm"]
            curves[trainer][seed] = phase["mean_reward"]
            runs[trainer][seed] = {"command": result["command"], **phase}
    return {
        "schema": SCHEMA + "/learning",
        "settings": {**asdict(settings), "seeds": seeds},
        "machine": machine_info(settings.device),
        "curves": curves,
        "runs": runs,
        "comparison": learning_comparison(curves),
    }


def format_learning(report: dict[str, Any]) -> str:
    """The printed comparison: one row per iteration compared, then how often ours lay within Isaac Lab's band."""
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
