"""Choosing and loading the configured encoder."""

from __future__ import annotations

from pathlib import Path

from service.config import Settings
from service.embedding.background import CallerThreadEmbedder
from service.embedding.protocol import Embedder
from service.errors import ModelLoadError


def load_embedder(
    model_path: str,
    *,
    encoder: str,
    cache_dir: Path,
    threads: int = 0,
    batch_size: int = 32,
    workers: int = 0,
) -> Embedder:
    """The encoder (torch, onnx or onnx-int8) for a model folder; the ONNX export is cached
    under `<cache_dir>/onnx`, a folder the caller chooses.

    torch and onnx share one model id (their vectors agree within 1e-6); onnx-int8 has its own
    (cosine ~0.99), so its index is built with int8. `workers` 0 = one per core.
    """
    if encoder == "torch":
        from service.embedding.torch_encoder import SentenceTransformerEmbedder

        return SentenceTransformerEmbedder(
            model_path, threads=threads, workers=workers, batch_size=batch_size
        )
    if encoder in ("onnx", "onnx-int8"):
        from service.embedding.onnx_encoder import OnnxEmbedder

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


def embedder_for(settings: Settings) -> Embedder:
    """The encoder a Settings object configures (the one way the service and CLI load it, so
    `--index` and every GROUNDQA_ encoder setting apply)."""
    return load_embedder(
        settings.model_path,
        threads=settings.encoder_threads,
        batch_size=settings.batch_size,
        encoder=settings.encoder,
        # Not the index folder: it may be a read-only volume shared by replicas.
        cache_dir=settings.cache_dir,
        workers=settings.encoder_workers,
    )


def rebuild_embedder(settings: Settings, serving: Embedder) -> Embedder:
    """The encoder for rebuilds inside a server: with rebuild_priority low, one of the same
    model that runs on the rebuild's own (lowered) thread; else the serving one, on every core."""
    if settings.rebuild_priority == "normal":
        return serving
    return CallerThreadEmbedder(
        serving,
        lambda: load_embedder(
            settings.model_path,
            encoder=settings.encoder,
            cache_dir=settings.cache_dir,
            threads=1,
            batch_size=settings.batch_size,
            workers=1,
        ),
    )
