"""Acronyms learned from the corpus: a capitalised name asks for its initials when indexed."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.expansion import acronym_terms, initials
from service.keyword import KeywordIndex

CORPUS = [
    'A US statement urged North Korea to "cease immediately all assistance".',
    "South Korea's Joint Chiefs of Staff (JCS) counted the casualties.",
    "The Super Bowl was played in February.",
    "Give me the Middle East report.",
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
    assert acronym_terms("What did the United States demand of North Korea?", index.is_acronym) == (
        "us",
    )
    assert acronym_terms("What did the Joint Chiefs of Staff count?", index.is_acronym) == ("jcs",)
    # "SB" never occurs in the corpus; "US" is already a term of the question.
    assert acronym_terms("Who won the Super Bowl?", index.is_acronym) == ()
    assert acronym_terms("Did the US and United States agree?", index.is_acronym) == ()
    # "me" occurs, but never in capitals: it is a word, not the acronym of Middle East.
    assert acronym_terms("What happened in the Middle East?", index.is_acronym) == ()


def test_the_acronyms_a_corpus_writes_survive_save_and_load(tmp_path: Path) -> None:
    index = KeywordIndex.build(CORPUS)
    assert index.acronyms == {"us", "jcs"}
    index.save(tmp_path / "bm25")
    loaded = KeywordIndex.load(tmp_path / "bm25", len(CORPUS))
    assert loaded.acronyms == {"us", "jcs"}
    assert loaded.is_acronym("jcs") and not loaded.is_acronym("me")


def test_an_empty_index_knows_no_acronym() -> None:
    assert acronym_terms("What did the United States say?", KeywordIndex.build([]).is_acronym) == ()
