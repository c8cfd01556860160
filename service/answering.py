"""Answer: pick the sentences of the passages that answer the question and quote them verbatim,
or abstain when the evidence is weak."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from service.access import EVERYTHING, Scope
from service.citations import Highlight, Passage, highlight, passages
from service.config import Mode, Settings
from service.keyword import KeywordIndex
from service.models import Hit, Span
from service.question_types import AnswerKind, answer_kind, has_kind
from service.search import Context, Searcher, SearchResult
from service.sentences import masses, prefetch_sentences, sentence_scores, sentences_of

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
    highlight: Highlight  # the sentence itself: what an answer quotes
    score: float
    shown: Highlight | None = None  # the passage's highlight when wider (with a neighbour)


@dataclass(frozen=True, slots=True)
class SentenceChoice:
    """How a passage's best sentence is chosen: the kind of answer the question asks for
    (a sentence holding one gains KIND_BONUS), and whether the passage's highlight takes in
    the neighbouring sentence holding more of the question (the answer quotes the sentence)."""

    kind: AnswerKind | None = None
    neighbour: bool = False
    meaning: float = 0.0  # weight of a sentence's cosine with the question, where known


PLAIN = SentenceChoice()
# Of the question's IDF mass: breaks near-ties towards a sentence that can hold the answer.
KIND_BONUS = 0.1


def sentence_choice(question: str, settings: Settings) -> SentenceChoice:
    """The sentence choice the settings ask for, for this question."""
    kind = answer_kind(question) if settings.answer_kinds else None
    return SentenceChoice(kind, settings.highlight_neighbour, settings.sentence_meaning)


def _neighbour(text: str, spans: Sequence[Span], mass: Sequence[float], i: int) -> Span:
    """Sentence i joined to the adjacent sentence of its paragraph holding more of the
    question (the next one on a tie); sentence i alone when it has no such neighbour."""
    joinable = [
        j
        for j in (i + 1, i - 1)
        if 0 <= j < len(spans) and _same_paragraph(text, spans[min(i, j)], spans[max(i, j)])
    ]
    if not joinable:
        return spans[i]
    j = max(joinable, key=lambda j: (mass[j], j > i))
    return Span(spans[min(i, j)].start, spans[max(i, j)].end)


def _same_paragraph(text: str, first: Span, second: Span) -> bool:
    """Whether only spaces and at most one line break separate two sentences (no heading,
    no blank line)."""
    gap = text[first.end : second.start]
    return not gap.strip() and gap.count("\n") <= 1


def best_sentences(
    terms: Sequence[str],
    hits: Sequence[Hit],
    keyword: KeywordIndex,
    term_weights: Sequence[float] = (),
    choice: SentenceChoice = PLAIN,
) -> list[ScoredHighlight | None]:
    """The sentence of each hit holding the largest share of the question's IDF mass (the
    first of equals), or None for a hit without sentences; `term_weights` scales each term's
    IDF (a conversation's earlier terms count less than the question's); `choice` may favour
    sentences holding the kind of answer asked for and widen the passage's highlight (never
    the quoted sentence) by a neighbour.

    A hit carrying sentence cosines (a build with sentence vectors) adds choice.meaning times
    each sentence's cosine, as the ranking did.
    """
    weights = keyword.idf(sorted(frozenset(terms)))
    if term_weights:
        scale = dict(zip(terms, term_weights, strict=True))
        weights = {t: w * scale[t] for t, w in weights.items()}
    total = sum(weights.values())
    best: list[ScoredHighlight | None] = []
    for rank, hit in enumerate(hits, start=1):
        text = hit.chunk.text
        analysed = sentences_of(text, hit.chunk.title)
        if not analysed.spans:
            best.append(None)
            continue
        mass = [m / total if total else 0.0 for m in masses(analysed, weights)]
        # The sentence that ranked the passage: its words and, with sentence vectors, its
        # meaning (SQuAD dev: the answer in the first highlight 0.828 -> 0.831).
        scores = sentence_scores(mass, hit.sentence_cosines, choice.meaning)
        ranked = scores
        if choice.kind is not None:
            ranked = [
                m + KIND_BONUS * has_kind(text[s.start : s.end], choice.kind)
                for m, s in zip(scores, analysed.spans, strict=True)
            ]
        i = max(range(len(ranked)), key=ranked.__getitem__)
        sentence = analysed.spans[i]
        wide = _neighbour(text, analysed.spans, mass, i) if choice.neighbour else sentence
        shown = highlight(hit.chunk, wide) if wide != sentence else None
        # The answer compares passages' sentences by this same score: by words alone, "stating"
        # in a quote would outscore "urged" for "What did the US demand?".
        best.append(ScoredHighlight(rank, highlight(hit.chunk, sentence), scores[i], shown))
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
    analysed = [sentences_of(h.chunk.text, h.chunk.title) for h in head]
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
    """The best sentence of each passage (with its neighbour when widened), as that passage's
    highlights."""
    return [(b.shown or b.highlight,) if b else () for b in best]


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
        choice = sentence_choice(question, searcher.settings)
        best = best_sentences(result.terms, result.hits, result.index.keyword, choice=choice)
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
