"""Index storage: one immutable folder per build (vectors, written by service.vectors; keyword
index; chunk store; manifest), a pointer file naming the published build, and the embedding
cache shared by builds."""

from __future__ import annotations

import contextlib
import fnmatch
import json
import logging
import os
import re
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from service.access import EVERYTHING, Scope, collection_of
from service.errors import IndexIncompatibleError, PointerCorruptError
from service.models import Chunk, Document, Skipped

log = logging.getLogger("groundqa")

FORMAT_VERSION = 2  # 2: each document's collection
POINTER = "CURRENT"
BUILDS = "builds"
TMP_PREFIX = ".tmp-"
MANIFEST = "manifest.json"
CHUNKS_DB = "chunks.sqlite"
KEYWORD_DIR = "bm25"

_SCHEMA = """
CREATE TABLE documents (
    source TEXT PRIMARY KEY, title TEXT NOT NULL, sha256 TEXT NOT NULL, size INTEGER NOT NULL,
    text TEXT NOT NULL, row_start INTEGER NOT NULL, row_end INTEGER NOT NULL,
    collection TEXT NOT NULL
);
CREATE TABLE chunks (
    row INTEGER PRIMARY KEY, chunk_id TEXT NOT NULL UNIQUE, source TEXT NOT NULL,
    title TEXT NOT NULL, context TEXT NOT NULL, text TEXT NOT NULL,
    char_start INTEGER NOT NULL, char_end INTEGER NOT NULL,
    line_start INTEGER NOT NULL, line_end INTEGER NOT NULL,
    section TEXT NOT NULL DEFAULT '', page_start INTEGER, page_end INTEGER,
    slide INTEGER, sheet TEXT NOT NULL DEFAULT '', row_start INTEGER, row_end INTEGER
);
"""
# In the order of the Chunk constructor.
_CHUNK_COLUMNS = (
    "chunk_id, source, title, text, char_start, char_end, line_start, line_end, context, "
    "section, page_start, page_end, slide, sheet, row_start, row_end"
)
# Builds written before slides and rows existed read those columns as absent.
_CHUNK_COLUMNS_V2 = _CHUNK_COLUMNS.replace(
    "slide, sheet, row_start, row_end", "NULL, '', NULL, NULL"
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
    collection: str

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


# What publish writes: one folder name, never a path (CURRENT names a build inside builds/).
_BUILD_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def read_pointer(index_dir: Path) -> str | None:
    """The published build id, or None when nothing was ever published; PointerCorruptError
    when CURRENT holds anything but the name of a folder inside the index's builds/."""
    try:
        raw = (index_dir / POINTER).read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise PointerCorruptError(
            f"cannot read {index_dir / POINTER} ({exc.strerror or exc}); " + rebuild_hint(index_dir)
        ) from exc
    try:
        build_id = raw.decode("ascii").strip()
    except UnicodeDecodeError:
        build_id = None
    if build_id == "":
        return None
    if build_id is None or not _BUILD_ID.fullmatch(build_id) or build_id.startswith(TMP_PREFIX):
        shown = raw[:80].decode("ascii", "backslashreplace").strip()
        raise PointerCorruptError(
            f"{index_dir / POINTER} does not name a build in {index_dir / BUILDS} "
            f"({shown!r}); the next `groundqa index` repairs it"
        )
    return build_id


def read_pointer_or_none(index_dir: Path) -> str | None:
    """The published build id, with a corrupt pointer read as none (builders repair it)."""
    try:
        return read_pointer(index_dir)
    except PointerCorruptError as exc:
        log.warning("%s; building as if nothing was published", exc)
        return None


def publish(index_dir: Path, build_id: str) -> None:
    """Atomically make build_id the published build."""
    write_atomic(index_dir / POINTER, f"{build_id}\n".encode())


def build_path(index_dir: Path, build_id: str) -> Path:
    """Folder of a published build."""
    return index_dir / BUILDS / build_id


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """The encoder a build's vectors come from."""

    id: str
    dim: int
    max_seq_length: int


@dataclass(frozen=True, slots=True)
class ChunkerInfo:
    """How a build's documents were windowed."""

    chunk_tokens: int
    chunk_overlap: int
    text_budget: int
    version: int


@dataclass(frozen=True, slots=True)
class FileEntry:
    """One indexed seed file as the manifest records it."""

    sha256: str
    size: int
    chunks: int
    title: str
    collection: str


@dataclass(frozen=True, slots=True)
class Manifest:
    """What a build holds and how it was made; `manifest.json` of its folder."""

    build_id: str
    created_at: str  # ISO 8601, UTC, seconds
    model: ModelInfo
    chunker: ChunkerInfo
    fingerprint: Mapping[str, object]  # everything that, when changed, forces a full rebuild
    files: Mapping[str, FileEntry]
    skipped: tuple[Skipped, ...]
    rejected: Mapping[str, str]  # source -> sha256 of files that could not be parsed
    documents: int
    chunks: int
    previous_build_id: str | None
    rebuild_reason: str | None

    def to_json(self) -> dict[str, Any]:
        """The manifest as its JSON file holds it."""
        return {
            "format_version": FORMAT_VERSION,
            "build_id": self.build_id,
            "created_at": self.created_at,
            "model": asdict(self.model),
            "chunker": asdict(self.chunker),
            "fingerprint": dict(self.fingerprint),
            "files": {source: asdict(entry) for source, entry in self.files.items()},
            "skipped": [asdict(s) for s in self.skipped],
            "rejected": dict(self.rejected),
            "counts": {"documents": self.documents, "chunks": self.chunks},
            "previous_build_id": self.previous_build_id,
            "rebuild_reason": self.rebuild_reason,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Manifest:
        """The manifest of a parsed JSON file; KeyError, TypeError or ValueError when malformed."""
        return cls(
            build_id=str(data["build_id"]),
            created_at=str(data["created_at"]),
            model=ModelInfo(**data["model"]),
            chunker=ChunkerInfo(**data["chunker"]),
            fingerprint=dict(data["fingerprint"]),
            files={source: FileEntry(**entry) for source, entry in data["files"].items()},
            skipped=tuple(Skipped(**s) for s in data["skipped"]),
            rejected=dict(data["rejected"]),
            documents=int(data["counts"]["documents"]),
            chunks=int(data["counts"]["chunks"]),
            previous_build_id=data["previous_build_id"],
            rebuild_reason=data["rebuild_reason"],
        )


def read_manifest(folder: Path) -> Manifest:
    """The manifest of a build folder; IndexIncompatibleError when missing or damaged."""
    try:
        data = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        raise IndexIncompatibleError(
            f"index build {folder} is damaged (manifest unreadable: {exc}); "
            + rebuild_hint(folder.parent.parent)
        ) from exc
    if not isinstance(data, dict) or data.get("format_version") != FORMAT_VERSION:
        raise IndexIncompatibleError(
            f"index build {folder} has an unsupported format; " + rebuild_hint(folder.parent.parent)
        )
    try:
        return Manifest.from_json(data)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise IndexIncompatibleError(
            f"index build {folder} is damaged (manifest malformed: {exc!r}); "
            + rebuild_hint(folder.parent.parent)
        ) from exc


def write_manifest(folder: Path, manifest: Manifest) -> None:
    """Write the manifest last: a build folder without one is debris."""
    write_atomic(
        folder / MANIFEST, json.dumps(manifest.to_json(), indent=2, sort_keys=True).encode()
    )


def published_manifest(index_dir: Path) -> Manifest | None:
    """The manifest of the published build, or None when there is none (or CURRENT is
    corrupt: the next build repairs it)."""
    build_id = read_pointer_or_none(index_dir)
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
                "INSERT INTO documents VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    doc.source,
                    doc.title,
                    doc.sha256,
                    doc.size,
                    doc.text,
                    row_start,
                    len(ordered),
                    collection_of(doc.source),
                ),
            )
        con.executemany(
            f"INSERT INTO chunks (row, {_CHUNK_COLUMNS}) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
                    c.slide,
                    c.sheet,
                    c.row_start,
                    c.row_end,
                )
                for row, c in enumerate(ordered)
            ),
        )
        con.commit()
    finally:
        con.close()
    return ordered


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
            "SELECT source, title, sha256, size, row_start, row_end, collection FROM documents "
            "ORDER BY rowid"
        )
        self.documents: dict[str, DocumentInfo] = {r[0]: DocumentInfo(*r) for r in rows}
        ((self.chunk_count,),) = self._fetch("SELECT COUNT(*) FROM chunks")
        names = {r[1] for r in self._fetch("PRAGMA table_info(chunks)")}
        self._columns = _CHUNK_COLUMNS if "slide" in names else _CHUNK_COLUMNS_V2

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

    def visible(self, scope: Scope) -> list[DocumentInfo]:
        """The documents the scope may see, in build order."""
        return [d for d in self.documents.values() if scope.allows(d.source, d.collection)]

    def document(self, source: str, scope: Scope) -> DocumentInfo | None:
        """The document of source if the scope may see it: None otherwise, exactly as for a
        source that is not indexed, so the two cannot be told apart."""
        info = self.documents.get(source)
        return info if info is not None and scope.allows(info.source, info.collection) else None

    def collections(self, scope: Scope) -> dict[str, int]:
        """Document counts of the collections the scope sees documents of, by name."""
        counts: dict[str, int] = {}
        for d in self.visible(scope):
            counts[d.collection] = counts.get(d.collection, 0) + 1
        return dict(sorted(counts.items()))

    def rows_matching(
        self, patterns: Iterable[str] | None, scope: Scope = EVERYTHING
    ) -> npt.NDArray[np.int64] | None:
        """Rows of the chunks of every document the scope sees whose source matches one of the
        glob patterns (any source when None); None when nothing is filtered out."""
        # Compiled here, not through fnmatch's cache: that one keeps 32,768 patterns, and
        # patterns come from anonymous requests.
        pats = (
            [re.compile(fnmatch.translate(p), re.DOTALL) for p in dict.fromkeys(patterns)]
            if patterns
            else None
        )
        if pats is None and scope.unrestricted:
            return None
        ranges = [
            np.arange(d.row_start, d.row_end, dtype=np.int64)
            for d in self.visible(scope)
            if pats is None or any(p.match(d.source) for p in pats)
        ]
        return np.concatenate(ranges) if ranges else np.zeros(0, dtype=np.int64)


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
