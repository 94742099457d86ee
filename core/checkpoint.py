"""Checkpoints written atomically, found newest first, and loaded with a fallback past corrupt files."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from core.rundir import writer_tag

_NAME = re.compile(r"^model_(\d+)\.pt$")


def checkpoint_path(checkpoint_dir: Path, iteration: int) -> Path:
    """Where the checkpoint after ``iteration`` completed iterations lives."""
    return Path(checkpoint_dir) / f"model_{iteration}.pt"


def list_checkpoints(checkpoint_dir: Path) -> list[tuple[int, Path]]:
    """(iteration, path) of every checkpoint, newest first."""
    checkpoint_dir = Path(checkpoint_dir)
    if not checkpoint_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in checkpoint_dir.iterdir() if (m := _NAME.match(p.name))]
    return sorted(found, reverse=True)


class CheckpointWriteError(OSError):
    """A checkpoint could not be written; the checkpoints written before are intact."""


def save_atomic(state: dict[str, Any], path: Path) -> None:
    """Write to a temporary file, flush it to disk, then rename: a crash never leaves a half-written file.

    A failed write (a full disk, a quota) removes its temporary file and raises :class:`CheckpointWriteError`
    saying so; the checkpoints already there are untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{writer_tag()}.tmp")
    import torch  # here, not at import: launchers find checkpoints with this module without loading torch

    try:
        with open(tmp, "wb") as handle:
            torch.save(state, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        tmp.unlink(missing_ok=True)
        if isinstance(error, (OSError, RuntimeError)) and not isinstance(error, CheckpointWriteError):
            # torch.save reports a failed write as a RuntimeError carrying the OS error's text.
            kept = list_checkpoints(path.parent)
            raise CheckpointWriteError(
                f"could not write checkpoint {path} ({error}); "
                + (f"the newest checkpoint, {kept[0][1].name}, is intact" if kept else "no earlier checkpoint exists")
            ) from error
        raise


def remove_partial_writes(checkpoint_dir: Path) -> list[str]:
    """Delete temporary files left by a process killed while writing a checkpoint; return their names.

    Call only while holding the run directory's lock: a live writer's temporary file looks the same."""
    checkpoint_dir = Path(checkpoint_dir)
    if not checkpoint_dir.is_dir():
        return []
    removed = []
    for path in checkpoint_dir.glob(".model_*.pt.*.tmp"):
        path.unlink(missing_ok=True)
        removed.append(path.name)
    return sorted(removed)


def load_latest(checkpoint_dir: Path, map_location: str = "cpu") -> tuple[dict[str, Any], Path, list[str]] | None:
    """The newest checkpoint that loads, its path, and a warning for each newer one that did not."""
    import torch

    warnings: list[str] = []
    for iteration, path in list_checkpoints(checkpoint_dir):
        try:
            state = torch.load(path, map_location=map_location, weights_only=False)
            if not isinstance(state, dict) or "model_state_dict" not in state and "actor_state_dict" not in state:
                raise ValueError("not a training checkpoint")
            return state, path, warnings
        except Exception as error:  # a torn or corrupt file: fall back to the previous one
            warnings.append(
                f"checkpoint {path.name} (iteration {iteration}) is unreadable ({error}); using an older one"
            )
    return None


def prune(checkpoint_dir: Path, keep: int) -> None:
    """Delete all but the newest ``keep`` checkpoints (``keep`` <= 0 keeps all)."""
    if keep <= 0:
        return
    for _, path in list_checkpoints(checkpoint_dir)[keep:]:
        path.unlink(missing_ok=True)
