"""Keyword index: BM25 (bm25s) over chunk texts, persisted with each build."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Sequence
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

import bm25s
import numpy as np
import numpy.typing as npt
from bm25s.stopwords import STOPWORDS_EN

# bm25s logs every index build at DEBUG through a handler of its own.
logging.getLogger("bm25s").setLevel(logging.WARNING)

# Part of the index fingerprint: changing how text is tokenised must rebuild the index.
KEYWORD_VERSION = "bm25s-en-stem-v1+acronyms"


# bm25s.tokenize's defaults (its token pattern, lower-casing, English stop words dropped
# before stemming), without its per-call progress bars and vocabulary bookkeeping: a question
# tokenises in microseconds instead of about half a millisecond. A test keeps the two equal.
_WORDS = re.compile(r"(?u)\b\w\w+\b").findall
_STOPWORDS = frozenset(STOPWORDS_EN)
STOPWORDS = _STOPWORDS  # what `tokenize` leaves out


@cache
def _stemmer() -> Any:
    import Stemmer

    return Stemmer.Stemmer("english")


# Snowball costs about a microsecond a word; a query's passages repeat most of their words.
@lru_cache(maxsize=1 << 16)
def stem(word: str) -> str:
    stem: str = _stemmer().stemWord(word)
    return stem


# Words written in capitals (US, JCS, NFL): the acronyms a corpus uses, as `tokenize`d terms.
_CAPITALS = re.compile(r"\b[A-Z][A-Z0-9]*[A-Z]\b").findall
ACRONYMS_FILE = "acronyms.json"


def acronyms_of(texts: Sequence[str]) -> frozenset[str]:
    """The terms of the words the texts write in capitals (two letters or more)."""
    words = {w for text in texts for w in _CAPITALS(text)}
    return frozenset(t for w in words for t in tokenize([w])[0])


def tokenize(texts: Sequence[str]) -> list[list[str]]:
    """Lower-cased, stop-word-free, stemmed word lists (what bm25s.tokenize returns)."""
    return [[stem(w) for w in _WORDS(text.lower()) if w not in _STOPWORDS] for text in texts]


class KeywordIndex:
    """BM25 scores of every chunk row for a question."""

    def __init__(
        self, retriever: bm25s.BM25, size: int, acronyms: frozenset[str] = frozenset()
    ) -> None:
        self._retriever = retriever
        self.size = size
        self.acronyms = acronyms  # terms the corpus writes in capitals somewhere
        self._idf: npt.NDArray[np.float32] | None = None

    @classmethod
    def build(cls, texts: Sequence[str]) -> KeywordIndex:
        """Index texts; row i of the scores is texts[i]."""
        retriever = bm25s.BM25()
        if texts:
            # An empty token list would make bm25s drop the row; a placeholder keeps rows aligned.
            tokens = [t or ["\x00"] for t in tokenize(texts)]
            retriever.index(tokens, show_progress=False)
        return cls(retriever, len(texts), acronyms_of(texts))

    def save(self, folder: Path) -> None:
        """Persist under folder."""
        folder.mkdir(parents=True, exist_ok=True)
        if self.size:
            self._retriever.save(str(folder))
        (folder / ACRONYMS_FILE).write_text(json.dumps(sorted(self.acronyms)), encoding="utf-8")

    @classmethod
    def load(cls, folder: Path, size: int) -> KeywordIndex:
        """Load what save wrote; `size` is the number of chunk rows."""
        if not size:
            return cls(bm25s.BM25(), 0)
        retriever = bm25s.BM25.load(str(folder), mmap=True)
        path = folder / ACRONYMS_FILE
        acronyms = json.loads(path.read_text(encoding="utf-8")) if path.exists() else []
        return cls(retriever, size, frozenset(acronyms))

    def scores(self, terms: Sequence[str]) -> npt.NDArray[np.float32]:
        """BM25 score of every row for a question's `tokenize`d terms (zeros when none is
        indexed)."""
        if not self.size:
            return np.zeros(0, dtype=np.float32)
        ids = self._retriever.get_tokens_ids(list(terms))
        if not ids:
            return np.zeros(self.size, dtype=np.float32)
        return np.asarray(self._retriever.get_scores_from_ids(ids), dtype=np.float32)

    def matches(
        self, terms: Sequence[str], weights: Sequence[float] | None = None
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        """The rows containing any of a question's `tokenize`d terms, ascending, with their BM25
        scores (every other row scores 0); `weights` scales each term's contribution.

        The same sums as `scores`, over the terms' postings only: a question costs what its
        terms occur in, not an array of every chunk (4 MB per request at a million chunks).
        """
        if not self.size:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        if weights is None:
            ids = self._retriever.get_tokens_ids(list(terms))
            scales = [1.0] * len(ids)
        else:
            vocab = self._retriever.vocab_dict
            known = [(vocab[t], w) for t, w in zip(terms, weights, strict=True) if t in vocab]
            ids, scales = [i for i, _ in known], [w for _, w in known]
        if not ids:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        matrix = self._retriever.scores
        indptr, indices, data = matrix["indptr"], matrix["indices"], matrix["data"]
        postings = np.concatenate([indices[indptr[i] : indptr[i + 1]] for i in ids])
        scores = np.concatenate(
            [data[indptr[i] : indptr[i + 1]] * s for i, s in zip(ids, scales, strict=True)]
        )
        rows, where = np.unique(postings, return_inverse=True)
        sums = np.bincount(where, weights=scores, minlength=len(rows))
        return rows.astype(np.int64), sums.astype(np.float32)

    def term_ids(self, terms: Iterable[str]) -> list[int]:
        """The index's ids of the indexed terms among `terms`, in order (others are left out)."""
        vocab = self._retriever.vocab_dict if self.size else {}
        return [vocab[t] for t in terms if t in vocab]

    def is_acronym(self, term: str) -> bool:
        """Whether the indexed text writes a `tokenize`d term in capitals (as US, JCS)."""
        return term in self.acronyms and term in self._retriever.vocab_dict

    def idf(self, terms: Sequence[str]) -> dict[str, float]:
        """BM25 inverse document frequency of each indexed term (tokenised as `tokenize` does)."""
        if not self.size:
            return {}
        if self._idf is None:
            # The score matrix is column-compressed by term: a term's document frequency is
            # the length of its column.
            indptr = np.asarray(self._retriever.scores["indptr"], dtype=np.float64)
            df = indptr[1:] - indptr[:-1]
            n = float(self.size)
            self._idf = np.log1p((n - df + 0.5) / (df + 0.5)).astype(np.float32)
        vocab = self._retriever.vocab_dict
        return {t: float(self._idf[vocab[t]]) for t in terms if t in vocab}
