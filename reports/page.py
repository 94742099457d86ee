"""The report's HTML page: its tables and the PNG, in one self-contained file."""

from __future__ import annotations

import base64
import html
import os
from pathlib import Path


def html_page(title: str, sections: list[tuple[str, str]], png: Path) -> str:
    """A page of (heading, HTML) sections followed by the PNG, embedded."""
    image = base64.b64encode(png.read_bytes()).decode()
    body = "\n".join(f"<h2>{html.escape(heading)}</h2>\n{content}" for heading, content in sections)
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin-bottom: 1.5em; }}
td, th {{ border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; font-size: 0.9em; }}
th {{ background: #f0f0f0; }}
code {{ font-size: 0.85em; }}
img {{ max-width: 100%; }}
.clip img.sheet {{ max-width: 640px; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
{body}
<h2>Figures</h2>
<img alt="learning curves and time breakdown" src="data:image/png;base64,{image}">
</body></html>
"""


def html_rows(rows: list[tuple[str, str]]) -> str:
    """(label, value) rows as a two-column table."""
    cells = "\n".join(f"<tr><th>{html.escape(label)}</th><td>{html.escape(value)}</td></tr>" for label, value in rows)
    return f"<table>\n{cells}\n</table>"


def html_grid(header: list[str], rows: list[list[str]]) -> str:
    """A header and rows as a table."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "\n".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table>\n<tr>{head}</tr>\n{body}\n</table>"


MAX_EMBEDDED_VIDEO_BYTES = 8_000_000
"""A clip up to this size is embedded in the page; a larger one is linked (relative to the page)."""


def html_image(png: Path, alt: str, css_class: str = "") -> str:
    """A PNG embedded as an image."""
    image = base64.b64encode(Path(png).read_bytes()).decode()
    klass = f' class="{css_class}"' if css_class else ""
    return f'<img{klass} alt="{html.escape(alt)}" src="data:image/png;base64,{image}">'


def html_clip(sheet: Path, mp4: Path | None, page_dir: Path, alt: str) -> str:
    """A clip: its MP4 as a looping video (embedded, or linked when large) over its contact sheet, which also
    stands in where the video does not play. One ``class="clip"`` element per clip."""
    parts = []
    if mp4 is not None and mp4.is_file():
        size = mp4.stat().st_size
        if size <= MAX_EMBEDDED_VIDEO_BYTES:
            source = "data:video/mp4;base64," + base64.b64encode(mp4.read_bytes()).decode()
        else:
            source = html.escape(os.path.relpath(mp4, page_dir))
        parts.append(f'<video controls loop muted autoplay playsinline width="480" src="{source}"></video>')
    parts.append(html_image(sheet, f"contact sheet: {alt}", "sheet"))
    return f'<div class="clip">{"<br>".join(parts)}</div>'


def html_cells(header: list[str], rows: list[list[str]]) -> str:
    """A table whose cells are HTML already (images, clips); the header is text."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "\n".join(
        "<tr>" + "".join(f'<td style="vertical-align: top">{c}</td>' for c in row) + "</tr>" for row in rows
    )
    return f"<table>\n<tr>{head}</tr>\n{body}\n</table>"
