"""The sentence-transformers (torch) encoder."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from service.embedding.batches import BatchRunner, available_cores
from service.embedding.hf import (
    HFTokenizer,
    check_model_folder,
    model_fingerprint,
    quiet_model_loading,
)
from service.embedding.protocol import Tokenizer, Vectors
from service.errors import ModelLoadError


class SentenceTransformerEmbedder:
    """The sentence-transformers (torch) encoder; loads the model once, encodes on the CPU.

    Large inputs are cut into length-sorted batches that run on `workers` threads at once,
    each forward pass on `threads` torch threads (default 1): two one-thread passes side by
    side encode a corpus about 1.2x faster than one pass on two threads (bench/, build).
    """

    def __init__(
        self, model_path: str, *, threads: int = 0, workers: int = 0, batch_size: int = 32
    ) -> None:
        path = Path(model_path).expanduser()
        check_model_folder(path)
        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(threads or 1)
        quiet_model_loading()
        try:
            self._model = SentenceTransformer(str(path), device="cpu", local_files_only=True)
        except Exception as exc:  # the library raises many types for a bad folder
            raise ModelLoadError(f"cannot load model from {path}: {exc}") from exc
        self._model.eval()
        self.model_id = model_fingerprint(path)
        dim = self._model.get_embedding_dimension()
        if not dim:
            raise ModelLoadError(f"model at {path} does not report an embedding dimension")
        self.dim = int(dim)
        self.max_seq_length = int(self._model.max_seq_length or 512)
        hf = HFTokenizer(self._model.tokenizer)
        self.tokenizer: Tokenizer = hf
        self.special_tokens = hf.special_tokens()
        self.batch_size = batch_size
        self.workers = workers or available_cores()
        self._batches = BatchRunner(self.workers, "groundqa-torch")
        # The fast tokenizer is not re-entrant (its padding and truncation state changes per
        # call: "Already borrowed"); forward passes are, so only tokenising is serialised.
        self._tokenize_lock = threading.Lock()

    def _forward(self, texts: Sequence[str]) -> Vectors:
        """Unit vectors of one padded batch, as `SentenceTransformer.encode` computes them."""
        import torch

        with self._tokenize_lock:
            features = self._model.tokenize(list(texts))
        with torch.inference_mode():
            out = self._model.forward(features)["sentence_embedding"]
            out = torch.nn.functional.normalize(out, p=2.0, dim=1)
        return np.ascontiguousarray(out.float().numpy(), dtype=np.float32)

    def embed(self, texts: Sequence[str], *, progress: bool = False) -> Vectors:
        """Unit-length vectors of shape (len(texts), dim)."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        if len(texts) == 1:
            return self._forward(texts)
        with self._tokenize_lock:
            encoded = self._model.tokenizer(
                list(texts), truncation=True, max_length=self.max_seq_length
            )
        lengths = [len(ids) for ids in encoded["input_ids"]]
        return self._batches.run(
            lengths,
            self.batch_size,
            lambda batch: self._forward([texts[i] for i in batch]),
            self.dim,
            progress=progress,
        )

    def close(self) -> None:
        """Stop the batch threads."""
        self._batches.close()
