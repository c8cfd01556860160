"""Index storage: one immutable folder per build (vectors, keyword index, chunk store, manifest),
a pointer file naming the published build, and the embedding cache shared by builds."""

from __future__ import annotations

import contextlib
import fnmatch
import json
import math
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import numpy.typing as npt

from service.errors import IndexIncompatibleError
from service.models import Chunk, Document

FORMAT_VERSION = 1
POINTER = "CURRENT"
BUILDS = "builds"
TMP_PREFIX = ".tmp-"
MANIFEST = "manifest.json"
VECTORS = "vectors.faiss"
CHUNKS_DB = "chunks.sqlite"
KEYWORD_DIR = "bm25"

_SCHEMA = """
CREATE TABLE documents (
    source TEXT PRIMARY KEY, title TEXT NOT NULL, sha256 TEXT NOT NULL, size INTEGER NOT NULL,
    text TEXT NOT NULL, row_start INTEGER NOT NULL, row_end INTEGER NOT NULL
);
CREATE TABLE chunks (
    row INTEGER PRIMARY KEY, chunk_id TEXT NOT NULL UNIQUE, source TEXT NOT NULL,
    title TEXT NOT NULL, context TEXT NOT NULL, text TEXT NOT NULL,
    char_start INTEGER NOT NULL, char_end INTEGER NOT NULL,
    line_start INTEGER NOT NULL, line_end INTEGER NOT NULL,
    section TEXT NOT NULL DEFAULT '', page_start INTEGER, page_end INTEGER
);
"""
# In the order of the Chunk constructor.
_CHUNK_COLUMNS = (
    "chunk_id, source, title, text, char_start, char_end, line_start, line_end, context, "
    "section, page_start, page_end"
)
# Builds written before sections and pages have no such columns: read them as absent.
_LEGACY_CHUNK_COLUMNS = _CHUNK_COLUMNS.replace(
    "section, page_start, page_end", "'' AS section, NULL AS page_start, NULL AS page_end"
)


def rebuild_hint(index_dir: Path) -> str:
    """The command that rebuilds the index, for error messages."""
    return f"run `groundqa index --full --index {index_dir}` to rebuild it"


@dataclass(frozen=True, slots=True)
class DocumentInfo:
    """An indexed source as listed by the API, with the rows its chunks occupy."""

    source: str
    title: str
    sha256: str
    size: int
    row_start: int
    row_end: int

    @property
    def chunks(self) -> int:
        """How many chunks the document has."""
        return self.row_end - self.row_start


def fsync_dir(path: Path) -> None:
    """Make a rename inside path durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes) -> None:
    """Replace path with data so readers see the old or the new content, never a mix."""
    tmp = path.with_name(f"{TMP_PREFIX}{path.name}.{os.getpid()}")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def read_pointer(index_dir: Path) -> str | None:
    """The published build id, or None when nothing was ever published."""
    try:
        build_id = (index_dir / POINTER).read_text().strip()
    except FileNotFoundError:
        return None
    return build_id or None


def publish(index_dir: Path, build_id: str) -> None:
    """Atomically make build_id the published build."""
    write_atomic(index_dir / POINTER, f"{build_id}\n".encode())


def build_path(index_dir: Path, build_id: str) -> Path:
    """Folder of a published build."""
    return index_dir / BUILDS / build_id


def read_manifest(folder: Path) -> dict[str, Any]:
    """The manifest of a build folder; IndexIncompatibleError when missing or damaged."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        raise IndexIncompatibleError(
            f"index build {folder} is damaged (manifest unreadable: {exc}); "
            + rebuild_hint(folder.parent.parent)
        ) from exc
    if not isinstance(manifest, dict) or manifest.get("format_version") != FORMAT_VERSION:
        raise IndexIncompatibleError(
            f"index build {folder} has an unsupported format; " + rebuild_hint(folder.parent.parent)
        )
    return manifest


