"""Plain text: the decoded file is the document."""

from __future__ import annotations

from service.parsers.base import (
    DEFAULT_OPTIONS,
    TITLE_MAX_CHARS,
    Parsed,
    ParseOptions,
    decode_utf8,
    file_title,
    first_line,
)

EXTENSIONS = (".txt",)


def parse(data: bytes, source: str, options: ParseOptions = DEFAULT_OPTIONS) -> Parsed:
    """The UTF-8 text as is; the title is its first non-empty line, or the file name when that
    line is too long to be a title (a paragraph, not a heading)."""
    text = decode_utf8(data)
    line = " ".join(first_line(text).split())
    return Parsed(text=text, title=line if 0 < len(line) <= TITLE_MAX_CHARS else file_title(source))
