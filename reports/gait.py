"""The gait in the report: each run's clip beside its curves, so the points of a sweep can be watched side by side.

A run's clip is the newest it has (play.py's of its newest checkpoint, else its newest training clip); with
``make`` a run without one gets it now, played from its newest checkpoint."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from reports.figure import point_curves
from reports.page import html_cells, html_clip, html_image
from video.files import SUFFIXES, VIDEO_DIR, newest_clip


def run_clip(run_dir: Path, *, make: bool, seconds: float, num_envs: int) -> Path | None:
    """The stem of the clip that shows ``run_dir`` (made from its newest checkpoint when it has none and ``make``),
    or None."""
    stem = newest_clip(run_dir)
    if stem is not None or not make:
        return stem
    from runner.play import clip_of_latest

    print(f"[rlforge] report: playing the newest checkpoint of {run_dir.name} for its clip")
    if clip_of_latest(run_dir, seconds=seconds, num_envs=num_envs) is None:
        print(f"[rlforge] report: {run_dir.name} has no checkpoint: no clip")
        return None
    return newest_clip(run_dir)


def gait_section(
    points: list[tuple[str, Path, list[str]]], out_dir: Path, *, make: bool, seconds: float, num_envs: int
) -> tuple[str, list[dict[str, Any]]]:
    """The HTML table of (point name, run directory, overrides) rows: overrides, clip, curves; and per point where
    its clip is (for the report's JSON)."""
    rows, found = [], []
    curves_dir = out_dir / "report_curves"
    for name, run_dir, overrides in points:
        stem = run_clip(run_dir, make=make, seconds=seconds, num_envs=num_envs)
        curves = point_curves(run_dir, curves_dir / f"{_safe(name)}.png")
        if stem is None:
            clip = html.escape(f"no clip: train with logger.video_interval=N, or run play.py {run_dir} --video")
        else:
            mp4 = stem.with_suffix(SUFFIXES["mp4"])
            clip = html_clip(stem.with_suffix(SUFFIXES["sheet"]), mp4 if mp4.is_file() else None, out_dir, name)
        label = f"<b>{html.escape(name)}</b><br><code>{html.escape(' '.join(overrides))}</code>"
        if stem is not None:
            label += f"<br><small>{html.escape(f'{VIDEO_DIR}/{stem.name}')}</small>"
        rows.append([label, clip, html_image(curves, f"curves of {name}")])
        found.append({"point": name, "clip": str(stem) if stem is not None else None})
    return html_cells(["point", "clip", "curves"], rows), found


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name) or "run"
