"""Cite: turn hits into passages whose citation can be checked against the source text."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol
from urllib.parse import quote, urlencode

from service.models import Chunk, Hit, Span


@dataclass(frozen=True, slots=True)
class Citation:
    """Where a passage comes from: `document_text[char_start:char_end] == passage text`."""

    source: str
    title: str
    char_start: int
    char_end: int
    line_start: int
    line_end: int
    chunk_id: str
    url: str
    section: str | None = None  # heading path ("Install > Docker"), None outside any section
    page_start: int | None = None  # 1-based pages of a PDF, None for other formats
    page_end: int | None = None
    collection: str = "default"  # the top-level seeds/ folder of the source
    slide: int | None = None  # 1-based slide of a presentation
    sheet: str | None = None  # spreadsheet sheet name (None for CSV and other formats)
    row_start: int | None = None  # spreadsheet rows as the application numbers them
    row_end: int | None = None


@dataclass(frozen=True, slots=True)
class Highlight:
    """A sentence of a passage that best answers the question, in document offsets."""

    char_start: int
    char_end: int
    text: str


@dataclass(frozen=True, slots=True)
class Passage:
    """A ranked, cited passage."""

    rank: int
    score: float
    text: str
    citation: Citation
    highlights: tuple[Highlight, ...] = ()


def document_url(source: str) -> str:
    """API path of an indexed document."""
    return "/v1/documents/" + quote(source, safe="/")


def span_link(base_url: str, source: str, char_start: int, char_end: int) -> str:
    """The page at base_url showing source with text[char_start:char_end] highlighted."""
    query = urlencode({"doc": source, "start": char_start, "end": char_end})
    return f"{base_url.rstrip('/')}/?{query}"


class Located(Protocol):
    """Anything carrying a citation's location fields (Citation, the API's CitationOut)."""

    @property
    def slide(self) -> int | None: ...
    @property
    def sheet(self) -> str | None: ...
    @property
    def row_start(self) -> int | None: ...
    @property
    def row_end(self) -> int | None: ...
    @property
    def page_start(self) -> int | None: ...
    @property
    def page_end(self) -> int | None: ...


def place(citation: Located) -> str | None:
    """The slide, the sheet and rows, or the pages of a citation ("slide 4", "Budget, rows
    10-14", "page 3"); None for formats cited by lines."""
    if citation.slide is not None:
        return f"slide {citation.slide}"
    if citation.row_start is not None:
        last = citation.row_end or citation.row_start
        rows = f"row {last}" if last == citation.row_start else f"rows {citation.row_start}-{last}"
        return f"{citation.sheet}, {rows}" if citation.sheet else rows
    if citation.page_start is not None:
        pages = citation.page_start, citation.page_end or citation.page_start
        return f"page {pages[0]}" if pages[0] == pages[1] else f"pages {pages[0]}-{pages[1]}"
    return None


def location(citation: Citation) -> str:
    """Where a person looks in the source: its slide, rows or pages, else its lines."""
    found = place(citation)
    if found is not None:
        return found
    if citation.page_start is not None:
        pages = citation.page_start, citation.page_end or citation.page_start
        return f"page {pages[0]}" if pages[0] == pages[1] else f"pages {pages[0]}-{pages[1]}"
    return f"lines {citation.line_start}-{citation.line_end}"


def cite(chunk: Chunk) -> Citation:
    """The citation of a chunk, with a link to its page (PDF) or else its line range."""
    return Citation(
        source=chunk.source,
        title=chunk.title,
        char_start=chunk.char_start,
        char_end=chunk.char_end,
        line_start=chunk.line_start,
        line_end=chunk.line_end,
        chunk_id=chunk.chunk_id,
        url=document_url(chunk.source)
        + (
            f"#page={chunk.page_start}"
            if chunk.page_start is not None
            else f"#L{chunk.line_start}-L{chunk.line_end}"
        ),
        section=chunk.section or None,
        page_start=chunk.page_start,
        page_end=chunk.page_end,
        collection=chunk.collection,
        slide=chunk.slide,
        sheet=chunk.sheet or None,
        row_start=chunk.row_start,
        row_end=chunk.row_end,
    )


def highlight(chunk: Chunk, span: Span) -> Highlight:
    """A highlight from a span given in chunk-relative offsets."""
    return Highlight(
        char_start=chunk.char_start + span.start,
        char_end=chunk.char_start + span.end,
        text=chunk.text[span.start : span.end],
    )


def passages(
    hits: list[Hit], highlights: list[tuple[Highlight, ...]] | None = None
) -> list[Passage]:
    """Ranked passages (rank 1 first) for hits, with their highlights when given."""
    marks = highlights or [() for _ in hits]
    return [
        Passage(
            rank=i,
            score=round(hit.score, 6),
            text=hit.chunk.text,
            citation=cite(hit.chunk),
            highlights=marks[i - 1],
        )
        for i, hit in enumerate(hits, start=1)
    ]
