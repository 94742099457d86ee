"""The console's view of long work: one updating line on a terminal, plain periodic lines in a log file."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO

REDRAW = "\r\033[K"
"""What a terminal progress line starts with: back to the line's start, then erase it."""


def duration(seconds: float) -> str:
    """``1:02:03``, ``2:03`` or ``45s``: short enough for a progress line."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}:{minutes:02d}:{secs:02d}"
    if minutes:
        return f"{minutes}:{secs:02d}"
    return f"{secs}s"


@dataclass
class Progress:
    """Progress of ``total`` units of work (iterations, episodes) that started at ``start``.

    On a terminal, :meth:`update` redraws one line with a bar; elsewhere (a log file, Slurm's or SageMaker's
    log) it prints a plain line at the first and last unit and at most every ``interval_s`` seconds between.
    """

    total: int
    start: int = 0
    unit: str = "it"
    stream: TextIO = field(default_factory=lambda: sys.stdout)
    is_terminal: bool | None = None
    """None asks the stream (``isatty``)."""
    interval_s: float = 10.0
    """Seconds between two plain lines when the stream is no terminal."""
    width: int = 24
    """Characters of the bar on a terminal."""
    clock: Callable[[], float] = time.monotonic
    _began: float = field(init=False, default=0.0)
    _last_line: float = field(init=False, default=-math.inf)
    _drawn: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        if self.is_terminal is None:
            isatty = getattr(self.stream, "isatty", None)
            self.is_terminal = bool(isatty and isatty())
        self._began = self.clock()

    def line(self, done: int, figures: dict[str, str]) -> str:
        """The text of one progress line after ``done`` units: count, figures, elapsed and remaining time."""
        elapsed = self.clock() - self._began
        finished_here = done - self.start
        left = self.total - done
        eta = elapsed / finished_here * left if finished_here > 0 else math.inf
        parts = [f"{self.unit} {done}/{self.total}", *(f"{name} {value}" for name, value in figures.items())]
        parts += [f"elapsed {duration(elapsed)}", f"ETA {duration(eta) if left else '0s'}"]
        return " | ".join(parts)

    def update(self, done: int, figures: dict[str, str]) -> None:
        """Show the state after ``done`` units."""
        text = self.line(done, figures)
        if self.is_terminal:
            filled = int(self.width * done / self.total) if self.total else self.width
            bar = "#" * filled + "." * (self.width - filled)
            self.stream.write(f"{REDRAW}[{bar}] {text}")
            self._drawn = True
            if done >= self.total:
                self.stream.write("\n")
                self._drawn = False
        else:
            now = self.clock()
            first = done == self.start + 1
            if first or done >= self.total or now - self._last_line >= self.interval_s:
                self.stream.write(text + "\n")
                self._last_line = now
        self.stream.flush()

    def clear(self) -> None:
        """Take the progress line off a terminal, so that other output starts on a clean line; the next
        :meth:`update` draws it again."""
        if self.is_terminal and self._drawn:
            self.stream.write(REDRAW)
            self.stream.flush()
            self._drawn = False

    def close(self) -> None:
        """End the progress line on a terminal (an interrupted run leaves it unfinished)."""
        if self.is_terminal and self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False


def training_figures(stats: dict[str, float]) -> dict[str, str]:
    """What a training progress line shows of one iteration's metrics."""
    figures: dict[str, str] = {}
    if "Train/mean_reward" in stats:
        figures["reward"] = f"{stats['Train/mean_reward']:.2f}"
    if "Train/mean_episode_length" in stats:
        figures["ep len"] = f"{stats['Train/mean_episode_length']:.0f}"
    seconds = stats.get("collect_s", 0.0) + stats.get("learn_s", 0.0)
    if seconds > 0 and "env_steps" in stats:
        figures["steps/s"] = f"{stats['env_steps'] / seconds:,.0f}"
    return figures
