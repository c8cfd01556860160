"""What kind of answer a question asks for (a number, a name), and whether a sentence has one."""

from __future__ import annotations

import re
from typing import Literal

AnswerKind = Literal["number", "name"]

# "how many", "what year", "when" ask for a number or a date; "who", "where" for a name.
_NUMBER = re.compile(
    r"\b(?:how (?:many|much|long|old|far|large|big|tall|high)|when|what (?:year|date|"
    r"century|decade|percentage|percent|age))\b",
    re.IGNORECASE,
)
_NAME = re.compile(r"\b(?:who|whom|whose|where)\b", re.IGNORECASE)
_DIGIT = re.compile(r"\d")
# A capitalised word that does not start the sentence: a name or a place, most of the time.
_PROPER = re.compile(r"(?<=[^\s.!?]\s)[A-Z][a-z]+")


def answer_kind(question: str) -> AnswerKind | None:
    """The kind of answer a question asks for, or None when its wording does not say."""
    if _NUMBER.search(question):
        return "number"
    if _NAME.search(question):
        return "name"
    return None


def has_kind(sentence: str, kind: AnswerKind | None) -> bool:
    """Whether a sentence holds an answer of that kind (a digit, a name past its first word)."""
    if kind == "number":
        return _DIGIT.search(sentence) is not None
    if kind == "name":
        return _PROPER.search(sentence) is not None
    return False
