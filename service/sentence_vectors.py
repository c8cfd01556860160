"""Sentence vectors: one unit vector per prose sentence of every chunk, embedded at build time
beside the chunk's own, so that ranking can ask which single sentence of a passage means what
the question means without an encoder call per request."""

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
# Bump when the sentences a chunk is split into, or the text embedded for one, change.
SENTENCES_VERSION = 1

Matrix = npt.NDArray[np.float32]


def sentence_texts(chunk: Chunk) -> list[str]:
    """The texts embedded for a chunk's sentences, one per prose sentence `sentences_of`
    finds, in order (row i of the chunk's vectors is its sentence i): each after the chunk's
    context, as the chunk itself is embedded, so that "He was born in 1856" is read as being
    about the document's subject; a sentence opening with the context already names it."""
    text, context = chunk.text, chunk.context
    spans = sentences_of(text).spans
    sentences = [text[s.start : s.end] for s in spans]
    if not context:
        return sentences
    return [s if s.startswith(context) else f"{context}\n{s}" for s in sentences]


def offsets_of(counts: Sequence[int]) -> npt.NDArray[np.int64]:
    """Where each chunk row's sentence vectors start, and one past the last row's end."""
    offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(np.asarray(counts, dtype=np.int64), out=offsets[1:])
    return offsets


def write_sentence_vectors(folder: Path, offsets: npt.NDArray[np.int64], vectors: Matrix) -> None:
    """Write a build's sentence vectors (float16, as the chunk vectors are stored) and the
    offsets of each chunk row's first sentence."""
    np.save(folder / SENTENCE_VECTORS, np.asarray(vectors, dtype=np.float16))
    np.save(folder / SENTENCE_OFFSETS, np.asarray(offsets, dtype=np.int64))


@dataclass(frozen=True, slots=True)
class SentenceVectors:
    """A build's sentence vectors, read-only and memory-mapped."""

    offsets: npt.NDArray[np.int64]
    vectors: npt.NDArray[np.float16]

    @classmethod
    def load(cls, folder: Path) -> SentenceVectors | None:
        """The build's sentence vectors, or None for a build written without them."""
        if not (folder / SENTENCE_VECTORS).exists():
            return None
        offsets = np.load(folder / SENTENCE_OFFSETS)
        vectors = np.load(folder / SENTENCE_VECTORS, mmap_mode="r")
        if offsets.ndim != 1 or len(offsets) == 0 or int(offsets[-1]) != len(vectors):
            raise ValueError(
                f"{len(vectors)} sentence vectors but offsets ending at {int(offsets[-1:].sum())}"
            )
        return cls(offsets, vectors)

    @property
    def rows(self) -> int:
        """How many chunk rows the vectors cover."""
        return len(self.offsets) - 1

    @property
    def count(self) -> int:
        """How many sentence vectors there are."""
        return len(self.vectors)

    def cosines(self, query: Matrix, rows: Sequence[int]) -> list[Matrix]:
        """The query's cosine with each sentence of each row, row by row, in sentence order."""
        if not rows:
            return []
        starts = self.offsets[np.asarray(rows, dtype=np.int64)]
        ends = self.offsets[np.asarray(rows, dtype=np.int64) + 1]
        # One gather and one product for all rows: a ranking asks for tens of them at once.
        picked = np.concatenate([np.arange(s, e) for s, e in zip(starts, ends, strict=True)])
        scores = self.vectors[picked].astype(np.float32) @ query.astype(np.float32)
        return np.split(scores, np.cumsum(ends - starts)[:-1])
