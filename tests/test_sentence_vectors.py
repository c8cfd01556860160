"""Sentence vectors: written at build time for every prose sentence of every chunk, read back
row by row, carried on hits, and optional."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import pytest

from service.builds import IndexHolder, open_published
from service.config import Settings
from service.errors import IndexIncompatibleError
from service.indexing import Builder
from service.keyword import tokenize
from service.models import Chunk
from service.search import Searcher
from service.sentence_vectors import FILES, SENTENCE_OFFSETS, sentence_texts
from service.sentences import masses, sentences_of
from service.store import build_path
from tests.conftest import TEN_PIECE_SENTENCES, FakeEmbedder, WriteSeed

NOTES = "Notes\n\n" + "\n\n".join(TEN_PIECE_SENTENCES) + "\n"
SOIL = "# Soil\n\nRoots take water from the soil. Rivers carry water far.\n\nThe soil is dark.\n"


def _chunks(settings: Settings, embedder: FakeEmbedder) -> list[Chunk]:
    index = open_published(settings.index_dir, embedder)
    rows = index.chunks.chunks(list(range(index.chunks.chunk_count)))
    return [rows[r] for r in range(index.chunks.chunk_count)]


def test_every_sentence_of_every_chunk_has_its_vector_in_order(
    small: Settings, small_builder: Builder, fake_embedder: FakeEmbedder, write_seed: WriteSeed
) -> None:
    write_seed("notes.txt", NOTES)
    write_seed("soil.md", SOIL)
    assert small_builder.build().published
    index = open_published(small.index_dir, fake_embedder)
    sentences = index.sentences
    assert sentences is not None and sentences.rows == index.chunks.chunk_count
    total = 0
    for row, chunk in enumerate(_chunks(small, fake_embedder)):
        texts = sentence_texts(chunk)
        assert len(texts) == len(sentences_of(chunk.text, chunk.title).spans) > 0
        start, end = int(sentences.offsets[row]), int(sentences.offsets[row + 1])
        expected = fake_embedder.embed(texts).astype(np.float16)
        assert np.array_equal(sentences.vectors[start:end], expected)
        total += len(texts)
    assert sentences.count == total


def test_a_sentence_is_embedded_after_its_chunks_context() -> None:
    """As the chunk itself is: the title tells what "he" is. The title line is the document's
    heading, no sentence; a sentence that opens with the title is not prefixed by it."""
    text = "Tesla\n\nHe was born in 1856. Tesla moved to New York."
    chunk = Chunk("c", "tesla.txt", "Tesla", text, 0, len(text), 1, 3, context="Tesla")
    assert sentence_texts(chunk) == ["Tesla\nHe was born in 1856.", "Tesla moved to New York."]
    bare = Chunk("c", "a.txt", "a", "It rains. It pours.", 0, 19, 1, 1)
    assert sentence_texts(bare) == ["It rains.", "It pours."]


def test_hits_carry_the_questions_cosine_with_each_of_their_sentences(
    settings: Settings, builder: Builder, fake_embedder: FakeEmbedder, write_seed: WriteSeed
) -> None:
    write_seed("notes.txt", NOTES)
    write_seed("soil.md", SOIL)
    builder.build()
    holder = IndexHolder(settings.index_dir, fake_embedder)
    holder.refresh()
    searcher = Searcher(settings, fake_embedder, holder)
    for mode in ("hybrid", "dense", "keyword"):
        result = searcher.search("water in the soil", top_k=5, mode=mode)
        assert result.hits
        for hit in result.hits:
            vectors = fake_embedder.embed(sentence_texts(hit.chunk)).astype(np.float16)
            expected = vectors.astype(np.float32) @ result.query_vector
            assert hit.sentence_cosines == pytest.approx(expected.tolist(), abs=1e-6)
    searcher.close()


def test_without_sentence_vectors_a_build_has_none_and_ranks_by_words(
    settings: Settings, fake_embedder: FakeEmbedder, write_seed: WriteSeed
) -> None:
    """GROUNDQA_SENTENCE_VECTORS=false writes no sentence files; the sentence signal then uses
    words alone, exactly as sentence_meaning 0 does on a build that has them."""
    write_seed("notes.txt", NOTES)
    write_seed("soil.md", SOIL)
    off = settings.model_copy(update={"sentence_vectors": False})
    report = Builder(off, fake_embedder).build()
    folder = build_path(off.index_dir, str(report.build_id))
    assert not any((folder / name).exists() for name in FILES)
    holder = IndexHolder(off.index_dir, fake_embedder)
    holder.refresh()
    assert holder.current.sentences is None
    plain = Searcher(off, fake_embedder, holder).search("water in the soil", top_k=5)
    assert all(h.sentence_cosines is None for h in plain.hits)

    on = settings.model_copy(update={"index_dir": settings.index_dir.parent / "on"})
    Builder(on, fake_embedder).build()
    both = IndexHolder(on.index_dir, fake_embedder)
    both.refresh()
    words = on.model_copy(update={"sentence_meaning": 0.0})
    same = Searcher(words, fake_embedder, both).search("water in the soil", top_k=5)
    assert [(h.chunk.chunk_id, h.score) for h in same.hits] == [
        (h.chunk.chunk_id, h.score) for h in plain.hits
    ]


def test_turning_sentence_vectors_on_rebuilds_without_embedding_a_chunk_again(
    settings: Settings, fake_embedder: FakeEmbedder, write_seed: WriteSeed
) -> None:
    write_seed("soil.md", SOIL)
    off = settings.model_copy(update={"sentence_vectors": False})
    Builder(off, fake_embedder).build()
    report = Builder(settings, fake_embedder).build()
    assert report.full_rebuild_reason == "settings changed: sentences None -> 3"
    assert report.chunks_embedded == 0  # the embedding cache has every chunk
    assert open_published(settings.index_dir, fake_embedder).sentences is not None


@pytest.mark.parametrize(
    ("damage", "says"),
    [
        (lambda offsets: offsets[:-1], "is damaged ("),  # the last row's end is missing
        (lambda offsets: np.append(offsets, offsets[-1]), "has sentence vectors of 3 chunks"),
    ],
)
def test_sentence_vectors_that_do_not_fit_the_chunks_are_refused_with_the_rebuild_hint(
    settings: Settings,
    builder: Builder,
    fake_embedder: FakeEmbedder,
    write_seed: WriteSeed,
    damage: Callable[[npt.NDArray[np.int64]], npt.NDArray[np.int64]],
    says: str,
) -> None:
    write_seed("notes.txt", NOTES)
    write_seed("soil.md", SOIL)
    folder = build_path(settings.index_dir, str(builder.build().build_id))
    assert open_published(settings.index_dir, fake_embedder).chunks.chunk_count == 2
    np.save(folder / SENTENCE_OFFSETS, damage(np.load(folder / SENTENCE_OFFSETS)))
    with pytest.raises(IndexIncompatibleError) as info:
        open_published(settings.index_dir, fake_embedder)
    assert says in str(info.value)
    assert str(info.value).endswith(f"--index {settings.index_dir}` to rebuild it")
    assert builder.build(full=True).published
    assert open_published(settings.index_dir, fake_embedder).sentences is not None


def test_stored_sentence_terms_give_the_masses_the_passage_text_gives(
    small: Settings, small_builder: Builder, fake_embedder: FakeEmbedder, write_seed: WriteSeed
) -> None:
    """What ranking reads from the build equals what splitting the passage would give."""
    write_seed("notes.txt", NOTES)
    write_seed("soil.md", SOIL)
    small_builder.build()
    index = open_published(small.index_dir, fake_embedder)
    assert index.sentences is not None
    question = tokenize(["water soil roots alpha violet monday notes"])[0]
    weights = index.keyword.idf(question)
    by_id = {index.keyword.term_ids([t])[0]: w for t, w in weights.items()}
    rows = list(range(index.chunks.chunk_count))
    stored = index.sentences.masses(rows, by_id)
    for row, chunk in enumerate(_chunks(small, fake_embedder)):
        expected = masses(sentences_of(chunk.text, chunk.title), weights)
        assert stored[row].tolist() == pytest.approx(expected, abs=1e-6)
    assert any(m.any() for m in stored)
