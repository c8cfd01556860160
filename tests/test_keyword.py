"""The keyword index: tokenising as bm25s does, BM25 scores and matches."""

from __future__ import annotations

import bm25s
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from service.keyword import KeywordIndex, _stemmer, tokenize

WORDS = st.sampled_from(
    ["The", "running", "runs", "cells", "CELL", "of", "x2", "__init__", "straße", "İstanbul", "a"]
)
TEXTS = st.lists(
    st.one_of(
        st.text(max_size=40),
        st.lists(WORDS, max_size=8).map(" ".join),
    ),
    max_size=6,
)


@settings(max_examples=200, deadline=None)
@given(TEXTS)
def test_tokenize_equals_bm25s(texts: list[str]) -> None:
    expected = bm25s.tokenize(
        texts, stopwords="en", stemmer=_stemmer(), return_ids=False, show_progress=False
    )
    assert tokenize(texts) == expected


def test_tokenize_example() -> None:
    assert tokenize(["The cells were RUNNING; a cell runs.", ""]) == [
        ["cell", "were", "run", "cell", "run"],  # bm25s drops only 33 stop words
        [],
    ]


def test_keyword_scores_take_tokenised_terms() -> None:
    index = KeywordIndex.build(["red apples grow", "green pears", "apples and apples"])
    scores = index.scores(tokenize(["Apples?"])[0])
    assert scores[1] == 0.0
    assert scores[0] > 0.0 and scores[2] > scores[0]
    assert not index.scores(["zebra"]).any()
    assert not index.scores([]).any()


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.lists(WORDS, max_size=6).map(" ".join), min_size=1, max_size=12),
    st.lists(WORDS, max_size=4).map(" ".join),
)
def test_keyword_matches_are_the_nonzero_scores(texts: list[str], question: str) -> None:
    index = KeywordIndex.build(texts)
    terms = tokenize([question])[0]
    rows, sums = index.matches(terms)
    scores = index.scores(terms)
    assert rows.tolist() == np.flatnonzero(scores).tolist()
    np.testing.assert_allclose(sums, scores[rows], rtol=1e-6)
