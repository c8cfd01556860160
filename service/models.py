"""Small frozen records passed between pipeline stages."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Document:
    """A parsed source file; `text` is exactly what citations index into."""

    source: str
    title: str
    text: str
    sha256: str
    size: int


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


@dataclass(frozen=True, slots=True)
class Hit:
    """A chunk found for a question with its fused score (higher is better)."""

    chunk: Chunk
    score: float
    dense_score: float | None = None
    keyword_score: float | None = None
