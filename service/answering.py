"""Answer: pick the sentences of the passages that answer the question and quote them verbatim,
or abstain when the evidence is weak."""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from service.access import EVERYTHING, Scope
from service.chunking import split_sentences
from service.citations import Highlight, Passage, highlight, passages
from service.config import Mode
from service.keyword import KeywordIndex, tokenize
from service.models import Chunk, Hit, Span
from service.search import Context, Searcher, SearchResult

ABSTAIN_TEXT = "The indexed sources do not answer this question."
MAX_ANSWER_SENTENCES = 2


@dataclass(frozen=True, slots=True)
class Answer:
    """An extractive answer: verbatim sentences with [n] markers naming passage ranks."""

    text: str
    grounded: bool
    citations: tuple[int, ...]
    quotes: tuple[Quote, ...] = ()  # the quoted sentences, in the order of the text


@dataclass(frozen=True, slots=True)
class Quote:
    """A sentence an answer quotes, and the rank of the passage it quotes."""

    rank: int
    highlight: Highlight


@dataclass(frozen=True, slots=True)
class ScoredHighlight:
    """A candidate highlight with its score against the question."""

    rank: int
    highlight: Highlight
    score: float


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
def sentences_of(text: str) -> Sentences:
    """Split text into sentences that read as prose (headings, fences and metadata lines are
    never quoted) and tokenise each as the keyword index does."""
    spans = tuple(p for p in (prose(text, s) for s in split_sentences(text)) if p is not None)
    terms = tokenize([text[s.start : s.end] for s in spans])
    return Sentences(spans, tuple(frozenset(t) for t in terms))


def prefetch_sentences(chunks: Sequence[Chunk]) -> None:
    """Split and tokenise passages ahead of `score_sentences` (a Searcher prefetch hook)."""
    for chunk in chunks:
        sentences_of(chunk.text)


def best_sentences(
    terms: Sequence[str],
    hits: Sequence[Hit],
    keyword: KeywordIndex,
    term_weights: Sequence[float] = (),
) -> list[ScoredHighlight | None]:
    """The sentence of each hit holding the largest share of the question's IDF mass (the
    first of equals), or None for a hit without sentences; `term_weights` scales each term's
    IDF (a conversation's earlier terms count less than the question's).

    Measured on SQuAD, this lexical score picks the answer sentence as often as dense sentence
    similarity combined with it, at a fraction of the cost (no encoder call per request).
    """
    question_terms = frozenset(terms)
    weights = keyword.idf(sorted(question_terms))
    if term_weights:
        scale = dict(zip(terms, term_weights, strict=True))
        weights = {t: w * scale[t] for t, w in weights.items()}
    total = sum(weights.values())
    best: list[ScoredHighlight | None] = []
    for rank, hit in enumerate(hits, start=1):
        analysed = sentences_of(hit.chunk.text)
        if not analysed.spans:
            best.append(None)
            continue
        mass = [sum(weights.get(t, 0.0) for t in question_terms & s) for s in analysed.terms]
        i = max(range(len(mass)), key=mass.__getitem__)
        score = mass[i] / total if total else 0.0
        best.append(ScoredHighlight(rank, highlight(hit.chunk, analysed.spans[i]), score))
    return best


# In a follow-up the earlier turns' words find the passage; within it the question's own words
# and meaning pick the sentence.
FOLLOW_UP_CONTEXT_SCALE = 0.2
FOLLOW_UP_PASSAGES = 3
FOLLOW_UP_MARGIN = 0.15
# A follow-up's sentence is judged by its meaning against the question alone and against the
# contextual query, equally: a bare "What is his position?" means little by itself.
ALONE_WEIGHT = 0.5


def follow_up_sentences(
    searcher: Searcher,
    question: str,
    result: SearchResult,
) -> tuple[list[ScoredHighlight | None], list[ScoredHighlight]]:
    """The best sentence of each of the first hits for a follow-up question, scored by its
    share of the question's IDF mass (context terms scaled down) plus its cosine with the
    question's meaning; later hits keep their lexical best. Also returns every scored sentence
    of the first hits."""
    scale = dict(zip(result.terms, result.weights, strict=True))
    idf = result.index.keyword.idf(sorted(scale))
    weights = {
        t: w * (1.0 if scale[t] >= 1.0 else FOLLOW_UP_CONTEXT_SCALE * scale[t])
        for t, w in idf.items()
    }
    # Over the unscaled mass: context terms alone reach at most FOLLOW_UP_CONTEXT_SCALE.
    total = sum(idf.values()) or 1.0
    head = result.hits[:FOLLOW_UP_PASSAGES]
    analysed = [sentences_of(h.chunk.text) for h in head]
    texts = [
        h.chunk.text[s.start : s.end] for h, a in zip(head, analysed, strict=True) for s in a.spans
    ]
    meaning = ALONE_WEIGHT * searcher.embed_question(question)
    meaning = meaning + (1 - ALONE_WEIGHT) * result.query_vector
    cosines = iter((searcher.embed_texts(texts) @ meaning).tolist() if texts else [])
    best: list[ScoredHighlight | None] = []
    candidates: list[ScoredHighlight] = []
    for rank, (hit, sentences) in enumerate(zip(head, analysed, strict=True), start=1):
        scored: list[ScoredHighlight] = []
        for span, terms in zip(sentences.spans, sentences.terms, strict=True):
            mark = highlight(hit.chunk, span)
            score = sum(weights.get(t, 0.0) for t in terms) / total + next(cosines)
            scored.append(ScoredHighlight(rank, mark, score))
        candidates.extend(scored)
        best.append(max(scored, key=lambda s: s.score) if scored else None)
    rest = best_sentences(
        result.terms, result.hits[FOLLOW_UP_PASSAGES:], result.index.keyword, result.weights
    )
    shifted = [
        ScoredHighlight(b.rank + len(head), b.highlight, b.score) if b else None for b in rest
    ]
    return best + shifted, candidates


