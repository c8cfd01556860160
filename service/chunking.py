"""Chunk: split documents into sentence-aware windows that fit the embedding model."""

from __future__ import annotations

import bisect
import hashlib
import itertools
import re
from dataclasses import dataclass

from service.embedding import Tokenizer
from service.models import SECTION_SEPARATOR, Chunk, Document, Span
from service.parsers.base import TITLE_MAX_CHARS, first_line


@dataclass(frozen=True, slots=True)
class ChunkerSettings:
    """How documents are windowed; part of the index fingerprint."""

    max_tokens: int  # model positions available, special tokens included
    special_tokens: int  # positions the model's own markers use (e.g. [CLS] and [SEP])
    budget: int  # configured word pieces per chunk, before the model limit
    overlap: int  # sentences repeated at the start of the next chunk

    @property
    def text_budget(self) -> int:
        """Word pieces a chunk plus its context may hold."""
        return min(self.budget, self.max_tokens - self.special_tokens)


# A title longer than this is not prepended to embedded text: it would crowd out the passage.
MAX_CONTEXT_TOKENS = 64
# Spreadsheet rows per chunk at most: a citation names a few rows a person can check, and
# each row, written as `header: value` lines, means something on its own.
ROWS_PER_CHUNK = 5

_ABBREVIATIONS = frozenset(
    {
        "mr",
        "mrs",
        "ms",
        "dr",
        "prof",
        "sr",
        "jr",
        "st",
        "vs",
        "etc",
        "e.g",
        "i.e",
        "eg",
        "ie",
        "cf",
        "al",
        "fig",
        "figs",
        "no",
        "nos",
        "vol",
        "pp",
        "ca",
        "approx",
        "inc",
        "ltd",
        "co",
        "corp",
        "dept",
        "est",
        "jan",
        "feb",
        "mar",
        "apr",
        "jun",
        "jul",
        "aug",
        "sep",
        "sept",
        "oct",
        "nov",
        "dec",
        "u.s",
        "u.k",
    }
)
# Sentence end: terminal punctuation, optional closing quotes/brackets, then whitespace.
_SENTENCE_END = re.compile(r"[.!?…]+[\"'”’)\]]*(?=\s)|[。！？]+")
_NEWLINE = re.compile("\n")
_BLANK_LINE = re.compile(r"\n[ \t\r\f\v]*\n")
_STRUCTURAL_LINE = re.compile(r"[ \t]*(?:#{1,6}\s|[-*+>]\s|\d{1,3}[.)]\s|\|)")


def _is_abbreviation(text: str, end: int) -> bool:
    """Whether the period ending at `end` closes an abbreviation or an initial."""
    start = end - 1
    while start > 0 and not text[start - 1].isspace() and text[start - 1] not in "([\"'“‘":
        start -= 1
    word = text[start:end].rstrip(".").lower()
    return (len(word) == 1 and word.isalpha()) or word in _ABBREVIATIONS


def _continues_lowercase(text: str, pos: int, end: int) -> bool:
    """Whether the next non-space character after pos (before end) is a lowercase letter."""
    while pos < end and text[pos].isspace():
        pos += 1
    return pos < end and text[pos].islower()


def _blocks(text: str) -> list[Span]:
    """Spans separated by blank lines or by lines that start a heading, list item or table row."""
    cuts = {0, len(text)}
    cuts.update(m.start() for m in _BLANK_LINE.finditer(text))
    pos = text.find("\n")
    while pos != -1:
        if _STRUCTURAL_LINE.match(text, pos + 1) or _STRUCTURAL_LINE.match(
            text, text.rfind("\n", 0, pos) + 1
        ):
            cuts.add(pos)
        pos = text.find("\n", pos + 1)
    edges = sorted(cuts)
    return [Span(a, b) for a, b in itertools.pairwise(edges) if text[a:b].strip()]


def _strip(text: str, start: int, end: int) -> Span | None:
    """The span without surrounding whitespace, or None when it holds only whitespace."""
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return Span(start, end) if start < end else None


def split_sentences(text: str) -> list[Span]:
    """Sentence spans of text, whitespace-trimmed, in order, covering all non-space characters."""
    spans: list[Span] = []
    for block in _blocks(text):
        start = block.start
        for match in _SENTENCE_END.finditer(text, block.start, block.end):
            end = match.end()
            if (
                text[match.start()] == "."
                and match.end() - match.start() == 1
                and (_is_abbreviation(text, match.start() + 1))
            ):
                continue
            if _continues_lowercase(text, end, block.end):
                continue  # "... and so on", "e.g. this": the sentence goes on
            span = _strip(text, start, end)
            if span:
                spans.append(span)
            start = end
        span = _strip(text, start, block.end)
        if span:
            spans.append(span)
    return spans


