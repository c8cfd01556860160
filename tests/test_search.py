"""Search: the two fusions, one search end to end (keyword beside the encoder, prefetch,
filters on every index type), and the question-vector cache."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence

import faiss
import numpy as np
import pytest

from service import vectors as vectors_module
from service.answering import best_sentences
from service.builds import IndexHolder
from service.chunking import embedding_text
from service.config import Settings
from service.indexing import Builder
from service.keyword import tokenize
from service.models import Chunk
from service.search import Searcher, rrf, zscore_fusion
from service.sentence_vectors import sentence_texts
from service.sentences import sentence_shares
from tests.conftest import FakeEmbedder


def _ints(values: list[int]) -> np.ndarray:
    return np.asarray(values, dtype=np.int64)


def _floats(values: list[float]) -> np.ndarray:
    return np.asarray(values, dtype=np.float32)


def test_zscore_fusion_hand_computed() -> None:
    # dense: rows 7, 3, 5 with scores 3, 2, 1 -> z = 1.2247, 0, -1.2247
    # keyword: rows 5, 9 with scores 4, 2 -> z = 1, -1; rows 7 and 3 get keyword's floor -1,
    # row 9 gets dense's floor -1.2247.
    rows, fused = zscore_fusion(
        [
            (_ints([7, 3, 5]), _floats([3.0, 2.0, 1.0]), 0.5),
            (_ints([5, 9]), _floats([4.0, 2.0]), 0.5),
        ]
    )
    z = np.sqrt(1.5)
    expected = {7: 0.5 * z - 0.5, 3: -0.5, 5: -0.5 * z + 0.5, 9: -0.5 * z - 0.5}
    assert rows.tolist() == [7, 5, 3, 9]
    assert fused.tolist() == pytest.approx([expected[r] for r in rows.tolist()])


def test_zscore_fusion_ties_go_to_the_lower_row_and_zero_weight_is_ignored() -> None:
    rows, fused = zscore_fusion(
        [
            (_ints([4, 2]), _floats([1.0, 1.0]), 1.0),
            (_ints([8]), _floats([9.0]), 0.0),
        ]
    )
    assert rows.tolist() == [2, 4]
    assert fused.tolist() == [0.0, 0.0]


def test_zscore_fusion_of_nothing_is_empty() -> None:
    rows, fused = zscore_fusion([(_ints([]), _floats([]), 1.0)])
    assert rows.tolist() == [] and fused.tolist() == []


def test_rrf_hand_computed() -> None:
    rows, fused = rrf([(_ints([1, 2]), 1.0), (_ints([2, 3]), 0.5)], k=10)
    expected = {1: 1 / 11, 2: 1 / 12 + 0.5 / 11, 3: 0.5 / 12}
    assert rows.tolist() == [2, 1, 3]
    assert fused.tolist() == pytest.approx([expected[r] for r in rows.tolist()])


# --- one search: keyword retrieval beside the encoder, prefetch, exact fusion -----------------

DOCS = {
    "cells.txt": "Cells\n\nStem cells divide. Blood cells carry oxygen to the tissues.\n",
    "stars.txt": "Stars\n\nStars fuse hydrogen into helium. Their cores are very hot.\n",
    "rivers.txt": "Rivers\n\nRivers carry water to the sea. Deltas form at river mouths.\n",
    "soil.txt": "Soil\n\nSoil holds water and minerals. Roots take water from the soil.\n",
}


def searcher_over_docs(settings: Settings, embedder: FakeEmbedder) -> Searcher:
    """A searcher over DOCS, built with settings."""
    for name, text in DOCS.items():
        (settings.seeds_dir / name).write_text(text)
    Builder(settings, embedder).build()
    holder = IndexHolder(settings.index_dir, embedder)
    holder.refresh()
    return Searcher(settings, embedder, holder)


@pytest.fixture
def searcher(settings: Settings, fake_embedder: FakeEmbedder) -> Iterator[Searcher]:
    searcher = searcher_over_docs(settings, fake_embedder)
    yield searcher
    searcher.close()


def reference(searcher: Searcher, question: str, top_k: int) -> list[tuple[int, float]]:
    """Rows and fused scores computed step by step, one retriever after the other."""
    index = searcher.holder.current
    query = searcher.embedder.embed([question])[0]
    scores, ids = index.vectors.faiss.search(query.reshape(1, -1), index.vectors.count)
    keyword = index.keyword.scores(tokenize([question])[0])
    keyword_rows = np.flatnonzero(keyword > 0)
    keyword_rows = keyword_rows[np.argsort(-keyword[keyword_rows], kind="stable")]
    rows, fused = zscore_fusion(
        [(ids[0].astype(np.int64), scores[0], 0.5), (keyword_rows, keyword[keyword_rows], 0.5)]
    )
    # Then each of the first sentence_rerank passages gains sentence_weight times the score of
    # its best sentence: its share of the IDF mass plus sentence_meaning times its cosine.
    settings = searcher.settings
    idf = index.keyword.idf(tokenize([question])[0])
    texts = index.chunks.chunks(rows.tolist())
    shares = [
        max(
            (
                share + settings.sentence_meaning * float(vector.astype(np.float32) @ query)
                for share, vector in zip(
                    sentence_shares(texts[r].text, idf, texts[r].title),
                    # stored as float16, as the chunk vectors are
                    searcher.embedder.embed(sentence_texts(texts[r])).astype(np.float16),
                    strict=True,
                )
            ),
            default=0.0,
        )
        if i < settings.sentence_rerank
        else 0.0
        for i, r in enumerate(rows.tolist())
    ]
    rescored = sorted(
        (
            (r, f + searcher.settings.sentence_weight * b)
            for r, f, b in zip(rows, fused, shares, strict=True)
        ),
        key=lambda rs: (-rs[1], rs[0]),
    )
    return [(int(r), float(f)) for r, f in rescored[:top_k]]


def test_sentence_shares_are_each_sentences_share_of_the_idf_mass() -> None:
    text = "Roots take water. Water comes from soil and roots."
    assert sentence_shares(text, {"root": 1.0, "water": 2.0, "soil": 1.0}) == [0.75, 1.0]
    assert sentence_shares(text, {"root": 1.0, "water": 2.0, "sky": 1.0}) == [0.75, 0.75]
    assert sentence_shares(text, {"sky": 1.0}) == [0.0, 0.0]
    assert sentence_shares("", {"root": 1.0}) == []


def test_a_passage_stating_the_question_in_one_sentence_ranks_first(
    settings: Settings, fake_embedder: FakeEmbedder
) -> None:
    """The sentence signal puts the passage saying the question's words together first; with
    sentence_weight 0 the fused order is the plain one."""
    docs = {
        "spread.txt": "Water\n\nRivers carry water far. Roots grow deep. The soil is dark.\n",
        "together.txt": "Roots\n\nRoots take water from the soil.\n",
    }
    for name, text in docs.items():
        (settings.seeds_dir / name).write_text(text)
    Builder(settings, fake_embedder).build()
    holder = IndexHolder(settings.index_dir, fake_embedder)
    holder.refresh()
    on = Searcher(settings, fake_embedder, holder)
    off = Searcher(settings.model_copy(update={"sentence_weight": 0.0}), fake_embedder, holder)
    question = "water roots soil"
    ranked_on = [h.chunk.source for h in on.search(question, top_k=2).hits]
    base = off.search(question, top_k=2).hits
    shares = [
        max(sentence_shares(h.chunk.text, on.holder.current.keyword.idf(tokenize([question])[0])))
        for h in base
    ]
    assert ranked_on[0] == "together.txt"
    assert shares[[h.chunk.source for h in base].index("together.txt")] == 1.0
    on.close()
    off.close()


@pytest.mark.parametrize("question", ["water in the soil", "hot stars", "blood cells oxygen"])
def test_hybrid_search_equals_the_step_by_step_fusion(searcher: Searcher, question: str) -> None:
    for _ in range(2):  # a new question (keyword beside the encoder), then a cached vector
        result = searcher.search(question, top_k=3)
        expected = reference(searcher, question, 3)
        chunks = result.index.chunks.chunks([r for r, _ in expected])
        assert [h.chunk.chunk_id for h in result.hits] == [chunks[r].chunk_id for r, _ in expected]
        assert [h.score for h in result.hits] == pytest.approx([s for _, s in expected])
        assert result.terms == tuple(tokenize([question])[0])


def test_prefetch_sees_the_keyword_leaders_on_another_thread(searcher: Searcher) -> None:
    seen: list[tuple[str, list[str]]] = []

    def prefetch(chunks: Sequence[Chunk]) -> None:
        seen.append((threading.current_thread().name, sorted(c.source for c in chunks)))

    result = searcher.search("water", top_k=1, prefetch=prefetch)
    ((thread, sources),) = seen
    assert thread.startswith("groundqa-keyword")
    assert sources == ["rivers.txt", "soil.txt"]  # the first 2 * top_k keyword rows
    assert result.hits[0].chunk.source in sources
    searcher.search("water", top_k=1, prefetch=prefetch)  # cached vector: same thread
    assert seen[1] == (threading.current_thread().name, sources)


def test_dense_mode_calls_no_prefetch(searcher: Searcher) -> None:
    calls: list[object] = []
    searcher.search("water", top_k=2, mode="dense", prefetch=calls.append)
    assert calls == []


def test_best_sentences_pick_the_densest_sentence(searcher: Searcher) -> None:
    result = searcher.search("Where do roots take water from?", top_k=4)
    best = best_sentences(result.terms, result.hits, result.index.keyword)
    by_source = {h.chunk.source: b for h, b in zip(result.hits, best, strict=True)}
    soil = by_source["soil.txt"]
    assert soil is not None
    assert soil.highlight.text == "Roots take water from the soil."
    document = result.index.chunks.text("soil.txt")
    assert document is not None
    assert document[soil.highlight.char_start : soil.highlight.char_end] == soil.highlight.text
    assert by_source["stars.txt"] is None or by_source["stars.txt"].score == 0.0


@pytest.mark.parametrize("ann", ["flat", "ivf", "hnsw"])
@pytest.mark.parametrize("exact_filter_rows", [0, 16_384], ids=["index-filter", "exact-filter"])
def test_sources_filter_on_every_index_type(
    settings: Settings,
    fake_embedder: FakeEmbedder,
    monkeypatch: pytest.MonkeyPatch,
    ann: str,
    exact_filter_rows: int,
) -> None:
    monkeypatch.setattr(vectors_module, "EXACT_FILTER_ROWS", exact_filter_rows)
    searcher = searcher_over_docs(settings.model_copy(update={"ann": ann}), fake_embedder)
    try:
        kind = {"flat": faiss.IndexScalarQuantizer, "ivf": faiss.IndexIVF, "hnsw": faiss.IndexHNSW}
        assert isinstance(searcher.holder.current.vectors.faiss, kind[ann])
        result = searcher.search("water", top_k=4, mode="dense", sources=["s*.txt"])
        assert [h.chunk.source for h in result.hits] == ["soil.txt", "stars.txt"] or [
            h.chunk.source for h in result.hits
        ] == ["stars.txt", "soil.txt"]
        query = fake_embedder.embed(["water"])[0]
        assert [h.dense_score for h in result.hits] == pytest.approx(
            sorted((cosine(fake_embedder, h.chunk, query) for h in result.hits), reverse=True),
            abs=1e-3,
        )
    finally:
        searcher.close()


def cosine(embedder: FakeEmbedder, chunk: Chunk, query: np.ndarray) -> float:
    return float(embedder.embed([embedding_text(chunk)])[0] @ query)


def test_question_vectors_are_cached(settings: Settings, fake_embedder: FakeEmbedder) -> None:
    plain = settings.model_copy(update={"micro_batch": 0})
    searcher = Searcher(plain, fake_embedder, IndexHolder(plain.index_dir, fake_embedder))
    first = searcher.embed_question("alpha beta")
    second = searcher.embed_question("alpha beta")
    assert fake_embedder.calls == [["alpha beta"]]
    np.testing.assert_array_equal(first, second)
    np.testing.assert_array_equal(first, fake_embedder.embed(["alpha beta"])[0])
