"""A chat completion composed by the configured LLM, every sentence verified as it ends.

Content streams as the LLM writes it; after each sentence comes a chunk whose delta carries
that sentence's `verification` annotation (its range in the content, `verified`, the
evidence span and its link) and a `url_citation` per [n] marker. After the answer: a blank
line, `Sources:` and one line per cited passage; the last chunk summarises the verdicts
(`verification: {sentences, supported, flagged, dropped, fallback}`). When the LLM fails, the
extractive answer follows a note, with its own sources, and the status stays 200.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict
from typing import Any

from service.answering import AskResult
from service.citations import Passage, span_link
from service.embedding import Tokenizer
from service.generation import Event, Fallback, SentenceVerdict, Summary, TextPiece
from service.rendering import Rendered, escape, render

_MARKER = re.compile(r"\[(\d+)\]")


def passage_label(passage: Passage) -> str:
    """`source, lines a-b` of a whole passage."""
    c = passage.citation
    lines = (
        f"line {c.line_start}"
        if c.line_start == c.line_end
        else (f"lines {c.line_start}-{c.line_end}")
    )
    return f"{c.source}, {lines}"


class GeneratedCompletion:
    """The chunks (or the whole completion) of one chat answer composed by the LLM."""

    def __init__(
        self,
        result: AskResult,
        events: AsyncIterator[Event],
        tokenizer: Tokenizer,
        base_url: str,
        prompt_tokens: int,
        model: str,
    ) -> None:
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.result = result
        self.events = events
        self.tokenizer = tokenizer
        self.base_url = base_url
        self.prompt_tokens = prompt_tokens
        self.model = model
        self.by_rank = {p.rank: p for p in result.passages}
        self.content = ""
        self.annotations: list[dict[str, Any]] = []
        self.cited: dict[int, None] = {}
        self.summary: Summary | None = None
        self.fallback: Rendered | None = None

    def _envelope(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": self.result.build_id,
        }

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            **self._envelope(),
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }

    def _append(self, text: str) -> dict[str, Any]:
        self.content += text
        return self._chunk({"content": text})

    def _passage_url(self, passage: Passage) -> str:
        c = passage.citation
        return span_link(self.base_url, c.source, c.char_start, c.char_end)

    def _verdict(self, item: SentenceVerdict) -> list[dict[str, Any]]:
        """The annotations of one sentence: its verification, and its markers' citations."""
        v = item.verdict
        e = v.evidence
        evidence = asdict(e) if e else None
        url = span_link(self.base_url, e.source, e.char_start, e.char_end) if e else None
        out: list[dict[str, Any]] = [
            {
                "type": "verification",
                "verification": {
                    "start_index": item.start,
                    "end_index": item.end,
                    "text": v.claim.text,
                    "verified": v.supported,
                    "dropped": item.dropped,
                    "citations": list(v.claim.cited),
                    "evidence": evidence,
                    "url": url,
                    "reason": v.reason or None,
                },
            }
        ]
        if item.dropped:
            return out
        for m in _MARKER.finditer(self.content, item.start, item.end):
            passage = self.by_rank.get(int(m.group(1)))
            if passage is None:
                continue
            self.cited[passage.rank] = None
            out.append(
                {
                    "type": "url_citation",
                    "url_citation": {
                        "start_index": m.start(),
                        "end_index": m.end(),
                        "url": url if v.supported and url else self._passage_url(passage),
                        "title": passage_label(passage),
                    },
                    "verified": v.supported,
                }
            )
        return out

    def _sources(self) -> str:
        """The sources list of the generated answer, one line per cited passage."""
        lines = [
            f"- \\[{rank}\\] [{escape(passage_label(self.by_rank[rank]))}]"
            f"({self._passage_url(self.by_rank[rank])})"
            for rank in sorted(self.cited)
        ]
        return "\n\nSources:\n\n" + "\n".join(lines) if lines else ""

    def _fallback(self, event: Fallback) -> dict[str, Any]:
        """The note and the extractive answer, appended; their markers' citations kept."""
        rendered = render(self.result, self.base_url)
        lead = ("\n\n" if self.content else "") + event.note + "\n\n"
        offset = len(self.content) + len(lead)
        for m in rendered.markers:
            self.annotations.append(
                {
                    "type": "url_citation",
                    "url_citation": {
                        "start_index": offset + m.start,
                        "end_index": offset + m.end,
                        "url": m.source.url,
                        "title": m.source.label,
                    },
                }
            )
        self.fallback = rendered
        return self._append(lead + rendered.content)

    def _summary(self) -> dict[str, Any]:
        s = self.summary or Summary(0, 0, 0, 0, None)
        return {
            "sentences": s.sentences,
            "supported": s.supported,
            "flagged": s.flagged,
            "dropped": s.dropped,
            "fallback": s.fallback,
        }

    def _usage(self) -> dict[str, int]:
        completion = len(self.tokenizer.offsets([self.content])[0]) if self.content else 0
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": self.prompt_tokens + completion,
        }

    def _extras(self) -> dict[str, Any]:
        grounded = self.fallback is None and bool(self.summary and self.summary.supported)
        if self.fallback is not None:
            grounded = self.result.answer.grounded
        return {
            "verification": self._summary(),
            "grounded": grounded,
            "build_id": self.result.build_id,
        }

    async def chunks(self, include_usage: bool) -> AsyncIterator[dict[str, Any]]:
        """The stream: role, content as it comes, each verdict after its sentence, the
        sources, then the summary with finish_reason (and usage when asked)."""
        yield self._chunk({"role": "assistant"})
        async for event in self.events:
            if isinstance(event, TextPiece):
                yield self._append(event.text)
            elif isinstance(event, SentenceVerdict):
                annotations = self._verdict(event)
                self.annotations += annotations
                yield self._chunk({"annotations": annotations})
            elif isinstance(event, Fallback):
                start = len(self.annotations)
                yield self._fallback(event)
                if len(self.annotations) > start:
                    yield self._chunk({"annotations": self.annotations[start:]})
            else:
                self.summary = event
        if self.fallback is None and (sources := self._sources()):
            yield self._append(sources)
        yield {**self._chunk({}, "stop"), **self._extras()}
        if include_usage:
            yield {**self._envelope(), "choices": [], "usage": self._usage()}

    async def response(self) -> dict[str, Any]:
        """The whole `chat.completion` object."""
        async for _ in self.chunks(include_usage=False):
            pass
        return {
            **self._envelope(),
            "object": "chat.completion",
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": self.content,
                        "refusal": None,
                        "annotations": self.annotations,
                    },
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": self._usage(),
            **self._extras(),
        }


def earlier_turns(roles_texts: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """Earlier chat turns for the LLM's prompt: their text without source lists."""
    from service.conversation import answer_body

    out: list[tuple[str, str]] = []
    for role, text in roles_texts:
        body = answer_body(text) if role == "assistant" else text
        if body:
            out.append((role, body))
    return out
