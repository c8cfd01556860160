"""Render an answer for chat clients: Markdown with [n] markers and a list of source links.

Chat frontends show `content` and little else, so the citations must survive inside it: each
marker numbers an entry of a Markdown list, and each entry links to groundqa's page with the
cited span highlighted. The positions of the markers are kept for the `annotations` field.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from service.answering import AskResult
from service.citations import Passage, location, place, span_link

CLOSEST_SOURCES = 3
_MARKER = re.compile(r" \[(\d+)\]")
# Characters that would end or restyle a Markdown link text; an underscore only where it can
# open or close emphasis (CommonMark leaves one inside a word alone, as in file_name.txt).
_MARKDOWN_SPECIAL = re.compile(r"([\\`*\[\]<>])|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")


@dataclass(frozen=True, slots=True)
class Source:
    """An entry of the sources list: its number, the passage, and the span it cites there."""

    number: int
    passage: Passage
    char_start: int
    char_end: int
    url: str

    @property
    def label(self) -> str:
        """`source, lines a-b` of the cited span; its slide, sheet and rows, or pages for
        formats a person reads by those."""
        c = self.passage.citation
        if place(c) is not None:
            return f"{c.source}, {location(c)}"
        offset = self.char_start - c.char_start
        first = c.line_start + self.passage.text.count("\n", 0, offset)
        last = first + self.passage.text.count("\n", offset, self.char_end - c.char_start)
        return f"{c.source}, line {first}" if first == last else f"{c.source}, lines {first}-{last}"


@dataclass(frozen=True, slots=True)
class Marker:
    """Where an `[n]` marker stands in the content, and the source it points at."""

    start: int
    end: int
    source: Source


@dataclass(frozen=True, slots=True)
class Rendered:
    """The content of an assistant message, its markers, and the sources it lists."""

    content: str
    markers: tuple[Marker, ...]
    sources: tuple[Source, ...]


def escape(text: str) -> str:
    """Text that Markdown shows as written inside a link."""
    return _MARKDOWN_SPECIAL.sub(lambda m: "\\" + m.group(0), text)


def _source(number: int, passage: Passage, start: int, end: int, base_url: str) -> Source:
    link = span_link(base_url, passage.citation.source, start, end)
    return Source(number, passage, start, end, link)


def cited_sources(result: AskResult, base_url: str) -> list[Source]:
    """One source per sentence the answer quotes, numbered in the answer's order and linked to
    that sentence; the closest passages, whole, when the answer abstains."""
    if not result.answer.grounded:
        return [
            _source(n, p, p.citation.char_start, p.citation.char_end, base_url)
            for n, p in enumerate(result.passages[:CLOSEST_SOURCES], start=1)
        ]
    by_rank = {p.rank: p for p in result.passages}
    spans = [(q.rank, q.highlight.char_start, q.highlight.char_end) for q in result.answer.quotes]
    if not spans:  # an answer built without quotes cites its passages whole
        spans = [
            (r, by_rank[r].citation.char_start, by_rank[r].citation.char_end)
            for r in result.answer.citations
            if r in by_rank
        ]
    return [
        _source(n, by_rank[rank], start, end, base_url)
        for n, (rank, start, end) in enumerate(spans, start=1)
        if rank in by_rank
    ]


def render(result: AskResult, base_url: str) -> Rendered:
    """The answer with each [n] marker renumbered to its entry of the sources list, a blank
    line, a heading and the list (`1. [source, lines a-b](url)`), which CommonMark renders as
    a list of links."""
    sources = cited_sources(result, base_url)
    if not sources:
        return Rendered(result.answer.text, (), ())
    text = result.answer.text
    parts: list[str] = []
    markers: list[Marker] = []
    at = length = 0
    # The answer puts one marker after each quote, in the order of its quotes and sources.
    pending = iter(sources if result.answer.grounded else ())
    for match in _MARKER.finditer(text) if result.answer.grounded else ():
        source = next(pending, None)
        if source is None:
            break
        piece = text[at : match.start()] + " "
        marker = f"[{source.number}]"
        parts += [piece, marker]
        markers.append(Marker(length + len(piece), length + len(piece) + len(marker), source))
        length += len(piece) + len(marker)
        at = match.end()
    parts.append(text[at:])
    heading = "Sources:" if result.answer.grounded else "Closest sources:"
    listing = [f"{s.number}. [{escape(s.label)}]({s.url})" for s in sources]
    content = "".join(parts) + "\n\n" + heading + "\n\n" + "\n".join(listing)
    return Rendered(content, tuple(markers), tuple(sources))


def truncate(rendered: Rendered, end: int) -> Rendered:
    """The rendering cut to content[:end], keeping only the markers inside it."""
    return Rendered(
        rendered.content[:end],
        tuple(m for m in rendered.markers if m.end <= end),
        rendered.sources,
    )


def first_stop(content: str, stops: Sequence[str]) -> int | None:
    """Where the earliest of the stop sequences begins in content, if any occurs."""
    found = [i for i in (content.find(s) for s in stops if s) if i >= 0]
    return min(found) if found else None
