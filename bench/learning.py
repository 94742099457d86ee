"""Whether our trainer learns like Isaac Lab's: mean reward, mean episode length and terrain level per iteration over
several seeds of each, our mean over seeds judged against the band of Isaac Lab's seeds.

A report may hold one trainer's runs only (say one trainer per GPU); :func:`merge_learning_reports` joins such
reports of equal settings and compares them."""

from __future__ import annotations

import statistics
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from bench.machine import machine_info
from bench.report import SCHEMA, settings_differences, unused_settings
from bench.trainer_runs import run_trainer
from bench.trainers import TRAINERS, Settings

LEARNING_SCHEMA = SCHEMA + "/learning"

METRICS: dict[str, str] = {
    "mean_reward": "mean reward",
    "mean_episode_length": "mean episode length",
    "terrain_level": "terrain level",
}
"""The compared figures of rsl-rl's block (the per-iteration curves of :func:`bench.logparse.summarize_run`) and
their printed names."""
OPTIONAL_METRICS = frozenset({"terrain_level"})
"""Figures only some tasks print (the terrain level: tasks with a terrain curriculum); a trainer none of whose runs
printed one has no curve of it, and the figure is not compared."""
_DECIMALS = {"mean_reward": 3, "mean_episode_length": 1, "terrain_level": 3}
SEED_SETTINGS = ("seed", "seeds")
"""Settings that may differ between learning reports that are merged: each run has its own seed."""

Curves = dict[str, dict[int, list[float | None]]]
"""``{trainer: {seed: [value per iteration, None where the block lacked it]}}``."""


def learning_comparison(curves: Curves) -> dict[str, Any]:
    """Our curve (mean over our seeds) against the band of Isaac Lab's seeds, iteration by iteration.

    Iterations where any run lacks a value (before its first finished episode) are left out.

    Args:
        curves: ``{"ours": {seed: [value per iteration]}, "isaaclab": {...}}``; None where no episode had ended.
    """
    ours = list(curves["ours"].values())
    theirs = list(curves["isaaclab"].values())
    length = min((len(c) for c in ours + theirs), default=0) if ours and theirs else 0
    rows = []
    for i in range(length):
        mine = [c[i] for c in ours if c[i] is not None]
        band = [c[i] for c in theirs if c[i] is not None]
        if len(mine) < len(ours) or len(band) < len(theirs):
            continue
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
        "isaaclab_seeds": len(theirs),
        "ours_seeds": len(ours),
        "iterations_compared": len(rows),
        "iterations_within": inside,
        "fraction_within": inside / len(rows) if rows else None,
        "rows": rows,
    }


def metric_curves(runs: dict[str, dict[int, dict[str, Any]]]) -> dict[str, Curves]:
    """Each metric's curves from the runs ``{trainer: {seed: run figures}}``: ``{metric: {trainer: {seed: curve}}}``.

    An optional metric (:data:`OPTIONAL_METRICS`) gets a trainer's curves only where one of its runs printed it."""
    out: dict[str, Curves] = {}
    for metric in METRICS:
        for trainer, by_seed in runs.items():
            curves = {seed: list(run.get(metric) or []) for seed, run in by_seed.items()}
            printed = any(value is not None for curve in curves.values() for value in curve)
            if printed or metric not in OPTIONAL_METRICS:
                out.setdefault(metric, {})[trainer] = curves
    return out


def learning_comparisons(curves: dict[str, Curves]) -> dict[str, dict[str, Any]]:
    """:func:`learning_comparison` of every metric both trainers have curves of (with at least one seed each)."""
    return {
        metric: learning_comparison(by_trainer)
        for metric, by_trainer in curves.items()
        if all(by_trainer.get(trainer) for trainer in TRAINERS)
    }