def published_manifest(index_dir: Path) -> dict[str, Any] | None:
    """The manifest of the published build, or None when there is none."""
    build_id = read_pointer(index_dir)
    if build_id is None:
        return None
    return read_manifest(build_path(index_dir, build_id))


# --- writing ---------------------------------------------------------------------------------


def write_chunk_store(
    folder: Path, documents: Sequence[Document], chunks_by_source: dict[str, list[Chunk]]
) -> list[Chunk]:
    """Write documents and chunks; returns chunks in row order (row = vector id)."""
    ordered: list[Chunk] = []
    con = sqlite3.connect(folder / CHUNKS_DB)
    try:
        con.executescript(_SCHEMA)
        for doc in documents:
            chunks = chunks_by_source[doc.source]
            row_start = len(ordered)
            ordered.extend(chunks)
            con.execute(
                "INSERT INTO documents VALUES (?, ?, ?, ?, ?, ?, ?)",
                (doc.source, doc.title, doc.sha256, doc.size, doc.text, row_start, len(ordered)),
            )
        con.executemany(
            f"INSERT INTO chunks (row, {_CHUNK_COLUMNS}) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                (
                    row,
                    c.chunk_id,
                    c.source,
                    c.title,
                    c.text,
                    c.char_start,
                    c.char_end,
                    c.line_start,
                    c.line_end,
                    c.context,
                    c.section,
                    c.page_start,
                    c.page_end,
                )
                for row, c in enumerate(ordered)
            ),
        )
        con.commit()
    finally:
        con.close()
    return ordered


