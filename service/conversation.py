"""Conversation: answer the latest turn of a chat from what the conversation is about.

Chat frontends send the whole history with every turn. A follow-up ("Who was it addressed
to?") names nothing it asks about, so it is searched together with what the earlier turns
were about: their questions and the spans groundqa answered them with, each weighing less the
further back it is. A question that stands on its own is searched alone.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from service.access import EVERYTHING, Scope
from service.answering import ABSTAIN_TEXT, AskResult, ask
from service.config import Mode
from service.keyword import tokenize
from service.models import SpanRef
from service.search import Context, Searcher


@dataclass(frozen=True, slots=True)
class Turn:
    """One message of a conversation; an assistant turn may name the spans it cited."""

    role: Literal["user", "assistant"]
    text: str
    cited: tuple[SpanRef, ...] = ()


# Words that point back at something said before: a question holding one is a follow-up.
REFERRING = frozenset(
    {
        "it",
        "its",
        "itself",
        "he",
        "him",
        "his",
        "himself",
        "she",
        "her",
        "hers",
        "herself",
        "they",
        "them",
        "their",
        "theirs",
        "themselves",
        "this",
        "that",
        "these",
        "those",
        "there",
        "then",
        "such",
        "same",
        "former",
        "latter",
        "one",
        "ones",
        "else",
        "other",
        "others",
        "another",
        "also",
        "too",
        "either",
        "neither",
    }
)
# Openings of an elliptical follow-up ("And for troops?", "What about South Korea?").
ELLIPSIS = re.compile(
    r"^\s*(and|but|also|so|then|or|what about|how about|and what about|what else|why not)\b",
    re.IGNORECASE,
)
# A question with at most this many keyword terms is too short to stand alone.
SHORT_TERMS = 1
# Weight of the previous turn's question and answer in the query, halved for each older turn.
QUESTION_WEIGHT = 0.4
ANSWER_WEIGHT = 0.05
DECAY = 0.5
MAX_EARLIER_TURNS = 3
_MARKER = re.compile(r"\s*\[\d+\]")


def assistant_turn(result: AskResult) -> Turn:
    """The assistant turn a client would send back for an answer of groundqa's."""
    sources = {p.rank: p.citation.source for p in result.passages}
    cited = tuple(
        SpanRef(sources[q.rank], q.highlight.char_start, q.highlight.char_end)
        for q in result.answer.quotes
    )
    return Turn("assistant", result.answer.text, cited)


def refers_back(question: str) -> bool:
    """Whether a question leans on earlier turns: a referring word, an elliptical opening,
    or too few terms of its own."""
    words = re.findall(r"[a-z]+", question.lower())
    if any(w in REFERRING for w in words) or ELLIPSIS.match(question):
        return True
    return len(tokenize([question])[0]) <= SHORT_TERMS


@dataclass(frozen=True, slots=True)
class Exchange:
    """A user question and the answer that followed it, if any."""

    question: str
    answer: str = ""
    cited: tuple[SpanRef, ...] = ()


def exchanges(turns: Sequence[Turn]) -> tuple[list[Exchange], str]:
    """The earlier question-answer pairs, oldest first, and the last user question."""
    pairs: list[Exchange] = []
    for turn in turns:
        text = turn.text.strip()
        if turn.role == "user" and text:
            pairs.append(Exchange(text))
        elif turn.role == "assistant" and pairs:
            last = pairs[-1]
            pairs[-1] = Exchange(last.question, text, last.cited + turn.cited)
    if not pairs:
        raise ValueError("a conversation needs a user turn with text")
    return pairs[:-1], pairs[-1].question


def answer_body(text: str) -> str:
    """An assistant message without its source list and [n] markers; empty for abstentions."""
    body = re.split(r"\n\s*(?:#+\s*)?\**(?:Closest sources|Sources)\**:?\s*\n", text, maxsplit=1)[0]
    body = _MARKER.sub("", body).strip()
    return "" if body.startswith(ABSTAIN_TEXT) else body


def context_of(earlier: Sequence[Exchange], cited_text: Sequence[str]) -> list[Context]:
    """The query context of a follow-up: each earlier question and its answer (the cited
    spans' text when known), the latest weighing most."""
    context: list[Context] = []
    recent = list(earlier)[-MAX_EARLIER_TURNS:]
    for back, (exchange, cited) in enumerate(
        zip(reversed(recent), reversed(cited_text[-len(recent) :]), strict=True)
    ):
        scale = DECAY**back
        context.append(Context(exchange.question, QUESTION_WEIGHT * scale))
        answer = cited or answer_body(exchange.answer)
        if answer:
            context.append(Context(answer, ANSWER_WEIGHT * scale))
    return context


def resolve_cited(searcher: Searcher, cited: Sequence[SpanRef], scope: Scope = EVERYTHING) -> str:
    """The text of cited spans that the served build holds and the scope sees, joined; other
    spans are skipped (a client may send back anything, links to other collections too)."""
    chunks = searcher.holder.current.chunks
    texts: list[str] = []
    for ref in cited:
        text = chunks.text(ref.source) if chunks.document(ref.source, scope) else None
        if text is not None and 0 <= ref.char_start < ref.char_end <= len(text):
            texts.append(text[ref.char_start : ref.char_end])
    return " ".join(dict.fromkeys(texts))


def ask_conversation(
    searcher: Searcher,
    turns: Sequence[Turn],
    *,
    top_k: int,
    mode: Mode | None = None,
    sources: Sequence[str] | None = None,
    scope: Scope = EVERYTHING,
) -> AskResult:
    """Answer the last user turn, resolving follow-ups from the earlier turns, from the
    documents the scope may see."""
    earlier, question = exchanges(turns)
    if not earlier:
        return ask(searcher, question, top_k=top_k, mode=mode, sources=sources, scope=scope)
    if not refers_back(question):
        # A question of its own keeps its own reading unless that finds nothing to answer.
        alone = ask(searcher, question, top_k=top_k, mode=mode, sources=sources, scope=scope)
        if alone.answer.grounded:
            return alone
    cited = [resolve_cited(searcher, e.cited, scope) for e in earlier]
    context = context_of(earlier, cited)
    return ask(
        searcher, question, top_k=top_k, mode=mode, sources=sources, scope=scope, context=context
    )