def _split_long(
    sentence: Span, offsets: list[tuple[int, int]], budget: int, text: str
) -> list[Span]:
    """Cut a sentence longer than budget tokens at word starts, each piece within budget."""
    pieces: list[Span] = []
    first = 0
    while first < len(offsets):
        last = min(first + budget, len(offsets))  # exclusive token index
        if last < len(offsets):
            # Back off to a token that begins a word so no word is cut unless it alone is too long.
            cut = last
            while cut > first + 1 and not text[sentence.start + offsets[cut][0] - 1].isspace():
                cut -= 1
            if cut > first + 1:
                last = cut
        start = sentence.start + offsets[first][0] if first else sentence.start
        end = sentence.start + offsets[last][0] if last < len(offsets) else sentence.end
        span = _strip(text, start, end)
        if span:
            pieces.append(span)
        first = last
    return pieces


def _segments(doc: Document, sentences: list[Span]) -> list[tuple[str, list[Span]]]:
    """Sentences grouped by the section and page they lie in, with each group's section path.

    A sentence crossing a section, page or slide boundary is cut there: no chunk straddles one.
    """
    cuts = sorted(
        {b for s in doc.sections for b in (s.start, s.end)}
        | {b for p in (*doc.pages, *doc.slides) for b in (p.start, p.end)}
        | _row_groups(doc)
    )
    if not cuts:
        return [("", sentences)]
    starts = [s.start for s in doc.sections]
    groups: list[tuple[str, list[Span]]] = []
    segment = -1
    for sentence in sentences:
        first = bisect.bisect_right(cuts, sentence.start)
        last = bisect.bisect_left(cuts, sentence.end)
        edges = [sentence.start, *cuts[first:last], sentence.end]
        for a, b in itertools.pairwise(edges):
            piece = _strip(doc.text, a, b)
            if piece is None:
                continue
            here = bisect.bisect_right(cuts, piece.start)
            if here != segment:
                segment = here
                i = bisect.bisect_right(starts, piece.start) - 1
                inside = i >= 0 and piece.start < doc.sections[i].end
                groups.append((doc.sections[i].path if inside else "", []))
            groups[-1][1].append(piece)
    return groups


def _row_groups(doc: Document) -> set[int]:
    """Where each run of ROWS_PER_CHUNK rows of a sheet starts."""
    cuts: set[int] = set()
    sheet, count = None, 0
    for row in doc.rows:
        if row.sheet != sheet:
            sheet, count = row.sheet, 0
        if count % ROWS_PER_CHUNK == 0:
            cuts.add(row.start)
        count += 1
    return cuts


def _page(page_starts: list[int], pos: int) -> int | None:
    """1-based page holding character pos, or None for an unpaginated document."""
    return max(bisect.bisect_right(page_starts, pos), 1) if page_starts else None


def _rows(doc: Document, start: int, end: int) -> tuple[str, int | None, int | None]:
    """Sheet and first and last spreadsheet row of the characters [start, end) of doc."""
    if not doc.rows:
        return "", None, None
    starts = [r.start for r in doc.rows]
    # The row holding start, or the next one when start lies between rows; likewise for end.
    first = doc.rows[min(max(bisect.bisect_right(starts, start) - 1, 0), len(starts) - 1)]
    if start >= first.end and first is not doc.rows[-1]:
        first = doc.rows[bisect.bisect_right(starts, start)]
    last = doc.rows[max(bisect.bisect_left(starts, end) - 1, 0)]
    return first.sheet, first.number, max(last.number, first.number)


def chunk_id(source: str, sha256: str, start: int, end: int) -> str:
    """Stable id of a chunk: the same file content cut at the same place keeps its id."""
    return hashlib.sha256(f"{source}\0{sha256}\0{start}\0{end}".encode()).hexdigest()[:20]


def context_title(doc: Document) -> str:
    """The title embedded before a document's chunks. A plain-text file whose first line is a
    paragraph is titled by its file name, which says little about its text: its chunks keep
    the start of that line as context (what they were embedded with before that title rule)."""
    if doc.source.lower().endswith(".txt") and doc.title == doc.source.rsplit("/", 1)[-1]:
        return first_line(doc.text)[:TITLE_MAX_CHARS]
    return doc.title


def embedding_text(chunk: Chunk) -> str:
    """The text given to the encoder: title context, then the verbatim passage."""
    return f"{chunk.context}\n{chunk.text}" if chunk.context else chunk.text


