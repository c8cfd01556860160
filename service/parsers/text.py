"""Plain text: the decoded file is the document."""

from __future__ import annotations

from service.parsers.base import Budget, Parsed, decode_utf8, first_line_title

EXTENSIONS = (".txt",)


def parse(data: bytes, source: str, budget: Budget | None = None) -> Parsed:
    """The UTF-8 text as is; the title is its first non-empty line."""
    text = decode_utf8(data)
    if budget is not None:
        budget.check(len(text))
    return Parsed(text=text, title=first_line_title(text, source))
