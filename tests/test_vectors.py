"""The vector index: its type follows the settings, ids are rows, vectors are float16."""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np
import pytest

from service.config import Settings
from service.vectors import VECTORS, AnnSettings, VectorIndex, write_vectors


@pytest.mark.parametrize(
    ("ann", "count", "kind"),
    [
        ("auto", 50, faiss.IndexScalarQuantizer),
        ("flat", 500, faiss.IndexScalarQuantizer),
        ("hnsw", 50, faiss.IndexHNSWFlat),
        ("ivf", 50, faiss.IndexIVFScalarQuantizer),
        ("auto", 500, faiss.IndexIVFScalarQuantizer),
    ],
)
def test_vector_index_type_follows_settings(
    settings: Settings, tmp_path: Path, ann: str, count: int, kind: type
) -> None:
    rng = np.random.default_rng(1)
    vectors = rng.standard_normal((count, 16), dtype=np.float32)
    faiss.normalize_L2(vectors)
    config = settings.model_copy(update={"ann": ann, "ann_threshold": 100, "hnsw_ef_search": 64})
    write_vectors(tmp_path, vectors, AnnSettings.of(config))
    index = VectorIndex.load(tmp_path).faiss
    assert isinstance(faiss.downcast_index(index), kind)
    assert (tmp_path / VECTORS).is_file()
    _, ids = index.search(vectors[:20], 1)
    assert ids[:, 0].tolist() == list(range(20))  # ids are the rows
    # flat and IVF store float16 (IVF: of the offset from the list centre)
    np.testing.assert_allclose(
        index.reconstruct_batch(np.array([3, 7])), vectors[[3, 7]], rtol=0, atol=1e-3
    )


@pytest.mark.parametrize("ann", ["flat", "ivf", "hnsw"])
@pytest.mark.parametrize("allowed", [None, [5, 17, 300, 411]], ids=["all", "filtered"])
def test_nearest_and_cosines_agree_with_exact_scores(
    settings: Settings, tmp_path: Path, ann: str, allowed: list[int] | None
) -> None:
    rng = np.random.default_rng(2)
    vectors = rng.standard_normal((500, 16), dtype=np.float32)
    faiss.normalize_L2(vectors)
    write_vectors(tmp_path, vectors, AnnSettings.of(settings.model_copy(update={"ann": ann})))
    index = VectorIndex.load(tmp_path)
    assert (index.count, index.dim) == (500, 16)
    query = vectors[17]
    rows = None if allowed is None else np.asarray(allowed, dtype=np.int64)
    found, scores = index.nearest(query, 3, rows)
    assert found[0] == 17 and len(found) == 3
    if rows is not None:
        assert set(found.tolist()) <= set(allowed or [])
    np.testing.assert_allclose(scores, vectors[found] @ query, atol=2e-3)
    np.testing.assert_allclose(index.cosines(query, found), scores, atol=2e-3)
    assert index.nearest(query, 3, np.zeros(0, dtype=np.int64))[0].tolist() == []
