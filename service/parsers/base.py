"""What every parser shares: the Parsed record, ParseError and the text helpers."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

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


DEFAULT_MAX_TEXT_CHARS = 2_000_000
DEFAULT_PARSE_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class ParseLimits:
    """What one file's parse may produce and take: a small file can expand enormously (a
    compressed PDF stream), so the cap is on the extracted text, not the bytes on disk."""

    max_chars: int = DEFAULT_MAX_TEXT_CHARS
    seconds: float = DEFAULT_PARSE_SECONDS

    def start(self) -> Budget:
        """A budget whose clock starts now."""
        return Budget(self)


@dataclass(slots=True)
class Budget:
    """A parse's running budget; parsers call check() as their text grows (per PDF page)."""

    limits: ParseLimits = field(default_factory=ParseLimits)
    started: float = field(default_factory=time.monotonic)

    def check(self, chars: int) -> None:
        """ParseError when chars exceeds the text cap or the time budget is spent."""
        if chars > self.limits.max_chars:
            raise ParseError(f"extracted text longer than {self.limits.max_chars} characters")
        if time.monotonic() - self.started > self.limits.seconds:
            raise ParseError(f"parsing took longer than {self.limits.seconds:g} s")


class Parser(Protocol):
    """parse(data, source, budget): a format module's entry point."""

    def __call__(self, data: bytes, source: str, budget: Budget | None = None) -> Parsed: ...


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
