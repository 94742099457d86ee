"""Where a run's videos live and what they are called: one owner for these names."""

from __future__ import annotations

from pathlib import Path

VIDEO_DIR = "videos"
"""Folder of a run's clips: ``play_<checkpoint>.*`` from play.py, ``train_<iteration>.*`` from training."""
PLAY_PREFIX = "play_"
TRAIN_PREFIX = "train_"
SUFFIXES = {"mp4": ".mp4", "gif": ".gif", "sheet": ".png", "figures": ".json"}
"""What a clip leaves beside its stem: the MP4, the GIF, the contact sheet and (play only) the figures."""


def play_stem(folder: Path, checkpoint: Path) -> Path:
    """The stem of play.py's clip of ``checkpoint`` in ``folder`` (``play_model_60``)."""
    return Path(folder) / f"{PLAY_PREFIX}{Path(checkpoint).stem}"


def training_stem(run_dir: Path, iteration: int) -> Path:
    """The stem of the training clip recorded after ``iteration`` completed iterations."""
    return Path(run_dir) / VIDEO_DIR / f"{TRAIN_PREFIX}{iteration:06d}"


def newest_clip(run_dir: Path) -> Path | None:
    """The stem of the clip that best shows a run: play.py's of its newest checkpoint, else the newest training
    clip; None when the run has none. A stem counts when its contact sheet exists."""
    folder = Path(run_dir) / VIDEO_DIR
    if not folder.is_dir():
        return None
    sheets = sorted(folder.glob(f"*{SUFFIXES['sheet']}"))
    played = [s for s in sheets if s.name.startswith(PLAY_PREFIX)]
    trained = [s for s in sheets if s.name.startswith(TRAIN_PREFIX)]
    if played:
        return max(played, key=_checkpoint_number).with_suffix("")
    if trained:
        return trained[-1].with_suffix("")  # zero-padded iterations sort in order
    return None


def _checkpoint_number(sheet: Path) -> int:
    digits = "".join(ch for ch in sheet.stem.rsplit("_", 1)[-1] if ch.isdigit())
    return int(digits) if digits else -1
