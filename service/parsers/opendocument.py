"""OpenDocument text (.odt): paragraphs, lists and tables of content.xml in order, headings
(text:h and their outline level) as sections; footnotes, annotations and macros are left out."""

from __future__ import annotations

import zipfile
from typing import Any

from defusedxml import ElementTree

from service.parsers.base import (
    DEFAULT_OPTIONS,
    Heading,
    Parsed,
    ParseError,
    ParseOptions,
    TextBuilder,
    cut_title,
    first_line_title,
    open_zip,
    sections_from_headings,
)
from service.parsers.word import CELL_SEPARATOR

EXTENSIONS = (".odt",)
_TEXT = "urn:oasis:names:tc:opendocument:xmlns:text:1.0"
_TABLE = "urn:oasis:names:tc:opendocument:xmlns:table:1.0"
_OFFICE = "urn:oasis:names:tc:opendocument:xmlns:office:1.0"
_DC = "http://purl.org/dc/elements/1.1/"
_SKIP = frozenset({f"{{{_TEXT}}}note", f"{{{_OFFICE}}}annotation", f"{{{_TEXT}}}tracked-changes"})


def _inline(element: Any) -> str:
    """The text of a paragraph or heading: spaces (text:s), tabs and line breaks as written."""
    parts = [element.text or ""]
    for child in element:
        tag = child.tag
        if tag == f"{{{_TEXT}}}s":
            parts.append(" " * int(child.attrib.get(f"{{{_TEXT}}}c", "1") or 1))
        elif tag == f"{{{_TEXT}}}tab":
            parts.append("\t")
        elif tag == f"{{{_TEXT}}}line-break":
            parts.append("\n")
        elif tag not in _SKIP:
            parts.append(_inline(child))
        parts.append(child.tail or "")
    return "".join(parts)


class _Walker:
    """Writes the body's blocks in document order, noting headings."""

    def __init__(self) -> None:
        self.out = TextBuilder()
        self.headings: list[Heading] = []

    def walk(self, element: Any) -> None:
        # An explicit stack: deeply nested lists must not hit the recursion limit.
        stack = [element]
        while stack:
            node = stack.pop()
            tag = node.tag
            if tag == f"{{{_TEXT}}}h":
                span = self.out.add(_inline(node))
                if span is not None:
                    level = int(node.attrib.get(f"{{{_TEXT}}}outline-level", "1") or 1)
                    title = " ".join(self.out.parts[-1].split())
                    self.headings.append(
                        Heading(span.start, span.end, min(max(level, 1), 6), title)
                    )
            elif tag == f"{{{_TEXT}}}p":
                self.out.add(_inline(node))
            elif tag == f"{{{_TABLE}}}table":
                self.out.add("\n".join(_rows(node)))
            elif tag not in _SKIP:
                stack.extend(reversed(list(node)))


def _rows(table: Any) -> list[str]:
    """Each table row's cells joined by CELL_SEPARATOR."""
    lines = []
    for row in table.iter(f"{{{_TABLE}}}table-row"):
        cells = [
            " ".join(" ".join(_inline(p) for p in cell.iter(f"{{{_TEXT}}}p")).split())
            for cell in row
            if cell.tag == f"{{{_TABLE}}}table-cell"
        ]
        if any(cells):
            lines.append(CELL_SEPARATOR.join(cells))
    return lines


def _meta_title(archive: zipfile.ZipFile) -> str:
    """dc:title of meta.xml, or ""."""
    try:
        meta = ElementTree.fromstring(archive.read("meta.xml"))
    except Exception:
        return ""
    node = meta.find(f".//{{{_DC}}}title")
    return " ".join((node.text or "").split()) if node is not None else ""


def parse(data: bytes, source: str, options: ParseOptions = DEFAULT_OPTIONS) -> Parsed:
    """The document body as text with heading sections."""
    archive = open_zip(data, "OpenDocument text", options)
    with archive:
        try:
            content = ElementTree.fromstring(archive.read("content.xml"))
        except Exception as exc:  # missing part, malformed XML, entity bombs (defusedxml)
            raise ParseError(f"broken OpenDocument text ({type(exc).__name__}: {exc})") from exc
        meta_title = _meta_title(archive)
    body = content.find(f"{{{_OFFICE}}}body/{{{_OFFICE}}}text")
    if body is None:
        raise ParseError("not an OpenDocument text (no office:text body)")
    walker = _Walker()
    walker.walk(body)
    text = walker.out.text()
    if not text.strip():
        raise ParseError("no text in the OpenDocument file")
    headings = walker.headings
    title = meta_title or next((h.title for h in headings if h.level == 1), "")
    return Parsed(
        text=text,
        title=cut_title(title) or first_line_title(text, source),
        sections=sections_from_headings(text, headings),
    )
