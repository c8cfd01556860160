"""Spreadsheets (.xlsx): one sheet after another, each row as `header: value` lines so a
passage read alone still says what its numbers are; sheets are sections, rows are cited by
the numbers the spreadsheet shows. Formulas are read as their saved values (never computed),
macros and external links are never loaded."""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Iterable, Sequence

from service.models import Row, Section
from service.parsers.base import (
    DEFAULT_OPTIONS,
    Parsed,
    ParseError,
    ParseOptions,
    TextBuilder,
    cut_title,
    file_title,
    open_zip,
)

EXTENSIONS = (".xlsx", ".xlsm")


def column_name(index: int) -> str:
    """Spreadsheet letters of a 0-based column index (0 -> A, 26 -> AA)."""
    name = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        name = chr(65 + rest) + name
    return name


def cell_text(value: object) -> str:
    """A cell value as the spreadsheet shows it, on one line."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, float):
        return f"{value:.15g}"
    if isinstance(value, dt.datetime):
        return value.date().isoformat() if value.time() == dt.time() else value.isoformat(" ")
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    return " ".join(str(value).split())


class SheetWriter:
    """Writes rows under their header as `header: value` blocks, keeping each row's span."""

    def __init__(self, out: TextBuilder, limit: int) -> None:
        self.out = out
        self.limit = limit
        self.rows: list[Row] = []
        self.sections: list[Section] = []
        self.omitted: list[str] = []

    def sheet(self, name: str, rows: Iterable[Sequence[object]], total: int | None) -> None:
        """Write one sheet: the first non-empty row is the header, rows past limit are left out
        and reported."""
        header: list[str] | None = None
        start: int | None = None
        for number, values in enumerate(rows, start=1):
            if number > self.limit:
                where = f"sheet {name}: " if name else ""
                of = f" of {total}" if total and total > self.limit else ""
                self.omitted.append(
                    f"{where}rows after {self.limit}{of} not indexed (GROUNDQA_MAX_SHEET_ROWS)"
                )
                break
            cells = [cell_text(v) for v in values]
            if not any(cells):
                continue
            if header is None:
                header = [c or column_name(i) for i, c in enumerate(cells)]
                continue
            names = header + [column_name(i) for i in range(len(header), len(cells))]
            span = self.out.add("\n".join(f"{names[i]}: {c}" for i, c in enumerate(cells) if c))
            if span is not None:
                start = span.start if start is None else start
                self.rows.append(Row(span.start, span.end, name, number))
        if start is not None and name:
            self.sections.append(Section(start, self.out.length, name))


def parse(data: bytes, source: str, options: ParseOptions = DEFAULT_OPTIONS) -> Parsed:
    """Every worksheet's rows under its header, up to the row limit per sheet."""
    import openpyxl

    open_zip(data, "Excel workbook", options).close()
    out = TextBuilder()
    writer = SheetWriter(out, options.max_sheet_rows)
    try:
        # read_only streams rows (a huge sheet is never held in memory); data_only reads the
        # values Excel saved instead of formulas; keep_links=False never loads external links.
        book = openpyxl.load_workbook(
            io.BytesIO(data), read_only=True, data_only=True, keep_links=False, keep_vba=False
        )
        try:
            for sheet in book.worksheets:
                total = getattr(sheet, "max_row", None)
                writer.sheet(sheet.title, sheet.iter_rows(values_only=True), total)
            title = " ".join((book.properties.title or "").split())
        finally:
            book.close()
    except ParseError:
        raise
    except Exception as exc:  # damaged parts raise KeyError, lxml, zip and value errors alike
        raise ParseError(f"broken Excel workbook ({type(exc).__name__}: {exc})") from exc
    text = out.text()
    if not text.strip():
        raise ParseError("no rows with values under a header in the workbook")
    return Parsed(
        text=text,
        title=cut_title(title) or file_title(source),
        sections=tuple(writer.sections),
        rows=tuple(writer.rows),
        omitted=tuple(writer.omitted),
    )
