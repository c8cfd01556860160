"""Generate: an LLM composes the answer from numbered passages; every sentence is verified as
soon as it is complete.

The token stream goes through two stages. A marker filter holds back anything that may be a
citation marker until it is whole, passes `[n]` only for a passage the LLM was given and drops
the rest. Then sentences are assembled: text streams on until a sentence may have ended, the
ended sentence is verified against the spans of the passages it cites (`service.verification`),
and its verdict follows it. With the `flag` policy an unsupported sentence is kept and marked;
with `drop` sentences are held until verified and unsupported ones never shown. Any upstream
failure becomes a `Fallback` event: the caller answers with the extractive answer and a note.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass

import anyio
import anyio.to_thread

from service.citations import Passage
from service.config import VerifyPolicy
from service.errors import UpstreamError
from service.llm import LLMConfig, stream_chat
from service.verification import (
    DEFAULT_THRESHOLDS,
    Claim,
    Embed,
    PassageText,
    Thresholds,
    Verdict,
    claims,
    verify_claim,
)

FLAG = " [unverified]"
NOTE = "The language model could not answer ({reason}); this is the extractive answer."
SYSTEM_PROMPT = (
    "You answer questions using only the numbered passages you are given. Write a short answer "
    "of a few sentences. After every sentence write the number of the passage it comes from in "
    "square brackets, like [1]. Use only facts stated in the passages; copy numbers, dates and "
    "names exactly. If the passages do not answer the question, say so in one sentence."
)
_REFUSAL = re.compile(
    r"^\s*(I'?m sorry|I am sorry|I cannot|I can't|I can not|As an AI|I'm unable|I am unable)",
    re.IGNORECASE,
)
_MARKER_BODY = re.compile(r"\[[\d,\s]*\]?$")
_HOLD = re.compile(r"[.!?…]+[\"'”’)\]]*(?:\s*\[\d+\])*\s*$")
MAX_MARKER = 24


@dataclass(frozen=True, slots=True)
class TextPiece:
    """Content to append to the answer."""

    text: str


@dataclass(frozen=True, slots=True)
class SentenceVerdict:
    """A sentence's verdict; `content[start:end]` is the sentence (markers included) when it
    was shown, and start == end when it was dropped."""

    verdict: Verdict
    start: int
    end: int
    dropped: bool


@dataclass(frozen=True, slots=True)
class Fallback:
    """The LLM failed; the caller answers extractively with this note."""

    note: str
    reason: str


@dataclass(frozen=True, slots=True)
class Summary:
    """The last event: how many sentences, supported, flagged and dropped."""

    sentences: int
    supported: int
    flagged: int
    dropped: int
    fallback: str | None  # the note when the extractive answer replaced or followed the text


Event = TextPiece | SentenceVerdict | Fallback | Summary


def prompt_messages(
    question: str, passages: Sequence[Passage], earlier: Sequence[tuple[str, str]] = ()
) -> list[dict[str, str]]:
    """The chat messages asking the LLM to answer question from the numbered passages;
    earlier holds the conversation's previous (role, text) turns."""
    listing = "\n\n".join(f"[{p.rank}] {p.text}" for p in passages)
    messages = [{"role": "system", "content": SYSTEM_PROMPT}]
    messages += [{"role": role, "content": text} for role, text in earlier]
    messages.append({"role": "user", "content": f"Passages:\n\n{listing}\n\nQuestion: {question}"})
    return messages


def passage_texts(passages: Sequence[Passage]) -> list[PassageText]:
    """Passages as the verifier reads them, numbered by rank."""
    return [PassageText(p.rank, p.citation.source, p.citation.char_start, p.text) for p in passages]


