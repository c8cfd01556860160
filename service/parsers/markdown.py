"""Markdown: the decoded file is the document; ATX headings outside code give sections."""

from __future__ import annotations

import re
from collections.abc import Iterator

from service.parsers.base import (
    DEFAULT_OPTIONS,
    Heading,
    Parsed,
    ParseOptions,
    cut_title,
    decode_utf8,
    sections_from_headings,
)

EXTENSIONS = (".md", ".markdown")

_ATX = re.compile(r" {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*\r?$")
_FENCE = re.compile(r" {0,3}(`{3,}|~{3,})([^\r]*)\r?$")
_FRONT_MATTER_END = re.compile(r"(?:---|\.\.\.)[ \t]*\r?$")
# Inline markup a title shows as plain text: images (badges) go, links keep their text.
_IMAGE = re.compile(r"!\[[^\]]*\](?:\([^)]*\)|\[[^\]]*\])")
_LINK = re.compile(r"\[([^\]]*)\](?:\([^)]*\)|\[[^\]]*\])")
_AUTOLINK = re.compile(r"<((?:https?|mailto):[^>\s]*)>")
_TAG = re.compile(r"</?[A-Za-z][^>]*>")
_EMPHASIS = re.compile(r"\*+|`+|~~|(?<!\w)_+|_+(?!\w)")  # not the `_` inside snake_case


def _lines(text: str) -> Iterator[tuple[int, str]]:
    """(offset, line without its newline) for every line of text."""
    pos = 0
    while pos < len(text):
        end = text.find("\n", pos)
        end = len(text) if end == -1 else end
        yield pos, text[pos:end]
        pos = end + 1


def _body_lines(text: str) -> Iterator[tuple[int, str]]:
    """_lines of text after its front matter (a `---` block at the very start), if any."""
    lines = _lines(text)
    if text.startswith("---\n") or text.startswith("---\r\n"):
        next(lines)
        for _, line in lines:
            if _FRONT_MATTER_END.match(line):
                break
    return lines


def plain(markup: str) -> str:
    """Inline Markdown as plain text: no images or HTML tags, links as their text, no emphasis
    or code markers."""
    text = _TAG.sub("", _AUTOLINK.sub(r"\1", markup))  # an autolink is no tag
    text = _LINK.sub(r"\1", _IMAGE.sub("", text))  # a badge is an image inside a link
    return " ".join(_EMPHASIS.sub("", text).split())


def headings(text: str) -> list[Heading]:
    """ATX headings (`#` to `######`) outside fenced code blocks and front matter."""
    found: list[Heading] = []
    fence: str | None = None  # the opening fence while inside a code block
    for offset, line in _body_lines(text):
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
            title = plain(match.group(2) or "")
            found.append(Heading(offset, offset + len(line), len(match.group(1)), title))
    return found


def markdown_title(text: str, fallback: str) -> str:
    """The first `# ` heading outside code blocks, else the first non-empty line."""
    return title_of(text, headings(text), fallback)


def title_of(text: str, found: list[Heading], fallback: str) -> str:
    """The first level-1 heading among found, else the first line with text once plain (a
    badge line has none), as plain text cut at a word boundary; else the fallback."""
    for heading in found:
        if heading.level == 1 and heading.title:
            return cut_title(heading.title)
    for _, line in _body_lines(text):
        atx = _ATX.match(line)
        if title := plain(atx.group(2) or "" if atx else line):
            return cut_title(title)
    return cut_title(fallback)


def parse(data: bytes, source: str, options: ParseOptions = DEFAULT_OPTIONS) -> Parsed:
    """The UTF-8 text as is, titled by its first `# ` heading, with heading sections."""
    text = decode_utf8(data)
    found = headings(text)
    return Parsed(
        text=text,
        title=title_of(text, found, source),
        sections=sections_from_headings(text, found),
    )
