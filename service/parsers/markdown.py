"""Markdown: the decoded file is the document; ATX headings outside code give sections."""

from __future__ import annotations

import re
from collections.abc import Iterator

from service.parsers.base import (
    DEFAULT_OPTIONS,
    TITLE_MAX_CHARS,
    Heading,
    Parsed,
    ParseOptions,
    decode_utf8,
    first_line_title,
    sections_from_headings,
)

EXTENSIONS = (".md", ".markdown")

_ATX = re.compile(r" {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*\r?$")
_FENCE = re.compile(r" {0,3}(`{3,}|~{3,})([^\r]*)\r?$")
_FRONT_MATTER_END = re.compile(r"(?:---|\.\.\.)[ \t]*\r?$")
_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
_EMPHASIS = re.compile(r"\*+|`+|(?<!\w)_+|_+(?!\w)")  # not the `_` inside snake_case


def _lines(text: str) -> Iterator[tuple[int, str]]:
    """(offset, line without its newline) for every line of text."""
    pos = 0
    while pos < len(text):
        end = text.find("\n", pos)
        end = len(text) if end == -1 else end
        yield pos, text[pos:end]
        pos = end + 1


def _plain(title: str) -> str:
    """Heading text without link targets and emphasis markers."""
    return " ".join(_EMPHASIS.sub("", _LINK.sub(r"\1", title)).split())


def headings(text: str) -> list[Heading]:
    """ATX headings (`#` to `######`) outside fenced code blocks and front matter."""
    found: list[Heading] = []
    fence: str | None = None  # the opening fence while inside a code block
    lines = _lines(text)
    if text.startswith("---\n") or text.startswith("---\r\n"):
        next(lines)
        for _, line in lines:
            if _FRONT_MATTER_END.match(line):
                break
    for offset, line in lines:
        fenced = _FENCE.match(line)
        if fence is not None:
            # Only a run of the same character, at least as long and with nothing after, closes.
            if (
                fenced
                and fenced.group(1)[0] == fence[0]
                and len(fenced.group(1)) >= len(fence)
                and not fenced.group(2).strip()
            ):
                fence = None
            continue
        if fenced and not (fenced.group(1)[0] == "`" and "`" in fenced.group(2)):
            fence = fenced.group(1)
            continue
        match = _ATX.match(line)
        if match:
            title = _plain(match.group(2) or "")
            found.append(Heading(offset, offset + len(line), len(match.group(1)), title))
    return found


def markdown_title(text: str, fallback: str) -> str:
    """The first `# ` heading outside code blocks, else the first non-empty line."""
    return title_of(text, headings(text), fallback)


def title_of(text: str, found: list[Heading], fallback: str) -> str:
    """The first level-1 heading among found, else the first non-empty line."""
    for heading in found:
        if heading.level == 1 and heading.title:
            return heading.title[:TITLE_MAX_CHARS]
    return first_line_title(text, fallback)


def parse(data: bytes, source: str, options: ParseOptions = DEFAULT_OPTIONS) -> Parsed:
    """The UTF-8 text as is, titled by its first `# ` heading, with heading sections."""
    text = decode_utf8(data)
    found = headings(text)
    return Parsed(
        text=text,
        title=title_of(text, found, source),
        sections=sections_from_headings(text, found),
    )
