"""Sentences of a passage that read as prose, their keyword terms, and how much of a
question's IDF mass each holds (used to rank passages and to pick the highlight)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import numpy.typing as npt

from service.chunking import split_sentences
from service.keyword import tokenize
from service.models import Chunk, Span


@dataclass(frozen=True, slots=True)
class Sentences:
    """A passage's sentence spans and the keyword terms of each sentence."""

    spans: tuple[Span, ...]
    terms: tuple[frozenset[str], ...]


# Lines nobody would quote as an answer: Markdown headings, code fences, rules and front-matter
# fences, list markers alone, and metadata (`Key: value` holding a URL or a second key).
_NOT_PROSE = re.compile(
    r"""^\s*(?:\#{1,6}(?:\s|$)
    |(?:-{3,}|\*{3,}|_{3,}|={3,})\s*$
    |(?:[-*+>]|\d+[.)])\s*$
    |[A-Za-z][\w-]*:\s+\S.*(?:https?://|\s[A-Za-z][\w-]*:\s)
    )""",
    re.VERBOSE,
)
_FENCE = re.compile(r"^\s*(?:```|~~~)")


def prose(text: str, span: Span) -> Span | None:
    """The first run of prose lines of a sentence span, trimmed (a heading or metadata line
    joined to a sentence is left out); None when nothing quotable remains."""
    piece = text[span.start : span.end]
    if _FENCE.match(piece) or not any(c.isalpha() for c in piece):
        return None
    run: list[Span] = []
    at = span.start
    for line in piece.split("\n"):
        stripped = line.strip()
        if stripped and not _NOT_PROSE.match(line):
            left = at + len(line) - len(line.lstrip())
            run.append(Span(left, left + len(stripped)))
        elif run and stripped:
            break  # a heading or metadata line after prose ends the run
        at += len(line) + 1
    return Span(run[0].start, run[-1].end) if run else None


# A pure function of the passage text; popular passages come back for many questions.
@lru_cache(maxsize=4096)
def sentences_of(text: str, title: str = "") -> Sentences:
    """Split text into sentences that read as prose (headings, fences and metadata lines are
    never quoted; nor is the document's title alone, unpunctuated, as a plain text file's
    heading line) and tokenise each as the keyword index does."""
    heading = title.strip() if title.strip()[-1:] not in (".", "!", "?", "") else ""
    spans = tuple(
        p
        for p in (prose(text, s) for s in split_sentences(text))
        if p is not None and not (heading and text[p.start : p.end] == heading)
    )
    terms = tokenize([text[s.start : s.end] for s in spans])
    return Sentences(spans, tuple(frozenset(t) for t in terms))


def prefetch_sentences(chunks: Sequence[Chunk]) -> None:
    """Split and tokenise passages ahead of their scoring (a Searcher prefetch hook)."""
    for chunk in chunks:
        sentences_of(chunk.text, chunk.title)


def masses(analysed: Sentences, weights: Mapping[str, float]) -> list[float]:
    """The question's IDF mass (`weights`: term -> weight) each sentence holds."""
    question = frozenset(weights)
    return [sum(weights[t] for t in question & terms) for terms in analysed.terms]


def sentence_shares(text: str, weights: Mapping[str, float], title: str = "") -> list[float]:
    """The share of the question's IDF mass each prose sentence of text holds (0 to 1), in
    the order of `sentences_of`."""
    total = sum(weights.values())
    found = masses(sentences_of(text, title), weights)
    return [m / total for m in found] if total else [0.0] * len(found)


Cosines = Sequence[float] | npt.NDArray[np.float32]


def sentence_scores(
    shares: Sequence[float], cosines: Cosines | None, meaning: float
) -> list[float]:
    """Each sentence's score against a question: its share of the question's IDF mass, plus
    `meaning` times its cosine with the question when the cosines are known (and are of the
    same sentences)."""
    if cosines is None or not meaning or len(cosines) != len(shares):
        return list(shares)
    return [s + meaning * float(c) for s, c in zip(shares, cosines, strict=True)]
