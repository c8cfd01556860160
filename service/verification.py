"""Verify: is a sentence supported by a span of its cited passages, character for character?

A claim is supported by a window (one sentence, or two adjacent sentences, of a passage) when
every number, date, quantity and proper name of the claim appears in the window, the window
has as many negations as the claim, and their meaning agrees: the share of the claim's content
words found in the window and the cosine of their embeddings are both above thresholds
calibrated on `bench/verifier.py`, and the window says nothing against it: no word of
opposite meaning, no two facts in each other's roles (who did what to whom, by a light
parse: facts linked by the words between them, with voice and converse verbs). Everything
here is a pure function of text, spans and an embedding callable, except `verify_text`,
which finds the candidate passages in the index.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from service.access import EVERYTHING, Scope
from service.chunking import split_sentences
from service.contradiction import opposite_words, swapped_in_place, swapped_roles, swapped_values
from service.errors import DocumentNotFoundError, InvalidSpanError
from service.facts import (
    NEGATIONS,
    WORD,
    Facts,
    facts,
    same_name,
)
from service.keyword import tokenize
from service.models import Hit
from service.search import Searcher

Embed = Callable[[Sequence[str]], npt.NDArray[np.float32]]

# Calibrated on bench/verifier.py (SQuAD dev, faithful sentences vs corruptions): see README.
LEXICAL_THRESHOLD = 0.3
SEMANTIC_THRESHOLD = 0.7
# Share of each sentence's content words a claim must state to be supported by the pair.
PAIR_COVERAGE = 0.3
# Words after a negation cue that it is taken to negate.
SCOPE = 3
# Passages searched for a sentence when no passage is named (POST /v1/verify on the index).
SEARCH_PASSAGES = 5

MARKER = re.compile(r"\s*\[(\d+)\]")


@dataclass(frozen=True, slots=True)
class PassageText:
    """A passage a claim may cite: its number ([n]), source, document offset and exact text."""

    number: int
    source: str
    char_start: int
    text: str


@dataclass(frozen=True, slots=True)
class Window:
    """A candidate supporting span: `document_text[char_start:char_end] == text`."""

    passage: int
    source: str
    char_start: int
    char_end: int
    text: str
    parts: tuple[str, ...] = ()  # the two sentences of a pair, else empty


@dataclass(frozen=True, slots=True)
class Evidence:
    """The span supporting a sentence: `document_text[char_start:char_end] == text`."""

    source: str
    char_start: int
    char_end: int
    text: str


@dataclass(frozen=True, slots=True)
class Claim:
    """A sentence of an answer: its text without [n] markers, what it cites, and where it
    stands in the answer (`answer[start:end]`, markers included)."""

    text: str
    cited: tuple[int, ...]
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether a claim is supported, by which span, and if not, why not."""

    claim: Claim
    supported: bool
    evidence: Evidence | None
    reason: str  # "" when supported
    lexical: float = 0.0
    semantic: float = 0.0


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Agreement a supporting window must reach with its claim."""

    lexical: float = LEXICAL_THRESHOLD
    semantic: float = SEMANTIC_THRESHOLD


DEFAULT_THRESHOLDS = Thresholds()


def _is_negation(word: str) -> bool:
    return word in NEGATIONS or word.endswith(("n't", "n’t"))


def negations(text: str) -> int:
    """How many negation cues a text holds ("not", "no", "never", "-n't", ...)."""
    words = re.findall(r"[a-z]+(?:['’]t)?", text.lower())
    return sum(1 for w in words if _is_negation(w))


def negation_scopes(text: str) -> list[frozenset[str]]:
    """For each negation cue, the stemmed content words of up to SCOPE words after it, within
    its clause: what it negates."""
    scopes: list[frozenset[str]] = []
    for clause in re.split(r"[,;:.!?()]", text.lower()):
        words = re.findall(r"[a-z]+(?:['’]t)?", clause)
        for i, word in enumerate(words):
            if _is_negation(word):
                after = " ".join(w for w in words[i + 1 : i + 1 + SCOPE] if not _is_negation(w))
                scopes.append(frozenset(tokenize([after])[0]))
    return scopes


def negation_agrees(claim: str, window: str) -> bool:
    """Whether no negation was added or lost: every negation of the claim negates words a
    negation of the window negates, and every negation of the window whose words the claim
    states is matched by one of the claim's."""
    claim_scopes, window_scopes = negation_scopes(claim), negation_scopes(window)
    if len(claim_scopes) > len(window_scopes):
        return False
    for scope in claim_scopes:
        if not any(scope & w or not (scope or w) for w in window_scopes):
            return False
    claim_terms = set(tokenize([claim])[0])
    for scope in window_scopes:
        stated = scope & claim_terms
        if stated and not any(stated & c for c in claim_scopes):
            return False
    return True


