"""Micro-batching: the texts of concurrent requests are encoded together in one encoder call.

Callers put (texts, future) on a queue; a worker thread takes everything waiting (up to
`max_texts`), encodes it in one call and hands every caller its own rows. Under load this turns
many tiny encoder calls into a few larger ones; with one caller it costs one thread hand-off.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Vectors = npt.NDArray[np.float32]
Encode = Callable[[Sequence[str]], Vectors]


@dataclass(frozen=True, slots=True)
class _Request:
    texts: Sequence[str]
    future: Future[Vectors]


class MicroBatcher:
    """Encodes the texts of concurrent callers in shared calls to `encode`."""

    def __init__(
        self, encode: Encode, *, max_texts: int = 256, workers: int = 1, name: str = "encode"
    ) -> None:
        self._encode = encode
        self.max_texts = max(1, max_texts)
        self._queue: queue.SimpleQueue[_Request | None] = queue.SimpleQueue()
        self._closed = False
        self.calls = 0  # encoder calls made, for tests and metrics
        self._threads = [
            threading.Thread(target=self._work, name=f"groundqa-{name}-{i}", daemon=True)
            for i in range(max(1, workers))
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, texts: Sequence[str]) -> Future[Vectors]:
        """A future of the texts' vectors."""
        future: Future[Vectors] = Future()
        if self._closed:
            raise RuntimeError("the batcher is closed")
        self._queue.put(_Request(texts, future))
        return future

    def embed(self, texts: Sequence[str]) -> Vectors:
        """The texts' vectors, encoded together with whatever else is waiting."""
        return self.submit(texts).result()

    def close(self) -> None:
        """Finish what is queued, then stop the workers."""
        self._closed = True
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join(timeout=5)

    def _work(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            count = len(first.texts)
            stop = False
            while count < self.max_texts:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
                count += len(item.texts)
            self._run(batch)
            if stop:
                return

    def _run(self, batch: list[_Request]) -> None:
        texts = [t for request in batch for t in request.texts]
        try:
            vectors = self._encode(texts)
            self.calls += 1
        except BaseException as exc:  # every waiting caller gets the error, the worker lives
            for request in batch:
                request.future.set_exception(exc)
            return
        start = 0
        for request in batch:
            end = start + len(request.texts)
            # A copy: a caller caching its rows must not keep the whole batch alive.
            request.future.set_result(np.array(vectors[start:end], dtype=np.float32))
            start = end
