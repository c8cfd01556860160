"""Acronyms learned from the corpus: a capitalised name asks for its initials when indexed."""

from __future__ import annotations

import pytest

from service.expansion import acronym_terms, initials
from service.keyword import KeywordIndex

CORPUS = [
    'A US statement urged North Korea to "cease immediately all assistance".',
    "South Korea's Joint Chiefs of Staff (JCS) counted the casualties.",
    "The Super Bowl was played in February.",
]


@pytest.mark.parametrize(
    ("name", "acronym"),
    [
        ("United States", "US"),
        ("Joint Chiefs of Staff", "JCS"),
        ("What Super Bowl", "SB"),
        ("Bank of England", "BE"),
    ],
)
def test_initials_skip_joints_and_question_words(name: str, acronym: str) -> None:
    assert initials(name) == acronym


def test_acronyms_the_corpus_uses_are_added_and_others_are_not() -> None:
    index = KeywordIndex.build(CORPUS)
    assert acronym_terms("What did the United States demand of North Korea?", index.knows) == (
        "us",
    )
    assert acronym_terms("What did the Joint Chiefs of Staff count?", index.knows) == ("jcs",)
    # "SB" never occurs in the corpus; "US" is already a term of the question.
    assert acronym_terms("Who won the Super Bowl?", index.knows) == ()
    assert acronym_terms("Did the US and United States agree?", index.knows) == ()


def test_an_empty_index_knows_no_acronym() -> None:
    assert acronym_terms("What did the United States say?", KeywordIndex.build([]).knows) == ()
