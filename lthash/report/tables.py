"""One table model, three renderings: Markdown (report.md), CSV (raw numbers) and HTML.

A :class:`Table` holds the raw records (fractions, not percent; ``None`` where undefined)
that go to CSV, and display sections (one per method x backbone x bits, say) of formatted
cells that go to Markdown and HTML. The HTML file is self-contained so that
``snakemake --report`` shows it inline (Snakemake 9 shows text/html and images; a CSV is a
download only).
"""

from __future__ import annotations

import csv
import html
import io
import os
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from lthash.io import atomic_path

MISSING = "–"


def pct(value: float | None, digits: int = 2) -> str:
    """A fraction as percent with ``digits`` decimals; ``–`` when undefined."""
    return MISSING if value is None else f"{100 * float(value):.{digits}f}"


def signed_pct(value: float | None) -> str:
    """A difference of fractions in percentage points, signed (``+1.23``)."""
    return MISSING if value is None else f"{100 * float(value):+.2f}"


def share(value: float | None) -> str:
    """A share (1.0 = all of a gap) as ``63 %``; ``–`` when undefined."""
    return MISSING if value is None else f"{100 * float(value):.0f} %"


@dataclass
class Section:
    """One displayed sub-table: a heading, a sentence read from its numbers, formatted rows."""

    heading: str
    header: list[str]
    rows: list[list[str]]
    note: str = ""


@dataclass
class Table:
    """A report table: raw ``records`` (CSV) and formatted ``sections`` (Markdown, HTML)."""

    name: str
    title: str
    intro: str
    csv_columns: list[str]
    records: list[dict[str, Any]] = field(default_factory=list)
    sections: list[Section] = field(default_factory=list)
    empty: str = "_nothing to show in these runs_"


def markdown_grid(header: Sequence[Any], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(str(cell) for cell in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def to_markdown(table: Table, heading_level: int = 3) -> str:
    """The table's intro and every section (heading, note, grid) as Markdown."""
    parts = [table.intro] if table.intro else []
    if not table.sections:
        parts.append(table.empty)
    for section in table.sections:
        block = [f"{'#' * heading_level} {section.heading}"] if section.heading else []
        if section.note:
            block.append(section.note)
        block.append(markdown_grid(section.header, section.rows))
        parts.append("\n\n".join(block))
    return "\n\n".join(parts)


def to_csv(table: Table) -> str:
    """The raw records, one per line, ``None`` as an empty cell."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=table.csv_columns, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for record in table.records:
        writer.writerow({key: "" if record.get(key) is None else record.get(key) for key in table.csv_columns})
    return buffer.getvalue()


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.2em; color: #1b1b1b; background: #fff; }
h1 { font-size: 1.3em; } h2 { font-size: 1.1em; margin-top: 1.4em; }
p { max-width: 70em; line-height: 1.4; }
table { border-collapse: collapse; margin: 0.4em 0 1.2em; font-size: 0.9em; }
th, td { border: 1px solid #c8c8c8; padding: 0.25em 0.55em; text-align: right; }
th { background: #eef1f5; } td:first-child, th:first-child { text-align: left; }
td.neg { color: #b00020; }
"""


def _page(title: str, body: list[str], sources: Mapping[str, str] | None) -> str:
    """A self-contained HTML page of some body elements, with the sources as small print."""
    esc = html.escape
    small = [f"<p><small>{esc(label)}: {esc(text)}</small></p>" for label, text in (sources or {}).items()]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{esc(title)}</title><style>{_STYLE}</style></head>\n<body>\n"
            + "\n".join(body + small) + "\n</body></html>\n")


def to_html(table: Table, sources: Mapping[str, str] | None = None) -> str:
    """A self-contained HTML page of the table (intro, sections, notes)."""
    esc = html.escape
    body = [f"<h1>{esc(table.title)}</h1>"]
    if table.intro:
        body.append(f"<p>{esc(table.intro)}</p>")
    if not table.sections:
        body.append(f"<p><em>{esc(table.empty.strip('_'))}</em></p>")
    for section in table.sections:
        if section.heading:
            body.append(f"<h2>{esc(section.heading)}</h2>")
        if section.note:
            body.append(f"<p>{esc(section.note)}</p>")
        head = "".join(f"<th>{esc(str(cell))}</th>" for cell in section.header)
        rows = []
        for row in section.rows:
            cells = []
            for cell in row:
                text = str(cell)
                negative = text.startswith("-") and text[1:2].isdigit()
                cells.append(f"<td class=\"neg\">{esc(text)}</td>" if negative else f"<td>{esc(text)}</td>")
            rows.append("<tr>" + "".join(cells) + "</tr>")
        body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>")
    return _page(table.title, body, sources)


def verdict_html(title: str, verdict: str, readings: Sequence[str], sources: Mapping[str, str] | None = None) -> str:
    """A self-contained HTML page: the verdict sentence first, then the sentence of every setting."""
    esc = html.escape
    body = [f"<h1>{esc(title)}: the verdict</h1>", f"<p><strong>{esc(verdict)}</strong></p>"]
    if readings:
        body.append("<h2>Per setting</h2><ul>" + "".join(f"<li>{esc(text)}</li>" for text in readings) + "</ul>")
    return _page(f"{title}: the verdict", body, sources)


def write_table(table: Table, folder: str | os.PathLike, sources: Mapping[str, str] | None = None) -> None:
    """``<folder>/<name>.csv`` and ``<folder>/<name>.html``, each written atomically."""
    folder = os.fspath(folder)
    with atomic_path(os.path.join(folder, f"{table.name}.csv"), suffix=".csv") as tmp:
        tmp.write_text(to_csv(table))
    with atomic_path(os.path.join(folder, f"{table.name}.html"), suffix=".html") as tmp:
        tmp.write_text(to_html(table, sources))
