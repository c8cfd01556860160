"""Micro-batching: the texts of concurrent requests are encoded together in one encoder call.

Callers queue (texts, future). Whoever finds a free encoder slot (at most `workers` calls run
at once) becomes the leader: it takes everything waiting, up to `max_texts`, encodes it in one
call, resolves every caller's future and wakes the others. With one caller there is no thread
hand-off at all (it encodes its own texts); under load many tiny encoder calls become a few
larger ones. No background thread: nothing to start or stop.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np

from service.embedding.protocol import Vectors

Encode = Callable[[Sequence[str]], Vectors]


@dataclass(frozen=True, slots=True)
class _Request:
    texts: Sequence[str]
    future: Future[Vectors]


class MicroBatcher:
    """Encodes the texts of concurrent callers in shared calls to `encode`."""

    def __init__(self, encode: Encode, *, max_texts: int = 256, workers: int = 2) -> None:
        self._encode = encode
        self.max_texts = max(1, max_texts)
        self.workers = max(1, workers)
        self._pending: deque[_Request] = deque()
        self._cond = threading.Condition()
        self._busy = 0
        self.calls = 0  # encoder calls made, for tests and metrics

    def embed(self, texts: Sequence[str]) -> Vectors:
        """The texts' vectors, encoded together with whatever else is waiting."""
        request = _Request(texts, Future())
        with self._cond:
            self._pending.append(request)
            while not request.future.done():
                if self._busy >= self.workers or not self._pending:
                    # All slots taken, or ours is in another leader's batch: wait for news.
                    self._cond.wait()
                    continue
                batch = self._take()
                self._busy += 1
                self._cond.release()
                try:
                    self._run(batch)
                finally:
                    self._cond.acquire()
                    self._busy -= 1
                    self._cond.notify_all()
        return request.future.result()

    def _take(self) -> list[_Request]:
        """The oldest waiting requests, up to max_texts texts (at least one request)."""
        batch = [self._pending.popleft()]
        count = len(batch[0].texts)
        while self._pending and count + len(self._pending[0].texts) <= self.max_texts:
            request = self._pending.popleft()
            batch.append(request)
            count += len(request.texts)
        return batch

    def _run(self, batch: list[_Request]) -> None:
        texts = [t for request in batch for t in request.texts]
        try:
            vectors = self._encode(texts)
            self.calls += 1
        except Exception as exc:
            if len(batch) == 1:
                batch[0].future.set_exception(exc)
                return
            # One caller's texts broke the shared call: each caller is retried alone, so the
            # error reaches only the callers whose own texts raise it.
            for request in batch:
                self._run([request])
            return
        except BaseException as exc:  # interrupted: every caller of the batch gets it
            for request in batch:
                request.future.set_exception(exc)
            return
        if len(batch) == 1:
            batch[0].future.set_result(vectors)
            return
        start = 0
        for request in batch:
            end = start + len(request.texts)
            # A copy: a caller caching its rows must not keep the whole batch alive.
            request.future.set_result(np.array(vectors[start:end], dtype=np.float32))
            start = end