def build_learning_report(
    runs: dict[str, dict[int, dict[str, Any]]], settings: dict[str, Any], machine: dict[str, Any]
) -> dict[str, Any]:
    """The JSON document of learning runs ``{trainer: {seed: run figures}}`` of one or both trainers.

    ``curves`` holds the mean reward curves, ``metric_curves`` every metric's; ``comparisons`` (and ``comparison``,
    the mean reward's) are filled only when both trainers are present."""
    runs = {t: {int(seed): runs[t][seed] for seed in sorted(runs[t], key=int)} for t in TRAINERS if t in runs}
    seeds = sorted({seed for by_seed in runs.values() for seed in by_seed})
    curves = metric_curves(runs)
    comparisons = learning_comparisons(curves) if all(runs.get(t) for t in TRAINERS) else {}
    return {
        "schema": LEARNING_SCHEMA,
        "settings": {**settings, "seeds": seeds},
        "machine": machine,
        "trainers": list(runs),
        "curves": curves["mean_reward"],
        "metric_curves": curves,
        "runs": runs,
        "comparison": comparisons.get("mean_reward"),
        "comparisons": comparisons,
    }


def run_learning(
    settings: Settings,
    workdir: Path,
    *,
    seeds: list[int],
    timeout_s: float,
    trainers: list[str] | None = None,
    cache_dir: Path | None = None,
) -> dict[str, Any]:
    """``trainers`` (default: both) over ``seeds``, one run after another; their curves and, with both trainers,
    the comparison, as a JSON document. Every run reads and fills the kernel cache ``cache_dir`` (default: one per
    trainer under ``workdir``)."""
    trainers = list(TRAINERS) if trainers is None else trainers
    unknown = [t for t in trainers if t not in TRAINERS]
    if unknown or not trainers:
        raise ValueError(f"trainers must be a non-empty subset of {TRAINERS}, not {trainers}")
    runs: dict[str, dict[int, dict[str, Any]]] = {name: {} for name in trainers}
    for seed in seeds:
        for trainer in trainers:
            # Kernels compiled once per trainer are reused by its later seeds: only learning is compared here.
            result = run_trainer(
                trainer,
                replace(settings, seed=seed),
                workdir=workdir / f"seed{seed}",
                phases=("warm",),
                timeout_s=timeout_s,
                cache_dir=cache_dir or workdir / f"warp-cache-{trainer}",
            )
            runs[trainer][seed] = {"command": result["command"], **result["phases"]["warm"]}
    return build_learning_report(runs, asdict(settings), machine_info(settings.device))


def is_learning_report(report: dict[str, Any]) -> bool:
    """Whether ``report`` is a learning report (its schema ends with ``/learning``), not a timing report."""
    return str(report.get("schema", "")).endswith("/learning")


def _settings_differences(a: dict[str, Any], b: dict[str, Any], ignored: set[str]) -> list[str]:
    return settings_differences(a, b, ignored | set(SEED_SETTINGS))


def _unused_settings(report: dict[str, Any]) -> set[str]:
    """The trainer-specific settings of the trainers ``report`` holds no runs of."""
    return unused_settings({trainer for trainer, runs in report["runs"].items() if runs})