def compose_follow_up(
    candidates: Sequence[ScoredHighlight], grounded: bool, margin: float = FOLLOW_UP_MARGIN
) -> Answer:
    """Quote the best sentence, and the next best of any passage when within margin: what a
    follow-up refers to is less certain than what a question names, so it quotes wider."""
    ranked = sorted(candidates, key=lambda c: (-c.score, c.rank, c.highlight.char_start))
    if not grounded or not ranked:
        return Answer(text=ABSTAIN_TEXT, grounded=False, citations=())
    chosen = within_margin(ranked, margin)
    # In document order within a passage, so two quotes of one passage read as written.
    chosen.sort(key=lambda c: (c.rank, c.highlight.char_start))
    return quoting(chosen)


def best_highlights(best: Sequence[ScoredHighlight | None]) -> list[tuple[Highlight, ...]]:
    """The best sentence of each passage, as that passage's highlights."""
    return [(b.highlight,) if b else () for b in best]


def compose_answer(
    best: Sequence[ScoredHighlight | None], grounded: bool, margin: float = 0.05
) -> Answer:
    """Quote the best highlight, and a runner-up from another passage when nearly as good."""
    if not grounded:
        return Answer(text=ABSTAIN_TEXT, grounded=False, citations=())
    ranked = sorted((b for b in best if b), key=lambda s: -s.score)
    if not ranked:
        return Answer(text=ABSTAIN_TEXT, grounded=False, citations=())
    return quoting(within_margin(ranked, margin))


def within_margin(ranked: Sequence[ScoredHighlight], margin: float) -> list[ScoredHighlight]:
    """The best of ranked (best first), then up to MAX_ANSWER_SENTENCES - 1 distinct others
    scoring within margin of it."""
    chosen = [ranked[0]]
    for cand in ranked[1:]:
        if len(chosen) >= MAX_ANSWER_SENTENCES or cand.score < ranked[0].score - margin:
            break
        if cand.highlight.text not in {c.highlight.text for c in chosen}:
            chosen.append(cand)
    return chosen


def quoting(chosen: Sequence[ScoredHighlight]) -> Answer:
    """The grounded answer quoting each chosen sentence, followed by its [rank] marker."""
    text = " ".join(f"{c.highlight.text} [{c.rank}]" for c in chosen)
    return Answer(
        text=text,
        grounded=True,
        citations=tuple(sorted({c.rank for c in chosen})),
        quotes=tuple(Quote(c.rank, c.highlight) for c in chosen),
    )


def is_grounded(hits: Sequence[Hit], threshold: float) -> bool:
    """Whether the best passage is close enough to the question to answer from."""
    return any((h.dense_score or 0.0) >= threshold for h in hits)


@dataclass(frozen=True, slots=True)
class AskResult:
    """Everything an ask returns: ranked cited passages, the answer, and the build used."""

    question: str
    passages: list[Passage]
    answer: Answer
    build_id: str
    model: str
    took_ms: float
    timings: dict[str, float]


def ask(
    searcher: Searcher,
    question: str,
    *,
    top_k: int,
    mode: Mode | None = None,
    sources: Sequence[str] | None = None,
    scope: Scope = EVERYTHING,
    context: Sequence[Context] = (),
) -> AskResult:
    """Search, highlight, cite and answer one question, read in its context if given, from
    the documents the scope may see."""
    started = time.perf_counter()
    result = searcher.search(
        question,
        top_k=top_k,
        mode=mode,
        sources=sources,
        scope=scope,
        prefetch=prefetch_sentences,
        context=context,
    )
    t0 = time.perf_counter()
    grounded = is_grounded(result.hits, searcher.settings.abstain_threshold)
    if context:
        best, candidates = follow_up_sentences(searcher, question, result)
        answer = compose_follow_up(candidates, grounded)
    else:
        best = best_sentences(result.terms, result.hits, result.index.keyword)
        answer = compose_answer(best, grounded)
    timings = dict(result.timings, answer_ms=(time.perf_counter() - t0) * 1000)
    return AskResult(
        question=question,
        passages=passages(result.hits, best_highlights(best)),
        answer=answer,
        build_id=result.build_id,
        model=searcher.embedder.model_id,
        took_ms=round((time.perf_counter() - started) * 1000, 3),
        timings=timings,
    )
