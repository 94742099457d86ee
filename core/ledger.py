"""The run's ledger: timestamped events appended to ``<run dir>/ledger.jsonl`` by every attempt of a run."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

LEDGER = "ledger.jsonl"
SUBMITTED_AT_ENV = "RLFORGE_SUBMITTED_AT"
"""Set by a launcher on the submit host: when the run was submitted (Unix seconds or ISO 8601)."""
INSTANCE_TYPE_ENV = "RLFORGE_INSTANCE_TYPE"
"""The instance type the run is billed as (``ml.g5.2xlarge``); SageMaker's own variable is read when unset."""
RELAUNCH_ENV = "RLFORGE_RELAUNCH"
"""JSON written by ``scripts/relaunch.py``: the run relaunched and any drift it was allowed to ignore."""
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


def submitted_at(environ: dict[str, str] | None = None) -> float | None:
    """The submission time a launcher passed in ``RLFORGE_SUBMITTED_AT``, in Unix seconds, or None."""
    from datetime import datetime

    value = (os.environ if environ is None else environ).get(SUBMITTED_AT_ENV, "").strip()
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        stamp = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return stamp.timestamp()


def placement(environ: dict[str, str] | None = None) -> dict[str, Any]:
    """Instance type and node count of this attempt, from the launcher's or the platform's variables."""
    env = os.environ if environ is None else environ
    instance_type = env.get(INSTANCE_TYPE_ENV) or env.get("SM_CURRENT_INSTANCE_TYPE") or None
    nodes = env.get("SLURM_JOB_NUM_NODES") or env.get("SLURM_NNODES") or env.get("SM_HOST_COUNT") or "1"
    try:
        node_count = int(nodes)
    except ValueError:
        node_count = 1
    return {"instance_type": instance_type, "nodes": node_count}


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Every well-formed line of a JSON-lines file, in order; a line torn by a hard kill is skipped."""
    path = Path(path)
    if not path.is_file():
        return []
    entries = []
    for line in path.read_text().splitlines():
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return entries


def read(run_dir: Path) -> list[dict[str, Any]]:
    """Every well-formed event of a run's ledger, in order."""
    return read_jsonl(Path(run_dir) / LEDGER)
