"""Published builds: open one for reading (checked against the model), and hold the one being
served, swapped atomically when another build is published."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from service.embedding import Embedder
from service.errors import IndexIncompatibleError, IndexNotBuiltError
from service.keyword import KeywordIndex
from service.sentence_vectors import SentenceVectors
from service.store import (
    CHUNKS_DB,
    KEYWORD_DIR,
    ChunkStore,
    Manifest,
    build_path,
    read_manifest,
    read_pointer,
    rebuild_hint,
)
from service.vectors import VectorIndex


@dataclass(frozen=True, slots=True)
class LoadedIndex:
    """One published build opened for reading; immutable, shared by concurrent requests."""

    build_id: str
    folder: Path
    manifest: Manifest
    vectors: VectorIndex
    chunks: ChunkStore
    keyword: KeywordIndex
    sentences: SentenceVectors | None = None  # None for builds written without them

    @classmethod
    def open(cls, folder: Path, *, expected_model: str, expected_dim: int) -> LoadedIndex:
        """Open a build folder; IndexIncompatibleError if it does not fit the model or is broken."""
        index_dir = folder.parent.parent
        manifest = read_manifest(folder)
        model = manifest.model
        if model.id != expected_model or model.dim != expected_dim:
            raise IndexIncompatibleError(
                f"index was built with model {model.id} (dimension {model.dim}) but "
                f"the configured model is {expected_model} (dimension {expected_dim}); "
                + rebuild_hint(index_dir)
            )
        try:
            vectors = VectorIndex.load(folder)
            chunks = ChunkStore(folder / CHUNKS_DB)
            keyword = KeywordIndex.load(folder / KEYWORD_DIR, chunks.chunk_count)
            sentences = SentenceVectors.load(folder)
        except Exception as exc:  # faiss, sqlite and bm25s each raise their own types
            raise IndexIncompatibleError(
                f"index build {folder.name} is damaged ({exc}); " + rebuild_hint(index_dir)
            ) from exc
        if vectors.dim != expected_dim:
            raise IndexIncompatibleError(
                f"vector dimension {vectors.dim} differs from the model's {expected_dim}; "
                + rebuild_hint(index_dir)
            )
        if sentences is not None and sentences.rows != chunks.chunk_count:
            raise IndexIncompatibleError(
                f"index build {folder.name} has sentence vectors of {sentences.rows} chunks, "
                f"not {chunks.chunk_count}; " + rebuild_hint(index_dir)
            )
        return cls(manifest.build_id, folder, manifest, vectors, chunks, keyword, sentences)


def open_published(index_dir: Path, embedder: Embedder) -> LoadedIndex:
    """The published build of index_dir; IndexNotBuiltError when there is none."""
    build_id = read_pointer(index_dir)
    if build_id is None:
        raise IndexNotBuiltError(
            f"no index in {index_dir}; run `groundqa index` to build it from your seeds folder"
        )
    return LoadedIndex.open(
        build_path(index_dir, build_id), expected_model=embedder.model_id, expected_dim=embedder.dim
    )


class IndexHolder:
    """The build currently served; swapped atomically when a new build is published."""

    def __init__(self, index_dir: Path, embedder: Embedder) -> None:
        self.index_dir = index_dir
        self.embedder = embedder
        self._current: LoadedIndex | None = None
        self._lock = threading.Lock()

    @property
    def current(self) -> LoadedIndex:
        """The build to answer from; a request reads this once and keeps it to the end."""
        index = self._current
        if index is None:
            raise IndexNotBuiltError(
                f"no index in {self.index_dir}; run `groundqa index` to build it"
            )
        return index

    @property
    def loaded(self) -> bool:
        """Whether a build is being served."""
        return self._current is not None

    def refresh(self) -> bool:
        """Load the published build if it differs from the served one; True when swapped."""
        with self._lock:
            build_id = read_pointer(self.index_dir)
            if build_id is None or (self._current and self._current.build_id == build_id):
                return False
            self._current = open_published(self.index_dir, self.embedder)
            return True
