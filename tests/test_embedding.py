"""The embedding package: the ONNX encoder against sentence-transformers, its export cache and
threads, the loader, and the micro-batcher."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from service.embedding import MicroBatcher, Vectors, load_embedder
from service.embedding.onnx_encoder import (
    FLOAT_FILE,
    INT8_FILE,
    INT8_SUFFIX,
    OnnxEmbedder,
    export_folder,
    quantize_int8,
)
from service.embedding.torch_encoder import SentenceTransformerEmbedder

SENTENCES = [
    "0-dimensional biomaterials lack inductive properties.",
    "The Eiffel Tower is in Paris, the capital of France.",
    "Vaccines train the immune system to recognise a pathogen.",
    "Jupiter is the largest planet of the solar system.",
    "short",
    "",
]


@pytest.fixture(scope="session")
def onnx_float(model_path: str, onnx_cache: Path) -> OnnxEmbedder:
    return OnnxEmbedder(model_path, cache_dir=onnx_cache, workers=2)


@pytest.fixture(scope="session")
def onnx_int8(model_path: str, onnx_cache: Path, onnx_float: OnnxEmbedder) -> OnnxEmbedder:
    return OnnxEmbedder(model_path, cache_dir=onnx_cache, int8=True)


@pytest.fixture(scope="session")
def torch_embedder(model_path: str) -> SentenceTransformerEmbedder:
    return SentenceTransformerEmbedder(model_path, threads=1)


def cosines(a: Vectors, b: Vectors) -> list[float]:
    return [float(x) for x in (a * b).sum(axis=1)]


@pytest.mark.e2e
def test_float_onnx_matches_torch(
    onnx_float: OnnxEmbedder, torch_embedder: SentenceTransformerEmbedder
) -> None:
    ours = onnx_float.embed(SENTENCES)
    theirs = torch_embedder.embed(SENTENCES)
    assert ours.shape == theirs.shape == (len(SENTENCES), 384)
    assert ours.dtype == np.float32
    assert min(cosines(ours, theirs)) > 0.999
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


@pytest.mark.e2e
def test_float_onnx_shares_the_model_id_and_protocol(
    onnx_float: OnnxEmbedder, torch_embedder: SentenceTransformerEmbedder
) -> None:
    assert onnx_float.model_id == torch_embedder.model_id
    assert (onnx_float.dim, onnx_float.max_seq_length, onnx_float.special_tokens) == (
        torch_embedder.dim,
        torch_embedder.max_seq_length,
        torch_embedder.special_tokens,
    )
    text = "Mean pooling over the attention mask."
    assert onnx_float.tokenizer.offsets([text]) == torch_embedder.tokenizer.offsets([text])


@pytest.mark.e2e
def test_long_texts_are_truncated_like_sentence_transformers(
    onnx_float: OnnxEmbedder, torch_embedder: SentenceTransformerEmbedder
) -> None:
    long = ["word " * 600, "another much longer text " * 200]
    assert min(cosines(onnx_float.embed(long), torch_embedder.embed(long))) > 0.999


@pytest.mark.e2e
def test_batches_and_order_do_not_change_vectors(onnx_float: OnnxEmbedder) -> None:
    texts = [f"sentence number {i} " * (i % 9 + 1) for i in range(100)]  # > batch_size: pool
    together = onnx_float.embed(texts)
    alone = np.vstack([onnx_float.embed([t]) for t in texts[:10]])
    assert min(cosines(together[:10], alone)) > 0.99999
    assert onnx_float.embed([]).shape == (0, 384)


@pytest.mark.e2e
def test_torch_batches_on_threads_equal_sentence_transformers_encode(model_path: str) -> None:
    texts = [f"sentence number {i} " * (i % 9 + 1) for i in range(100)] + ["word " * 600]
    torch_embedder = SentenceTransformerEmbedder(model_path, workers=2, batch_size=8)
    try:
        ours = torch_embedder.embed(texts)
        theirs = torch_embedder._model.encode(texts, normalize_embeddings=True)
        assert ours.shape == (101, 384) and ours.dtype == np.float32
        np.testing.assert_allclose(ours, theirs, atol=2e-6)
        assert torch_embedder._batches.started  # the batches ran on the worker threads
    finally:
        torch_embedder.close()


@pytest.mark.e2e
def test_int8_is_close_to_torch_and_has_its_own_model_id(
    onnx_int8: OnnxEmbedder, torch_embedder: SentenceTransformerEmbedder
) -> None:
    assert min(cosines(onnx_int8.embed(SENTENCES[:4]), torch_embedder.embed(SENTENCES[:4]))) > 0.98
    assert onnx_int8.model_id == torch_embedder.model_id + INT8_SUFFIX


@pytest.mark.e2e
def test_export_is_cached(
    model_path: str, onnx_cache: Path, onnx_float: OnnxEmbedder, onnx_int8: OnnxEmbedder
) -> None:
    folder = export_folder(onnx_cache, onnx_float.model_id)
    stamps = {name: (folder / name).stat().st_mtime_ns for name in (FLOAT_FILE, INT8_FILE)}
    again = load_embedder(model_path, encoder="onnx-int8", cache_dir=onnx_cache, workers=1)
    assert isinstance(again, OnnxEmbedder)
    assert not again.exported
    assert {n: (folder / n).stat().st_mtime_ns for n in stamps} == stamps
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".tmp-")]


@pytest.mark.e2e
def test_quantising_logs_nothing_and_leaves_logging_as_it_was(
    onnx_cache: Path, onnx_float: OnnxEmbedder, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """onnxruntime's advice to pre-process first (measured and declined) is not shown to users."""
    source = export_folder(onnx_cache, onnx_float.model_id) / FLOAT_FILE
    filters = list(logging.getLogger().filters)
    with caplog.at_level(logging.INFO):
        quantize_int8(source, tmp_path / INT8_FILE)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert logging.getLogger().filters == filters
    assert (tmp_path / INT8_FILE).stat().st_size > 0


