"""What every parser shares: the Parsed record, ParseError and the text helpers."""

from __future__ import annotations

import io
import time
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

from service.models import SECTION_SEPARATOR, Row, Section, Span

TITLE_MAX_CHARS = 200
MAX_ZIP_MEMBERS = 10_000
_CFB_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # OLE compound file: legacy or encrypted Office
_ENCRYPTED_STREAM = "EncryptionInfo".encode("utf-16-le")


@dataclass(frozen=True, slots=True)
class ParseOptions:
    """Limits and OCR settings parsers follow (from Settings; these defaults for direct calls)."""

    max_unzipped_bytes: int = 200_000_000
    max_sheet_rows: int = 10_000
    max_attachment_bytes: int = 20_000_000
    ocr: Literal["auto", "off"] = "auto"
    ocr_languages: str = "eng"
    ocr_cache_dir: Path | None = None  # OCR text by page image hash; None = no cache
    # This file's running text and time budget; parsers that extract step by step (PDF pages)
    # check it as they go, and the caller checks every parse's text once more at the end.
    budget: Budget | None = None


DEFAULT_OPTIONS = ParseOptions()


@dataclass(frozen=True, slots=True)
class Attachment:
    """A file carried inside another (an e-mail attachment), parsed as its own document."""

    name: str
    data: bytes


@dataclass(frozen=True, slots=True)
class Parsed:
    """What a parser extracts from a file's bytes: the citable text, its title and structure."""

    text: str
    title: str
    sections: tuple[Section, ...] = ()  # heading sections of text, in order
    pages: tuple[Span, ...] = ()  # character range of each page of text, page 1 first
    slides: tuple[Span, ...] = ()  # character range of each slide, slide 1 first
    rows: tuple[Row, ...] = ()  # spreadsheet rows in text order
    omitted: tuple[str, ...] = ()  # why parts of the file are not in text (limits, no OCR)
    attachments: tuple[Attachment, ...] = ()


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
    """A format's parse function."""

    def __call__(
        self, data: bytes, source: str, options: ParseOptions = DEFAULT_OPTIONS, /
    ) -> Parsed: ...


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


def cut_title(title: str, limit: int = TITLE_MAX_CHARS) -> str:
    """title on one line (whitespace runs as one space) of at most limit characters: a longer
    one is cut after its last whole word that fits, with "…" (a single word too long for the
    limit is cut where it must be)."""
    title = " ".join(title.split())
    if len(title) <= limit:
        return title
    head = title[: limit - 1]
    if title[limit - 1] != " " and " " in head:
        head = head.rsplit(" ", 1)[0]
    return head.rstrip(" ,;:-\u2013\u2014") + "\u2026"


def first_line(text: str) -> str:
    """The first non-empty line of text, stripped ("" when there is none)."""
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def first_line_title(text: str, fallback: str) -> str:
    """The first non-empty line, cut at a word boundary (cut_title), or the fallback."""
    return cut_title(first_line(text) or fallback)


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


class TextBuilder:
    """Document text assembled from blocks separated by blank lines, each block's span kept."""

    SEPARATOR = "\n\n"

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.length = 0

    def add(self, block: str) -> Span | None:
        """Append a block (trimmed, control characters dropped); None when nothing is left."""
        block = clean(block).strip()
        if not block:
            return None
        if self.length:
            self.parts.append(self.SEPARATOR)
            self.length += len(self.SEPARATOR)
        start = self.length
        self.parts.append(block)
        self.length += len(block)
        return Span(start, self.length)

    def text(self) -> str:
        """Everything added."""
        return "".join(self.parts)


_CONTROL = dict.fromkeys(i for i in range(32) if chr(i) not in "\t\n")


def clean(text: str) -> str:
    """Newlines normalised to \\n, vertical tabs (Office line breaks) to \\n, other control
    characters dropped: what an editor shows."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\v", "\n")
    return text.translate(_CONTROL)


def open_zip(data: bytes, kind: str, options: ParseOptions) -> zipfile.ZipFile:
    """The zip container of an Office or e-book file, checked before any library unpacks it.

    Python's zipfile stops reading a member at its declared size (and checks its CRC), so
    bounding the declared sizes bounds what any parser can decompress: a zip bomb is refused
    here rather than filling memory.
    """
    if data.startswith(_CFB_MAGIC):
        if _ENCRYPTED_STREAM in data:
            raise ParseError(f"password-protected {kind}; save a copy without a password")
        raise ParseError(f"legacy binary Office file, not a {kind}; save it in the current format")
    if not data.startswith(b"PK"):
        raise ParseError(f"broken {kind} (not a zip container)")
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        members = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError) as exc:
        raise ParseError(f"broken {kind} ({exc})") from exc
    if len(members) > MAX_ZIP_MEMBERS:
        raise ParseError(f"{kind} has {len(members)} parts, over {MAX_ZIP_MEMBERS}")
    unpacked = sum(m.file_size for m in members)
    if unpacked > options.max_unzipped_bytes:
        raise ParseError(
            f"{kind} would unpack to {unpacked} bytes, over GROUNDQA_MAX_UNZIPPED_BYTES "
            f"({options.max_unzipped_bytes}): a zip bomb?"
        )
    if any(m.flag_bits & 0x1 for m in members):
        raise ParseError(f"password-protected {kind} (encrypted zip)")
    return archive


def file_title(source: str) -> str:
    """A title from a file name, for formats whose first line is no title (sheets)."""
    return cut_title(Path(source).name)
