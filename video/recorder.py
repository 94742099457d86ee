"""Clips during training: every ``logger.video_interval`` iterations, ``logger.video_seconds`` of env 0.

The trainer calls :meth:`TrainingRecorder.after_step` after every environment step of its rollouts; the recorder
draws a frame only while a clip is being made, so between clips a step costs one comparison."""

from __future__ import annotations

import math
from pathlib import Path

from video.clip import ClipWriter
from video.files import training_stem
from video.publish import publish


class TrainingRecorder:
    """Records a clip of ``seconds`` of simulated time starting at every iteration that is a multiple of
    ``interval``; writes it under the run's ``videos/`` and logs it through the trainer's writer."""

    def __init__(self, view, run_dir: Path, *, interval: int, seconds: float, step_seconds: float) -> None:
        if interval <= 0:
            raise ValueError(f"logger.video_interval must be positive to record, not {interval}")
        self.view = view
        self.run_dir = Path(run_dir)
        self.interval = int(interval)
        self.frames_per_clip = max(1, math.ceil(seconds / step_seconds))
        self.fps = 1.0 / step_seconds
        self.clips: list[Path] = []
        self._writer: ClipWriter | None = None
        self._started_at: int | None = None

    def after_step(self, iteration: int, log_writer) -> None:
        """After one environment step of the iteration that follows ``iteration`` completed ones: start a clip
        when one is due, add the frame to the clip being made, and finish it when it is long enough."""
        if self._writer is None:
            if iteration % self.interval or iteration == self._started_at:
                return
            self._started_at = iteration
            self._writer = ClipWriter(training_stem(self.run_dir, iteration), self.fps)
        self._writer.add(self.view.frame())
        if self._writer.frames >= self.frames_per_clip:
            clip = self._writer.close()
            self._writer = None
            self.clips.append(clip.stem)
            publish(log_writer, clip, iteration, caption=f"after {self._started_at} iterations")
            print(f"[rlforge] video: {clip.frames} frames of iteration {self._started_at} in {clip.stem}.*")

    def close(self) -> None:
        """Drop a clip cut short by the end of training, and free the view."""
        if self._writer is not None:
            self._writer.abort()
            self._writer = None
        self.view.close()


def recorder_for(cfg, env, run_dir: Path) -> TrainingRecorder | None:
    """The recorder a training config asks for (``logger.video_interval`` > 0), its view opened now so that a
    missing OpenGL stops the run before it trains; None when videos are off."""
    interval = int(cfg.logger.video_interval)
    if interval <= 0:
        return None
    from video.probe import step_seconds
    from video.views import open_view

    view = open_view(cfg.task, env)
    return TrainingRecorder(
        view,
        run_dir,
        interval=interval,
        seconds=float(cfg.logger.video_seconds),
        step_seconds=step_seconds(cfg.task.kind, env),
    )
