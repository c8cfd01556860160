"""Plain text: the decoded file is the document."""

from __future__ import annotations

from service.parsers.base import (
    DEFAULT_OPTIONS,
    Parsed,
    ParseOptions,
    decode_utf8,
    first_line_title,
)

EXTENSIONS = (".txt",)


def parse(data: bytes, source: str, options: ParseOptions = DEFAULT_OPTIONS) -> Parsed:
    """The UTF-8 text as is; the title is its first non-empty line."""
    text = decode_utf8(data)
    return Parsed(text=text, title=first_line_title(text, source))
