"""Does a span say something against a claim: words of opposite meaning, or two facts in each
other's roles (who did what to whom, by a light parse: facts linked by the words between them,
with voice and converse verbs)? Pure functions of text."""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache, lru_cache

from service.facts import (
    NEGATIONS,
    OPENERS,
    ORDINALS,
    SCALES,
    TENS,
    UNITS,
    digits_value,
    number_key,
    same_name,
)
from service.keyword import STOPWORDS, stem

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
    return frozenset(stem(w) for w in _FUNCTION_WORDS)


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
        sa, sb = stem(a), stem(b)
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
    return frozenset(stem(w) for w in _SYMMETRIC)


def _all_stems(text: str) -> frozenset[str]:
    """Every word's stem, stop words kept ("up", "for", "more" carry meaning here)."""
    return frozenset(stem(w) for w in re.findall(r"[a-z]+", text.lower()))


def opposite_words(claim: str, window: str) -> tuple[str, str] | None:
    """A word of the claim (stem) whose opposite the window says instead, with that opposite:
    a pair of `_OPPOSITES`, or a word and its negating prefix ("aware", "unaware")."""
    have, there = _all_stems(claim), _all_stems(window)
    table = _opposites()
    for said in sorted(have - there):
        for other in sorted(table.get(said, ())):
            if other in there and other not in have:
                return said, other
    for side, (one, other_side, one_stems) in enumerate(
        ((claim, there, have), (window, have, there))
    ):
        for word in re.findall(r"[a-z]+", one.lower()):
            for prefix in _NEGATING_PREFIXES:
                rest = word[len(prefix) :]
                if (
                    word.startswith(prefix)
                    and len(rest) >= 4
                    and stem(word) not in other_side
                    and stem(rest) in other_side
                    and stem(rest) not in one_stems
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
    if low in UNITS or low in TENS or low in ORDINALS or low in SCALES:
        return False
    return not (initial and low in OPENERS)


@lru_cache(maxsize=4096)
def _parse(text: str) -> _Parsed:
    """Tokens, stems and facts (name runs, numbers with their scale) of a text."""
    tokens = tuple(_TOKEN.findall(text))
    stems = tuple(
        stem(t.lower()) if t[:1].isalpha() and t.lower() not in STOPWORDS else None for t in tokens
    )
    starts = {0} | {k + 1 for k, t in enumerate(tokens) if t in (".", "!", "?")}

    def sentence(at: int) -> int:
        return sum(1 for k in starts if 0 < k <= at)

    anchors: list[_Anchor] = []
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token[:1].isdigit():
            value = digits_value(token)
            end = i + 1
            if end < len(tokens) and tokens[end].lower() in SCALES:
                value *= SCALES[tokens[end].lower()]
                end += 1
            anchors.append(_Anchor((number_key(value),), i, end, False, sentence(i)))
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
    return all(x == y or same_name(x, y) for x, y in zip(short, tail, strict=True))


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
