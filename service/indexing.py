"""Index builds: diff seeds/ against the published manifest, embed only new chunk text,
write a new build folder, validate it, publish it atomically and prune old builds."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import secrets
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
from tqdm import tqdm

from service.access import collection_of
from service.builds import LoadedIndex
from service.chunking import Chunker, ChunkerSettings, embedding_text
from service.config import Settings
from service.embedding import Embedder, Vectors, model_fingerprint
from service.errors import BuildInProgressError, GroundQAError, IndexWriteError
from service.ingest import SeedFile, documents_of, parse_options, parse_seed, scan_seeds
from service.keyword import KEYWORD_VERSION, KeywordIndex
from service.models import Chunk, Document, Skipped
from service.parsers.base import DEFAULT_OPTIONS, ParseError, ParseLimits, ParseOptions
from service.sentence_vectors import (
    SENTENCES_VERSION,
    offsets_of,
    sentence_texts,
    write_sentence_vectors,
)
from service.sentences import sentences_of
from service.store import (
    BUILDS,
    CHUNKS_DB,
    FORMAT_VERSION,
    KEYWORD_DIR,
    TMP_PREFIX,
    ChunkerInfo,
    ChunkStore,
    EmbeddingCache,
    FileEntry,
    Manifest,
    ModelInfo,
    build_path,
    fsync_dir,
    publish,
    published_manifest,
    read_manifest,
    read_pointer_or_none,
    write_chunk_store,
    write_manifest,
)
from service.vectors import AnnSettings, write_vectors

# Bump when chunk boundaries change for the same settings: forces a full rebuild.
CHUNKER_VERSION = 3  # 2: sections and pages (Markdown, HTML, PDF); 3: slides, sheets, rows
KEEP_BUILDS = 2
EMBED_SLICE = 1024  # texts embedded between two commits to the embedding cache
LOCK_FILE = ".lock"
CACHE_FILE = Path("cache") / "embeddings.sqlite"

Progress = Callable[[str, float], None]


def _no_progress(stage: str, fraction: float) -> None:
    """Progress sink that ignores updates."""


def index_fingerprint(settings: Settings, model_id: str) -> dict[str, Any]:
    """Everything that, when changed, invalidates all chunks and vectors."""
    return {
        "model": model_id,
        "chunk_tokens": settings.chunk_tokens,
        "chunk_overlap": settings.chunk_overlap,
        "chunker_version": CHUNKER_VERSION,
        "keyword": KEYWORD_VERSION,
        "format_version": FORMAT_VERSION,
        # Sentence vectors, and how sentences are cut: a change re-embeds no chunk (the cache
        # has them) but writes every build file again.
        "sentences": SENTENCES_VERSION if settings.sentence_vectors else None,
        # What parsers produce from the same bytes: a change re-reads every file.
        "max_sheet_rows": settings.max_sheet_rows,
        "max_unzipped_bytes": settings.max_unzipped_bytes,
        "ocr": settings.ocr,
        "ocr_languages": settings.ocr_languages,
    }


@dataclass(frozen=True, slots=True)
class BuildPlan:
    """What a build will do, file by file."""

    added: list[str]
    modified: list[str]
    deleted: list[str]
    unchanged: list[str]
    skipped: list[Skipped]
    full_reason: str | None  # why every file is re-chunked, or None for an incremental build

    @property
    def changed(self) -> bool:
        """Whether the published build differs from seeds/."""
        return bool(self.added or self.modified or self.deleted or self.full_reason)


@dataclass(frozen=True, slots=True)
class BuildReport:
    """The outcome of `groundqa index`; `as_dict` is the JSON summary."""

    build_id: str | None
    published: bool
    dry_run: bool
    files_indexed: int
    added: list[str]
    modified: list[str]
    deleted: list[str]
    unchanged: list[str]
    skipped: list[dict[str, str]]
    chunks: int
    chunks_embedded: int
    chunks_reused: int
    full_rebuild_reason: str | None
    seconds: float
    previous_build_id: str | None = None
    timings: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        return asdict(self)


def _current_fingerprint(settings: Settings) -> dict[str, Any]:
    return index_fingerprint(settings, model_fingerprint(Path(settings.model_path)))


def plan_build(
    settings: Settings,
    files: list[SeedFile],
    skipped: list[Skipped],
    full: bool,
    model_id: str | None = None,
) -> BuildPlan:
    """Diff the scanned seeds against the published manifest.

    model_id is the embedder's id; without it, the configured model folder's fingerprint.
    """
    manifest = None
    full_reason: str | None = "--full requested" if full else None
    try:
        manifest = published_manifest(settings.index_dir)
    except GroundQAError as exc:
        full_reason = full_reason or f"published build unusable: {exc}"
    if manifest is None and not full_reason:
        full_reason = "no published build"
    if manifest is not None and not full_reason:
        old = manifest.fingerprint
        new = index_fingerprint(settings, model_id) if model_id else _current_fingerprint(settings)
        diff = sorted(k for k in new.keys() | old.keys() if new.get(k) != old.get(k))
        if diff:
            full_reason = "settings changed: " + ", ".join(
                f"{k} {old.get(k)!r} -> {new.get(k)!r}" for k in diff
            )
    previous = {source: f.sha256 for source, f in manifest.files.items()} if manifest else {}
    # Files the last build could not parse count as known: unchanged, they stay skipped and
    # must not make the index look stale forever.
    for source, sha in manifest.rejected.items() if manifest else ():
        previous.setdefault(source, sha)
    current = {f.source: f.sha256 for f in files}
    added = sorted(s for s in current if s not in previous)
    deleted = sorted(s for s in previous if s not in current)
    modified = sorted(s for s in current if s in previous and previous[s] != current[s])
    unchanged = sorted(s for s in current if s in previous and previous[s] == current[s])
    return BuildPlan(added, modified, deleted, unchanged, skipped, full_reason)


def seeds_plan(settings: Settings, model_id: str | None = None) -> BuildPlan:
    """The plan a build would follow now: used to tell whether the index is stale."""
    files, skipped = scan_seeds(settings.seeds_dir, settings.max_file_bytes)
    return plan_build(settings, files, skipped, full=False, model_id=model_id)


@contextlib.contextmanager
def build_lock(index_dir: Path, *, wait: bool = False) -> Iterator[None]:
    """Hold the index's build lock; BuildInProgressError when another build has it."""
    index_dir.mkdir(parents=True, exist_ok=True)
    with open(index_dir / LOCK_FILE, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError as exc:
            raise BuildInProgressError(
                f"another build of {index_dir} is running; wait for it to finish and try again"
            ) from exc
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _clean_debris(index_dir: Path) -> None:
    """Remove folders left by builds that died before publishing."""
    builds = index_dir / BUILDS
    if builds.is_dir():
        for entry in builds.iterdir():
            if entry.name.startswith(TMP_PREFIX):
                shutil.rmtree(entry, ignore_errors=True)
    for entry in index_dir.glob(f"{TMP_PREFIX}*"):
        entry.unlink(missing_ok=True)


def _prune(index_dir: Path, keep: str, previous: str | None = None) -> None:
    """Keep the published build and the one published before it (else the newest older one);
    delete the rest, including builds that died after writing their folder but before
    publishing it (orphans: never published, so newer than the published build).

    Running servers that still read a deleted build keep working: its files stay open.
    """
    builds = index_dir / BUILDS
    if not builds.is_dir():
        return
    others = [
        e
        for e in builds.iterdir()
        if e.is_dir() and not e.name.startswith(TMP_PREFIX) and e.name != keep
    ]
    # Candidates for the one kept besides the published build: the previous published one,
    # else the newest build older than the published one. Build ids sort by creation time.
    candidates = sorted(
        (e for e in others if e.name == previous or e.name < keep),
        key=lambda e: (e.name == previous, e.name),
        reverse=True,
    )
    kept = {e.name for e in candidates[: KEEP_BUILDS - 1]}
    for old in others:
        if old.name not in kept:
            shutil.rmtree(old, ignore_errors=True)


def new_build_id() -> str:
    """Sortable, unique build id: UTC time plus random suffix."""
    return f"{datetime.now(UTC):%Y%m%dT%H%M%S%fZ}-{secrets.token_hex(3)}"


def text_key(text: str) -> str:
    """Embedding cache key of an embedded text."""
    return hashlib.sha256(text.encode()).hexdigest()


def parse_limits(settings: Settings) -> ParseLimits:
    """What one seed's parse may produce and take, from the settings."""
    return ParseLimits(max_chars=settings.max_text_chars, seconds=settings.parse_timeout)


def chunker_for(settings: Settings, embedder: Embedder) -> Chunker:
    """The chunker a build uses for an embedder (every engine chunks with this one)."""
    return Chunker(
        embedder.tokenizer,
        ChunkerSettings(
            max_tokens=embedder.max_seq_length,
            special_tokens=embedder.special_tokens,
            budget=settings.chunk_tokens,
            overlap=settings.chunk_overlap,
        ),
    )


class Engine(Protocol):
    """Where a build parses, chunks and embeds: in this process (LocalEngine) or on a Ray
    cluster (service.ray_engine.RayEngine). Planning, cache lookups, writing, validation,
    publishing and pruning stay the Builder's, identical for every engine."""

    slice_size: int  # texts embedded between two commits to the embedding cache

    def chunk(
        self, seeds: Sequence[SeedFile], reusable: dict[str, list[Chunk]]
    ) -> tuple[list[Document], dict[str, list[Chunk]], list[Skipped]]:
        """Parse every seed and chunk those without reusable chunks: documents in seed order,
        chunks by source, and the seeds that could not be parsed (in seed order)."""
        ...

    def embed(self, texts: Sequence[str]) -> Vectors:
        """One unit vector per text, in order."""
        ...

    def close(self) -> None:
        """Release what the engine started (a cluster connection, workers)."""
        ...


class LocalEngine:
    """Parses, chunks and embeds in this process."""

    slice_size = EMBED_SLICE

    def __init__(
        self,
        chunker: Chunker,
        embedder: Embedder,
        options: ParseOptions = DEFAULT_OPTIONS,
        limits: ParseLimits | None = None,
    ) -> None:
        self.chunker = chunker
        self.embedder = embedder
        self.options = options
        self.limits = limits or ParseLimits()

    def chunk(
        self, seeds: Sequence[SeedFile], reusable: dict[str, list[Chunk]]
    ) -> tuple[list[Document], dict[str, list[Chunk]], list[Skipped]]:
        """Parse every seed and chunk those without reusable chunks."""
        documents: list[Document] = []
        chunks_by_source: dict[str, list[Chunk]] = {}
        skipped: list[Skipped] = []
        for seed in seeds:
            try:
                parsed = parse_seed(seed, self.options, self.limits)
            except (ParseError, OSError) as exc:
                skipped.append(Skipped(seed.source, str(exc)))
                continue
            for doc in documents_of(parsed):
                documents.append(doc)
                chunks_by_source[doc.source] = reuse(reusable.get(doc.source), doc) or (
                    self.chunker.chunk(doc)
                )
        return documents, chunks_by_source, skipped

    def embed(self, texts: Sequence[str]) -> Vectors:
        """The embedder's vectors of texts."""
        return self.embedder.embed(list(texts))

    def close(self) -> None:
        """Nothing to release."""


def reuse(chunks: list[Chunk] | None, doc: Document) -> list[Chunk] | None:
    """The previous build's chunks of doc when they still slice its text exactly (OCR output
    or a parser can change for the same bytes); None when doc must be chunked again."""
    if not chunks:
        return None
    text = doc.text
    if all(text[c.char_start : c.char_end] == c.text for c in chunks):
        return chunks
    return None


@dataclass(frozen=True, slots=True)
class Scan:
    """The plan stage: the seeds as found, the plan against the published build."""

    files: list[SeedFile]
    plan: BuildPlan
    previous_id: str | None


@dataclass(frozen=True, slots=True)
class Chunked:
    """The chunk stage: documents and chunks, stored in the new build's temporary folder."""

    build_id: str
    folder: Path
    documents: list[Document]
    chunks_by_source: dict[str, list[Chunk]]
    rows: list[Chunk]  # row order: row = vector id
    skipped: list[Skipped]  # the plan's and those that could not be parsed
    rejected: dict[str, str]  # source -> sha256 of the files that could not be parsed


@dataclass(frozen=True, slots=True)
class Embedded:
    """The embed stage: a vector per chunk row and per sentence of each row (none when the
    settings say so), and how many chunk texts were embedded (not cached)."""

    vectors: Vectors
    embedded: int
    sentence_vectors: Vectors | None = None
    sentence_offsets: npt.NDArray[np.int64] | None = None
    sentence_terms: tuple[frozenset[str], ...] = ()  # keyword terms of each sentence, in order


class _Timer:
    """Seconds per stage, rounded as the report shows them."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time the block as stage name."""
        t0 = time.perf_counter()
        yield
        self.seconds[name] = round(time.perf_counter() - t0, 3)


class Builder:
    """Runs builds of one index folder with one embedder, parsing, chunking and embedding
    with an engine (this process unless told otherwise)."""

    def __init__(
        self, settings: Settings, embedder: Embedder, engine: Engine | None = None
    ) -> None:
        self.settings = settings
        self.embedder = embedder
        self.chunker = chunker_for(settings, embedder)
        self.engine: Engine = engine or LocalEngine(
            self.chunker, embedder, parse_options(settings), parse_limits(settings)
        )

    def build(
        self,
        *,
        full: bool = False,
        dry_run: bool = False,
        show_progress: bool = False,
        progress: Progress = _no_progress,
        wait: bool = False,
    ) -> BuildReport:
        """Build seeds/ into a new published build (or only plan it when dry_run);
        IndexWriteError when the index folder cannot be written (read-only, disk full)."""
        started = time.perf_counter()
        if dry_run:
            progress("scanning", 0.0)
            scan = self._plan(full)
            return _report(scan, started, dry_run=True)
        index_dir = self.settings.index_dir
        try:
            return self._build(full, show_progress, progress, wait, started)
        except OSError as exc:
            where = exc.filename or index_dir
            raise IndexWriteError(
                f"cannot write the index in {index_dir} ({exc.strerror or exc}: {where}); "
                "free disk space or make the folder writable, then run `groundqa index` again"
            ) from exc

    def _build(
        self, full: bool, show_progress: bool, progress: Progress, wait: bool, started: float
    ) -> BuildReport:
        index_dir = self.settings.index_dir
        with build_lock(index_dir, wait=wait):
            # Plan under the lock: a build that waited must diff against what the build it
            # waited for published.
            _clean_debris(index_dir)
            progress("scanning", 0.0)
            scan = self._plan(full)
            if not scan.plan.changed and scan.previous_id is not None:
                # Nothing to do: the published build already is this exact function of seeds/.
                # Folders of builds killed between writing and publishing still go.
                _prune(index_dir, keep=scan.previous_id)
                progress("published", 1.0)  # the published build is already this one
                return _up_to_date_report(scan, published_manifest(index_dir), started)
            timer = _Timer()
            progress("chunking", 0.0)
            with timer.stage("chunk"):
                chunked = self._chunk(scan)
            progress("embedding", 0.1)
            with timer.stage("embed"):
                embedded = self._embed(
                    chunked.rows,
                    full=full,
                    show_progress=show_progress,
                    on_progress=lambda done, total: progress("embedding", 0.1 + 0.7 * done / total),
                )
            progress("writing", 0.8)
            with timer.stage("write"):
                self._write(scan, chunked, embedded)
            progress("validating", 0.9)
            validate_build(chunked.folder, self.embedder)
            self._publish(chunked)
            _prune(index_dir, keep=chunked.build_id, previous=scan.previous_id)
            progress("published", 1.0)
            return _published_report(scan, chunked, embedded, timer.seconds, started)

    def _plan(self, full: bool) -> Scan:
        """Stage plan: scan seeds/ and diff it against the published build."""
        files, skipped = scan_seeds(self.settings.seeds_dir, self.settings.max_file_bytes)
        plan = plan_build(self.settings, files, skipped, full, self.embedder.model_id)
        return Scan(files, plan, read_pointer_or_none(self.settings.index_dir))

    def _chunk(self, scan: Scan) -> Chunked:
        """Stage chunk: parse and chunk the seeds (reusing unchanged files' chunks) into the
        chunk store of a new temporary build folder."""
        reusable = self._reusable_chunks(scan.plan, scan.previous_id)
        documents, chunks_by_source, unparsed = self.engine.chunk(scan.files, reusable)
        sha_by_source = {f.source: f.sha256 for f in scan.files}
        build_id = new_build_id()
        folder = self.settings.index_dir / BUILDS / f"{TMP_PREFIX}{build_id}"
        folder.mkdir(parents=True)
        rows = write_chunk_store(folder, documents, chunks_by_source)
        return Chunked(
            build_id=build_id,
            folder=folder,
            documents=documents,
            chunks_by_source=chunks_by_source,
            rows=rows,
            # Files indexed in part (rows over the limit, pages not OCRed, attachments) say so.
            skipped=list(scan.plan.skipped) + unparsed + [s for d in documents for s in d.omitted],
            rejected={s.source: sha_by_source[s.source] for s in unparsed},
        )

    def _write(self, scan: Scan, chunked: Chunked, embedded: Embedded) -> None:
        """Stage write: vectors, keyword index, sentence vectors with their term ids and,
        last, the manifest."""
        folder = chunked.folder
        write_vectors(folder, embedded.vectors, AnnSettings.of(self.settings))
        keyword = KeywordIndex.build([c.text for c in chunked.rows])
        keyword.save(folder / KEYWORD_DIR)
        if embedded.sentence_vectors is not None and embedded.sentence_offsets is not None:
            terms = [keyword.term_ids(sorted(t)) for t in embedded.sentence_terms]
            write_sentence_vectors(
                folder, embedded.sentence_offsets, embedded.sentence_vectors, terms
            )
        seeds_by_source = {f.source: f for f in scan.files}
        chunker = self.chunker.settings
        manifest = Manifest(
            build_id=chunked.build_id,
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
            model=ModelInfo(
                id=self.embedder.model_id,
                dim=self.embedder.dim,
                max_seq_length=self.embedder.max_seq_length,
            ),
            chunker=ChunkerInfo(
                chunk_tokens=chunker.budget,
                chunk_overlap=chunker.overlap,
                text_budget=chunker.text_budget,
                version=CHUNKER_VERSION,
            ),
            fingerprint=index_fingerprint(self.settings, self.embedder.model_id),
            files={
                d.source: FileEntry(
                    sha256=d.sha256,
                    size=seeds_by_source[d.source].size,
                    chunks=len(chunked.chunks_by_source[d.source]),
                    title=d.title,
                    collection=collection_of(d.source),
                )
                for d in chunked.documents
                if d.source in seeds_by_source  # attachments are no seed files of their own
            },
            skipped=tuple(chunked.skipped),
            rejected=chunked.rejected,
            documents=len(chunked.documents),
            chunks=len(chunked.rows),
            previous_build_id=scan.previous_id,
            rebuild_reason=scan.plan.full_reason,
        )
        write_manifest(folder, manifest)

    def _publish(self, chunked: Chunked) -> None:
        """Stage publish: move the validated folder into place, then point CURRENT at it."""
        index_dir = self.settings.index_dir
        final = build_path(index_dir, chunked.build_id)
        chunked.folder.rename(final)
        fsync_dir(final.parent)
        publish(index_dir, chunked.build_id)

    def _reusable_chunks(self, plan: BuildPlan, previous_id: str | None) -> dict[str, list[Chunk]]:
        """Chunks of unchanged files from the published build, when its settings still hold."""
        if plan.full_reason or previous_id is None or not plan.unchanged:
            return {}
        store = ChunkStore(build_path(self.settings.index_dir, previous_id) / CHUNKS_DB)
        return {source: list(store.iter_chunks(source)) for source in plan.unchanged}

    def _embed(
        self,
        chunks: list[Chunk],
        *,
        full: bool,
        show_progress: bool,
        on_progress: Callable[[int, int], None] = lambda done, total: None,
    ) -> Embedded:
        """Stage embed: vectors for chunks in order, and for the sentences of each when the
        settings ask for them, from the cache where possible."""
        cache = EmbeddingCache(self.settings.index_dir / CACHE_FILE)
        model = self.embedder.model_id
        texts = [embedding_text(c) for c in chunks]
        sentences: list[list[str]] = []
        terms: list[frozenset[str]] = []  # of each sentence, for the write stage
        if self.settings.sentence_vectors:
            for chunk in chunks:
                sentences.append(sentence_texts(chunk))
                # Just split by sentence_texts: its cached split, not a second one.
                terms.extend(sentences_of(chunk.text, chunk.title).terms)
        keys = [text_key(t) for t in texts]
        sentence_keys = [text_key(t) for group in sentences for t in group]
        wanted = keys + sentence_keys
        found = {} if full else cache.get(model, wanted, self.embedder.dim)
        missing: dict[str, str] = {}
        for key, text in zip(wanted, [*texts, *(t for g in sentences for t in g)], strict=True):
            if key not in found:
                missing.setdefault(key, text)
        # In slices committed to the cache one by one: a build that dies (or is killed)
        # half-way keeps what it embedded, and the next build resumes from there.
        order = list(missing)
        with tqdm(
            total=len(order),
            desc="Embedding",
            unit="text",
            disable=not show_progress,
            smoothing=0.1,
        ) as bar:
            step = self.engine.slice_size
            for start in range(0, len(order), step):
                part = order[start : start + step]
                fresh = self.engine.embed([missing[k] for k in part])
                new = dict(zip(part, fresh, strict=True))
                cache.put(model, new)
                found.update(new)
                bar.update(len(part))
                on_progress(start + len(part), len(order))
        vectors = _stack([found[k] for k in keys], self.embedder.dim)
        embedded = len({k for k in keys if k in missing})
        if not self.settings.sentence_vectors:
            return Embedded(vectors, embedded)
        return Embedded(
            vectors,
            embedded,
            sentence_vectors=_stack([found[k] for k in sentence_keys], self.embedder.dim),
            sentence_offsets=offsets_of([len(g) for g in sentences]),
            sentence_terms=tuple(terms),
        )


def _stack(rows: Sequence[npt.NDArray[np.float32]], dim: int) -> Vectors:
    """Vectors as one float32 matrix of shape (len(rows), dim)."""
    return np.asarray(rows, dtype=np.float32).reshape(len(rows), dim)


def _report(
    scan: Scan,
    started: float,
    *,
    build_id: str | None = None,
    published: bool = False,
    dry_run: bool = False,
    files_indexed: int | None = None,
    skipped: Sequence[Skipped] | None = None,
    chunks: int = 0,
    embedded: int = 0,
    reused: int = 0,
    timings: dict[str, float] | None = None,
) -> BuildReport:
    """The report of a build that followed scan (a dry run unless told otherwise)."""
    plan = scan.plan
    return BuildReport(
        build_id=build_id,
        published=published,
        dry_run=dry_run,
        files_indexed=len(scan.files) if files_indexed is None else files_indexed,
        added=plan.added,
        modified=plan.modified,
        deleted=plan.deleted,
        unchanged=plan.unchanged,
        skipped=[asdict(s) for s in (plan.skipped if skipped is None else skipped)],
        chunks=chunks,
        chunks_embedded=embedded,
        chunks_reused=reused,
        full_rebuild_reason=plan.full_reason,
        seconds=round(time.perf_counter() - started, 3),
        previous_build_id=scan.previous_id,
        timings=timings or {},
    )


def _up_to_date_report(scan: Scan, manifest: Manifest | None, started: float) -> BuildReport:
    """The report of a build that found the published one already current."""
    chunks = manifest.chunks if manifest else 0
    return _report(
        scan,
        started,
        build_id=scan.previous_id,
        skipped=manifest.skipped if manifest else None,
        chunks=chunks,
        reused=chunks,
    )


def _published_report(
    scan: Scan, chunked: Chunked, embedded: Embedded, timings: dict[str, float], started: float
) -> BuildReport:
    """The report of a build that published chunked."""
    return _report(
        scan,
        started,
        build_id=chunked.build_id,
        published=True,
        files_indexed=len(chunked.documents),
        skipped=chunked.skipped,
        chunks=len(chunked.rows),
        embedded=embedded.embedded,
        reused=len(chunked.rows) - embedded.embedded,
        timings=timings,
    )


def validate_build(folder: Path, embedder: Embedder) -> None:
    """Stage validate: check a written build before publishing: counts agree, it loads, a
    smoke query runs."""
    manifest = read_manifest(folder)
    index = LoadedIndex.open(folder, expected_model=embedder.model_id, expected_dim=embedder.dim)
    chunks = manifest.chunks
    if index.vectors.count != chunks or index.chunks.chunk_count != chunks:
        raise GroundQAError(
            f"build validation failed: {index.vectors.count} vectors, "
            f"{index.chunks.chunk_count} chunks, manifest says {chunks}"
        )
    if len(index.chunks.documents) != manifest.documents:
        raise GroundQAError("build validation failed: document count differs from manifest")
    if chunks:
        probe = index.chunks.chunks([0])[0]
        vector = embedder.embed([embedding_text(probe)])
        rows, _ = index.vectors.nearest(vector[0], 1)
        if not len(rows):
            raise GroundQAError("build validation failed: smoke query returned nothing")
