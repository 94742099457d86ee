"""Text drawn on frames: the commanded and actual velocity and the time, in a box at the top left."""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np


@lru_cache(maxsize=4)
def font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType: its fixed bitmap font
        return ImageFont.load_default()


def velocity_lines(command: np.ndarray, actual: np.ndarray, seconds: float, episode: int) -> list[str]:
    """The head-up lines of one frame: commanded and actual (vx, vy, yaw rate), episode and its time."""

    def triple(values: np.ndarray) -> str:
        text = f"vx {values[0]:+5.2f}  vy {values[1]:+5.2f} m/s"
        return text if math.isnan(float(values[2])) else f"{text}  wz {values[2]:+5.2f} rad/s"

    return [f"cmd  {triple(command)}", f"act  {triple(actual)}", f"episode {episode}  t {seconds:5.2f} s"]


LINE_COLORS = ((120, 240, 140), (140, 180, 255), (255, 255, 255))
"""Colours of the head-up lines: the command in the command arrow's green, the actual velocity in its blue."""


def draw_lines(frame: np.ndarray, lines: list[str], colors=LINE_COLORS) -> np.ndarray:
    """``frame`` (H, W, 3) uint8 with ``lines`` (each in its colour of ``colors``, white past them) on a dark box
    at its top left."""
    from PIL import Image, ImageDraw

    size = max(10, frame.shape[0] // 28)
    text_font = font(size)
    image = Image.fromarray(frame)
    draw = ImageDraw.Draw(image, "RGBA")
    pad, step = size // 2, int(size * 1.3)
    width = max(draw.textlength(line, font=text_font) for line in lines)
    draw.rectangle((0, 0, int(width) + 2 * pad, pad * 2 + step * len(lines)), fill=(0, 0, 0, 150))
    for row, line in enumerate(lines):
        color = colors[row] if row < len(colors) else (255, 255, 255)
        draw.text((pad, pad + row * step), line, fill=(*color, 255), font=text_font)
    return np.asarray(image)
