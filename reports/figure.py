"""The report's PNG: learning curves of every point, where the billed time went and, for sweeps, the ranking."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from core import accounting
from reports.ranking import rank_value


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
        values = [(name, rank_value(path, acc, rank_key)) for name, path, acc in points]
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


def point_curves(run_dir: Path, out: Path) -> Path:
    """One run's return, episode length and velocity-tracking error over iterations, side by side in a small PNG
    (the curves beside the run's clip)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = accounting.counted_metrics(accounting.read_metrics(run_dir))
    keys = accounting.curve_keys(lines)
    panels = ("return", "episode length", "velocity-tracking error")
    fig, axes = plt.subplots(1, len(panels), figsize=(3.0 * len(panels), 2.4), squeeze=False)
    for ax, panel in zip(axes[0], panels, strict=True):
        for key in keys[panel]:
            xs, ys = accounting.curve(lines, key)
            ax.plot(xs, ys, marker="." if len(xs) < 30 else None, label=key.split("/")[-1])
        if not keys[panel]:
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes, color="grey")
        elif len(keys[panel]) > 1:
            ax.legend(fontsize=6)
        ax.set_title(panel, fontsize=9)
        ax.set_xlabel("iteration", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return out