class MarkerFilter:
    """Passes text through, holding back a possible `[n]` until it is whole: a marker of a
    given passage (1..count) passes as `[n]` (`[1, 2]` as `[1][2]`), any other is dropped."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.held = ""

    def feed(self, text: str) -> str:
        """The text that can be passed on now."""
        out: list[str] = []
        for ch in text:
            if self.held:
                self.held += ch
                if ch == "]":
                    out.append(self._marker(self.held))
                    self.held = ""
                elif not _MARKER_BODY.match(self.held) or len(self.held) > MAX_MARKER:
                    out.append(self.held)  # not a marker after all
                    self.held = ""
            elif ch == "[":
                self.held = ch
            else:
                out.append(ch)
        return "".join(out)

    def flush(self) -> str:
        """What is held at the end of the stream (an unfinished marker is dropped)."""
        held, self.held = self.held, ""
        return "" if _MARKER_BODY.match(held) else held

    def _marker(self, raw: str) -> str:
        numbers = [int(n) for n in re.findall(r"\d+", raw)]
        if not numbers and raw.strip("[] ,"):
            return raw
        return "".join(f"[{n}]" for n in dict.fromkeys(numbers) if 1 <= n <= self.count)


Verify = Callable[[Claim], Verdict]
# Characters after a line break that decide whether the line starts a block (a list item, a
# heading, a table row), which ends the sentence before it.
LINE_START = 8


def holdback(pending: str) -> int:
    """How much of the current sentence can be shown before it is verified: everything but
    a possible sentence end and the first characters of a new line, either of which may turn
    out to end the sentence (its flag must follow it directly)."""
    hold = _HOLD.search(pending)
    upto = hold.start() if hold else len(pending)
    line = pending.rfind("\n")
    if line != -1 and len(pending) - line <= LINE_START:
        upto = min(upto, line)
    return upto


class Assembler:
    """Turns filtered text into content pieces and sentence verdicts (see the module doc)."""

    def __init__(self, verify: Verify, policy: VerifyPolicy) -> None:
        self.verify = verify
        self.policy = policy
        self.length = 0  # characters of content emitted
        self.pending = ""  # text after the last verified sentence
        self.shown = 0  # characters of pending already emitted (flag policy)
        self.verdicts: list[SentenceVerdict] = []

    async def feed(self, text: str, *, final: bool = False) -> list[TextPiece | SentenceVerdict]:
        """Events for the next text; final verifies what remains."""
        self.pending += text
        events: list[TextPiece | SentenceVerdict] = []
        # A sentence is complete once the next one has begun (or the stream has ended).
        while len(found := claims(self.pending)) > (0 if final else 1):
            events += await self._sentence(found[0])
        if final:
            self.pending, self.shown = "", 0
        elif self.policy == "flag":
            # Stream on up to where the current sentence may have ended.
            upto = holdback(self.pending)
            if upto > self.shown:
                events.append(self._emit(self.pending[self.shown : upto]))
                self.shown = upto
        return events

    def _emit(self, text: str) -> TextPiece:
        self.length += len(text)
        return TextPiece(text)

    async def _sentence(self, claim: Claim) -> list[TextPiece | SentenceVerdict]:
        """Verify a complete sentence (offsets into pending) and emit it as the policy says."""
        verdict = await anyio.to_thread.run_sync(self.verify, claim)
        start, end = claim.start, claim.end
        events: list[TextPiece | SentenceVerdict] = []
        if self.policy == "flag":
            at = self.length - self.shown + start  # where pending[start] stands in the content
            if end > self.shown:
                events.append(self._emit(self.pending[self.shown : end]))
            if not verdict.supported:
                events.append(self._emit(FLAG))
            item = SentenceVerdict(verdict, at, at + end - start, dropped=False)
        elif verdict.supported:
            lead = self.pending[:start] if self.length else ""
            events.append(self._emit(lead + self.pending[start:end]))
            item = SentenceVerdict(verdict, self.length - (end - start), self.length, False)
        else:
            item = SentenceVerdict(verdict, self.length, self.length, dropped=True)
        self.pending = self.pending[end:]
        self.shown = max(0, self.shown - end)
        self.verdicts.append(item)
        events.append(item)
        return events


def summary(verdicts: Sequence[SentenceVerdict], fallback: str | None) -> Summary:
    """Counts of the verdicts."""
    supported = sum(1 for v in verdicts if v.verdict.supported)
    dropped = sum(1 for v in verdicts if v.dropped)
    return Summary(len(verdicts), supported, len(verdicts) - supported - dropped, dropped, fallback)


async def generate(
    tokens: AsyncIterator[str],
    passages: Sequence[PassageText],
    embed: Embed,
    *,
    policy: VerifyPolicy,
    timeout: float,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
) -> AsyncIterator[Event]:
    """The events of a generated answer: content pieces, a verdict after each sentence, a
    Fallback when the LLM fails (down, slower than timeout in all, malformed, empty, refusing,
    cut short), and a Summary last. Never raises for an upstream failure."""
    markers = MarkerFilter(len(passages))

    def verify(claim: Claim) -> Verdict:
        return verify_claim(claim, passages, embed, thresholds)

    assembler = Assembler(verify, policy)
    deadline = anyio.current_time() + timeout
    reason: str | None = None
    iterator = tokens.__aiter__()
    try:
        while True:
            with anyio.move_on_after(deadline - anyio.current_time()) as scope:
                try:
                    piece = await iterator.__anext__()
                except StopAsyncIteration:
                    break
            if scope.cancelled_caught:
                raise UpstreamError(f"no complete answer within {timeout:g} s")
            for event in await assembler.feed(markers.feed(piece)):
                yield event
        for event in await assembler.feed(markers.flush(), final=True):
            yield event
        verdicts = assembler.verdicts
        if not verdicts:
            reason = "it returned no answer"
        elif _REFUSAL.match(verdicts[0].verdict.claim.text) and not any(
            v.verdict.supported for v in verdicts
        ):
            reason = "it declined to answer"
    except UpstreamError as exc:
        reason = str(exc)
    finally:
        aclose = getattr(iterator, "aclose", None)
        if aclose is not None:
            await aclose()
    note = None
    if reason is not None:
        note = NOTE.format(reason=reason)
        yield Fallback(note, reason)
    yield summary(assembler.verdicts, note)


ABSTAINED = "the indexed sources do not answer this question"


async def compose(
    config: LLMConfig,
    question: str,
    passages: Sequence[Passage],
    grounded: bool,
    embed: Embed,
    *,
    policy: VerifyPolicy,
    earlier: Sequence[tuple[str, str]] = (),
    max_tokens: int | None = None,
    stop: Sequence[str] = (),
    sampling: Mapping[str, float | int] | None = None,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
) -> AsyncIterator[Event]:
    """The events of an answer the LLM composes from the retrieved passages; when retrieval
    abstains the LLM is not asked and the events are a Fallback and an empty Summary."""
    if not grounded or not passages:
        note = NOTE.format(reason=ABSTAINED)
        yield Fallback(note, ABSTAINED)
        yield summary((), note)
        return
    tokens = stream_chat(
        config,
        prompt_messages(question, passages, earlier),
        max_tokens=max_tokens,
        stop=stop,
        sampling=sampling,
    )
    async for event in generate(
        tokens,
        passage_texts(passages),
        embed,
        policy=policy,
        timeout=config.timeout,
        thresholds=thresholds,
    ):
        yield event


@dataclass(frozen=True, slots=True)
class Generated:
    """A whole generated answer: its content, each sentence's verdict, the summary."""

    content: str
    sentences: tuple[SentenceVerdict, ...]
    summary: Summary

    @property
    def cited(self) -> tuple[int, ...]:
        """The passage numbers cited by the sentences shown, in order."""
        shown = [s for s in self.sentences if not s.dropped]
        return tuple(sorted({n for s in shown for n in s.verdict.claim.cited}))


async def collect(events: AsyncIterator[Event]) -> Generated:
    """Every event of a generated answer, gathered."""
    parts: list[str] = []
    sentences: list[SentenceVerdict] = []
    last = Summary(0, 0, 0, 0, None)
    async for event in events:
        if isinstance(event, TextPiece):
            parts.append(event.text)
        elif isinstance(event, SentenceVerdict):
            sentences.append(event)
        elif isinstance(event, Summary):
            last = event
    return Generated("".join(parts), tuple(sentences), last)
