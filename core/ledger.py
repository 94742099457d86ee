"""The run's ledger: timestamped events appended to ``<run dir>/ledger.jsonl`` by every attempt of a run."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

LEDGER = "ledger.jsonl"
_path: Path | None = None
_context: dict[str, Any] = {}


def open_ledger(run_dir: Path, **context: Any) -> None:
    """Direct events to ``run_dir``; ``context`` (attempt id, launcher...) is added to every event."""
    global _path
    _path = Path(run_dir) / LEDGER
    _context.clear()
    _context.update(context)


def record(event: str, **fields: Any) -> None:
    """Append one event as a JSON line; one write call per line, so a crash loses at most that line."""
    if _path is None:
        return
    entry = {"time": time.time(), "event": event, **_context, **fields}
    line = json.dumps(entry, default=str) + "\n"
    fd = os.open(_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, line.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def read(run_dir: Path) -> list[dict[str, Any]]:
    """Every well-formed event of a run's ledger, in order (a torn last line is skipped)."""
    path = Path(run_dir) / LEDGER
    if not path.is_file():
        return []
    events = []
    for line in path.read_text().splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return events