@pytest.mark.e2e
def test_loading_the_model_draws_no_progress_bar(
    model_path: str, capfd: pytest.CaptureFixture[str]
) -> None:
    SentenceTransformerEmbedder(model_path, threads=1)
    assert "Loading weights" not in capfd.readouterr().err


@pytest.mark.e2e
def test_thread_settings_are_applied(
    model_path: str, onnx_cache: Path, onnx_float: OnnxEmbedder
) -> None:
    assert onnx_float.session.get_session_options().intra_op_num_threads == 1
    two = OnnxEmbedder(model_path, cache_dir=onnx_cache, threads=2, workers=3)
    options = two.session.get_session_options()
    assert (options.intra_op_num_threads, options.inter_op_num_threads) == (2, 1)
    assert two.workers == 3


def test_unknown_encoder_is_refused(model_path: str, tmp_path: Path) -> None:
    from service.errors import ModelLoadError

    with pytest.raises(ModelLoadError, match="unknown encoder 'tf'"):
        load_embedder(model_path, encoder="tf", cache_dir=tmp_path, workers=1)


class SlowEncoder:
    """Deterministic vectors; each call takes a while so that callers pile up."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def __call__(self, texts: Sequence[str]) -> Vectors:
        self.calls.append(len(texts))
        time.sleep(0.02)
        return np.array([[float(len(t)), float(sum(map(ord, t)))] for t in texts], dtype=np.float32)


def test_batcher_returns_each_caller_its_own_vectors() -> None:
    encode = SlowEncoder()
    batcher = MicroBatcher(encode, max_texts=64, workers=2)
    results: dict[int, Vectors] = {}
    texts = {i: [f"question {i}", "x" * i] for i in range(40)}

    def call(i: int) -> None:
        results[i] = batcher.embed(texts[i])

    threads = [threading.Thread(target=call, args=(i,)) for i in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(results) == list(range(40))
    for i, vectors in results.items():
        np.testing.assert_array_equal(vectors, encode(texts[i]))
    assert batcher.calls < 40  # concurrent callers shared encoder calls
    assert max(encode.calls) <= 64


def test_batcher_hands_errors_to_callers_and_keeps_working() -> None:
    def failing(texts: Sequence[str]) -> Vectors:
        if "boom" in texts:
            raise ValueError("boom")
        return np.ones((len(texts), 2), dtype=np.float32)

    batcher = MicroBatcher(failing)
    with pytest.raises(ValueError, match="boom"):
        batcher.embed(["boom"])
    assert batcher.embed(["fine"]).shape == (1, 2)
