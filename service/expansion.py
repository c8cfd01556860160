"""Query expansion learned from the corpus: a capitalised name in a question also asks for
its initials when the indexed text uses them (United States -> US, Joint Chiefs of Staff ->
JCS)."""

from __future__ import annotations

import re
from collections.abc import Callable

from service.keyword import tokenize

# Capitalised words in a row, allowing the lower-case joints of names ("Bank of England").
_NAME = re.compile(r"\b[A-Z][a-z]+(?:\s+(?:(?:of|and|for|the)\s+)?[A-Z][a-z]+)+")
_JOINTS = frozenset({"of", "and", "for", "the"})
# Words that start a question or a sentence in capitals without being part of a name.
_OPENERS = frozenset(
    [
        "a",
        "an",
        "at",
        "did",
        "do",
        "does",
        "how",
        "in",
        "is",
        "on",
        "the",
        "was",
        "were",
        "what",
        "when",
        "where",
        "which",
        "who",
        "whom",
        "whose",
        "why",
    ]
)


def initials(name: str) -> str:
    """The acronym of a capitalised name: the first letters of its words, less the joints
    and a leading question word ("What Super Bowl" -> "SB")."""
    words = name.split()
    while words and words[0].lower() in _OPENERS:
        words = words[1:]
    return "".join(w[0] for w in words if w not in _JOINTS).upper()


def acronym_terms(question: str, known: Callable[[str], bool]) -> tuple[str, ...]:
    """The keyword terms of the initials of each capitalised name in the question that the
    corpus writes as an acronym (`known`), once each, excluding terms the question has."""
    own = set(tokenize([question])[0])
    found: dict[str, None] = {}
    for name in _NAME.findall(question):
        acronym = initials(name)
        if len(acronym) < 2:
            continue
        for term in tokenize([acronym])[0]:
            if term not in own and known(term):
                found[term] = None
    return tuple(found)
