"""Embed: turn texts into L2-normalised float32 vectors with a local sentence-transformers model."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from service.batching import available_cores
from service.chunking import Tokenizer
from service.errors import ModelLoadError

Vectors = npt.NDArray[np.float32]
MAX_BATCH_TOKENS = 2048  # padded tokens per encoder call: bounds activation memory


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


class HFTokenizer:
    """Tokenizer protocol over a Hugging Face fast tokenizer."""

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer

    def offsets(self, texts: Sequence[str]) -> list[list[tuple[int, int]]]:
        """Character span of every word piece of each text, special tokens excluded."""
        if not texts:
            return []
        encoded = self._tokenizer(
            list(texts),
            add_special_tokens=False,
            return_offsets_mapping=True,
            truncation=False,
            verbose=False,
        )
        return [[(int(a), int(b)) for a, b in offs] for offs in encoded["offset_mapping"]]

    def special_tokens(self) -> int:
        """Positions the model's own markers take in every sequence."""
        return len(self._tokenizer("", add_special_tokens=True)["input_ids"])


def model_fingerprint(path: Path) -> str:
    """A stable id for a model folder: its name plus a hash of its configuration and weights size.

    Install locations differ between machines, so the path itself cannot be the id.
    """
    digest = hashlib.sha256()
    for name in ("config.json", "modules.json", "sentence_bert_config.json", "tokenizer.json"):
        file = path / name
        if file.is_file():
            digest.update(name.encode() + b"\0" + file.read_bytes())
    for weights in sorted(path.glob("*.safetensors")) + sorted(path.glob("*.bin")):
        digest.update(f"{weights.name}:{weights.stat().st_size}".encode())
    return f"{path.name}@{digest.hexdigest()[:12]}"


def quiet_model_loading() -> None:
    """Turn off transformers' per-load progress bars ("Loading weights"): noise in a log."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]


def _check_model_folder(path: Path) -> None:
    """Raise ModelLoadError unless path looks like a local sentence-transformers model."""
    if not path.is_dir():
        raise ModelLoadError(
            f"model folder {path} does not exist; set GROUNDQA_MODEL to a local "
            "sentence-transformers folder or unset it to use the bundled all-MiniLM-L6-v2"
        )
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"{path} is not a sentence-transformers model folder (no config.json)")


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
        _check_model_folder(path)
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


def load_embedder(
    model_path: str,
    *,
    threads: int = 0,
    batch_size: int = 32,
    encoder: str | None = None,
    cache_dir: Path | None = None,
    workers: int | None = None,
) -> Embedder:
    """The configured encoder for a model folder.

    `encoder` is torch, onnx or onnx-int8; what is left out comes from Settings (the ONNX export
    is cached under `<index_dir>/cache/onnx`). torch and onnx share one model id (their vectors
    agree within 1e-6); onnx-int8 has its own (cosine ~0.99), so its index is built with int8.
    """
    if encoder is None or cache_dir is None or workers is None:
        from service.config import Settings

        settings = Settings()
        encoder = encoder or settings.encoder
        cache_dir = cache_dir or settings.index_dir / "cache"
        workers = settings.encoder_workers if workers is None else workers
    if encoder == "torch":
        return SentenceTransformerEmbedder(
            model_path, threads=threads, workers=workers, batch_size=batch_size
        )
    if encoder in ("onnx", "onnx-int8"):
        from service.encoders import OnnxEmbedder

        return OnnxEmbedder(
            model_path,
            cache_dir=cache_dir,
            int8=encoder == "onnx-int8",
            threads=threads or 1,
            workers=workers,
            batch_size=batch_size,
        )
    raise ModelLoadError(
        f"unknown encoder {encoder!r}; set GROUNDQA_ENCODER to torch, onnx or onnx-int8"
    )


def embedder_for(settings: Any) -> Embedder:
    """The encoder a Settings object configures (the one way the service and CLI load it, so
    `--index` and every GROUNDQA_ encoder setting apply)."""
    return load_embedder(
        settings.model_path,
        threads=settings.encoder_threads,
        batch_size=settings.batch_size,
        encoder=settings.encoder,
        cache_dir=settings.index_dir / "cache",
        workers=settings.encoder_workers,
    )


def read_model_info(path: Path) -> dict[str, Any]:
    """The sentence-transformers config of a model folder, for error messages."""
    config = path / "config_sentence_transformers.json"
    return dict(json.loads(config.read_text())) if config.is_file() else {}
