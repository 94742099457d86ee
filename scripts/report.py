"""Account for a run or a whole sweep: a terminal table, a PNG and an HTML page with the same figures.

    python scripts/report.py outputs/h1_rough/2026-11-24_10-00-00
    python scripts/report.py outputs/multirun/2026-11-24_10-00-00 --rank-by Metrics/base_velocity/error_vel_xy --lowest
    python scripts/report.py <run> --table training_job --instance-type ml.g5.2xlarge   # priced as a Training Job

Writes report.png, report.html and report.json into the run (or sweep) directory unless --out says elsewhere.
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import math
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core import accounting  # noqa: E402


# ------------------------------------------------------------------------------------------- formatting
def duration(seconds: float | None) -> str:
    """Seconds as ``1h02m03s`` / ``4m05s`` / ``6.7s``."""
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)):
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def money(value: float | None, currency: str) -> str:
    if value is None:
        return "-"
    # Short test runs cost fractions of a cent; keep their significant digits.
    return f"{value:,.2f} {currency}" if abs(value) >= 1 or value == 0 else f"{value:.3g} {currency}"


def number(value: float | None, digits: int = 4) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}g}"


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


def text_table(rows: list[tuple[str, str]]) -> str:
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"  {label.ljust(width)}  {value}" for label, value in rows)


def grid(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=False)]
    lines = ["  ".join(str(cell).ljust(w) for cell, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------- figures
def _breakdown_bar(ax: Any, accounts: list[tuple[str, accounting.RunAccount]]) -> None:
    """Horizontal stacked bars: where each run's billed time went."""
    parts = [
        ("useful", "useful_s", "#2a9d8f"),
        ("start-up", "startup_s", "#e9c46a"),
        ("redone", "redone_s", "#e76f51"),
        ("idle", "idle_s", "#8d99ae"),
        ("other", "other_s", "#b8b8b8"),
    ]
    names = [name for name, _ in accounts]
    left = [0.0] * len(accounts)
    for label, attribute, color in parts:
        values = [max(0.0, getattr(acc, attribute)) for _, acc in accounts]
        ax.barh(names, values, left=left, color=color, label=label)
        left = [a + b for a, b in zip(left, values, strict=True)]
    ax.set_xlabel("billed seconds")
    ax.set_title("where the billed time went")
    ax.legend(fontsize=7, loc="lower right")
    ax.invert_yaxis()


def figure(points: list[tuple[str, Path, accounting.RunAccount]], rank_key: str | None, out: Path) -> Path:
    """The learning curves of every point, the time breakdown and (for sweeps) the ranking, as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counted = {name: accounting.counted_metrics(accounting.read_metrics(path)) for name, path, _ in points}
    keys: dict[str, list[str]] = {"return": [], "episode length": [], "velocity-tracking error": [], "reward terms": []}
    for lines in counted.values():
        for panel, found in accounting.curve_keys(lines).items():
            keys[panel] += [k for k in found if k not in keys[panel]]
    panels: list[tuple[str, list[str]]] = [
        (panel, keys[panel]) for panel in ("return", "episode length", "velocity-tracking error")
    ]
    panels += [("reward: " + key.removeprefix(accounting.REWARD_TERM_PREFIX), [key]) for key in keys["reward terms"]]
    extra = 2 if len(points) > 1 else 1
    columns = 3
    rows = math.ceil((len(panels) + extra) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(5.2 * columns, 3.4 * rows), squeeze=False)
    flat = list(axes.flat)
    colors = plt.get_cmap("tab10")
    for ax, (title, panel_keys) in zip(flat, panels, strict=False):
        drawn = False
        for index, (name, lines) in enumerate(counted.items()):
            for key in panel_keys:
                xs, ys = accounting.curve(lines, key)
                if xs:
                    label = name if len(panel_keys) == 1 else f"{name} {key.split('/')[-1]}"
                    ax.plot(xs, ys, color=colors(index % 10), label=label, marker="." if len(xs) < 30 else None)
                    drawn = True
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("iteration")
        if not drawn:
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes, color="grey")
        elif 1 < len(points) <= 10 or len(panel_keys) > 1:
            ax.legend(fontsize=7)
    used = len(panels)
    _breakdown_bar(flat[used], [(name, acc) for name, _, acc in points])
    used += 1
    if len(points) > 1:
        ax = flat[used]
        values = [(name, _rank_value(path, acc, rank_key)) for name, path, acc in points]
        values = [(n, v) for n, v in values if v is not None]
        ax.bar([n for n, _ in values], [v for _, v in values], color="#264653")
        ax.set_title(f"final {rank_key} (mean of the last 5 iterations)", fontsize=10)
        ax.set_xlabel("sweep point")
        used += 1
    for ax in flat[used:]:
        ax.axis("off")
    fig.suptitle(f"{out.parent.name}: {len(points)} run(s)" if len(points) > 1 else str(points[0][1]), fontsize=11)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def _rank_value(path: Path, acc: accounting.RunAccount, key: str | None) -> float | None:
    if key is None:
        return acc.objective
    return accounting.final_value(accounting.counted_metrics(accounting.read_metrics(path)), key)


# ------------------------------------------------------------------------------------------- html
def html_page(title: str, sections: list[tuple[str, str]], png: Path) -> str:
    image = base64.b64encode(png.read_bytes()).decode()
    body = "\n".join(f"<h2>{html.escape(heading)}</h2>\n{content}" for heading, content in sections)
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin-bottom: 1.5em; }}
td, th {{ border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; font-size: 0.9em; }}
th {{ background: #f0f0f0; }}
code {{ font-size: 0.85em; }}
img {{ max-width: 100%; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
{body}
<h2>Figures</h2>
<img alt="learning curves and time breakdown" src="data:image/png;base64,{image}">
</body></html>
"""


