"""Int8 vectors one text per run vs the former shared batches: determinism and speed ratio.

`python -m bench.determinism [--texts N] [--reps R]` embeds SciFact abstracts (chunks, up to
256 tokens) and questions with the default int8 encoder two ways, in the same process and
interleaved: each text in its own run (what groundqa does) and length-sorted batches of 32
(what it did, where a text's vector depended on its batch). It prints the time ratio
per-text / batched (below 1 = faster) and the largest vector difference between a text alone
and inside a batch for each way.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from service.config import bundled_model_path
from service.embedding.onnx_encoder import OnnxEmbedder

SCIFACT = Path(__file__).resolve().parents[2] / "shared" / "eval" / "scifact"


def _texts(n: int) -> tuple[list[str], list[str]]:
    with open(SCIFACT / "corpus.jsonl", encoding="utf-8") as handle:
        docs = [json.loads(line) for line in itertools.islice(handle, n)]
    with open(SCIFACT / "queries.jsonl", encoding="utf-8") as handle:
        queries = [json.loads(line)["text"] for line in itertools.islice(handle, n)]
    return [f"{d['title']}. {d['text']}" for d in docs], queries


def _batched(encoder: OnnxEmbedder, texts: Sequence[str], size: int = 32) -> np.ndarray:
    """The former way: length-sorted padded batches of `size` in one run each."""
    ids = encoder._ids(texts)
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
    out = np.empty((len(ids), encoder.dim), dtype=np.float32)
    for k in range(0, len(order), size):
        rows = order[k : k + size]
        out[rows] = encoder._run(ids, rows)
    return out


def _per_text(encoder: OnnxEmbedder, texts: Sequence[str]) -> np.ndarray:
    ids = encoder._ids(texts)
    return np.stack([encoder._run(ids, [i])[0] for i in range(len(ids))])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.determinism", description=__doc__)
    parser.add_argument("--texts", type=int, default=128)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as cache:
        encoder = OnnxEmbedder(
            bundled_model_path(), cache_dir=Path(cache), int8=True, threads=1, workers=1
        )
        for name, texts in zip(("chunks", "questions"), _texts(args.texts), strict=True):
            ratios = []
            for _ in range(args.reps):
                t0 = time.perf_counter()
                batched = _batched(encoder, texts)
                t1 = time.perf_counter()
                single = _per_text(encoder, texts)
                t2 = time.perf_counter()
                ratios.append((t2 - t1) / (t1 - t0))
            alone = _per_text(encoder, texts)
            print(
                f"{name}: per-text / batched time {statistics.median(ratios):.3f} "
                f"[{min(ratios):.3f}-{max(ratios):.3f}]; max |alone - in batch|: "
                f"batched {np.abs(batched - alone).max():.2e}, "
                f"per-text {np.abs(single - alone).max():.2e}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
