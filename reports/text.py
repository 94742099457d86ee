"""Values and tables as text: durations, money, numbers, label/value tables and grids."""

from __future__ import annotations

import math


def duration(seconds: float | None) -> str:
    """Seconds as ``1h02m03s`` / ``4m05s`` / ``6.7s``."""
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)):
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def money(value: float | None, currency: str) -> str:
    """An amount with its currency; ``-`` for none."""
    if value is None:
        return "-"
    # Short test runs cost fractions of a cent; keep their significant digits.
    return f"{value:,.2f} {currency}" if abs(value) >= 1 or value == 0 else f"{value:.3g} {currency}"


def number(value: float | None, digits: int = 4) -> str:
    """A figure with ``digits`` significant digits; ``-`` for none or NaN."""
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}g}"


def text_table(rows: list[tuple[str, str]]) -> str:
    """(label, value) rows, labels aligned."""
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"  {label.ljust(width)}  {value}" for label, value in rows)


def grid(header: list[str], rows: list[list[str]]) -> str:
    """A header and rows as aligned columns, the header underlined."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=False)]
    lines = ["  ".join(str(cell).ljust(w) for cell, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(lines)
