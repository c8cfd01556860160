"""An incremental build equals a full build: a folder built, then edited step by step (add,
modify, delete, rename) with an incremental build after each step, is the very index a full
build of the final folder gives: chunk ids, chunk rows (citations), manifest, vectors and
top-10 lists. Real bundled model."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from service.builds import IndexHolder
from service.config import Mode, Settings
from service.embedding import Embedder
from service.indexing import Builder, BuildReport
from service.search import Searcher
from tests.conftest import TEN_PIECE_SENTENCES, WriteSeed
from tests.test_ray import all_vectors, chunk_rows, shared_manifest

# Fields a build's manifest may differ in besides its id and time: how it came about.
HISTORY = ("previous_build_id", "rebuild_reason")
QUESTIONS = (
    "When does the library open?",
    "Which planet has rings?",
    "How does sourdough rise?",
    "What do vaccines train?",
    "What is the capital of France?",
    "alpha beta gamma",
)


def paragraphs(*texts: str) -> str:
    return "\n\n".join(texts) + "\n"


LIBRARY = paragraphs(
    "# Library",
    "The city library opens at nine in the morning and closes at six in the evening.",
    "Members may borrow twelve books at a time, for three weeks each.",
    "The cafe on the second floor serves espresso, green tea and lemon cake.",
    " ".join(TEN_PIECE_SENTENCES),
)
PLANETS = paragraphs(
    "Jupiter is the largest planet of the solar system; its great red spot is a storm.",
    "Saturn is known for its rings of ice and rock, and for its moon Titan.",
    "Mars has two small moons, Phobos and Deimos, and the tallest volcano known.",
)
BREAD = paragraphs(
    "# Bread",
    "Sourdough bread rises with wild yeast and lactic acid bacteria.",
    "The dough rests overnight in a cool place. A hot oven with steam gives a crisp crust.",
)
VACCINES = paragraphs(
    "Vaccines train the immune system to recognise a pathogen without causing the disease.",
    "Most vaccines need two doses; side effects are usually mild and short.",
)


def top10(settings: Settings, embedder: Embedder, mode: Mode) -> list[list[tuple[str, float]]]:
    """Each question's top 10 (chunk id, score) on the published build."""
    holder = IndexHolder(settings.index_dir, embedder)
    holder.refresh()
    searcher = Searcher(settings.model_copy(update={"micro_batch": 0}), embedder, holder)
    try:
        return [
            [(h.chunk.chunk_id, h.score) for h in searcher.search(q, top_k=10, mode=mode).hits]
            for q in QUESTIONS
        ]
    finally:
        searcher.close()


def incremental(builder: Builder) -> BuildReport:
    report = builder.build()
    assert report.published and report.full_rebuild_reason is None, report
    assert report.chunks_reused > 0, report
    return report


def test_an_incremental_build_equals_a_full_build(
    small: Settings,
    seeds: Path,
    write_seed: WriteSeed,
    tmp_path: Path,
    real_embedder: Embedder,
) -> None:
    write_seed("library.md", LIBRARY)
    write_seed("planets.txt", PLANETS)
    write_seed("sub/bread.md", BREAD)
    builder = Builder(small, real_embedder)  # 32-token chunks: several per file
    assert builder.build().published

    write_seed("vaccines.txt", VACCINES)
    assert incremental(builder).added == ["vaccines.txt"]
    write_seed("planets.txt", PLANETS.replace("Titan", "Titan and Enceladus") + "Venus is hot.\n")
    assert incremental(builder).modified == ["planets.txt"]
    (seeds / "library.md").unlink()
    write_seed("notes/library.md", LIBRARY)  # a rename: new source, same text
    (seeds / "sub" / "bread.md").rename(seeds / "sub" / "sourdough.md")
    report = incremental(builder)
    assert (report.added, report.deleted) == (
        ["notes/library.md", "sub/sourdough.md"],
        ["library.md", "sub/bread.md"],
    )
    (seeds / "vaccines.txt").unlink()
    write_seed("vaccines.md", "# Vaccines\n\n" + VACCINES)  # renamed and modified
    assert incremental(builder).deleted == ["vaccines.txt"]

    full = small.model_copy(update={"index_dir": tmp_path / "full-index"})
    report = Builder(full, real_embedder).build(full=True)
    assert report.chunks_reused == 0 and report.chunks_embedded == report.chunks > 12

    rows = chunk_rows(small)
    assert [c.chunk_id for c in rows] == [c.chunk_id for c in chunk_rows(full)]
    assert rows == chunk_rows(full)  # text, offsets, lines, titles, sections
    manifest, full_manifest = shared_manifest(small), shared_manifest(full)
    for key in HISTORY:
        manifest.pop(key), full_manifest.pop(key)
    assert manifest == full_manifest
    vectors = all_vectors(small, real_embedder)
    assert np.array_equal(vectors, all_vectors(full, real_embedder))
    for mode in ("hybrid", "dense", "keyword"):
        assert top10(small, real_embedder, mode) == top10(full, real_embedder, mode), mode