def merge_learning_reports(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """Join learning reports of equal settings (apart from seeds), say one trainer each, and compare the result.

    Raises:
        ValueError: a report is no learning report, the settings differ (the message names what differs), or a
            trainer's seed is in more than one report.
    """
    if not reports:
        raise ValueError("nothing to merge")
    for report in reports:
        if report.get("schema") != LEARNING_SCHEMA:
            raise ValueError(f"not a learning report: schema {report.get('schema')!r}, expected {LEARNING_SCHEMA!r}")
    settings = dict(reports[0]["settings"])
    unused = _unused_settings(reports[0])
    runs: dict[str, dict[int, dict[str, Any]]] = {}
    for index, report in enumerate(reports):
        its_unused = _unused_settings(report)
        differences = _settings_differences(settings, report["settings"], unused | its_unused)
        if differences:
            raise ValueError(
                f"cannot merge learning reports of different settings (report 1 vs report {index + 1}): "
                + "; ".join(differences)
            )
        # A trainer's own settings come from the first report that ran it.
        for key in (unused - its_unused) & set(report["settings"]):
            settings[key] = report["settings"][key]
        unused &= its_unused
        for trainer, by_seed in report["runs"].items():
            if trainer not in TRAINERS:
                raise ValueError(f"unknown trainer '{trainer}' in report {index + 1}")
            into = runs.setdefault(trainer, {})
            for seed, run in by_seed.items():
                if int(seed) in into:
                    raise ValueError(f"seed {seed} of trainer '{trainer}' is in more than one report")
                into[int(seed)] = run
    return build_learning_report(runs, settings, reports[-1]["machine"])


def _final(curve: list[float | None]) -> float | None:
    return next((value for value in reversed(curve) if value is not None), None)


def _format_curves_only(report: dict[str, Any], curves: dict[str, Curves]) -> list[str]:
    lines = []
    for trainer in report["curves"]:
        by_seed = report["curves"][trainer]
        length = max((len(c) for c in by_seed.values()), default=0)
        finals = []
        for metric, label in METRICS.items():
            values = [_final(c) for c in curves.get(metric, {}).get(trainer, {}).values()]
            values = [v for v in values if v is not None]
            if values:
                finals.append(f"{label} {statistics.mean(values):.{_DECIMALS[metric]}f}")
        lines.append(
            f"{trainer}: {len(by_seed)} seeds ({', '.join(str(s) for s in by_seed)}), {length} iterations; "
            f"last value, mean over seeds: {', '.join(finals) or 'none printed'}"
        )
    present = " and ".join(report["curves"]) or "no trainer"
    lines.append(
        f"no comparison: it needs both trainers and this report holds {present} only; merge it with a report of "
        "the other trainer (--merge ours.json isaaclab.json)"
    )
    return lines


def format_learning(report: dict[str, Any]) -> str:
    """The printed comparison: one row per iteration with, for each metric compared, our mean over seeds, Isaac
    Lab's min..max and whether ours lies within; then one line per metric saying how often it did.

    A report with one trainer only gets each trainer's last values and a note that the comparison needs both."""
    curves: dict[str, Curves] = report.get("metric_curves") or {"mean_reward": report["curves"]}
    comparisons: dict[str, dict[str, Any]] | None = report.get("comparisons")
    if comparisons is None:  # a report that compared mean reward only
        comparisons = {"mean_reward": report["comparison"]} if report.get("comparison") else {}
    if not comparisons:
        return "\n".join(_format_curves_only(report, curves))
    metrics = [m for m in METRICS if m in comparisons]
    width = 9 * 3 + 3 + 3
    lines = [
        f"{'':>9}" + "".join(f" | {METRICS[m]:^{width}}" for m in metrics),
        f"{'iteration':>9}" + "".join(f" | {'ours':>9} {'IL min':>9} {'IL max':>9} {'in':>3}" for _ in metrics),
    ]
    by_iteration = {m: {row["iteration"]: row for row in comparisons[m]["rows"]} for m in metrics}
    for i in sorted({i for rows in by_iteration.values() for i in rows}):
        line = f"{i:>9}"
        for m in metrics:
            row = by_iteration[m].get(i)
            if row is None:
                line += f" | {'-':>9} {'-':>9} {'-':>9} {'-':>3}"
                continue
            d = _DECIMALS[m]
            mark = "yes" if row["within"] else "no"
            line += (
                f" | {row['ours_mean']:>9.{d}f} {row['isaaclab_min']:>9.{d}f} {row['isaaclab_max']:>9.{d}f} {mark:>3}"
            )
        lines.append(line)
    lines.append("ours: mean over our seeds; IL min, IL max: the band of Isaac Lab's seeds; in: ours within the band")
    for m in metrics:
        comparison = comparisons[m]
        seeds = comparison.get("isaaclab_seeds", len(curves.get(m, {}).get("isaaclab", {})))
        lines.append(
            f"our {METRICS[m]} lies within Isaac Lab's spread of {seeds} seeds at "
            f"{comparison['iterations_within']} of {comparison['iterations_compared']} iterations"
        )
    if metrics and min(len(curves.get(m, {}).get("isaaclab", {})) for m in metrics) < 2:
        lines.append(
            "one seed of Isaac Lab's trainer has no spread: 'in' is a match to its one curve, not a judgement; "
            "run two seeds or more of it (--seeds) to compare within its band"
        )
    for m in METRICS:
        if m not in comparisons and curves.get(m):
            lines.append(f"{METRICS[m]}: printed by {' and '.join(curves[m])} only; not compared")
    return "\n".join(line.rstrip() for line in lines)
