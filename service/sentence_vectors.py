"""Sentence vectors: one unit vector per prose sentence of every chunk, embedded at build time
beside the chunk's own, with the sentence's keyword terms, so that ranking can ask which single
sentence of a passage says and means what the question asks without splitting passages or
calling the encoder per request."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from service.models import Chunk
from service.sentences import sentences_of

SENTENCE_VECTORS = "sentences.npy"
SENTENCE_OFFSETS = "sentence_offsets.npy"
SENTENCE_TERMS = "sentence_terms.npy"  # keyword-index term ids of each sentence, once each
SENTENCE_TERM_OFFSETS = "sentence_term_offsets.npy"
FILES = (SENTENCE_VECTORS, SENTENCE_OFFSETS, SENTENCE_TERMS, SENTENCE_TERM_OFFSETS)
# Bump when the sentences a chunk is split into, or the text embedded for one, change.
SENTENCES_VERSION = 3  # 2: with each sentence's term ids; 3: the title line is no sentence

Matrix = npt.NDArray[np.float32]
Ints = npt.NDArray[np.int64]


def sentence_texts(chunk: Chunk) -> list[str]:
    """The texts embedded for a chunk's sentences, one per prose sentence `sentences_of`
    finds, in order (row i of the chunk's vectors is its sentence i): each after the chunk's
    context, as the chunk itself is embedded, so that "He was born in 1856" is read as being
    about the document's subject; a sentence opening with the context already names it."""
    text, context = chunk.text, chunk.context
    spans = sentences_of(text, chunk.title).spans
    sentences = [text[s.start : s.end] for s in spans]
    if not context:
        return sentences
    return [s if s.startswith(context) else f"{context}\n{s}" for s in sentences]


def offsets_of(counts: Sequence[int]) -> Ints:
    """Where each group's items start in a flat array, and one past the last group's end."""
    offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(np.asarray(counts, dtype=np.int64), out=offsets[1:])
    return offsets


def _ranges(starts: Ints, ends: Ints) -> tuple[Ints, Ints]:
    """The positions of every [start, end) range, concatenated, and the range each belongs to."""
    lengths = ends - starts
    firsts = np.cumsum(lengths) - lengths  # where each range begins in the concatenation
    within = np.arange(int(lengths.sum()), dtype=np.int64) - np.repeat(firsts, lengths)
    return np.repeat(starts, lengths) + within, np.repeat(np.arange(len(starts)), lengths)


def write_sentence_vectors(
    folder: Path, offsets: Ints, vectors: Matrix, terms: Sequence[Sequence[int]]
) -> None:
    """Write a build's sentence vectors (float16, as the chunk vectors are stored), where
    each chunk row's sentences start, and each sentence's term ids."""
    np.save(folder / SENTENCE_VECTORS, np.asarray(vectors, dtype=np.float16))
    np.save(folder / SENTENCE_OFFSETS, np.asarray(offsets, dtype=np.int64))
    flat = [t for ids in terms for t in ids]
    np.save(folder / SENTENCE_TERMS, np.asarray(flat, dtype=np.int32))
    np.save(folder / SENTENCE_TERM_OFFSETS, offsets_of([len(ids) for ids in terms]))


@dataclass(frozen=True, slots=True)
class SentenceVectors:
    """A build's sentence vectors and terms, read-only and memory-mapped."""

    offsets: Ints
    vectors: npt.NDArray[np.float16]
    terms: npt.NDArray[np.int32]
    term_offsets: Ints

    @classmethod
    def load(cls, folder: Path) -> SentenceVectors | None:
        """The build's sentence vectors, or None for a build written without them."""
        if not (folder / SENTENCE_VECTORS).exists():
            return None
        offsets = np.load(folder / SENTENCE_OFFSETS)
        vectors = np.load(folder / SENTENCE_VECTORS, mmap_mode="r")
        terms = np.load(folder / SENTENCE_TERMS, mmap_mode="r")
        term_offsets = np.load(folder / SENTENCE_TERM_OFFSETS)
        ends = (int(offsets[-1]) if len(offsets) else -1, int(term_offsets[-1]))
        if ends != (len(vectors), len(terms)) or len(term_offsets) != len(vectors) + 1:
            raise ValueError(
                f"{len(vectors)} sentence vectors and {len(terms)} terms do not fit their "
                f"offsets (ending at {ends[0]} and {ends[1]})"
            )
        return cls(offsets, vectors, terms, term_offsets)

    @property
    def rows(self) -> int:
        """How many chunk rows the vectors cover."""
        return len(self.offsets) - 1

    @property
    def count(self) -> int:
        """How many sentence vectors there are."""
        return len(self.vectors)

    def _sentences(self, rows: Sequence[int]) -> tuple[Ints, Ints]:
        """The sentence positions of rows, concatenated, and how many each row has."""
        at = np.asarray(rows, dtype=np.int64)
        starts, ends = self.offsets[at], self.offsets[at + 1]
        return _ranges(starts, ends)[0], ends - starts

    def cosines(self, query: Matrix, rows: Sequence[int]) -> list[Matrix]:
        """The query's cosine with each sentence of each row, row by row, in sentence order."""
        if not rows:
            return []
        picked, counts = self._sentences(rows)
        # One gather and one product for all rows: a ranking asks for tens of them at once.
        scores = self.vectors[picked].astype(np.float32) @ query.astype(np.float32)
        return np.split(scores, np.cumsum(counts)[:-1])

    def masses(self, rows: Sequence[int], weights: dict[int, float]) -> list[Matrix]:
        """The sum of `weights` (term id -> weight) over the terms of each sentence of each
        row, row by row, in sentence order: `sentences.masses` without splitting the text."""
        if not rows:
            return []
        picked, counts = self._sentences(rows)
        where, sentence = _ranges(self.term_offsets[picked], self.term_offsets[picked + 1])
        ids = np.asarray(sorted(weights), dtype=np.int64)
        values = np.asarray([weights[i] for i in ids.tolist()], dtype=np.float64)
        terms = self.terms[where].astype(np.int64)
        at = np.clip(np.searchsorted(ids, terms), 0, max(len(ids) - 1, 0))
        found = values[at] * (ids[at] == terms) if len(ids) else np.zeros(len(terms))
        sums = np.bincount(sentence, weights=found, minlength=len(picked)).astype(np.float32)
        return np.split(sums, np.cumsum(counts)[:-1])
