"""PowerPoint (.pptx): slide after slide, its title as the section, then body text, tables and
speaker notes; each slide's range is kept so citations name the slide."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

from service.models import Section, Span
from service.parsers.base import (
    DEFAULT_OPTIONS,
    Parsed,
    ParseError,
    ParseOptions,
    TextBuilder,
    clean,
    cut_title,
    file_title,
    open_zip,
)
from service.parsers.word import CELL_SEPARATOR

EXTENSIONS = (".pptx",)
NOTES_PREFIX = "Notes: "


def _shapes(shapes: Any) -> Iterator[Any]:
    """Every shape, group members included, in the slide's order."""
    for shape in shapes:
        if getattr(shape, "shape_type", None) == 6 or hasattr(shape, "shapes"):  # a group
            yield from _shapes(shape.shapes)
        else:
            yield shape


def _shape_text(shape: Any) -> str:
    """The text of a text box or placeholder, or a table's rows; "" for pictures and charts."""
    if getattr(shape, "has_table", False):
        rows = []
        for row in shape.table.rows:
            cells = [" ".join(clean(cell.text).split()) for cell in row.cells]
            if any(cells):
                rows.append(CELL_SEPARATOR.join(cells))
        return "\n".join(rows)
    if getattr(shape, "has_text_frame", False):
        return str(shape.text_frame.text)
    return ""


def _notes(slide: Any) -> str:
    """The slide's speaker notes, or ""."""
    if not slide.has_notes_slide:
        return ""
    frame = slide.notes_slide.notes_text_frame
    return str(frame.text) if frame is not None else ""


def parse(data: bytes, source: str, options: ParseOptions = DEFAULT_OPTIONS) -> Parsed:
    """Every slide's title, body, tables and notes in order, with slide ranges and sections."""
    from pptx import Presentation

    open_zip(data, "PowerPoint presentation", options).close()
    try:
        slides = list(Presentation(io.BytesIO(data)).slides)
    except Exception as exc:  # damaged parts raise KeyError, lxml and zip errors alike
        raise ParseError(f"broken PowerPoint presentation ({type(exc).__name__}: {exc})") from exc
    out = TextBuilder()
    spans: list[Span] = []
    sections: list[Section] = []
    empty: list[int] = []
    for number, slide in enumerate(slides, start=1):
        try:
            title_shape = slide.shapes.title
            title = " ".join(clean(title_shape.text_frame.text).split()) if title_shape else ""
            before = out.length
            start = before + (len(out.SEPARATOR) if before else 0)
            out.add(title)
            for shape in _shapes(slide.shapes):
                if title_shape is None or shape.shape_id != title_shape.shape_id:
                    out.add(_shape_text(shape))
            notes = clean(_notes(slide)).strip()
            if notes:
                out.add(NOTES_PREFIX + notes)
        except Exception as exc:
            raise ParseError(f"broken PowerPoint slide {number} ({type(exc).__name__})") from exc
        if out.length == before:
            empty.append(number)
            spans.append(Span(out.length, out.length))
            continue
        spans.append(Span(start, out.length))
        if title:
            sections.append(Section(start, out.length, title))
    text = out.text()
    if not text.strip():
        raise ParseError("no text in the presentation (image-only slides?)")
    omitted = (
        (f"slides without text, not indexed: {', '.join(map(str, empty))} (images only?)",)
        if empty
        else ()
    )
    title = next((s.path for s in sections), "") or file_title(source)
    return Parsed(
        text=text,
        title=cut_title(title),
        sections=tuple(sections),
        slides=tuple(spans),
        omitted=omitted,
    )