def _words(text: str) -> frozenset[str]:
    return frozenset(w.lower() for w in WORD.findall(re.sub(r"['’]s\b", "", text)))


def missing_facts(claim: Facts, window_text: str) -> list[str]:
    """The claim's numbers and names that the window does not contain."""
    have = facts(window_text)
    missing = sorted(claim.numbers - have.numbers)
    words = _words(window_text)
    for name in sorted(claim.names):
        # "Korea" is in "Korean": a name's adjective or plural still names it.
        if name not in words and not any(same_name(name, w) for w in words):
            missing.append(name)
    return missing


def lexical_agreement(claim: str, window: str) -> float:
    """Share of the claim's content words (stemmed, stop words out) that the window holds."""
    claim_terms, window_terms = tokenize([claim, window])
    if not claim_terms:
        return 1.0
    have = set(window_terms)
    return sum(1 for t in claim_terms if t in have) / len(claim_terms)


def claims(text: str) -> list[Claim]:
    """The sentences of an answer with the [n] markers each carries (markers before a
    sentence's first word belong to the previous sentence, as "... troops. [1] They ...")."""
    spans = split_sentences(text)
    out: list[Claim] = []
    for span in spans:
        start, end = span.start, span.end
        lead = re.match(r"(?:\s*\[\d+\])+", text[start:end])
        if lead and out:
            prev = out[-1]
            cut = start + lead.end()
            extra = tuple(int(n) for n in MARKER.findall(text[start:cut]))
            out[-1] = Claim(prev.text, prev.cited + extra, prev.start, cut)
            start = cut
            while start < end and text[start].isspace():
                start += 1
        piece = text[start:end]
        bare = MARKER.sub("", piece).strip()
        if not bare:
            continue
        cited = tuple(int(n) for n in MARKER.findall(piece))
        out.append(Claim(_tidy(bare), cited, start, end))
    return out


def _tidy(text: str) -> str:
    """A claim without the space a removed marker left before its final punctuation."""
    return re.sub(r"\s+([.!?,;:])", r"\1", text)


def windows(passage: PassageText) -> list[Window]:
    """Every sentence of a passage and every pair of adjacent sentences, in document offsets."""
    spans = split_sentences(passage.text)
    out: list[Window] = []
    for i, span in enumerate(spans):
        for last in spans[i : i + 2]:
            parts = (
                (passage.text[span.start : span.end], passage.text[last.start : last.end])
                if last is not span
                else ()
            )
            out.append(
                Window(
                    passage.number,
                    passage.source,
                    passage.char_start + span.start,
                    passage.char_start + last.end,
                    passage.text[span.start : last.end],
                    parts,
                )
            )
    return out


def draws_on_both(claim: str, window: Window) -> bool:
    """Whether a claim states enough of each sentence of a two-sentence window to be read
    from both: a fact borrowed from the neighbouring sentence does not make a pair."""
    if not window.parts:
        return True
    claim_terms = set(tokenize([claim])[0])
    for part in tokenize(list(window.parts)):
        if part and sum(1 for t in part if t in claim_terms) / len(part) < PAIR_COVERAGE:
            return False
    return True


@dataclass(frozen=True, slots=True)
class _Check:
    window: Window
    missing: tuple[str, ...]
    negation_ok: bool
    lexical: float
    conflict: str  # what the window says otherwise ("" when nothing)


def conflict(claim: str, window: str) -> str:
    """What the window says against the claim, as a reason ("" when nothing): a word of
    opposite meaning, or two facts in swapped roles."""
    opposite = opposite_words(claim, window)
    if opposite:
        return f"says {opposite[0]!r} where the span says {opposite[1]!r}"
    roles = swapped_roles(claim, window)
    if roles and not roles[2]:
        return f"{roles[0]!r} stands where the span has {roles[1]!r}"
    swapped = (
        roles[:2] if roles else swapped_values(claim, window) or swapped_in_place(claim, window)
    )
    if swapped:
        return f"{swapped[0]!r} and {swapped[1]!r} are in each other's roles in the span"
    return ""


