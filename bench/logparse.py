"""rsl-rl's per-iteration console blocks, read from timestamped output lines, and the figures of one process.

Both trainers print the same block (``Learning iteration N/M``, ``Steps per second``, ``Collection time``,
``Learning time``, ``Mean reward``, ``Mean episode length``, ...), so one parser measures both. rsl-rl prints the
environment's logged extras in the block too; of those, the terrain curriculum's ``Curriculum/terrain_levels`` (the mean
terrain level, which Isaac Lab's curriculum manager logs on each reset) is read where the task has that curriculum."""

from __future__ import annotations

import re
import statistics
from typing import Any

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_HEADER = re.compile(r"Learning iteration (\d+)/(\d+)")
_FIELDS = {
    "steps_per_s": re.compile(r"Steps per second:\s*([0-9.]+)"),
    "collect_s": re.compile(r"Collection time:\s*([0-9.]+)s"),
    "learn_s": re.compile(r"Learning time:\s*([0-9.]+)s"),
    "mean_reward": re.compile(r"Mean reward:\s*(-?[0-9.]+(?:e[-+]?\d+)?)"),
    "mean_episode_length": re.compile(r"Mean episode length:\s*([0-9.]+)"),
    "terrain_level": re.compile(r"Curriculum/terrain_levels:\s*(-?[0-9.]+)"),
}
CURVES = ("mean_reward", "mean_episode_length", "terrain_level")
"""Fields kept per iteration by :func:`summarize_run` (None where an iteration's block did not print them)."""


def parse_iterations(lines: list[tuple[float, str]]) -> list[dict[str, Any]]:
    """rsl-rl's iteration blocks from timestamped output lines.

    Args:
        lines: ``(seconds, text)`` pairs in the order the process printed them; seconds on any one clock.

    Returns:
        One dict per block: ``iteration``, ``total``, ``time`` (when its header line arrived) and whichever of
        ``steps_per_s``, ``collect_s``, ``learn_s``, ``mean_reward``, ``mean_episode_length`` and ``terrain_level``
        the block printed.
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
    """Figures of one process from its parsed blocks; ``launched`` is on the clock of the blocks' ``time``.

    Steady figures are medians over the iterations after the first (which pays for compilation and warm-up); each of
    :data:`CURVES` is a list with one value per iteration, None where that iteration's block lacked it (before the
    first finished episode, or a task without a terrain curriculum)."""
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
        **{name: [b.get(name) for b in blocks] for name in CURVES},
    }
