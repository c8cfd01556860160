"""ONNX Runtime encoder: the bundled sentence-transformers model exported locally to ONNX (and,
optionally, quantised to int8), with the same mean pooling and L2 normalisation.

The export runs once per model and is cached (`<cache>/onnx/<model_id>-e<N>/model.onnx`, and
`model-int8.onnx`), written atomically so concurrent processes never load a half-written file.
Pooling and normalisation are part of the exported graph, so one `run` returns unit vectors.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import threading
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from service.embedding.batches import BatchRunner, available_cores
from service.embedding.hf import (
    HFTokenizer,
    check_model_folder,
    model_fingerprint,
    quiet_model_loading,
    read_max_seq_length,
)
from service.embedding.protocol import Tokenizer, Vectors
from service.errors import ModelLoadError

# Bump when the exported graph changes (inputs, pooling, opset): old caches are then ignored.
EXPORT_VERSION = 1
OPSET = 17
FLOAT_FILE = "model.onnx"
INT8_FILE = "model-int8.onnx"
INPUTS = ("input_ids", "attention_mask")
OUTPUT = "sentence_embedding"
# "-r1": int8 vectors since they are computed one text per run (see OnnxEmbedder.embed); the
# batch-dependent vectors of before must not be mixed with them from an embedding cache.
INT8_SUFFIX = "+onnx-int8-r1"
_UNSAFE = re.compile(r"[^A-Za-z0-9._@-]")


def export_folder(cache_dir: Path, model_id: str) -> Path:
    """Where the ONNX files of a model are cached."""
    return cache_dir / "onnx" / f"{_UNSAFE.sub('_', model_id)}-e{EXPORT_VERSION}"


@contextlib.contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    """Serialise exports of one folder across processes."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _replace_atomic(tmp: Path, target: Path) -> None:
    """Move a fully written temp file into place, durably."""
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, target)
    fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _tmp_name(target: Path) -> Path:
    return target.with_name(f".tmp-{target.name}.{os.getpid()}.{threading.get_ident()}")


