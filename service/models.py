"""Small frozen records passed between pipeline stages."""

from __future__ import annotations

from dataclasses import dataclass

from service.access import collection_of


@dataclass(frozen=True, slots=True)
class Document:
    """A parsed source file; `text` is exactly what citations index into."""

    source: str
    title: str
    text: str
    sha256: str
    size: int
    sections: tuple[Section, ...] = ()  # heading sections, in order, not overlapping
    pages: tuple[Span, ...] = ()  # page i + 1 of a paginated source (PDF)
    slides: tuple[Span, ...] = ()  # slide i + 1 of a presentation (empty span: no text)
    rows: tuple[Row, ...] = ()  # spreadsheet rows, in text order
    omitted: tuple[Skipped, ...] = ()  # parts left out (rows over the limit, pages not OCRed)
    attachments: tuple[Document, ...] = ()  # documents inside this one (e-mail attachments)


@dataclass(frozen=True, slots=True)
class Skipped:
    """A seed file left out of the build, with the reason a user can act on."""

    source: str
    reason: str


@dataclass(frozen=True, slots=True)
class Span:
    """A half-open character range of a document's text."""

    start: int
    end: int


@dataclass(frozen=True, slots=True)
class Row:
    """A spreadsheet row's character range, its sheet ("" for CSV) and 1-based row number."""

    start: int
    end: int
    sheet: str
    number: int


SECTION_SEPARATOR = " > "  # between the headings of a section path


@dataclass(frozen=True, slots=True)
class Section:
    """A character range under one heading; `path` joins the heading hierarchy ("A > B")."""

    start: int
    end: int
    path: str


@dataclass(frozen=True, slots=True)
class Chunk:
    """A retrievable passage: `text == document.text[char_start:char_end]`."""

    chunk_id: str
    source: str
    title: str
    text: str
    char_start: int
    char_end: int
    line_start: int
    line_end: int
    context: str = ""  # prepended to `text` when embedding (e.g. the title); never cited
    section: str = ""  # heading path of the section holding the chunk, "" when none
    page_start: int | None = None  # 1-based pages of a paginated source, else None
    page_end: int | None = None
    slide: int | None = None  # 1-based slide of a presentation (a chunk never spans two)
    sheet: str = ""  # spreadsheet sheet name, "" when none
    row_start: int | None = None  # 1-based spreadsheet rows, as the application numbers them
    row_end: int | None = None

    @property
    def collection(self) -> str:
        """The collection the chunk's document belongs to (its top-level seeds/ folder)."""
        return collection_of(self.source)


@dataclass(frozen=True, slots=True)
class Hit:
    """A chunk found for a question with its fused score (higher is better)."""

    chunk: Chunk
    score: float
    dense_score: float | None = None
    keyword_score: float | None = None
    # The question's cosine with each sentence of the chunk (`sentences_of` order), when the
    # build has sentence vectors and the settings weigh them (sentence_meaning > 0).
    sentence_cosines: tuple[float, ...] | None = None


@dataclass(frozen=True, slots=True)
class SpanRef:
    """A span of an indexed document, named by source and character offsets."""

    source: str
    char_start: int
    char_end: int
