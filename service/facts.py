"""Facts a sentence states: its numbers (digits, number words, scales, ordinals), quantities
and proper-name words, which a supporting span must hold too. Pure functions of text."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from service.keyword import STOPWORDS

NUMBER = re.compile(
    r"(?<![\w.])(\d+(?:[.,]\d+)*)(?:st|nd|rd|th|s)?(?:\s*(hundred|thousand|million|billion|"
    r"trillion|bn|m|k)\b)?",
    re.IGNORECASE,
)
WORD = re.compile(r"[A-Za-z][\w'’-]*")
SCALES = {
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
MULTITUDES = frozenset(["dozens", "hundreds", "thousands", "millions", "billions", "trillions"])
# "one" is left out: as a pronoun ("the one who") it is no quantity.
UNITS = {
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
TENS = {
    w: 10 * i
    for i, w in enumerate(
        ["_", "_", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
    )
    if w != "_"
}
ORDINALS = {
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
OPENERS = frozenset(
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


def number_key(value: float) -> str:
    return f"{value:.10g}"


def digits_value(raw: str) -> float:
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
        if w in UNITS or w in TENS:
            current += UNITS.get(w, 0) + TENS.get(w, 0)
            active = True
        elif w in SCALES and w not in ("m", "k", "bn") and active:
            scale = SCALES[w]
            if scale == 100:
                current *= 100
            else:
                total += current * scale
                current = 0.0
        elif w in ORDINALS:
            values.append(float(ORDINALS[w]))
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
    for match in NUMBER.finditer(text):
        value = digits_value(match.group(1))
        scale = (match.group(2) or "").lower()
        # "5.5 m" is a quantity only after a number: `NUMBER` requires the digits first.
        numbers.add(number_key(value * SCALES.get(scale, 1)))
    words = WORD.findall(text)
    numbers.update(number_key(v) for v in _word_numbers(words))
    # "millions of shells" is a quantity too: "thousands" must not stand in for it.
    numbers.update(w.lower() for w in words if w.lower() in MULTITUDES)
    names: set[str] = set()
    for i, word in enumerate(words):
        base = re.sub(r"['’]s$", "", word)
        low = base.lower()
        if not base[:1].isupper() or low in STOPWORDS or low in NEGATIONS:
            continue
        if low in UNITS or low in TENS or low in ORDINALS or low in SCALES:
            continue
        if i == 0 and low in OPENERS:
            continue
        names.add(low)
    return Facts(frozenset(numbers), frozenset(names))


def same_name(a: str, b: str) -> bool:
    """'Korea' and 'Korean', 'Russia' and 'Russian's': a name and its adjective or plural."""
    short, long = sorted((a, b), key=len)
    return len(short) >= 4 and long.startswith(short) and len(long) - len(short) <= 3