def ivf_lists(count: int) -> int:
    """IVF lists for count vectors: 4 x sqrt(count), with at least 39 training points each
    (faiss's k-means minimum)."""
    return max(1, min(int(4 * math.sqrt(count)), count // 39))


def vector_index(dim: int, count: int, settings: Any) -> faiss.Index:
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


def write_vectors(folder: Path, vectors: npt.NDArray[np.float32], settings: Any) -> None:
    """Write an inner-product index of the settings' type whose ids are the chunk rows (every
    index type numbers vectors in the order they are added)."""
    index = vector_index(vectors.shape[1], len(vectors), settings)
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


def write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    """Write the manifest last: a build folder without one is debris."""
    write_atomic(folder / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True).encode())


# --- reading ---------------------------------------------------------------------------------


class ChunkStore:
    """Read access to a build's chunks and documents; safe to share between threads."""

    def __init__(self, path: Path) -> None:
        self.path = path
        # Read-only and immutable: a published build never changes, so sqlite may skip locking.
        # One connection, opened now and shared by every thread: it holds the file open, so a
        # build pruned while requests still read it stays readable (a connection opened later,
        # by a thread that had none yet, would fail once the folder is gone).
        uri = f"file:{path}?mode=ro&immutable=1"
        self._con = sqlite3.connect(uri, uri=True, check_same_thread=False)
        self._lock = threading.Lock()
        rows = self._fetch(
            "SELECT source, title, sha256, size, row_start, row_end FROM documents ORDER BY rowid"
        )
        self.documents: dict[str, DocumentInfo] = {r[0]: DocumentInfo(*r) for r in rows}
        ((self.chunk_count,),) = self._fetch("SELECT COUNT(*) FROM chunks")
        names = {r[1] for r in self._fetch("PRAGMA table_info(chunks)")}
        self._columns = _CHUNK_COLUMNS if "section" in names else _LEGACY_CHUNK_COLUMNS

    def _fetch(self, sql: str, params: Sequence[object] = ()) -> list[Any]:
        """All rows of one query on the shared connection."""
        with self._lock:
            return self._con.execute(sql, params).fetchall()

    def chunks(self, rows: Sequence[int]) -> dict[int, Chunk]:
        """Chunks by row for the given rows."""
        if not rows:
            return {}
        marks = ",".join("?" * len(rows))
        found = self._fetch(
            f"SELECT row, {self._columns} FROM chunks WHERE row IN ({marks})",
            [int(r) for r in rows],
        )
        return {row[0]: Chunk(*row[1:]) for row in found}

    def iter_chunks(self, source: str) -> Iterator[Chunk]:
        """A document's chunks in order."""
        document = self.documents.get(source)
        if document is None:
            return
        # A document's chunks are one run of rows: a primary-key range, where a lookup by
        # source would scan the table (an incremental build asks for every unchanged file).
        found = self._fetch(
            f"SELECT {self._columns} FROM chunks WHERE row >= ? AND row < ? ORDER BY row",
            (document.row_start, document.row_end),
        )
        for row in found:
            yield Chunk(*row)

    def text(self, source: str) -> str | None:
        """The indexed text of a document, or None when it is not indexed."""
        found = self._fetch("SELECT text FROM documents WHERE source = ?", (source,))
        return str(found[0][0]) if found else None

    def rows_matching(self, patterns: Iterable[str]) -> npt.NDArray[np.int64]:
        """Rows of the chunks of every document whose source matches one of the glob patterns."""
        pats = list(patterns)
        ranges = [
            np.arange(d.row_start, d.row_end, dtype=np.int64)
            for d in self.documents.values()
            if any(fnmatch.fnmatchcase(d.source, p) for p in pats)
        ]
        return np.concatenate(ranges) if ranges else np.zeros(0, dtype=np.int64)


def load_vectors(folder: Path, *, mmap: bool = True) -> faiss.Index:
    """The build's vector index, memory-mapped read-only where the index type allows.

    IO_FLAG_MMAP alone maps only IVF lists: flat and HNSW vectors would be read into private
    memory. IO_FLAG_MMAP_IFC (recent faiss; older ones lack it and copy) maps their vectors too,
    so every process serving a build shares one copy in the page cache."""
    ifc = getattr(faiss, "IO_FLAG_MMAP_IFC", 0)
    flags = faiss.IO_FLAG_MMAP | ifc | faiss.IO_FLAG_READ_ONLY if mmap else 0
    try:
        return faiss.read_index(str(folder / VECTORS), flags)
    except RuntimeError:
        if not mmap:
            raise
        return faiss.read_index(str(folder / VECTORS))


@contextlib.contextmanager
def open_writable(path: Path) -> Iterator[sqlite3.Connection]:
    """A connection committed on success and always closed."""
    con = sqlite3.connect(path)
    try:
        yield con
        con.commit()
    finally:
        con.close()


class EmbeddingCache:
    """Vectors by (model id, text hash), kept beside the builds so unchanged text is never
    embedded twice, whatever file it moves to."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        with open_writable(path) as con:
            con.execute("PRAGMA journal_mode=WAL")
            con.execute(
                "CREATE TABLE IF NOT EXISTS vectors (model TEXT NOT NULL, key TEXT NOT NULL,"
                " vector BLOB NOT NULL, PRIMARY KEY (model, key)) WITHOUT ROWID"
            )

    def get(self, model: str, keys: Sequence[str], dim: int) -> dict[str, npt.NDArray[np.float32]]:
        """The cached vectors among keys."""
        found: dict[str, npt.NDArray[np.float32]] = {}
        with open_writable(self.path) as con:
            for i in range(0, len(keys), 500):
                part = list(keys[i : i + 500])
                marks = ",".join("?" * len(part))
                for key, blob in con.execute(
                    f"SELECT key, vector FROM vectors WHERE model = ? AND key IN ({marks})",
                    [model, *part],
                ):
                    vector = np.frombuffer(blob, dtype=np.float32)
                    if vector.shape == (dim,):
                        found[key] = vector
        return found

    def put(self, model: str, items: dict[str, npt.NDArray[np.float32]]) -> None:
        """Store vectors by key."""
        with open_writable(self.path) as con:
            con.executemany(
                "INSERT OR REPLACE INTO vectors VALUES (?, ?, ?)",
                (
                    (model, key, np.asarray(v, dtype=np.float32).tobytes())
                    for key, v in items.items()
                ),
            )