def verify_claim(
    claim: Claim,
    passages: Sequence[PassageText],
    embed: Embed,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
    *,
    require_citation: bool = True,
) -> Verdict:
    """The verdict on a claim against the passages it cites (all of them when it cites none
    and require_citation is False); a cited number with no such passage is never supported."""
    by_number = {p.number: p for p in passages}
    unknown = [n for n in claim.cited if n not in by_number]
    if unknown:
        return Verdict(claim, False, None, f"cites [{unknown[0]}], which is not a given passage")
    if claim.cited:
        cited = [by_number[n] for n in dict.fromkeys(claim.cited)]
    elif require_citation:
        return Verdict(claim, False, None, "cites no passage")
    else:
        cited = list(passages)
    claim_facts = facts(claim.text)
    checks = [
        _Check(
            w,
            missing := tuple(missing_facts(claim_facts, w.text)),
            negation_agrees(claim.text, w.text),
            lexical_agreement(claim.text, w.text),
            "" if missing else conflict(claim.text, w.text),
        )
        for p in cited
        for w in windows(p)
        if draws_on_both(claim.text, w)
    ]
    if not checks:
        return Verdict(claim, False, None, "the cited passages have no text")
    # Only windows passing the cheap checks are embedded.
    viable = [
        c
        for c in checks
        if not c.missing and c.negation_ok and not c.conflict and c.lexical >= thresholds.lexical
    ]
    if viable:
        vectors = embed([claim.text, *(c.window.text for c in viable)])
        cosines = (vectors[1:] @ vectors[0]).tolist()
        scored = sorted(zip(viable, cosines, strict=True), key=lambda cs: -(cs[0].lexical + cs[1]))
        best, cosine = scored[0]
        if cosine >= thresholds.semantic:
            w = best.window
            return Verdict(
                claim,
                True,
                Evidence(w.source, w.char_start, w.char_end, w.text),
                "",
                round(best.lexical, 4),
                round(cosine, 4),
            )
        return Verdict(
            claim,
            False,
            None,
            f"its meaning differs from the closest span (cosine {cosine:.2f} < "
            f"{thresholds.semantic})",
            round(best.lexical, 4),
            round(cosine, 4),
        )
    return Verdict(claim, False, None, _why_not(checks, thresholds))


def _why_not(checks: Sequence[_Check], thresholds: Thresholds) -> str:
    """The reason of the window closest to supporting a claim."""
    best = min(checks, key=lambda c: (len(c.missing), -c.lexical))
    if best.missing:
        return "not in the cited span: " + ", ".join(best.missing)
    if not best.negation_ok:
        return "a negation was added or lost"
    if best.conflict:
        return best.conflict
    return f"too few of its words are in the cited span ({best.lexical:.2f} < {thresholds.lexical})"


def verify_claims(
    text: str,
    passages: Sequence[PassageText],
    embed: Embed,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
    *,
    require_citation: bool = True,
) -> list[Verdict]:
    """The verdict on every sentence of text against the numbered passages."""
    return [
        verify_claim(c, passages, embed, thresholds, require_citation=require_citation)
        for c in claims(text)
    ]


def passage_texts(hits: Sequence[Hit]) -> list[PassageText]:
    """Hits as passages numbered by rank (1 first)."""
    return [
        PassageText(i, h.chunk.source, h.chunk.char_start, h.chunk.text)
        for i, h in enumerate(hits, start=1)
    ]


def verify_text(
    searcher: Searcher,
    text: str,
    *,
    passages: Sequence[PassageText] = (),
    sources: Sequence[str] | None = None,
    scope: Scope = EVERYTHING,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
) -> list[Verdict]:
    """Verdicts on every sentence of text: against the given passages when any are given
    ([n] naming passage n; an uncited sentence is checked against all), else against the
    passages the index finds for each sentence (within sources, when given, and always within
    the scope: evidence never comes from a document the caller may not see)."""
    if passages:
        return verify_claims(
            text, passages, searcher.embed_texts, thresholds, require_citation=False
        )
    verdicts: list[Verdict] = []
    for claim in claims(text):
        found = searcher.search(claim.text, top_k=SEARCH_PASSAGES, sources=sources, scope=scope)
        bare = Claim(claim.text, (), claim.start, claim.end)
        verdicts.append(
            verify_claim(
                bare,
                passage_texts(found.hits),
                searcher.embed_texts,
                thresholds,
                require_citation=False,
            )
        )
    return verdicts


def resolve_spans(
    searcher: Searcher,
    spans: Sequence[tuple[str, int | None, int | None]],
    scope: Scope = EVERYTHING,
) -> list[PassageText]:
    """(source, char_start, char_end) spans of the served build as passages numbered from 1;
    None offsets mean the document's start or end. DocumentNotFoundError for a source not in
    the build or outside the scope (the same error: the two cannot be told apart),
    InvalidSpanError for offsets outside its text."""
    chunks = searcher.holder.current.chunks
    out: list[PassageText] = []
    for number, (source, start, end) in enumerate(spans, start=1):
        text = chunks.text(source) if chunks.document(source, scope) is not None else None
        if text is None:
            raise DocumentNotFoundError(f"no indexed document {source!r}; see GET /v1/documents")
        lo = 0 if start is None else start
        hi = len(text) if end is None else end
        if not 0 <= lo < hi <= len(text):
            raise InvalidSpanError(
                f"passages[{number - 1}]: characters {lo}-{hi} are outside {source!r}, which "
                f"has {len(text)}; pass 0 <= char_start < char_end <= {len(text)}"
            )
        out.append(PassageText(number, source, lo, text[lo:hi]))
    return out