def export_float(model_path: Path, target: Path) -> None:
    """Export the transformer with mean pooling and normalisation to one ONNX file at target."""
    import torch
    from transformers import AutoModel

    class Pooled(torch.nn.Module):
        """Token embeddings -> mask-weighted mean -> unit length, as sentence-transformers."""

        def __init__(self, encoder: Any) -> None:
            super().__init__()
            self.encoder = encoder

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            tokens = self.encoder(
                input_ids=input_ids,
                attention_mask=attention_mask,
                token_type_ids=torch.zeros_like(input_ids),
            ).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(tokens.dtype)
            summed = (tokens * mask).sum(dim=1)
            mean = summed / mask.sum(dim=1).clamp(min=1e-9)
            return torch.nn.functional.normalize(mean, p=2.0, dim=1)

    quiet_model_loading()
    try:
        encoder = AutoModel.from_pretrained(str(model_path), local_files_only=True)
    except Exception as exc:  # transformers raises many types for a bad folder
        raise ModelLoadError(f"cannot load {model_path} for ONNX export: {exc}") from exc
    module = Pooled(encoder).eval()
    sample = (torch.ones(2, 8, dtype=torch.long), torch.ones(2, 8, dtype=torch.long))
    tmp = _tmp_name(target)
    axes = {"batch": 0, "sequence": 1}
    try:
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer notes about constant Python conditions
            # The TorchScript exporter takes seconds where the dynamo one takes a minute on
            # this model; both give vectors equal to sentence-transformers within 1e-6.
            torch.onnx.export(
                module,
                sample,
                str(tmp),
                input_names=list(INPUTS),
                output_names=[OUTPUT],
                dynamic_axes={
                    "input_ids": {v: k for k, v in axes.items()},
                    "attention_mask": {v: k for k, v in axes.items()},
                    OUTPUT: {0: "batch"},
                },
                opset_version=OPSET,
                dynamo=False,
                external_data=False,
            )
        _replace_atomic(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _no_preprocess_advice(record: logging.LogRecord) -> bool:
    """Logging filter: drop onnxruntime's advice to pre-process a model before quantising."""
    return "pre-processing before quantization" not in record.getMessage()


def quantize_int8(source: Path, target: Path) -> None:
    """Dynamic int8 quantisation of the MatMul weights, per output channel.

    Per-channel keeps cosine to the float model at ~0.99 on this model; per-tensor drops it to
    ~0.95, and quantising the embedding table adds error for no speed.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    tmp = _tmp_name(target)
    # onnxruntime logs a root-logger warning advising its pre-processing (shape inference and
    # graph fusion) before quantising. Fusion first was measured and declined (README,
    # Performance); the advice would only confuse a user starting the service.
    root = logging.getLogger()
    root.addFilter(_no_preprocess_advice)
    try:
        quantize_dynamic(
            str(source),
            str(tmp),
            weight_type=QuantType.QInt8,
            per_channel=True,
            op_types_to_quantize=["MatMul"],
        )
        _replace_atomic(tmp, target)
    finally:
        root.removeFilter(_no_preprocess_advice)
        tmp.unlink(missing_ok=True)


def export_file(folder: Path, *, int8: bool) -> Path:
    """The ONNX file of an export folder that the float or int8 encoder loads."""
    return folder / (INT8_FILE if int8 else FLOAT_FILE)


def ensure_onnx(model_path: Path, folder: Path, *, int8: bool) -> tuple[Path, bool]:
    """The cached ONNX file for the model, exported (and quantised) first when missing;
    returns (path, whether this call exported anything)."""
    target = export_file(folder, int8=int8)
    if target.is_file():
        return target, False
    with _folder_lock(folder):
        if target.is_file():  # another process finished it while we waited
            return target, False
        float_file = folder / FLOAT_FILE
        if not float_file.is_file():
            export_float(model_path, float_file)
        if int8:
            quantize_int8(float_file, target)
    return target, True


class OnnxEmbedder:
    """Embedder protocol over an ONNX Runtime session of the exported model.

    One session is shared by all threads (`run` is thread-safe); each run uses `threads`
    intra-op threads (1 by default, so concurrent requests each get a core instead of fighting
    over all of them). Large inputs are cut into length-sorted batches that run on `workers`
    threads at once.
    """

    def __init__(
        self,
        model_path: str,
        *,
        cache_dir: Path,
        int8: bool = False,
        threads: int = 1,
        workers: int = 0,
        batch_size: int = 32,
        model_id: str | None = None,
    ) -> None:
        path = Path(model_path).expanduser()
        check_model_folder(path)
        import onnxruntime as ort
        from tokenizers import Tokenizer as FastTokenizer
        from transformers import AutoTokenizer

        # Float ONNX reproduces torch's vectors (cosine > 0.999999), so it shares torch's
        # model id: indexes and cached vectors move freely between the two. Int8 vectors
        # differ (cosine ~0.99), so int8 has an id of its own: switching to it rebuilds the
        # index with int8 vectors rather than mixing them with float ones.
        fingerprint = model_fingerprint(path)
        self.model_id = model_id or fingerprint + (INT8_SUFFIX if int8 else "")
        self.max_seq_length = read_max_seq_length(path)
        self.threads = max(1, threads)
        self.workers = workers if workers > 0 else available_cores()
        # Dynamic int8 quantises activations with one scale per input tensor: encoded in a
        # batch, a text's vector would depend on its neighbours (and on their padding). One
        # text per run makes it a pure function of the text; without padding this is also
        # faster for chunks (bench/determinism.py measures the ratio).
        self.batch_size = 1 if int8 else batch_size
        self.per_text = int8
        folder = export_folder(cache_dir, fingerprint)
        self.onnx_path, self.exported = ensure_onnx(path, folder, int8=int8)

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Spinning threads burn a shared machine's cores while waiting for work.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(
                str(self.onnx_path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
            raise ModelLoadError(f"cannot load ONNX model {self.onnx_path}: {exc}") from exc

        hf = HFTokenizer(AutoTokenizer.from_pretrained(str(path), local_files_only=True))
        self.tokenizer: Tokenizer = hf
        self.special_tokens = hf.special_tokens()
        fast = FastTokenizer.from_file(str(path / "tokenizer.json"))
        fast.enable_truncation(self.max_seq_length)
        fast.no_padding()
        self._fast = fast
        self._batches = BatchRunner(self.workers, "groundqa-onnx")
        self.dim = int(self._run(self._ids(["dimension probe"]), [0]).shape[1])

    def _ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids with the model's special tokens, truncated to max_seq_length."""
        if len(texts) == 1:
            return [self._fast.encode(texts[0]).ids]
        return [e.ids for e in self._fast.encode_batch_fast(list(texts))]

    def _run(self, ids: list[list[int]], order: Sequence[int]) -> Vectors:
        """Vectors of the texts at `order` (one padded batch)."""
        width = max(len(ids[i]) for i in order)
        input_ids = np.zeros((len(order), width), dtype=np.int64)
        mask = np.zeros((len(order), width), dtype=np.int64)
        for row, i in enumerate(order):
            n = len(ids[i])
            input_ids[row, :n] = ids[i]
            mask[row, :n] = 1
        (out,) = self.session.run([OUTPUT], {INPUTS[0]: input_ids, INPUTS[1]: mask})
        return np.asarray(out, dtype=np.float32)

    def embed(self, texts: Sequence[str], *, progress: bool = False) -> Vectors:
        """Unit-length vectors of shape (len(texts), dim)."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        ids = self._ids(texts)
        if len(ids) == 1:
            return self._run(ids, [0])
        return self._batches.run(
            [len(i) for i in ids],
            self.batch_size,
            lambda batch: self._run(ids, batch),
            self.dim,
            progress=progress,
        )

    def close(self) -> None:
        """Stop the batch threads (the session is freed with the object)."""
        self._batches.close()
