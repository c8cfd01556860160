"""CSV: the file's records as `header: value` rows, cited by record number (the header is
row 1), up to the configured row limit."""

from __future__ import annotations

import csv
import io

from service.parsers.base import (
    DEFAULT_OPTIONS,
    Parsed,
    ParseError,
    ParseOptions,
    TextBuilder,
    file_title,
)
from service.parsers.spreadsheet import SheetWriter

EXTENSIONS = (".csv", ".tsv")


def decode(data: bytes) -> str:
    """UTF-8 (with or without BOM), else Windows-1252, as spreadsheet exports are."""
    if b"\x00" in data:
        raise ParseError("binary file (contains NUL bytes)")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("windows-1252", errors="replace")


def _dialect(sample: str, source: str) -> type[csv.Dialect] | csv.Dialect:
    """Tab for .tsv; otherwise the delimiter the first lines use, comma by default."""
    if source.lower().endswith(".tsv"):
        return csv.excel_tab
    try:
        return csv.Sniffer().sniff(sample, delimiters=",;\t|")
    except csv.Error:
        return csv.excel


def parse(data: bytes, source: str, options: ParseOptions = DEFAULT_OPTIONS) -> Parsed:
    """Every record under the header row, as `header: value` lines, with row numbers."""
    if not data.strip():
        raise ParseError("empty file")
    content = decode(data)
    out = TextBuilder()
    writer = SheetWriter(out, options.max_sheet_rows)
    try:
        reader = csv.reader(io.StringIO(content, newline=""), _dialect(content[:8192], source))
        writer.sheet("", reader, None)
    except csv.Error as exc:
        raise ParseError(f"broken CSV ({exc})") from exc
    text = out.text()
    if not text.strip():
        raise ParseError("no rows with values under a header")
    return Parsed(
        text=text, title=file_title(source), rows=tuple(writer.rows), omitted=tuple(writer.omitted)
    )
