"""Embedding: the model behind a one-method interface (torch or ONNX encoders, length-sorted
batches, micro-batching of concurrent questions)."""

from service.embedding.batches import available_cores
from service.embedding.hf import HFTokenizer, model_fingerprint
from service.embedding.load import embedder_for, load_embedder, rebuild_embedder
from service.embedding.microbatch import MicroBatcher
from service.embedding.protocol import Embedder, Tokenizer, Vectors

__all__ = [
    "Embedder",
    "HFTokenizer",
    "MicroBatcher",
    "Tokenizer",
    "Vectors",
    "available_cores",
    "embedder_for",
    "load_embedder",
    "model_fingerprint",
    "rebuild_embedder",
]
