"""Vectors: the one module that speaks FAISS. It sizes, writes and memory-maps a build's
inner-product index, and answers nearest-row and per-row cosine queries, filtered or not."""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import numpy.typing as npt

from service.config import Ann, Settings

VECTORS = "vectors.faiss"
# Filters of up to this many rows are scored exactly on an approximate index (25 MB of vectors).
EXACT_FILTER_ROWS = 16_384

Rows = npt.NDArray[np.int64]
Scores = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class AnnSettings:
    """How a build's vector index is chosen and searched (part of Settings)."""

    ann: Ann
    ann_threshold: int
    ivf_nprobe: int
    hnsw_m: int
    hnsw_ef_construction: int
    hnsw_ef_search: int

    @classmethod
    def of(cls, settings: Settings) -> AnnSettings:
        """The vector index settings of the service's settings."""
        return cls(
            ann=settings.ann,
            ann_threshold=settings.ann_threshold,
            ivf_nprobe=settings.ivf_nprobe,
            hnsw_m=settings.hnsw_m,
            hnsw_ef_construction=settings.hnsw_ef_construction,
            hnsw_ef_search=settings.hnsw_ef_search,
        )


def ivf_lists(count: int) -> int:
    """IVF lists for count vectors: 4 x sqrt(count), with at least 39 training points each
    (faiss's k-means minimum)."""
    return max(1, min(int(4 * math.sqrt(count)), count // 39))


def empty_index(dim: int, count: int, settings: AnnSettings) -> faiss.Index:
    """An empty inner-product index sized to count vectors: exhaustive below the settings'
    threshold (or when GROUNDQA_ANN=flat), IVF above it (or when GROUNDQA_ANN=ivf), HNSW
    when GROUNDQA_ANN=hnsw.

    Flat and IVF store float16: unit vectors lose nothing that changes a ranking (recall@10
    1.0 against float32), and a scan reads half the memory, which leaves the encoder's weights
    in the CPU cache (measured: 0.3 ms less per question on 11k chunks). IVF is the large-index
    default because every build rewrites the index: it trains and fills in about a minute at
    1M vectors where HNSW takes most of an hour on two cores (README, Scale)."""
    kind = settings.ann
    if kind == "auto":
        kind = "ivf" if count >= settings.ann_threshold else "flat"
    if kind == "flat":
        return faiss.IndexScalarQuantizer(
            dim, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT
        )
    if kind == "ivf":
        lists = ivf_lists(count)
        index = faiss.index_factory(dim, f"IVF{lists},SQfp16", faiss.METRIC_INNER_PRODUCT)
        faiss.extract_index_ivf(index).nprobe = min(settings.ivf_nprobe, lists)  # saved with it
        return index
    index = faiss.IndexHNSWFlat(dim, settings.hnsw_m, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = settings.hnsw_ef_construction
    index.hnsw.efSearch = settings.hnsw_ef_search  # saved with the index
    return index


def write_vectors(folder: Path, vectors: npt.NDArray[np.float32], settings: AnnSettings) -> None:
    """Write an inner-product index of the settings' type whose ids are the chunk rows (every
    index type numbers vectors in the order they are added)."""
    index = empty_index(vectors.shape[1], len(vectors), settings)
    if len(vectors):
        if not index.is_trained:
            # A fixed sample: the same vectors give the same index, build after build.
            lists = faiss.extract_index_ivf(index).nlist
            rng = np.random.default_rng(0)
            sample = rng.choice(len(vectors), min(len(vectors), 64 * lists), replace=False)
            index.train(vectors[np.sort(sample)])
        index.add(vectors)
        if isinstance(index, faiss.IndexIVF):
            index.make_direct_map()  # reconstruct(row) for the scores of keyword-only hits
    faiss.write_index(index, str(folder / VECTORS))


def _filter_params(index: faiss.Index, selector: Any) -> Any:
    """Search parameters restricted to selector, of the type the index requires (IVF rejects
    the generic one), keeping the index's own search breadth."""
    if isinstance(index, faiss.IndexIVF):
        return faiss.SearchParametersIVF(sel=selector, nprobe=index.nprobe)  # type: ignore[call-arg]
    if isinstance(index, faiss.IndexHNSW):
        return faiss.SearchParametersHNSW(sel=selector, efSearch=index.hnsw.efSearch)  # type: ignore[attr-defined]
    return faiss.SearchParameters(sel=selector)  # type: ignore[call-arg]


_THREADS = threading.local()


def pin_threads(threads: int) -> None:
    """Pin this thread's FAISS (OpenMP) threads for a query. The setting is per thread, and
    the default (all cores) makes one flat search of 11k vectors take 15 ms instead of 0.6 ms
    when other processes keep the cores busy: the threads wait for each other."""
    if getattr(_THREADS, "faiss", None) != threads:
        faiss.omp_set_num_threads(threads)
        _THREADS.faiss = threads


def _empty() -> tuple[Rows, Scores]:
    return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)


class VectorIndex:
    """A build's vectors, read-only: row ids are chunk rows, scores are cosines."""

    def __init__(self, index: faiss.Index) -> None:
        self.faiss = index

    @classmethod
    def load(cls, folder: Path, *, mmap: bool = True) -> VectorIndex:
        """The build's vector index, memory-mapped read-only where the index type allows.

        IO_FLAG_MMAP alone maps only IVF lists: flat and HNSW vectors would be read into
        private memory. IO_FLAG_MMAP_IFC (recent faiss; older ones lack it and copy) maps their
        vectors too, so every process serving a build shares one copy in the page cache."""
        ifc = getattr(faiss, "IO_FLAG_MMAP_IFC", 0)
        flags = faiss.IO_FLAG_MMAP | ifc | faiss.IO_FLAG_READ_ONLY if mmap else 0
        try:
            return cls(faiss.read_index(str(folder / VECTORS), flags))
        except RuntimeError:
            if not mmap:
                raise
            return cls(faiss.read_index(str(folder / VECTORS)))

    @property
    def count(self) -> int:
        """How many vectors the index holds."""
        return int(self.faiss.ntotal)

    @property
    def dim(self) -> int:
        """The vectors' dimension."""
        return int(self.faiss.d)

    def nearest(self, query: Scores, k: int, allowed: Rows | None = None) -> tuple[Rows, Scores]:
        """Rows and cosines of the k nearest vectors, best first, within allowed rows if given."""
        if self.count == 0 or (allowed is not None and len(allowed) == 0):
            return _empty()
        index = self.faiss
        k = min(k, self.count)
        approximate = isinstance(index, (faiss.IndexIVF, faiss.IndexHNSW))
        if allowed is not None and approximate and len(allowed) <= EXACT_FILTER_ROWS:
            # A graph or list walk finds few of a small allowed set; scoring it is exact.
            scores = index.reconstruct_batch(allowed) @ query
            best = np.argsort(-scores, kind="stable")[:k]
            return allowed[best], scores[best].astype(np.float32)
        params = None
        if allowed is not None:
            params = _filter_params(index, faiss.IDSelectorBatch(allowed))
        found_scores, ids = index.search(query.reshape(1, -1), k, params=params)
        found = ids[0] >= 0
        return ids[0][found].astype(np.int64), found_scores[0][found].astype(np.float32)

    def cosines(self, query: Scores, rows: Rows) -> Scores:
        """The query's cosine with the vector of each row, in order."""
        if not len(rows):
            return np.zeros(0, dtype=np.float32)
        return np.asarray(self.faiss.reconstruct_batch(rows) @ query, dtype=np.float32)
