"""Vectors are a pure function of (model, text): the same text gets the same vector alone, in
any batch, in any order and under concurrent callers."""

from __future__ import annotations

import random
import threading

import numpy as np
import pytest

from service.embedding import Embedder, MicroBatcher

_LINES = (
    "north korea troops russia cell protein gene expression mountain winter snow river",
    "bread oven dough planet saturn rings ocean ice the of and in a is was were mice",
    "treatment patients risk cancer vitamin study results increase decrease",
)
WORDS = [word for line in _LINES for word in line.split()]


def random_texts(rng: random.Random, n: int) -> list[str]:
    """n random texts from 1 word to about 300 (past the 256-token limit)."""
    return [
        " ".join(rng.choice(WORDS) for _ in range(rng.choice([1, 3, 8, 20, 60, 300])))
        for _ in range(n)
    ]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_same_text_same_vector_alone_and_in_random_batches(
    real_embedder: Embedder, seed: int
) -> None:
    rng = random.Random(seed)
    texts = random_texts(rng, 24)
    alone = np.stack([real_embedder.embed([t])[0] for t in texts])
    for _ in range(3):
        order = list(range(len(texts)))
        rng.shuffle(order)
        cut = sorted(rng.sample(range(1, len(texts)), 3))
        for part in np.split(np.array(order), cut):
            batch = [texts[i] for i in part]
            vectors = real_embedder.embed(batch)
            np.testing.assert_allclose(vectors, alone[part], rtol=0, atol=1e-6)


def test_a_question_is_the_same_next_to_a_long_text(real_embedder: Embedder) -> None:
    question = "How many troops has North Korea sent?"
    long_text = "A very long neighbouring passage about something else entirely. " * 40
    alone = real_embedder.embed([question])[0]
    together = real_embedder.embed([question, long_text])[0]
    np.testing.assert_allclose(together, alone, rtol=0, atol=1e-6)


def test_concurrent_micro_batched_callers_get_their_vectors_alone(
    real_embedder: Embedder,
) -> None:
    rng = random.Random(7)
    texts = random_texts(rng, 17)
    alone = {t: real_embedder.embed([t])[0] for t in texts}
    batcher = MicroBatcher(real_embedder.embed, max_texts=64, workers=2)
    start = threading.Barrier(len(texts))
    got: dict[str, np.ndarray] = {}

    def call(text: str) -> None:
        start.wait()
        got[text] = batcher.embed([text])[0]

    threads = [threading.Thread(target=call, args=(t,)) for t in texts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert set(got) == set(texts)
    for text in texts:
        np.testing.assert_allclose(got[text], alone[text], rtol=0, atol=1e-6)