def html_rows(rows: list[tuple[str, str]]) -> str:
    cells = "\n".join(f"<tr><th>{html.escape(label)}</th><td>{html.escape(value)}</td></tr>" for label, value in rows)
    return f"<table>\n{cells}\n</table>"


def html_grid(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "\n".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table>\n<tr>{head}</tr>\n{body}\n</table>"


# ------------------------------------------------------------------------------------------- main
def report(
    target: Path,
    *,
    out_dir: Path | None = None,
    prices_path: Path | None = None,
    instance_type: str | None = None,
    table: str | None = None,
    rank_key: str | None = None,
    lowest_first: bool = False,
) -> dict[str, Any]:
    """Print the report of a run or sweep directory and write its PNG, HTML and JSON; returns the JSON data."""
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
        acc = points[0][2]
        rows = run_rows(acc)
        print(f"\nrun report: {target}\n")
        print(text_table(rows))
        attempts = [
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
        attempt_header = ["attempt", "ran", "ended", "resumed at", "iterations", "start-up", "reason"]
        print("\n" + grid(attempt_header, attempts))
        sections = [("Figures", html_rows(rows)), ("Attempts", html_grid(attempt_header, attempts))]
        if acc.sagemaker_phases:
            phase_header, phases = phase_grid(acc)
            print("\n" + grid(phase_header, phases))
            sections.append(("SageMaker phases", html_grid(phase_header, phases)))
        data["runs"].append({**acc.as_dict(), "overrides": accounting.read_overrides(target)})
    else:
        overrides = accounting.varying_overrides({name: accounting.read_overrides(path) for name, path, _ in points})
        ranked = sorted(points, key=lambda p: _sort_value(_rank_value(p[1], p[2], key), lowest_first))
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
                    number(_rank_value(path, acc, key)),
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
                    "rank_value": _rank_value(path, acc, key),
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

    page = out_dir / "report.html"
    page.write_text(html_page(f"rlforge report: {target.name}", sections, png))
    (out_dir / "report.json").write_text(json.dumps(data, indent=2, default=str))
    print(f"\n  figure  {png}\n  page    {page}\n  data    {out_dir / 'report.json'}")
    return data


def _sort_value(value: float | None, lowest_first: bool) -> float:
    if value is None or math.isnan(value):
        return math.inf
    return value if lowest_first else -value


def main(argv: list[str] | None = None) -> None:
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
    args = parser.parse_args(argv)
    report(
        args.target,
        out_dir=args.out,
        prices_path=args.prices,
        instance_type=args.instance_type,
        table=args.table,
        rank_key=args.rank_by,
        lowest_first=args.lowest,
    )


if __name__ == "__main__":
    main()
