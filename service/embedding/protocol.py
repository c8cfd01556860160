"""The two interfaces the rest of groundqa sees of a model: its tokenizer and its embedder."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import numpy.typing as npt

Vectors = npt.NDArray[np.float32]


class Tokenizer(Protocol):
    """Counts the model's word pieces and says where each one sits in the text."""

    def offsets(self, texts: Sequence[str]) -> list[list[tuple[int, int]]]:
        """Character span of every token of each text, special tokens excluded."""
        ...


class Embedder(Protocol):
    """A text encoder: `embed` returns one unit-length float32 row per text."""

    model_id: str
    dim: int
    max_seq_length: int
    special_tokens: int
    tokenizer: Tokenizer

    def embed(self, texts: Sequence[str], *, progress: bool = False) -> Vectors:
        """Unit-length vectors of shape (len(texts), dim)."""
        ...
