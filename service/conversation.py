"""Conversation: answer the latest turn of a chat from what the conversation is about."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from service.answering import AskResult, ask
from service.config import Mode
from service.search import Searcher


@dataclass(frozen=True, slots=True)
class SpanRef:
    """A span of an indexed document that an earlier answer cited."""

    source: str
    char_start: int
    char_end: int


@dataclass(frozen=True, slots=True)
class Turn:
    """One message of a conversation; an assistant turn may name the spans it cited."""

    role: Literal["user", "assistant"]
    text: str
    cited: tuple[SpanRef, ...] = ()


def assistant_turn(result: AskResult) -> Turn:
    """The assistant turn a client would send back for an answer of groundqa's."""
    ranks = set(result.answer.citations)
    cited = tuple(
        SpanRef(p.citation.source, h.char_start, h.char_end)
        for p in result.passages
        if p.rank in ranks
        for h in p.highlights
    )
    return Turn("assistant", result.answer.text, cited)


def ask_conversation(
    searcher: Searcher,
    turns: Sequence[Turn],
    *,
    top_k: int,
    mode: Mode | None = None,
    sources: Sequence[str] | None = None,
) -> AskResult:
    """Answer the last user turn, resolving follow-ups from the earlier turns."""
    question = next(t.text for t in reversed(turns) if t.role == "user")
    return ask(searcher, question, top_k=top_k, mode=mode, sources=sources)
