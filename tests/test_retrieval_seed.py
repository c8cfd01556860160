"""Issue 20's levers on the real seed article with the real bundled model."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from service.answering import ask
from service.builds import IndexHolder
from service.config import Settings
from service.embedding import Embedder
from service.indexing import Builder
from service.search import Searcher

SEED = Path(__file__).resolve().parent.parent / "seeds" / "000_6103265ed68543fd.txt"
PARAPHRASE = "What did the United States demand of North Korea?"
US_STATEMENT = "A US statement urged North Korea to"


@pytest.fixture(scope="module")
def seed_settings(tmp_path_factory: pytest.TempPathFactory, real_embedder: Embedder) -> Settings:
    """Settings over a built index of the seed article."""
    root = tmp_path_factory.mktemp("seed")
    (root / "seeds").mkdir()
    shutil.copyfile(SEED, root / "seeds" / SEED.name)
    settings = Settings(_env_file=None, seeds_dir=root / "seeds", index_dir=root / "index")
    assert Builder(settings, real_embedder).build().published
    return settings


def _searcher(settings: Settings, embedder: Embedder) -> Searcher:
    holder = IndexHolder(settings.index_dir, embedder)
    holder.refresh()
    return Searcher(settings, embedder, holder)


def test_the_paraphrase_finds_the_us_statement_first(
    seed_settings: Settings, real_embedder: Embedder
) -> None:
    """United States -> US, learned from the article, ranks the statement's passage first;
    without the acronym lever it does not."""
    searcher = _searcher(seed_settings, real_embedder)
    result = ask(searcher, PARAPHRASE, top_k=3)
    assert US_STATEMENT in result.passages[0].text
    text = SEED.read_text(encoding="utf-8")
    for passage in result.passages:
        for mark in passage.highlights:
            assert text[mark.char_start : mark.char_end] == mark.text
    off = _searcher(seed_settings.model_copy(update={"acronyms": False}), real_embedder)
    assert US_STATEMENT not in ask(off, PARAPHRASE, top_k=3).passages[0].text
    searcher.close()
    off.close()
