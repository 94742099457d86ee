"""The figures of one run as rows: its account, how its time to first iteration splits, its SageMaker phases."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from core import accounting
from reports.text import duration, money, number


def run_rows(acc: accounting.RunAccount) -> list[tuple[str, str]]:
    """The figures of one run as (label, value) rows: the terminal table and the HTML table alike."""
    when = datetime.fromtimestamp(acc.submitted_at).astimezone().isoformat(timespec="seconds")
    instance = f"{acc.instance_type or 'unrecorded'} x {acc.nodes} node(s)"
    price = "unlisted" if acc.price_per_hour is None else f"{acc.price_per_hour:g} {acc.currency}/instance-hour"
    return [
        ("run", acc.run_dir),
        ("launcher / status", f"{acc.launcher} / {acc.status}"),
        ("submitted", when),
        ("wall-clock, submission to end", duration(acc.wall_clock_s)),
        ("time to first iteration", duration(acc.time_to_first_iteration_s)),
        *first_iteration_rows(acc),
        ("iterations completed", str(acc.iterations_completed)),
        ("iterations done twice", str(acc.iterations_redone)),
        ("interruptions / attempts", f"{acc.interruptions} / {acc.attempts}"),
        ("signals / requeues", f"{acc.signals} / {acc.requeues}"),
        (
            "billed time",
            f"{duration(acc.billed_s)} ({'submission to end' if acc.billing == 'span' else 'attempts only'})",
        ),
        ("  useful training", duration(acc.useful_s)),
        ("  start-up", duration(acc.startup_s)),
        ("  redone (lost) work", duration(acc.redone_s)),
        ("  idle (queue, between attempts)", duration(acc.idle_s)),
        ("  other (checkpoints, logging)", duration(acc.other_s)),
        *billable_rows(acc),
        ("useful-training fraction", f"{100 * acc.useful_fraction:.1f}%"),
        ("instance", instance),
        ("price", f"{price} ({acc.price_table} table)"),
        ("estimated cost", money(acc.cost, acc.currency)),
        ("cost per useful training hour", money(acc.cost_per_useful_hour, acc.currency)),
        (f"objective {acc.objective_key or ''}".strip(), number(acc.objective)),
    ]


def first_iteration_rows(acc: accounting.RunAccount) -> list[tuple[str, str]]:
    """How the time to first iteration splits: SageMaker's phases and the container's start where recorded, else
    the first start-up alone."""
    if not (acc.sagemaker_phases or acc.container_started_at is not None):
        return [("  of which first start-up", duration(acc.first_startup_s))]
    rows = [(f"  {label}", duration(seconds)) for label, seconds in acc.first_iteration_parts]
    fetches = [event for event in acc.kernel_cache if event["event"] == "kernel_cache_fetch"]
    if fetches:
        rows.append(("  kernel cache fetch (first container)", kernel_cache_text(fetches[0])))
    uploads = [event for event in acc.kernel_cache if event["event"] == "kernel_cache_upload"]
    if uploads:
        rows.append(("  kernel cache written back", "; ".join(kernel_cache_text(event) for event in uploads)))
    return rows


def kernel_cache_text(event: dict[str, Any]) -> str:
    """One kernel cache transfer in words: what moved, how long it took, or why it failed."""
    when = f"{event['when']}: " if event.get("when") else ""
    if event.get("error"):
        return f"{when}failed ({event['error'][:80]})"
    if event["event"] == "kernel_cache_fetch":
        moved = f"{event.get('moved', 0)} of {event.get('entries', 0)} entries fetched"
    else:
        moved = f"{event.get('moved', 0)} new entries uploaded"
    size = f"{event.get('files', 0)} files, {event.get('bytes', 0) / 1e6:.1f} MB"
    return f"{when}{moved} ({size}) in {duration(event.get('seconds'))}"


def billable_rows(acc: accounting.RunAccount) -> list[tuple[str, str]]:
    """SageMaker's billable time, which the cost uses when it was recorded."""
    if acc.billable_s is None:
        return []
    detail = f"training time {duration(acc.training_job_s)}" if acc.training_job_s is not None else ""
    if acc.spot_savings is not None and acc.spot_savings > 0:
        detail += f", Spot saved {100 * acc.spot_savings:.0f}%"
    return [
        (
            "SageMaker billable time",
            f"{duration(acc.billable_s)} x {acc.nodes} instance(s)" + (f" ({detail})" if detail else ""),
        )
    ]


def phase_grid(acc: accounting.RunAccount) -> tuple[list[str], list[list[str]]]:
    """SageMaker's secondary statuses of the job: when each began after submission and how long it lasted."""
    header = ["SageMaker status", "began after submission", "lasted", "message"]
    rows = [
        [phase["status"] or "", duration(phase["start"]), duration(phase["seconds"]), phase["message"] or ""]
        for phase in acc.sagemaker_phases
    ]
    return header, rows


def attempt_grid(acc: accounting.RunAccount) -> tuple[list[str], list[list[str]]]:
    """The run's attempts: how long each ran, how it ended, where it resumed, its iterations and start-up."""
    header = ["attempt", "ran", "ended", "resumed at", "iterations", "start-up", "reason"]
    rows = [
        [
            a.attempt,
            duration(a.end - a.start),
            a.how,
            "-" if a.resumed_from is None else str(a.resumed_from),
            str(a.iterations),
            duration(a.startup_s),
            a.reason or "",
        ]
        for a in acc.attempt_list
    ]
    return header, rows
