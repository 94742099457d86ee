"""The benchmark's JSON report: each trainer's headline figures, ours / Isaac Lab's ratios, its validation, the
merging of partial reports and the printed table."""

from __future__ import annotations

from typing import Any

from bench.trainers import TRAINERS

SCHEMA = "rlforge-benchmark/1"
PHASES = ("cold", "warm")
"""A trainer's runs: with an empty kernel cache, then with the cache the cold run filled."""

# (label, key in the trainer's figures) in the printed table's order.
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


def fmt(value: Any) -> str:
    """A figure for a table: ``-`` for none, three significant digits below 100, whole numbers above."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


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
        row = f"{label:<44}" + "".join(f"{fmt(t['figures'].get(key)):>14}" for t in trainers.values())
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


TRAINER_SETTINGS: dict[str, tuple[str, ...]] = {
    "ours": ("ours_root", "extra_ours", "ours_frontend"),
    "isaaclab": ("extra_isaaclab", "isaaclab_frontend"),
}
"""Settings that only one trainer's runs use: reports are held to them only where they hold that trainer's runs
(a report of Isaac Lab's runs alone says nothing about our frontend)."""


def unused_settings(trainers_run: set[str]) -> set[str]:
    """The trainer-specific settings of the trainers not in ``trainers_run`` (those a report holds no runs of)."""
    return {key for trainer, keys in TRAINER_SETTINGS.items() if trainer not in trainers_run for key in keys}


def settings_differences(
    a: dict[str, Any], b: dict[str, Any], ignored: set[str] | frozenset[str] = frozenset()
) -> list[str]:
    """``key: a vs b`` for each setting outside ``ignored`` whose values differ."""
    keys = [k for k in dict.fromkeys([*a, *b]) if k not in ignored]
    return [f"{k}: {a.get(k)!r} vs {b.get(k)!r}" for k in keys if a.get(k) != b.get(k)]


def merge_reports(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """Join reports of the same settings (say one trainer or phase each) into one; later phases win.

    A trainer's own settings (:data:`TRAINER_SETTINGS`) are compared only between reports that ran it, and the
    merged report takes them from the first report that did."""
    if not reports:
        raise ValueError("nothing to merge")
    settings = dict(reports[0]["settings"])
    unused = unused_settings(set(reports[0]["trainers"]))
    results: dict[str, dict[str, Any]] = {}
    for index, report in enumerate(reports):
        validate_report(report)
        its_unused = unused_settings(set(report["trainers"]))
        differences = settings_differences(settings, report["settings"], unused | its_unused)
        if differences:
            raise ValueError(
                f"cannot merge runs of different settings (report 1 vs report {index + 1}): " + "; ".join(differences)
            )
        for key in (unused - its_unused) & set(report["settings"]):
            settings[key] = report["settings"][key]
        unused &= its_unused
        for name, trainer in report["trainers"].items():
            into = results.setdefault(name, {"command": trainer["command"], "phases": {}})
            into["phases"].update(trainer["phases"])
    return build_report(results, settings, reports[-1]["machine"])
