"""The run's ledger: timestamped events appended to ``<run dir>/ledger.jsonl`` by every attempt of a run."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LEDGER = "ledger.jsonl"
SUBMITTED_AT_ENV = "RLFORGE_SUBMITTED_AT"
"""Set by a launcher on the submit host: when the run was submitted (Unix seconds or ISO 8601)."""
INSTANCE_TYPE_ENV = "RLFORGE_INSTANCE_TYPE"
"""The instance type the run is billed as (``ml.g5.2xlarge``); SageMaker's own variable is read when unset."""
RELAUNCH_ENV = "RLFORGE_RELAUNCH"
"""JSON written by ``scripts/relaunch.py``: the run relaunched and any drift it was allowed to ignore."""


@dataclass(frozen=True)
class RunLedger:
    """The ledger of one run directory, and the context written into every event appended through this object
    (attempt id, launcher, host...)."""

    run_dir: Path
    """The run directory that holds ``ledger.jsonl``."""
    context: dict[str, Any] = field(default_factory=dict)
    """Fields added to every event, before the event's own."""

    @property
    def path(self) -> Path:
        return Path(self.run_dir) / LEDGER

    def record(self, event: str, **fields: Any) -> None:
        """Append one event as a JSON line; one write call per line, so a crash loses at most that line."""
        entry = {"time": time.time(), "event": event, **self.context, **fields}
        line = json.dumps(entry, default=str) + "\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, line.encode())
            os.fsync(fd)
        finally:
            os.close(fd)


_current: RunLedger | None = None
"""The ledger the training process opened for its own events (:func:`open_ledger`, :func:`record`)."""


def open_ledger(run_dir: Path, **context: Any) -> RunLedger:
    """Direct this process's events (:func:`record`) to ``run_dir``; ``context`` (attempt id, launcher...) is added
    to every event. Returns that ledger."""
    global _current
    _current = RunLedger(Path(run_dir), dict(context))
    return _current


def record(event: str, **fields: Any) -> None:
    """Append one event to the ledger this process opened; nothing before :func:`open_ledger`."""
    if _current is not None:
        _current.record(event, **fields)


def attempt_ledger(run_dir: Path, since: float, pid: int | None = None) -> RunLedger | None:
    """The ledger of the attempt that process ``pid`` (this one by default) started in ``run_dir`` at or after
    ``since`` (Unix seconds), or None when it started none there.

    An attempt begins with a ``process_start`` event that names its process. What is recorded through the returned
    ledger carries the attempt's context, the fields that every event of the attempt so far carries alike (attempt
    id, launcher, host, placement), so that code running around the training (a launcher that requeues the job)
    adds events that count to that attempt."""
    pid = os.getpid() if pid is None else pid
    events = read(run_dir)
    starts = [
        index
        for index, event in enumerate(events)
        if event.get("event") == "process_start"
        and event.get("pid") == pid
        and "attempt" in event
        and float(event.get("time", 0.0)) >= since
    ]
    if not starts:
        return None
    attempt = events[starts[-1]]["attempt"]
    own = [event for event in events[starts[-1] :] if event.get("attempt") == attempt]
    context = {
        key: value
        for key, value in own[0].items()
        if key not in ("time", "event") and all(key in event and event[key] == value for event in own[1:])
    }
    return RunLedger(Path(run_dir), context)


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
