"""The report's HTML page: its tables and the PNG, in one self-contained file."""

from __future__ import annotations

import base64
import html
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
