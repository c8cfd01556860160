"""Opening a published build: a damaged or foreign build is refused with the command that
rebuilds it, and that command recovers."""

from __future__ import annotations

import pytest

from service.builds import IndexHolder, open_published
from service.config import Settings
from service.errors import IndexIncompatibleError
from service.indexing import Builder
from service.store import MANIFEST, build_path
from service.vectors import VECTORS
from tests.conftest import TEN_PIECE_SENTENCES, FakeEmbedder, WriteSeed

# Three chunks with chunk_tokens=32 (see test_indexing).
NOTES = "Notes\n\n" + "\n\n".join(TEN_PIECE_SENTENCES) + "\n"


def test_damaged_vectors_fail_to_load_with_rebuild_hint(
    small: Settings, small_builder: Builder, fake_embedder: FakeEmbedder, write_seed: WriteSeed
) -> None:
    write_seed("notes.txt", NOTES)
    build_id = str(small_builder.build().build_id)
    vectors = build_path(small.index_dir, build_id) / VECTORS
    vectors.write_bytes(vectors.read_bytes()[: vectors.stat().st_size // 2])
    with pytest.raises(IndexIncompatibleError) as info:
        open_published(small.index_dir, fake_embedder)
    message = str(info.value)
    assert message.startswith(f"index build {build_id} is damaged (")
    assert message.endswith(
        f"); run `groundqa index --full --index {small.index_dir}` to rebuild it"
    )
    with pytest.raises(IndexIncompatibleError):
        IndexHolder(small.index_dir, fake_embedder).refresh()
    report = small_builder.build(full=True)  # what the hint says to run
    assert report.published
    assert open_published(small.index_dir, fake_embedder).vectors.count == 3


def test_damaged_manifest_triggers_a_full_rebuild(
    small: Settings, small_builder: Builder, fake_embedder: FakeEmbedder, write_seed: WriteSeed
) -> None:
    write_seed("notes.txt", NOTES)
    build_id = str(small_builder.build().build_id)
    folder = build_path(small.index_dir, build_id)
    (folder / MANIFEST).write_text("{not json")
    with pytest.raises(IndexIncompatibleError) as info:
        open_published(small.index_dir, fake_embedder)
    assert str(info.value).startswith(f"index build {folder} is damaged (manifest unreadable: ")
    report = small_builder.build()
    assert report.published
    assert str(report.full_rebuild_reason).startswith("published build unusable: ")
    assert open_published(small.index_dir, fake_embedder).build_id == report.build_id


def test_other_model_cannot_load_the_index(
    small: Settings, small_builder: Builder, fake_embedder: FakeEmbedder, write_seed: WriteSeed
) -> None:
    write_seed("notes.txt", NOTES)
    small_builder.build()
    other = FakeEmbedder(fake_embedder.tokenizer, dim=32)
    with pytest.raises(IndexIncompatibleError) as info:
        open_published(small.index_dir, other)
    assert str(info.value) == (
        "index was built with model fake-hash-64 (dimension 64) but the configured model is "
        f"fake-hash-32 (dimension 32); run `groundqa index --full --index {small.index_dir}` "
        "to rebuild it"
    )
    same_dim = FakeEmbedder(fake_embedder.tokenizer)
    same_dim.model_id = "another-model"
    with pytest.raises(IndexIncompatibleError, match="configured model is another-model "):
        open_published(small.index_dir, same_dim)
    report = Builder(small, other).build()
    assert report.full_rebuild_reason == "settings changed: model 'fake-hash-64' -> 'fake-hash-32'"
    assert report.chunks_embedded == 3
    assert open_published(small.index_dir, other).vectors.dim == 32
