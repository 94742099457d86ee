"""A clip written while its frames arrive: an H.264 MP4 streamed to disk, an animated GIF and a contact sheet.

The MP4 keeps every frame at the environment's step rate; the GIF (for places that show no video, and for
TensorBoard) keeps about ``GIF_FPS`` frames a second at most ``GIF_WIDTH`` pixels wide, thinned further when a
clip is long; the contact sheet is ``SHEET_TILES`` frames of the GIF's, evenly spaced, in one PNG."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from video.files import SUFFIXES

GIF_FPS = 12.5
"""Frames per second the GIF keeps (at most)."""
GIF_WIDTH = 320
"""Largest width of the GIF's and the contact sheet's frames [pixels]."""
GIF_MAX_FRAMES = 250
"""The GIF halves its frame rate whenever it would hold more frames than this."""
SHEET_TILES = (4, 2)
"""Columns and rows of the contact sheet."""
MP4_CODEC = "libx264"
"""Encoder of the MP4 (PyAV's wheels bundle it); yuv420p, as every browser plays it."""

_warned_no_mp4 = False


@dataclass
class Clip:
    """The files of a finished clip and its length. ``mp4`` is None where PyAV is not installed."""

    stem: Path
    mp4: Path | None
    gif: Path
    sheet: Path
    frames: int
    fps: float

    @property
    def seconds(self) -> float:
        """Length of the clip [s]."""
        return self.frames / self.fps

    def as_dict(self) -> dict:
        return {
            "mp4": str(self.mp4) if self.mp4 else None,
            "gif": str(self.gif),
            "sheet": str(self.sheet),
            "frames": self.frames,
            "fps": self.fps,
            "seconds": self.seconds,
        }


class ClipWriter:
    """Collects the frames of one clip (``add``) and writes its files (``close``) under ``stem`` + suffix."""

    def __init__(self, stem: Path, fps: float) -> None:
        self.stem = Path(stem)
        self.fps = float(fps)
        self.frames = 0
        self._container = None
        self._stream = None
        self._mp4_failed = False
        self._kept: list[tuple[float, np.ndarray]] = []
        self._stride = max(1, round(self.fps / GIF_FPS))

    def add(self, frame: np.ndarray) -> None:
        """Append a (height, width, 3) uint8 frame; every frame of a clip has the same size."""
        if self.frames == 0:
            self.stem.parent.mkdir(parents=True, exist_ok=True)
            self._open_mp4(frame.shape[1], frame.shape[0])
        if self._stream is not None:
            import av

            picture = av.VideoFrame.from_ndarray(_even(frame), format="rgb24")
            for packet in self._stream.encode(picture):
                self._container.mux(packet)
        if self.frames % self._stride == 0:
            self._kept.append((self.frames / self.fps, _shrink(frame, GIF_WIDTH)))
            if len(self._kept) > GIF_MAX_FRAMES:
                self._kept = self._kept[::2]
                self._stride *= 2
        self.frames += 1

    def _open_mp4(self, width: int, height: int) -> None:
        global _warned_no_mp4
        try:
            import av
        except ImportError:
            if not _warned_no_mp4:
                print("[rlforge] video: PyAV is not installed (pip install av); writing the GIF and contact sheet only")
                _warned_no_mp4 = True
            return
        self._container = av.open(str(self.stem.with_suffix(SUFFIXES["mp4"])), mode="w")
        self._stream = self._container.add_stream(MP4_CODEC, rate=Fraction(self.fps).limit_denominator(1000))
        self._stream.width, self._stream.height = width - width % 2, height - height % 2
        self._stream.pix_fmt = "yuv420p"
        self._stream.options = {"crf": "23", "preset": "veryfast"}

    def close(self) -> Clip:
        """Finish the MP4, write the GIF and the contact sheet; return the clip's files."""
        if self.frames == 0:
            raise ValueError(f"clip {self.stem} has no frames")
        mp4 = None
        if self._stream is not None:
            for packet in self._stream.encode():
                self._container.mux(packet)
            self._container.close()
            mp4 = self.stem.with_suffix(SUFFIXES["mp4"])
        gif = self.stem.with_suffix(SUFFIXES["gif"])
        write_gif(gif, [frame for _, frame in self._kept], 1000.0 * self._stride / self.fps)
        sheet = self.stem.with_suffix(SUFFIXES["sheet"])
        write_sheet(sheet, self._kept)
        return Clip(self.stem, mp4, gif, sheet, self.frames, self.fps)

    def abort(self) -> None:
        """Drop an unfinished clip: close the MP4 and remove it."""
        if self._container is not None:
            self._container.close()
            self.stem.with_suffix(SUFFIXES["mp4"]).unlink(missing_ok=True)
        self._container = self._stream = None
        self._kept = []


def write_gif(path: Path, frames: list[np.ndarray], frame_ms: float) -> None:
    """An endlessly looping GIF of ``frames``, each shown ``frame_ms`` milliseconds."""
    from PIL import Image

    images = [Image.fromarray(frame).quantize(colors=128, dither=Image.Dither.NONE) for frame in frames]
    images[0].save(
        path, save_all=True, append_images=images[1:], duration=max(20, round(frame_ms)), loop=0, optimize=False
    )


def write_sheet(path: Path, timed_frames: list[tuple[float, np.ndarray]]) -> None:
    """A contact sheet: up to ``SHEET_TILES`` frames, evenly spaced over the clip, each labelled with its time."""
    from PIL import Image, ImageDraw

    from video.overlay import font

    columns, rows = SHEET_TILES
    count = min(len(timed_frames), columns * rows)
    picks = np.linspace(0, len(timed_frames) - 1, count).round().astype(int)
    height, width = timed_frames[0][1].shape[:2]
    sheet = Image.new("RGB", (columns * width, rows * height), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    label_font = font(max(10, height // 14))
    for tile, index in enumerate(picks):
        seconds, frame = timed_frames[index]
        x, y = (tile % columns) * width, (tile // columns) * height
        sheet.paste(Image.fromarray(frame), (x, y))
        draw.rectangle((x, y + height - height // 9, x + width // 4, y + height), fill=(0, 0, 0))
        draw.text((x + 3, y + height - height // 9), f"{seconds:.1f} s", fill=(255, 255, 255), font=label_font)
    sheet.save(path)


def _shrink(frame: np.ndarray, width: int) -> np.ndarray:
    """``frame`` scaled down to at most ``width`` pixels wide (by a whole factor: no resampling blur)."""
    factor = -(-frame.shape[1] // width)
    return np.ascontiguousarray(frame[::factor, ::factor]) if factor > 1 else frame.copy()


def _even(frame: np.ndarray) -> np.ndarray:
    """``frame`` cropped to even sides (H.264 in yuv420p needs them)."""
    height, width = frame.shape[:2]
    return np.ascontiguousarray(frame[: height - height % 2, : width - width % 2])
