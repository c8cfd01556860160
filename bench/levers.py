"""Query cost of the retrieval-quality levers: in-process asks with every lever off (the
ranking before issue 20) and on (the defaults), in the same run, as a ratio.

    python -m bench.levers ../shared/eval/scifact --split train --cache /tmp/cache

The dataset's evaluation index is built (or reused) as `groundqa eval` builds it. Each
repetition asks every question cold (fresh searcher and sentence caches) with levers off and
on back to back, alternating which goes first, and reports the p50 of each and their ratio.
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from service.answering import ask
from service.config import Settings
from service.embedding import Embedder, embedder_for
from service.evaluation import _cache_root, _open_index, write_corpus
from service.metrics import load_beir
from service.search import Searcher
from service.sentences import sentences_of

# The settings that turn every lever of issue 20 off.
LEVERS_OFF: dict[str, Any] = {
    "sentence_weight": 0.0,
    "sentence_meaning": 0.0,
    "answer_kinds": False,
    "highlight_neighbour": False,
    "acronyms": False,
}


def open_searcher(dataset: Path, split: str, settings: Settings, cache: Path | None) -> Searcher:
    """A searcher on the dataset's evaluation index (built like `groundqa eval` does)."""
    data = load_beir(dataset, split)
    root = _cache_root(dataset, settings, cache)
    ds = settings.model_copy(update={"seeds_dir": root / "seeds", "index_dir": root / "index"})
    write_corpus(data, ds.seeds_dir)
    searcher, _, _ = _open_index(ds, embedder_for(ds), progress=False)
    return searcher


def questions_of(dataset: Path, split: str, limit: int, seed: int = 0) -> list[str]:
    """A fixed random sample of the split's questions."""
    queries = list(load_beir(dataset, split).queries.values())
    random.Random(seed).shuffle(queries)
    return queries[:limit]


def paired_p50s(
    searcher: Searcher, embedder: Embedder, off: Settings, on: Settings, qs: Sequence[str]
) -> tuple[float, float]:
    """Median ms of a cold ask (empty question and sentence caches) with levers off and on;
    each question is asked both ways back to back, alternating which goes first, so load
    from other processes falls on both alike."""
    fresh = {
        "off": Searcher(off, embedder, searcher.holder),
        "on": Searcher(on, embedder, searcher.holder),
    }
    sentences_of.cache_clear()
    times: dict[str, list[float]] = {"off": [], "on": []}
    for i, question in enumerate(qs):
        for name in ("off", "on") if i % 2 == 0 else ("on", "off"):
            sentences_of.cache_clear()
            t0 = time.perf_counter()
            ask(fresh[name], question, top_k=5)
            times[name].append((time.perf_counter() - t0) * 1000)
    for s in fresh.values():
        s.close()
    return float(np.percentile(times["off"], 50)), float(np.percentile(times["on"], 50))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.levers", description=__doc__)
    parser.add_argument("dataset", type=Path)
    parser.add_argument("--split", default="test")
    parser.add_argument("--cache", type=Path, default=None)
    parser.add_argument("--questions", type=int, default=300)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args(argv)
    on = Settings()
    off = on.model_copy(update=LEVERS_OFF)
    searcher = open_searcher(args.dataset, args.split, on, args.cache)
    qs = questions_of(args.dataset, args.split, args.questions)
    ratios, offs, ons = [], [], []
    for _ in range(args.reps):
        p_off, p_on = paired_p50s(searcher, searcher.embedder, off, on, qs)
        offs.append(p_off)
        ons.append(p_on)
        ratios.append(p_on / p_off)
    print(
        f"{args.dataset} {len(qs)} questions x {args.reps} reps, in-process ask p50 (cold): "
        f"levers off {np.median(offs):.2f} ms, on {np.median(ons):.2f} ms, "
        f"ratio {np.median(ratios):.2f} [{min(ratios):.2f}-{max(ratios):.2f}]"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
