"""What every parser shares: the Parsed record, ParseError and the text helpers."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from service.models import SECTION_SEPARATOR, Section, Span

TITLE_MAX_CHARS = 200


@dataclass(frozen=True, slots=True)
class Parsed:
    """What a parser extracts from a file's bytes: the citable text, its title and structure."""

    text: str
    title: str
    sections: tuple[Section, ...] = ()  # heading sections of text, in order
    pages: tuple[Span, ...] = ()  # character range of each page of text, page 1 first


class ParseError(ValueError):
    """A file's content cannot be indexed; the message is the reason shown to users."""


Parser = Callable[[bytes, str], Parsed]


@dataclass(frozen=True, slots=True)
class Heading:
    """A heading found in a document's text: its own span, level (1-6) and plain text."""

    start: int
    end: int
    level: int
    title: str


def decode_utf8(data: bytes) -> str:
    """Decode bytes as UTF-8 text exactly (no newline translation), or raise ParseError."""
    if not data.strip():
        raise ParseError("empty file")
    if b"\x00" in data:
        raise ParseError("binary file (contains NUL bytes)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ParseError(f"not valid UTF-8 (byte {exc.start})") from exc
    # A BOM is an encoding artefact, not content; dropping it keeps offsets aligned with
    # what editors show.  The document text served is this decoded text.
    return text.removeprefix("\ufeff")


def first_line_title(text: str, fallback: str) -> str:
    """The first non-empty line, cut to TITLE_MAX_CHARS, or the fallback."""
    for line in text.splitlines():
        if line.strip():
            return line.strip()[:TITLE_MAX_CHARS]
    return fallback[:TITLE_MAX_CHARS]


def sections_from_headings(text: str, headings: Sequence[Heading]) -> tuple[Section, ...]:
    """One section per heading, from the heading to the next one, named by its heading path.

    A heading with nothing under it but a subheading ("# Install" right before "## Docker")
    is no section of its own: it opens the next one, so no passage is a bare heading.
    Text before the first heading belongs to no section.
    """
    sections: list[Section] = []
    stack: list[tuple[int, str]] = []
    opened: int | None = None  # start of an empty heading carried into the next section
    for i, heading in enumerate(headings):
        while stack and stack[-1][0] >= heading.level:
            stack.pop()
        stack.append((heading.level, heading.title))
        start = heading.start if opened is None else opened
        end = headings[i + 1].start if i + 1 < len(headings) else len(text)
        nested = i + 1 < len(headings) and headings[i + 1].level > heading.level
        if nested and not text[heading.end : end].strip():
            opened = start
            continue
        opened = None
        path = SECTION_SEPARATOR.join(title for _, title in stack if title)
        sections.append(Section(start, end, path))
    return tuple(sections)
