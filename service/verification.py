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

import itertools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache, lru_cache

import numpy as np
import numpy.typing as npt

from service.access import EVERYTHING, Scope
from service.chunking import split_sentences
from service.errors import DocumentNotFoundError, InvalidSpanError
from service.keyword import STOPWORDS, _stem, tokenize
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
_NUMBER = re.compile(
    r"(?<![\w.])(\d+(?:[.,]\d+)*)(?:st|nd|rd|th|s)?(?:\s*(hundred|thousand|million|billion|"
    r"trillion|bn|m|k)\b)?",
    re.IGNORECASE,
)
_WORD = re.compile(r"[A-Za-z][\w'’-]*")
_SCALES = {
    "hundred": 100,
    "thousand": 1_000,
    "k": 1_000,
    "million": 1_000_000,
    "m": 1_000_000,
    "billion": 1_000_000_000,
    "bn": 1_000_000_000,
    "trillion": 1_000_000_000_000,
}
# Plural scale words: an order of magnitude without a value ("millions of shells").
_MULTITUDES = frozenset(["dozens", "hundreds", "thousands", "millions", "billions", "trillions"])
# "one" is left out: as a pronoun ("the one who") it is no quantity.
_UNITS = {
    w: i
    for i, w in enumerate(
        [
            "zero",
            "_",
            "two",
            "three",
            "four",
            "five",
            "six",
            "seven",
            "eight",
            "nine",
            "ten",
            "eleven",
            "twelve",
            "thirteen",
            "fourteen",
            "fifteen",
            "sixteen",
            "seventeen",
            "eighteen",
            "nineteen",
        ]
    )
    if w != "_"
}
_TENS = {
    w: 10 * i
    for i, w in enumerate(
        ["_", "_", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
    )
    if w != "_"
}
_ORDINALS = {
    w: i
    for i, w in enumerate(
        [
            "_",
            "first",
            "second",
            "third",
            "fourth",
            "fifth",
            "sixth",
            "seventh",
            "eighth",
            "ninth",
            "tenth",
            "eleventh",
            "twelfth",
        ]
    )
    if w != "_"
}
NEGATIONS = frozenset(
    [
        "not",
        "no",
        "never",
        "none",
        "nobody",
        "nothing",
        "neither",
        "nor",
        "nowhere",
        "cannot",
        "without",
    ]
)
# Capitalised openers that are not names ("However, ...").
_OPENERS = frozenset(
    [
        "additionally",
        "also",
        "although",
        "however",
        "moreover",
        "furthermore",
        "meanwhile",
        "overall",
        "instead",
        "indeed",
        "thus",
        "therefore",
        "hence",
        "yes",
        "still",
        "then",
        "today",
        "yesterday",
        "according",
        "reportedly",
        "notably",
        "finally",
        "first",
        "second",
        "third",
        "later",
        "earlier",
        "many",
        "several",
        "some",
        "most",
        "about",
        "approximately",
        "roughly",
        "around",
        "nearly",
        "almost",
        "over",
        "under",
        "only",
        "just",
        "even",
        "both",
        "each",
        "every",
        "its",
        "their",
        "his",
        "her",
        "this",
        "these",
        "those",
        "there",
        "here",
        "it",
        "they",
        "we",
        "he",
        "she",
    ]
)


@dataclass(frozen=True, slots=True)
class Facts:
    """What must appear in a supporting span: numbers (normalised values) and name words."""

    numbers: frozenset[str]
    names: frozenset[str]


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


def _number_key(value: float) -> str:
    return f"{value:.10g}"


def _digits(raw: str) -> float:
    """'12,000' -> 12000, '5.5' -> 5.5, '1,5' (decimal comma) -> 15 (rare enough)."""
    if re.fullmatch(r"\d{1,3}(,\d{3})+(\.\d+)?", raw):
        raw = raw.replace(",", "")
    return float(raw.replace(",", ""))


def _word_numbers(words: Sequence[str]) -> list[float]:
    """Values of runs of number words ("twelve thousand", "ninety five", "third")."""
    values: list[float] = []
    total = current = 0.0
    active = False
    for word in [*words, ""]:
        w = word.lower()
        if w in _UNITS or w in _TENS:
            current += _UNITS.get(w, 0) + _TENS.get(w, 0)
            active = True
        elif w in _SCALES and w not in ("m", "k", "bn") and active:
            scale = _SCALES[w]
            if scale == 100:
                current *= 100
            else:
                total += current * scale
                current = 0.0
        elif w in _ORDINALS:
            values.append(float(_ORDINALS[w]))
        elif active and w == "and":
            continue
        else:
            if active:
                values.append(total + current)
            total = current = 0.0
            active = False
    return values


def facts(text: str) -> Facts:
    """The numbers, dates, quantities and proper-name words of a text."""
    numbers: set[str] = set()
    for match in _NUMBER.finditer(text):
        value = _digits(match.group(1))
        scale = (match.group(2) or "").lower()
        # "5.5 m" is a quantity only after a number: `_NUMBER` requires the digits first.
        numbers.add(_number_key(value * _SCALES.get(scale, 1)))
    words = _WORD.findall(text)
    numbers.update(_number_key(v) for v in _word_numbers(words))
    # "millions of shells" is a quantity too: "thousands" must not stand in for it.
    numbers.update(w.lower() for w in words if w.lower() in _MULTITUDES)
    names: set[str] = set()
    for i, word in enumerate(words):
        base = re.sub(r"['’]s$", "", word)
        low = base.lower()
        if not base[:1].isupper() or low in STOPWORDS or low in NEGATIONS:
            continue
        if low in _UNITS or low in _TENS or low in _ORDINALS or low in _SCALES:
            continue
        if i == 0 and low in _OPENERS:
            continue
        names.add(low)
    return Facts(frozenset(numbers), frozenset(names))


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
    return frozenset(w.lower() for w in _WORD.findall(re.sub(r"['’]s\b", "", text)))


def _same_name(a: str, b: str) -> bool:
    """'Korea' and 'Korean', 'Russia' and 'Russian's': a name and its adjective or plural."""
    short, long = sorted((a, b), key=len)
    return len(short) >= 4 and long.startswith(short) and len(long) - len(short) <= 3


def missing_facts(claim: Facts, window_text: str) -> list[str]:
    """The claim's numbers and names that the window does not contain."""
    have = facts(window_text)
    missing = sorted(claim.numbers - have.numbers)
    words = _words(window_text)
    for name in sorted(claim.names):
        # "Korea" is in "Korean": a name's adjective or plural still names it.
        if name not in words and not any(_same_name(name, w) for w in words):
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


# --- who did what to whom, and words of opposite meaning -----------------------------------

# Words whose pairs contradict each other: a claim saying one where its span says the other
# (and neither says both) is not supported by it. Stemmed when first used.
_OPPOSITES = (
    ("increase", "decrease"),
    ("increase", "reduce"),
    ("increase", "reduction"),
    ("increase", "cut"),
    ("increase", "cease"),
    ("increase", "lower"),
    ("rise", "fall"),
    ("rise", "drop"),
    ("rise", "decline"),
    ("raise", "lower"),
    ("raise", "ease"),
    ("raise", "reduce"),
    ("grow", "shrink"),
    ("grow", "decline"),
    ("grow", "fall"),
    ("expand", "shrink"),
    ("expand", "contract"),
    ("expansion", "cessation"),
    ("expansion", "contraction"),
    ("ramp", "cut"),
    ("up", "down"),
    ("gain", "loss"),
    ("gain", "lose"),
    ("win", "lose"),
    ("won", "lost"),
    ("victory", "defeat"),
    ("accept", "reject"),
    ("approve", "reject"),
    ("confirm", "deny"),
    ("agree", "disagree"),
    ("allow", "forbid"),
    ("allow", "ban"),
    ("allow", "prohibit"),
    ("include", "exclude"),
    ("add", "remove"),
    ("open", "close"),
    ("start", "stop"),
    ("begin", "end"),
    ("continue", "stop"),
    ("continue", "cease"),
    ("advance", "retreat"),
    ("attack", "defend"),
    ("strengthen", "weaken"),
    ("deepen", "weaken"),
    ("improve", "worsen"),
    ("improve", "deteriorate"),
    ("high", "low"),
    ("higher", "lower"),
    ("highest", "lowest"),
    ("large", "small"),
    ("larger", "smaller"),
    ("more", "less"),
    ("more", "fewer"),
    ("most", "least"),
    ("many", "few"),
    ("above", "below"),
    ("exceed", "below"),
    ("maximum", "minimum"),
    ("buy", "sell"),
    ("bought", "sold"),
    ("import", "export"),
    ("enter", "leave"),
    ("arrive", "depart"),
    ("success", "failure"),
    ("succeed", "fail"),
    ("strong", "weak"),
    ("rich", "poor"),
    ("support", "oppose"),
    ("for", "against"),
    ("ally", "enemy"),
    ("allied", "enemy"),
    ("friend", "enemy"),
    ("alive", "dead"),
    ("alive", "deceased"),
    ("surviving", "deceased"),
    ("living", "deceased"),
    ("ill", "well"),
    ("true", "false"),
    ("legal", "illegal"),
    ("positive", "negative"),
    ("easy", "difficult"),
    ("cheap", "expensive"),
    ("escalate", "deescalate"),
)
# Verbs naming one transfer from either end: "A paid B" is "B received from A".
_CONVERSES = (
    ("pay", "receive"),
    ("paid", "received"),
    ("give", "receive"),
    ("gave", "received"),
    ("send", "receive"),
    ("sent", "received"),
    ("provide", "receive"),
    ("supply", "receive"),
    ("sell", "buy"),
    ("sold", "bought"),
    ("lend", "borrow"),
    ("lent", "borrowed"),
)
# Relations that read the same both ways ("A's alliance with B"): their order proves nothing.
_SYMMETRIC = (
    "alliance",
    "ally",
    "cooperation",
    "cooperate",
    "partnership",
    "partner",
    "relation",
    "ties",
    "talks",
    "agreement",
    "treaty",
    "together",
    "between",
    "both",
    "meet",
    "met",
    "versus",
    "conflict",
    "war",
)
# Words that link anything to anything: sharing them is no sign of the same relation.
_FUNCTION_WORDS = frozenset(
    [
        *("has", "have", "had", "do", "does", "did", "been", "being", "also", "already", "so"),
        *("it", "its", "he", "his", "him", "she", "her", "we", "our", "they", "them", "than"),
        *("who", "whom", "which", "what", "about", "around", "approximately", "nearly", "up"),
        *("only", "where", "when", "would", "could", "can", "may", "might", "should"),
    ]
)


@cache
def _function_stems() -> frozenset[str]:
    return frozenset(_stem(w) for w in _FUNCTION_WORDS)


# Prefixes that negate the word they precede ("unaware", "dishonest", "non-binding").
_NEGATING_PREFIXES = ("un", "dis", "non")
# Capitalised where a quote opens; never a name (all capitals, "US" is one).
_PRONOUNS = frozenset(
    [
        *("i", "me", "my", "we", "us", "our", "you", "your", "he", "him", "his", "she"),
        *("her", "it", "its", "they", "them", "their", "this", "that"),
    ]
)
_BE = frozenset(
    ["is", "are", "was", "were", "be", "been", "being", "isn't", "aren't", "wasn't", "weren't"]
)
# Two facts further apart than this are not taken to be one relation.
ROLE_SPAN = 20
_TOKEN = re.compile(
    r"\d+(?:[.,]\d+)*|[A-Za-z](?:[\w'’]*\w)?|[,;:()\[\]—–]|(?<=\s)-(?=\s)|[.!?](?=\s|$)"
)


def _stems(pairs: Sequence[tuple[str, str]]) -> dict[str, frozenset[str]]:
    out: dict[str, set[str]] = {}
    for a, b in pairs:
        sa, sb = _stem(a), _stem(b)
        out.setdefault(sa, set()).add(sb)
        out.setdefault(sb, set()).add(sa)
    return {k: frozenset(v) for k, v in out.items()}


@cache
def _opposites() -> dict[str, frozenset[str]]:
    return _stems(_OPPOSITES)


@cache
def _converses() -> dict[str, frozenset[str]]:
    return _stems(_CONVERSES)


@cache
def _symmetric() -> frozenset[str]:
    return frozenset(_stem(w) for w in _SYMMETRIC)


def _all_stems(text: str) -> frozenset[str]:
    """Every word's stem, stop words kept ("up", "for", "more" carry meaning here)."""
    return frozenset(_stem(w) for w in re.findall(r"[a-z]+", text.lower()))


def opposite_words(claim: str, window: str) -> tuple[str, str] | None:
    """A word of the claim (stem) whose opposite the window says instead, with that opposite:
    a pair of `_OPPOSITES`, or a word and its negating prefix ("aware", "unaware")."""
    have, there = _all_stems(claim), _all_stems(window)
    table = _opposites()
    for stem in sorted(have - there):
        for other in sorted(table.get(stem, ())):
            if other in there and other not in have:
                return stem, other
    for side, (one, other_side, one_stems) in enumerate(
        ((claim, there, have), (window, have, there))
    ):
        for word in re.findall(r"[a-z]+", one.lower()):
            for prefix in _NEGATING_PREFIXES:
                rest = word[len(prefix) :]
                if (
                    word.startswith(prefix)
                    and len(rest) >= 4
                    and _stem(word) not in other_side
                    and _stem(rest) in other_side
                    and _stem(rest) not in one_stems
                ):
                    return (word, rest) if side == 0 else (rest, word)
    return None


@dataclass(frozen=True, slots=True)
class _Anchor:
    """A fact standing at token `at` (to `end`) of a text: a name run or a number."""

    key: tuple[str, ...]
    at: int
    end: int
    initial: bool  # the first word of a sentence: capitalised whatever it is
    sentence: int  # which sentence of the text holds it


@dataclass(frozen=True, slots=True)
class _Parsed:
    """A text as tokens, the facts among them and every word's stem (None: not a word)."""

    tokens: tuple[str, ...]
    stems: tuple[str | None, ...]
    anchors: tuple[_Anchor, ...]


def _name_word(token: str, initial: bool) -> bool:
    low = re.sub(r"['’]s$", "", token).lower()
    if not token[:1].isupper() or low in NEGATIONS:
        return False
    if low in _PRONOUNS and not token.isupper():
        return False  # '"We assess ...' opens a quote; "US" is a name
    if low in STOPWORDS and not (token.isupper() and len(token) > 1):
        return False
    if low in _UNITS or low in _TENS or low in _ORDINALS or low in _SCALES:
        return False
    return not (initial and low in _OPENERS)


@lru_cache(maxsize=4096)
def _parse(text: str) -> _Parsed:
    """Tokens, stems and facts (name runs, numbers with their scale) of a text."""
    tokens = tuple(_TOKEN.findall(text))
    stems = tuple(
        _stem(t.lower()) if t[:1].isalpha() and t.lower() not in STOPWORDS else None for t in tokens
    )
    starts = {0} | {k + 1 for k, t in enumerate(tokens) if t in (".", "!", "?")}

    def sentence(at: int) -> int:
        return sum(1 for k in starts if 0 < k <= at)

    anchors: list[_Anchor] = []
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token[:1].isdigit():
            value = _digits(token)
            end = i + 1
            if end < len(tokens) and tokens[end].lower() in _SCALES:
                value *= _SCALES[tokens[end].lower()]
                end += 1
            anchors.append(_Anchor((_number_key(value),), i, end, False, sentence(i)))
            i = end
            continue
        end = i
        while end < len(tokens) and _name_word(tokens[end], end in starts):
            end += 1
            if tokens[end - 1].endswith(("'s", "’s")):
                break  # "Russia's military": the possessive ends the name
        if end > i:
            words = tuple(re.sub(r"['’]s$", "", t).lower() for t in tokens[i:end])
            anchors.append(_Anchor(words, i, end, i in starts, sentence(i)))
            i = end
        else:
            i += 1
    return _Parsed(tokens, stems, tuple(anchors))


def _same_fact(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    """Whether two facts name the same thing: "North Korea" and "North Korean", "Zelensky" and
    "Volodymyr Zelensky" (a name ending another)."""
    short, long = sorted((a, b), key=len)
    tail = long[len(long) - len(short) :]
    return all(x == y or _same_name(x, y) for x, y in zip(short, tail, strict=True))


@dataclass(frozen=True, slots=True)
class _Link:
    """Two facts of a text with the words between them: one relation, in one direction."""

    first: tuple[str, ...]
    second: tuple[str, ...]
    words: frozenset[str]
    passive: bool  # "was paid by": the second fact is the agent
    sentence: int


_DETERMINERS = frozenset(["a", "an", "the", "its", "their", "his", "her"])


def _agent_marked(between: Sequence[str]) -> bool:
    """Whether the words between two facts make the second the agent of a passive ("A was
    paid by B", "A were sent from the B"): a form of "be", then "by" or "from" just before B."""
    words = list(between)
    while words and words[-1] in _DETERMINERS:
        words.pop()
    be = any(w.replace("’", "'") in _BE for w in words)
    return be and bool(words) and words[-1] in ("by", "from")


def _between_words(parsed: _Parsed, a: _Anchor, b: _Anchor) -> frozenset[str]:
    """The stems of the words between two facts that are not facts themselves, less function
    words and the words of symmetric relations."""
    inside = {k for other in parsed.anchors for k in range(other.at, other.end)}
    return (
        frozenset(
            stem
            for k in range(a.end, b.at)
            if k not in inside and (stem := parsed.stems[k]) is not None
        )
        - _symmetric()
        - _function_stems()
    )


def _links(
    parsed: _Parsed, keep: Callable[[tuple[str, ...]], bool], *, clauses: bool = True
) -> list[_Link]:
    """Every pair of facts (that keep accepts) within one clause and ROLE_SPAN tokens; when not
    clauses, an aside between dashes, brackets or after a colon does not end the clause."""
    out: list[_Link] = []
    anchors = [a for a in parsed.anchors if keep(a.key)]
    for i, a in enumerate(anchors):
        for b in anchors[i + 1 :]:
            if b.at - a.end > ROLE_SPAN:
                break
            between = parsed.tokens[a.end : b.at]
            if any(t in ".!?,;" or (clauses and not t[:1].isalnum()) for t in between):
                break  # a clause ends between them (or, not clauses, a comma or sentence)
            nearer = any(
                _same_fact(x.key, a.key) or _same_fact(x.key, b.key)
                for x in anchors
                if a.end <= x.at < b.at
            )
            # The relation is with the nearest mention: "A paid B ... for B's troops" links
            # A to the first B only.
            if not _same_fact(a.key, b.key) and not nearer:
                lower = [t.lower() for t in between]
                words = _between_words(parsed, a, b)
                out.append(_Link(a.key, b.key, words, _agent_marked(lower), a.sentence))
    return out


def _after_numbers(parsed: _Parsed) -> dict[str, frozenset[str]]:
    """For each number, the stem of the first common word within six tokens after it, names
    and function words skipped: what it counts ("$576 million for North Korean troop
    support": troop), if any."""
    names = {k for a in parsed.anchors for k in range(a.at, a.end)}
    out: dict[str, set[str]] = {}
    for anchor in parsed.anchors:
        if not anchor.key[0][:1].isdigit():
            continue
        words = out.setdefault(anchor.key[0], set())
        for k in range(anchor.end, min(anchor.end + 6, len(parsed.tokens))):
            if not parsed.tokens[k][:1].isalpha():
                break  # another number, or a clause ends
            stem = parsed.stems[k]
            if k not in names and stem is not None and stem not in _function_stems():
                words.add(stem)
                break
    return {n: frozenset(w) for n, w in out.items()}


def swapped_values(claim: str, window: str) -> tuple[str, str] | None:
    """A number of the claim counting what another number counts in the window ("$5.5
    billion for troops" where the window has "$576 million for troops" and "$5.5 billion for
    weapons"), with that other number. Else None."""
    have, there = _after_numbers(_parse(claim)), _after_numbers(_parse(window))
    for number, words in have.items():
        if number not in there or words & there[number]:
            continue
        for other, other_words in there.items():
            if other != number and words & other_words:
                return number, other
    return None


def _direction(link: _Link, other: _Link) -> bool | None:
    """Whether a link of the window relates the claim link's two facts in the same direction
    (None: it relates other facts, or by none of the same words)."""
    same = _same_fact(link.first, other.first) and _same_fact(link.second, other.second)
    flipped = _same_fact(link.first, other.second) and _same_fact(link.second, other.first)
    if not (same or flipped):
        return None
    converses = _converses()
    converse = any(
        converses.get(x, frozenset()) & (other.words - link.words) for x in link.words - other.words
    )
    if not (link.words & other.words) and not converse:
        return None
    # Same direction: same order, unless exactly one of voice or verb turns it round.
    return same == ((link.passive != other.passive) == converse)


def _is_name(key: tuple[str, ...]) -> bool:
    return not key[0][:1].isdigit()


def _stand_in(link: _Link, window: _Parsed, claim: _Parsed) -> tuple[str, str] | None:
    """A name of the claim link standing where the window has another name the claim does not
    mention, linked by the same words in the same voice ("Ukraine urged B" where the window
    says "the US urged B", and mentions Ukraine elsewhere in that sentence): the claim's name
    and the window's. A name the window states only in another sentence is left alone: the
    claim may join two sentences."""
    mentioned = [a.key for a in claim.anchors]
    named = [a for a in window.anchors if not a.initial]
    for other in _links(window, lambda key: any(_same_fact(key, a.key) for a in named)):
        if other.passive != link.passive or not (link.words & other.words):
            continue
        for mine, theirs, kept, kept_there in (
            (link.first, other.first, link.second, other.second),
            (link.second, other.second, link.first, other.first),
        ):
            if (
                _is_name(mine)
                and _is_name(theirs)
                and _same_fact(kept, kept_there)
                and not any(_same_fact(theirs, m) for m in mentioned)
                and any(_same_fact(mine, a.key) and a.sentence == other.sentence for a in named)
            ):
                return " ".join(mine), " ".join(theirs)
    return None


# Words of a list ("A, B and C"): two facts with only these between them may trade places.
_LIST_WORDS = frozenset(["and", "or", "nor", "of", "the", "a", "an", "as", "well", "both"])
# Word pairs the claim must regain by putting two facts back to be taken for their swap.
SWAP_GAIN = 3


def _bigrams(tokens: Sequence[str]) -> set[tuple[str, str]]:
    return set(itertools.pairwise(t.lower() for t in tokens))


def swapped_in_place(claim: str, window: str) -> tuple[str, str] | None:
    """Two facts of the claim that, put back in each other's place, make it read as the
    window does (at least SWAP_GAIN more word pairs in common): "the France in Catholic
    Church" for "the Catholic Church in France". Facts of a list may trade places."""
    c, w = _parse(claim), _parse(window)
    there = _bigrams(w.tokens)
    shared = [a for a in c.anchors if any(_same_fact(a.key, b.key) for b in w.anchors)]
    base = len(_bigrams(c.tokens) & there)
    for i, a in enumerate(shared):
        for b in shared[i + 1 :]:
            between = c.tokens[a.end : b.at]
            if _same_fact(a.key, b.key) or all(
                t.lower() in _LIST_WORDS or not t[:1].isalnum() for t in between
            ):
                continue
            back = [
                *c.tokens[: a.at],
                *c.tokens[b.at : b.end],
                *between,
                *c.tokens[a.at : a.end],
                *c.tokens[b.end :],
            ]
            if len(_bigrams(back) & there) - base >= SWAP_GAIN:
                return " ".join(a.key), " ".join(b.key)
    return None


def swapped_roles(claim: str, window: str) -> tuple[str, str, bool] | None:
    """Two facts of the claim in opposite roles to the window's (who did what to whom, which
    amount for what): the claim links them by words the window also links them by, but in the
    other direction, once active/passive voice ("B was paid by A") and converse verbs ("B
    received from A") are accounted for, and no link of the window agrees (True); or a name of
    the claim stands where the window has another (False). Else None."""
    c, w = _parse(claim), _parse(window)

    def shared(key: tuple[str, ...]) -> bool:
        # A capitalised first word is taken for a name unless it has a verb's or adverb's
        # ending ("Drawing from ...") and is capitalised nowhere else.
        here = [a for a in c.anchors if _same_fact(key, a.key)]
        there = [a for a in w.anchors if _same_fact(key, a.key)]
        common = len(key) == 1 and key[0].endswith(("ing", "ed", "ly"))
        return bool(here and there) and not (common and all(a.initial for a in here + there))

    if sum(1 for a in c.anchors if shared(a.key)) < 2:
        return None

    strict, loose = _links(w, shared), _links(w, shared, clauses=False)
    for link in _links(c, shared):
        # A clause of the window may hold both facts; else an aside may part them ("With A
        # supplying shells — 60% of B's stockpile —"). Not a comma: "In 2012, A said ..."
        # fronts a phrase whose words are no relation.
        directions = [d for other in strict if (d := _direction(link, other)) is not None]
        if not directions:
            directions = [d for other in loose if (d := _direction(link, other)) is not None]
        if directions and not any(directions):
            return " ".join(link.first), " ".join(link.second), True
        if not directions:
            stand_in = _stand_in(link, w, c)
            if stand_in:
                return *stand_in, False
    return None


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
