"""Incremental, atomic builds: what each build embeds, publishes, keeps and refuses."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from service.builds import IndexHolder, LoadedIndex, open_published
from service.chunking import embedding_text
from service.cli import summary_text
from service.config import Mode, Settings
from service.errors import BuildInProgressError
from service.indexing import Builder, BuildReport, build_lock
from service.keyword import tokenize
from service.search import Searcher
from service.sentence_vectors import FILES as SENTENCE_FILES
from service.sentence_vectors import sentence_texts
from service.store import (
    BUILDS,
    CHUNKS_DB,
    MANIFEST,
    POINTER,
    build_path,
    read_manifest,
    read_pointer,
)
from service.vectors import VECTORS
from tests.conftest import TEN_PIECE_SENTENCES, FakeEmbedder, WriteSeed

# Ten word pieces each: with chunk_tokens=32 and the one-token title "Notes", a chunk holds the
# title line plus two paragraphs or three paragraphs, and shares its last one with the next.
P = TEN_PIECE_SENTENCES
NOTES = "Notes\n\n" + "\n\n".join(P) + "\n"
NOTES_CHUNKS = [
    "Notes\n\n" + "\n\n".join(P[0:3]),
    "\n\n".join(P[2:5]),
    "\n\n".join(P[4:6]),
]
ZEBRA = "Zebras\n\nZebras quagga okapi graze on the savanna.\n"
ZEBRA_CHUNKS = ["Zebras\n\nZebras quagga okapi graze on the savanna."]


def embedded_by_build(fake: FakeEmbedder, index_dir: Path, *, sentences: bool = False) -> list[str]:
    """Chunk texts a publishing build embedded (or, with `sentences`, the texts of their
    sentences), without validation's smoke query (its last call, which re-embeds row 0 of the
    new build); the call log is then cleared."""
    store = published(index_dir, fake).chunks
    chunks = store.chunks(list(range(store.chunk_count))).values()
    assert fake.calls[-1] == [embedding_text(store.chunks([0])[0])]
    texts = [t for call in fake.calls[:-1] for t in call]
    fake.calls.clear()
    # A one-sentence chunk embeds the same text as its sentence: embedded once, it is both.
    wanted = (
        {t for c in chunks for t in sentence_texts(c)}
        if sentences
        else {embedding_text(c) for c in chunks}
    )
    return [t for t in texts if t in wanted]


def published(index_dir: Path, fake: FakeEmbedder) -> LoadedIndex:
    return open_published(index_dir, fake)


def stored_texts(index_dir: Path, fake: FakeEmbedder, source: str) -> list[str]:
    """Chunk texts of source in the published build."""
    return [c.text for c in published(index_dir, fake).chunks.iter_chunks(source)]


def essentials(report: BuildReport) -> dict[str, Any]:
    """The report without its timings."""
    data = report.as_dict()
    assert data.pop("seconds") >= 0
    data.pop("timings")
    return data


def tree(folder: Path) -> dict[str, bytes]:
    """Every file below folder with its content."""
    if not folder.exists():
        return {}
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def build_ids(index_dir: Path) -> list[str]:
    return sorted(p.name for p in (index_dir / BUILDS).iterdir())


def searcher_for(settings: Settings, fake: FakeEmbedder) -> Searcher:
    holder = IndexHolder(settings.index_dir, fake)
    holder.refresh()
    return Searcher(settings, fake, holder)


# --- first and unchanged builds --------------------------------------------------------------


def test_first_build_embeds_everything(
    small: Settings, small_builder: Builder, fake_embedder: FakeEmbedder, write_seed: WriteSeed
) -> None:
    write_seed("notes.txt", NOTES)
    write_seed("animals/zebra.txt", ZEBRA)
    report = small_builder.build()
    build_id = read_pointer(small.index_dir)
    assert build_id is not None
    assert essentials(report) == {
        "build_id": build_id,
        "published": True,
        "dry_run": False,
        "files_indexed": 2,
        "added": ["animals/zebra.txt", "notes.txt"],
        "modified": [],
        "deleted": [],
        "unchanged": [],
        "skipped": [],
        "chunks": 4,
        "chunks_embedded": 4,
        "chunks_reused": 0,
        "full_rebuild_reason": "no published build",
        "previous_build_id": None,
    }
    assert stored_texts(small.index_dir, fake_embedder, "notes.txt") == NOTES_CHUNKS
    assert stored_texts(small.index_dir, fake_embedder, "animals/zebra.txt") == ZEBRA_CHUNKS
    assert sorted(embedded_by_build(fake_embedder, small.index_dir)) == sorted(
        [f"Notes\n{t}" for t in NOTES_CHUNKS] + [f"Zebras\n{t}" for t in ZEBRA_CHUNKS]
    )
    assert (small.index_dir / POINTER).read_text() == f"{build_id}\n"
    assert build_ids(small.index_dir) == [build_id]
    folder = build_path(small.index_dir, build_id)
    assert {p.name for p in folder.iterdir()} == {
        MANIFEST,
        VECTORS,
        CHUNKS_DB,
        "bm25",
        *SENTENCE_FILES,
    }
    # The file's own JSON: its layout is what other builds and tools read.
    manifest = json.loads((folder / MANIFEST).read_text())
    assert read_manifest(folder).to_json() == manifest
    assert manifest["files"] == {
        "notes.txt": {
            "sha256": hashlib.sha256(NOTES.encode()).hexdigest(),
            "size": len(NOTES),
            "chunks": 3,
            "title": "Notes",
            "collection": "default",
        },
        "animals/zebra.txt": {
            "sha256": hashlib.sha256(ZEBRA.encode()).hexdigest(),
            "size": len(ZEBRA),
            "chunks": 1,
            "title": "Zebras",
            "collection": "animals",
        },
    }
    assert manifest["counts"] == {"documents": 2, "chunks": 4}
    assert manifest["rebuild_reason"] == "no published build"
    assert manifest["model"] == {"id": "fake-hash-64", "dim": 64, "max_seq_length": 256}


def test_unchanged_seeds_publish_nothing(
    small: Settings, small_builder: Builder, fake_embedder: FakeEmbedder, write_seed: WriteSeed
) -> None:
    write_seed("notes.txt", NOTES)
    first = small_builder.build()
    before = tree(small.index_dir)
    fake_embedder.calls.clear()
    report = small_builder.build()
    assert essentials(report) == {
        "build_id": first.build_id,
        "published": False,
        "dry_run": False,
        "files_indexed": 1,
        "added": [],
        "modified": [],
        "deleted": [],
        "unchanged": ["notes.txt"],
        "skipped": [],
        "chunks": 3,
        "chunks_embedded": 0,
        "chunks_reused": 3,
        "full_rebuild_reason": None,
        "previous_build_id": first.build_id,
    }
    assert fake_embedder.calls == []
    assert tree(small.index_dir) == before
    assert summary_text(report).splitlines()[0] == (
        f"Index is up to date (build {first.build_id}); nothing to do."
    )


# --- incremental changes ---------------------------------------------------------------------


def test_modified_paragraph_embeds_only_its_chunk(
    small: Settings, small_builder: Builder, fake_embedder: FakeEmbedder, write_seed: WriteSeed
) -> None:
    write_seed("notes.txt", NOTES)
    write_seed("animals/zebra.txt", ZEBRA)
    first = small_builder.build()
    fake_embedder.calls.clear()
    new_p3 = "Monday tuesday wednesday thursday friday saturday sunday yesterday tomorrow."
    write_seed("notes.txt", NOTES.replace(P[3], new_p3))
    report = small_builder.build()
    assert (report.modified, report.unchanged, report.added, report.deleted) == (
        ["notes.txt"],
        ["animals/zebra.txt"],
        [],
        [],
    )
    assert (report.chunks, report.chunks_embedded, report.chunks_reused) == (4, 1, 3)
    assert report.full_rebuild_reason is None
    assert report.previous_build_id == first.build_id
    changed = "\n\n".join([P[2], new_p3, P[4]])
    assert stored_texts(small.index_dir, fake_embedder, "notes.txt") == [
        NOTES_CHUNKS[0],
        changed,
        NOTES_CHUNKS[2],
    ]
    assert embedded_by_build(fake_embedder, small.index_dir) == [f"Notes\n{changed}"]


def test_added_file_embeds_only_its_chunks(
    small: Settings, small_builder: Builder, fake_embedder: FakeEmbedder, write_seed: WriteSeed
) -> None:
    write_seed("notes.txt", NOTES)
    small_builder.build()
    fake_embedder.calls.clear()
    write_seed("animals/zebra.txt", ZEBRA)
    report = small_builder.build()
    assert (report.added, report.unchanged, report.chunks_embedded, report.chunks_reused) == (
        ["animals/zebra.txt"],
        ["notes.txt"],
        1,
        3,
    )
    calls = list(fake_embedder.calls)
    assert embedded_by_build(fake_embedder, small.index_dir) == [f"Zebras\n{ZEBRA_CHUNKS[0]}"]
    fake_embedder.calls[:] = calls
    # ...and that chunk's sentence alone: the title line is no sentence, and a sentence
    # naming the title is not prefixed by it.
    assert embedded_by_build(fake_embedder, small.index_dir, sentences=True) == [
        "Zebras quagga okapi graze on the savanna."
    ]


def test_deleted_file_is_gone_from_every_index(
    small: Settings, small_builder: Builder, fake_embedder: FakeEmbedder, write_seed: WriteSeed
) -> None:
    write_seed("notes.txt", NOTES)
    zebra = write_seed("animals/zebra.txt", ZEBRA)
    small_builder.build()
    question = "zebras quagga okapi savanna"
    hits = searcher_for(small, fake_embedder).search(question, top_k=5).hits
    assert hits[0].chunk.source == "animals/zebra.txt"  # found before the deletion

    zebra.unlink()
    fake_embedder.calls.clear()
    report = small_builder.build()
    assert (report.deleted, report.unchanged, report.chunks, report.chunks_embedded) == (
        ["animals/zebra.txt"],
        ["notes.txt"],
        3,
        0,
    )
    assert embedded_by_build(fake_embedder, small.index_dir) == []
    searcher = searcher_for(small, fake_embedder)
    modes: tuple[Mode, ...] = ("hybrid", "dense", "keyword")
    for mode in modes:
        hits = searcher.search(question, top_k=50, mode=mode).hits
        assert [h.chunk.source for h in hits if h.chunk.source != "notes.txt"] == []
        assert not any("quagga" in h.chunk.text for h in hits)
    assert searcher.search(question, top_k=5, sources=["animals/*"]).hits == []
    index = searcher.holder.current
    assert list(index.chunks.documents) == ["notes.txt"]
    assert index.chunks.text("animals/zebra.txt") is None
    assert list(index.chunks.iter_chunks("animals/zebra.txt")) == []
    assert index.chunks.chunk_count == 3
    assert index.vectors.count == 3
    assert index.keyword.size == 3
    assert not index.keyword.scores(tokenize(["zebras quagga okapi savanna"])[0]).any()
    assert "animals/zebra.txt" not in index.manifest.files


def test_renamed_file_embeds_nothing(
    small: Settings, small_builder: Builder, fake_embedder: FakeEmbedder, write_seed: WriteSeed
) -> None:
    notes = write_seed("notes.txt", NOTES)
    small_builder.build()
    old_ids = [
        c.chunk_id
        for c in published(small.index_dir, fake_embedder).chunks.iter_chunks("notes.txt")
    ]
    fake_embedder.calls.clear()
    (small.seeds_dir / "archive").mkdir()
    notes.rename(small.seeds_dir / "archive" / "notes-2024.txt")
    report = small_builder.build()
    assert (report.added, report.deleted, report.chunks, report.chunks_embedded) == (
        ["archive/notes-2024.txt"],
        ["notes.txt"],
        3,
        0,
    )
    assert embedded_by_build(fake_embedder, small.index_dir) == []
    moved = list(
        published(small.index_dir, fake_embedder).chunks.iter_chunks("archive/notes-2024.txt")
    )
    assert [c.text for c in moved] == NOTES_CHUNKS
    assert not {c.chunk_id for c in moved} & set(old_ids)


def test_dry_run_writes_nothing(
    small: Settings, small_builder: Builder, fake_embedder: FakeEmbedder, write_seed: WriteSeed
) -> None:
    write_seed("notes.txt", NOTES)
    report = small_builder.build(dry_run=True)
    assert essentials(report) == {
        "build_id": None,
        "published": False,
        "dry_run": True,
        "files_indexed": 1,
        "added": ["notes.txt"],
        "modified": [],
        "deleted": [],
        "unchanged": [],
        "skipped": [],
        "chunks": 0,
        "chunks_embedded": 0,
        "chunks_reused": 0,
        "full_rebuild_reason": "no published build",
        "previous_build_id": None,
    }
    assert not small.index_dir.exists()
    assert fake_embedder.calls == []

    small_builder.build()
    before = tree(small.index_dir)
    fake_embedder.calls.clear()
    write_seed("notes.txt", NOTES.replace("plum", "pear"))
    write_seed("animals/zebra.txt", ZEBRA)
    report = small_builder.build(dry_run=True)
    assert (report.added, report.modified, report.build_id) == (
        ["animals/zebra.txt"],
        ["notes.txt"],
        None,
    )
    assert tree(small.index_dir) == before
    assert fake_embedder.calls == []


def test_full_rebuild_reembeds_everything(
    small: Settings, small_builder: Builder, fake_embedder: FakeEmbedder, write_seed: WriteSeed
) -> None:
    write_seed("notes.txt", NOTES)
    first = small_builder.build()
    fake_embedder.calls.clear()
    report = small_builder.build(full=True)
    assert report.published and report.build_id != first.build_id
    assert (report.chunks, report.chunks_embedded, report.chunks_reused) == (3, 3, 0)
    assert report.full_rebuild_reason == "--full requested"
    assert embedded_by_build(fake_embedder, small.index_dir) == [
        f"Notes\n{t}" for t in NOTES_CHUNKS
    ]


def test_chunk_tokens_change_rebuilds_fully_with_reason(
    small: Settings, small_builder: Builder, fake_embedder: FakeEmbedder, write_seed: WriteSeed
) -> None:
    write_seed("notes.txt", NOTES)
    small_builder.build()
    wider = Builder(small.model_copy(update={"chunk_tokens": 64}), fake_embedder)
    report = wider.build()
    reason = "settings changed: chunk_tokens 32 -> 64"
    assert (report.published, report.unchanged, report.full_rebuild_reason) == (
        True,
        ["notes.txt"],
        reason,
    )
    manifest = read_manifest(build_path(small.index_dir, str(report.build_id)))
    assert manifest.rebuild_reason == reason
    assert manifest.chunker.chunk_tokens == 64
    assert manifest.fingerprint["chunk_tokens"] == 64
    assert stored_texts(small.index_dir, fake_embedder, "notes.txt") == [NOTES.strip()]
    assert wider.build().published is False  # and stable from then on


def test_builds_pruned_to_the_last_two(
    small: Settings, small_builder: Builder, write_seed: WriteSeed
) -> None:
    ids = []
    for word in ("plum", "pear", "fig", "kiwi"):
        write_seed("notes.txt", NOTES.replace("plum", word))
        ids.append(str(small_builder.build().build_id))
    assert read_pointer(small.index_dir) == ids[-1]
    assert build_ids(small.index_dir) == sorted(ids[-2:])
    assert read_manifest(build_path(small.index_dir, ids[-1])).previous_build_id == ids[-2]


def test_unpublished_build_folder_is_pruned_not_the_previous_build(
    small: Settings, small_builder: Builder, write_seed: WriteSeed
) -> None:
    """A build that died between renaming its folder and publishing left a complete folder
    newer than the published one; the next build deletes it and keeps the previous one."""
    write_seed("notes.txt", NOTES)
    first = str(small_builder.build().build_id)
    orphan = small.index_dir / BUILDS / "99999999T000000000000Z-dead00"
    shutil.copytree(build_path(small.index_dir, first), orphan)
    write_seed("notes.txt", NOTES.replace("plum", "pear"))
    second = str(small_builder.build().build_id)
    assert build_ids(small.index_dir) == sorted([first, second])


@pytest.mark.parametrize("change", [True, False], ids=["changed", "unchanged"])
def test_debris_removed_by_next_build(
    small: Settings, small_builder: Builder, write_seed: WriteSeed, change: bool
) -> None:
    write_seed("notes.txt", NOTES)
    small_builder.build()
    debris = small.index_dir / BUILDS / ".tmp-20200101T000000000000Z-abcdef"
    (debris / "bm25").mkdir(parents=True)
    (debris / "chunks.sqlite").write_bytes(b"partial")
    pointer_tmp = small.index_dir / ".tmp-CURRENT.12345"
    pointer_tmp.write_text("partial")
    if change:
        write_seed("notes.txt", NOTES.replace("plum", "pear"))
    report = small_builder.build()
    assert report.published is change
    assert not debris.exists()
    assert not pointer_tmp.exists()
    assert [p.name for p in (small.index_dir / BUILDS).iterdir() if p.name.startswith(".")] == []


def test_build_lock_refuses_a_concurrent_build(
    small: Settings, small_builder: Builder, write_seed: WriteSeed
) -> None:
    write_seed("notes.txt", NOTES)
    with build_lock(small.index_dir), pytest.raises(BuildInProgressError) as info:
        small_builder.build()
    assert str(info.value) == (
        f"another build of {small.index_dir} is running; wait for it to finish and try again"
    )
    assert read_pointer(small.index_dir) is None
    assert small_builder.build().published  # the lock is free again
