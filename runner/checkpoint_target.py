"""What a command line's target names: a checkpoint file, or the newest checkpoint of a run directory."""

from __future__ import annotations

from pathlib import Path

from core.checkpoint import list_checkpoints
from core.rundir import CHECKPOINT_DIR


def resolve_checkpoint(target: Path) -> Path:
    """A checkpoint file, or the newest one of a run directory."""
    if target.is_file():
        return target
    found = list_checkpoints(target / CHECKPOINT_DIR)
    if not found:
        raise SystemExit(f"error: {target} is neither a checkpoint file nor a run directory with checkpoints")
    return found[0][1]


def run_dir_of(checkpoint: Path) -> Path:
    """The run directory that holds ``checkpoint`` (in its checkpoint folder)."""
    return checkpoint.parent.parent
