"""Word (.docx): body paragraphs and tables in order, headings as sections; headers, footers,
comments and macros are never read."""

from __future__ import annotations

import io
import re
from typing import Any

from service.parsers.base import (
    DEFAULT_OPTIONS,
    Heading,
    Parsed,
    ParseError,
    ParseOptions,
    TextBuilder,
    clean,
    cut_title,
    first_line_title,
    open_zip,
    sections_from_headings,
)

EXTENSIONS = (".docx",)
CELL_SEPARATOR = " | "
_HEADING_STYLE = re.compile(r"heading\s*([1-9])$", re.IGNORECASE)


def heading_level(style_name: str) -> int | None:
    """Heading level of a paragraph style, else None: "Title" is 1, "Heading n" is n + 1 (at
    most 6), so a document's title heads the section path of its chapters."""
    if style_name.strip().lower() == "title":
        return 1
    match = _HEADING_STYLE.match(style_name.strip())
    return min(int(match.group(1)) + 1, 6) if match else None


def table_rows(table: Any) -> list[str]:
    """Each row of a table as its cells' text joined by CELL_SEPARATOR (a merged cell once)."""
    lines = []
    for row in table.rows:
        seen: set[int] = set()
        cells = []
        try:
            row_cells = row.cells
        except Exception:  # irregular grids (gridBefore, vMerge oddities) can break python-docx
            continue
        for cell in row_cells:
            if id(cell._tc) in seen:
                continue
            seen.add(id(cell._tc))
            cells.append(" ".join(clean(cell.text).split()))
        if any(cells):
            lines.append(CELL_SEPARATOR.join(cells))
    return lines


def parse(data: bytes, source: str, options: ParseOptions = DEFAULT_OPTIONS) -> Parsed:
    """The document body as text; "Heading n"/"Title" paragraphs give the section path."""
    import docx
    from docx.table import Table

    open_zip(data, "Word document", options).close()
    try:
        document = docx.Document(io.BytesIO(data))
        blocks = list(document.iter_inner_content())
    except Exception as exc:  # damaged parts raise KeyError, lxml and zip errors alike
        raise ParseError(f"broken Word document ({type(exc).__name__}: {exc})") from exc
    out = TextBuilder()
    headings: list[Heading] = []
    for block in blocks:
        if isinstance(block, Table):
            out.add("\n".join(table_rows(block)))
            continue
        try:
            style = block.style.name if block.style is not None else ""
        except Exception:
            style = ""
        span = out.add(block.text)
        level = heading_level(style or "")
        if span is not None and level is not None:
            title = " ".join(out.parts[-1].split())
            headings.append(Heading(span.start, span.end, level, title))
    text = out.text()
    if not text.strip():
        raise ParseError("no text in the Word document (images only?)")
    try:
        title = " ".join((document.core_properties.title or "").split())
    except Exception:
        title = ""
    if not title:
        title = next((h.title for h in headings if h.level <= 2), "")
    return Parsed(
        text=text,
        title=cut_title(title) or first_line_title(text, source),
        sections=sections_from_headings(text, headings),
    )
