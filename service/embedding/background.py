"""Embedding for builds inside a serving process: one encoder thread at the lowest CPU
priority, so the queries being served keep the cores while a rebuild embeds."""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable, Sequence

from service.embedding.protocol import Embedder, Tokenizer, Vectors
from service.errors import ModelLoadError

log = logging.getLogger("groundqa.embedding")

LOWEST_PRIORITY = 19  # the largest Unix niceness


def lower_thread_priority(niceness: int = LOWEST_PRIORITY) -> bool:
    """Give the calling thread the lowest CPU priority (Linux, where niceness is per thread);
    whether it was lowered. It cannot be raised again, so call it on a thread of its own."""
    if sys.platform != "linux":
        return False  # elsewhere setpriority would lower the whole server
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), niceness)
    except OSError as exc:  # a sandbox may forbid it; the build still runs, at full priority
        log.warning("cannot lower the rebuild thread's priority: %s", exc)
        return False
    return True


class CallerThreadEmbedder:
    """The Embedder protocol over an encoder of the same model that runs every call on the
    calling thread alone (loaded by `load` on first use), so that thread's priority is the
    whole cost of the call. Model id, tokenizer and sizes are the serving embedder's."""

    def __init__(self, serving: Embedder, load: Callable[[], Embedder]) -> None:
        self.model_id: str = serving.model_id
        self.dim: int = serving.dim
        self.max_seq_length: int = serving.max_seq_length
        self.special_tokens: int = serving.special_tokens
        self.tokenizer: Tokenizer = serving.tokenizer
        self._load = load
        self._inner: Embedder | None = None
        self._lock = threading.Lock()

    def embed(self, texts: Sequence[str], *, progress: bool = False) -> Vectors:
        """Unit-length vectors of shape (len(texts), dim), computed on the calling thread."""
        with self._lock:
            if self._inner is None:
                self._inner = self._load()
                if self._inner.model_id != self.model_id:  # its vectors would not mix
                    raise ModelLoadError(
                        f"the rebuild encoder loaded {self._inner.model_id}, "
                        f"not the served {self.model_id}"
                    )
        return self._inner.embed(texts, progress=progress)
