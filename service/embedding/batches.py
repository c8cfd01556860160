"""Length-sorted batching of many texts over worker threads: what the torch and ONNX encoders
share."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from service.embedding.protocol import Vectors

MAX_BATCH_TOKENS = 2048  # padded tokens per encoder call: bounds activation memory


def available_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def length_batches(
    order: list[int], lengths: list[int], size: int, max_tokens: int = MAX_BATCH_TOKENS
) -> list[list[int]]:
    """Cut rows sorted by decreasing length into batches of at most `size` rows and
    `max_tokens` padded tokens whose padding adds at most a quarter to their real tokens (the
    compute is per padded token; ONNX Runtime keeps the largest batch's memory)."""
    batches: list[list[int]] = []
    batch: list[int] = []
    real = 0
    for i in order:
        padded = (len(batch) + 1) * lengths[batch[0]] if batch else 0
        if batch and (
            len(batch) >= size or padded > max_tokens or padded > 1.25 * (real + lengths[i])
        ):
            batches.append(batch)
            batch, real = [], 0
        batch.append(i)
        real += lengths[i]
    if batch:
        batches.append(batch)
    return batches


class BatchRunner:
    """Encodes many texts as length-sorted batches on `workers` threads at once: the part the
    torch and ONNX encoders share."""

    def __init__(self, workers: int, name: str) -> None:
        self.workers = workers
        self._name = name
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def run(
        self,
        lengths: Sequence[int],
        batch_size: int,
        encode: Callable[[list[int]], Vectors],
        dim: int,
        *,
        progress: bool = False,
    ) -> Vectors:
        """Vectors of texts 0..n-1 (of token lengths `lengths`), `encode` being called with the
        positions of one batch."""
        # Longest first, like sentence-transformers: batches pad to similar lengths.
        order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
        batches = length_batches(order, list(lengths), batch_size)
        result = np.empty((len(lengths), dim), dtype=np.float32)
        done: Iterator[Vectors]
        if self.workers == 1 or len(batches) == 1:
            done = map(encode, batches)
        else:
            done = self._executor().map(encode, batches)
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(lengths), desc="embedding", unit="chunk")
        for rows, vectors in zip(batches, done, strict=True):
            result[rows] = vectors
            if bar is not None:
                bar.update(len(rows))
        if bar is not None:
            bar.close()
        return result

    def _executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix=self._name)
            return self._pool

    @property
    def started(self) -> bool:
        """Whether the worker threads exist."""
        return self._pool is not None

    def close(self) -> None:
        """Stop the worker threads (a later run starts them again)."""
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(wait=False)
                self._pool = None