class Chunker:
    """Packs whole sentences into windows of at most the token budget."""

    def __init__(self, tokenizer: Tokenizer, settings: ChunkerSettings) -> None:
        self.tokenizer = tokenizer
        self.settings = settings

    def count(self, text: str) -> int:
        """Word pieces of text, special tokens excluded."""
        return len(self.tokenizer.offsets([text])[0])

    def chunk(self, doc: Document) -> list[Chunk]:
        """Chunks of doc in order, none across a section or page boundary; each within the
        budget including its embedded context (the title, and the section path when any)."""
        text = doc.text
        title = context_title(doc)
        title_tokens = self.count(title) if title else 0
        sentences = split_sentences(text)
        if not sentences:
            return []
        groups = _segments(doc, sentences)
        offsets = iter(
            self.tokenizer.offsets([text[s.start : s.end] for _, spans in groups for s in spans])
        )
        newlines = [m.start() for m in _NEWLINE.finditer(text)]
        page_starts = [p.start for p in doc.pages]
        slide_starts = [p.start for p in doc.slides]
        chunks = []
        for path, spans in groups:
            context, context_tokens = self._context(title, title_tokens, path)
            budget = self.settings.text_budget - context_tokens
            units: list[tuple[Span, int]] = []
            for span in spans:
                units.extend(self._fit(span, next(offsets), budget, text))
            for start, end in self._pack(units, budget):
                sheet, row_start, row_end = _rows(doc, start, end)
                chunks.append(
                    Chunk(
                        chunk_id=chunk_id(doc.source, doc.sha256, start, end),
                        source=doc.source,
                        title=doc.title,
                        text=text[start:end],
                        char_start=start,
                        char_end=end,
                        line_start=bisect.bisect_left(newlines, start) + 1,
                        line_end=bisect.bisect_left(newlines, end - 1) + 1,
                        context=context,
                        section=path,
                        page_start=_page(page_starts, start),
                        page_end=_page(page_starts, end - 1),
                        slide=_page(slide_starts, start),
                        sheet=sheet,
                        row_start=row_start,
                        row_end=row_end,
                    )
                )
        return chunks

    def _context(self, title: str, title_tokens: int, path: str) -> tuple[str, int]:
        """Text embedded before a chunk of section `path`, and its tokens.

        "Title > Section > Subsection" when it is short beside the budget, else the title
        alone when it is short, else nothing.
        """
        if path:
            full = (
                path
                if not title or path == title or path.startswith(title + SECTION_SEPARATOR)
                else f"{title}{SECTION_SEPARATOR}{path}"
            )
            tokens = self.count(full)
            if 0 < tokens <= min(MAX_CONTEXT_TOKENS, self.settings.text_budget // 2):
                return full, tokens
        if 0 < title_tokens <= min(MAX_CONTEXT_TOKENS, self.settings.text_budget // 2):
            return title, title_tokens
        return "", 0

    def _fit(
        self, span: Span, offs: list[tuple[int, int]], budget: int, text: str
    ) -> list[tuple[Span, int]]:
        """span as (piece, tokens) units within budget; a piece cut inside a long word can
        tokenise longer on its own, so pieces are counted again and cut again when needed."""
        if len(offs) <= budget:
            return [(span, len(offs))]
        pieces = _split_long(span, offs, budget, text)
        if pieces == [span]:
            return [(span, len(offs))]  # nothing smaller to cut it into
        counts = self.tokenizer.offsets([text[p.start : p.end] for p in pieces])
        return [
            unit
            for piece, count in zip(pieces, counts, strict=True)
            for unit in self._fit(piece, count, budget, text)
        ]

    def _pack(self, units: list[tuple[Span, int]], budget: int) -> list[tuple[int, int]]:
        """Greedy windows of consecutive units within budget, sharing `overlap` units."""
        windows: list[tuple[int, int]] = []
        first = 0
        while first < len(units):
            total, last = 0, first
            while last < len(units) and total + units[last][1] <= budget:
                total += units[last][1]
                last += 1
            last = max(last, first + 1)  # a unit always fits: long sentences were cut to budget
            windows.append((units[first][0].start, units[last - 1][0].end))
            if last >= len(units):
                break
            # Overlap only as far as the next unit still fits beside it, and always advance.
            overlap = min(self.settings.overlap, last - first - 1)
            while (
                overlap
                and sum(c for _, c in units[last - overlap : last]) + units[last][1] > budget
            ):
                overlap -= 1
            first = last - overlap
        return windows
