"""Abstention error rates over a threshold curve: in-corpus questions that abstain, and
off-corpus questions that get an answer, per corpus.

    python -m bench.abstention --cache /tmp/cache

Off-corpus questions: SciFact claims asked of the SQuAD corpus and SQuAD questions asked of
SciFact; general questions asked of the seed article. An ask abstains when the best dense
cosine of its top 5 hits is below the threshold (`abstain_threshold`).
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Sequence
from pathlib import Path

from bench.levers import open_searcher
from service.config import Settings
from service.embedding import embedder_for
from service.evaluation import _cache_root, _open_index
from service.metrics import load_beir
from service.search import Searcher

EVAL = Path("../shared/eval")
SEED_QUESTIONS = Path("bench/conversations/seed.json")
# Questions the seed article (North Korea's support for Russia's war) does not answer.
GENERAL = (
    "What is the boiling point of water at sea level?",
    "Who painted the Mona Lisa?",
    "How many players are on a football team?",
    "What is the capital of Australia?",
    "When did the Roman Empire fall?",
    "How does photosynthesis work?",
    "What is the speed of light?",
    "Who wrote Pride and Prejudice?",
    "What causes the seasons on Earth?",
    "How do I bake sourdough bread?",
    "What is the largest planet in the solar system?",
    "Which language has the most native speakers?",
    "What is the melting point of iron?",
    "Who discovered penicillin?",
    "How tall is Mount Everest?",
    "What is a prime number?",
    "When was the printing press invented?",
    "How do vaccines train the immune system?",
    "What is the population of Brazil?",
    "Who composed the Four Seasons?",
)
THRESHOLDS = tuple(round(0.1 + 0.05 * i, 2) for i in range(11))


def best_cosines(searcher: Searcher, questions: Sequence[str]) -> list[float]:
    """The best dense cosine among each question's top 5 hybrid hits (what abstention uses)."""
    return [
        max((h.dense_score or 0.0 for h in searcher.search(q, top_k=5).hits), default=0.0)
        for q in questions
    ]


def sample(questions: Sequence[str], n: int) -> list[str]:
    """A fixed random sample of n questions."""
    out = list(questions)
    random.Random(0).shuffle(out)
    return out[:n]


def curve(inside: Sequence[float], outside: Sequence[float]) -> list[tuple[float, float, float]]:
    """(threshold, in-corpus abstention rate, off-corpus answer rate) at each threshold."""
    return [
        (
            t,
            sum(c < t for c in inside) / len(inside),
            sum(c >= t for c in outside) / len(outside),
        )
        for t in THRESHOLDS
    ]


def seed_questions() -> list[str]:
    """The standalone questions of the seed conversations, once each."""
    data = json.loads(SEED_QUESTIONS.read_text(encoding="utf-8"))
    turns = [t["standalone"] for c in data["conversations"] for t in c["turns"]]
    return list(dict.fromkeys(turns))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.abstention", description=__doc__)
    parser.add_argument("--cache", type=Path, default=None)
    parser.add_argument("--questions", type=int, default=300)
    args = parser.parse_args(argv)
    settings = Settings()
    scifact = sample(load_beir(EVAL / "scifact", "train").queries.values(), args.questions)
    squad = sample(load_beir(EVAL / "squad", "dev").queries.values(), args.questions)
    root = _cache_root(Path("seeds"), settings, args.cache)
    seeds_settings = settings.model_copy(update={"index_dir": root / "index"})
    seeds, _, _ = _open_index(seeds_settings, embedder_for(settings), progress=False)
    cases = [
        ("scifact", open_searcher(EVAL / "scifact", "train", settings, args.cache), scifact, squad),
        ("squad", open_searcher(EVAL / "squad", "dev", settings, args.cache), squad, scifact),
        ("seed", seeds, seed_questions(), list(GENERAL)),
    ]
    print("corpus   in/off   threshold  in-corpus abstains  off-corpus answered  sum")
    for name, searcher, inside, outside in cases:
        inner, outer = best_cosines(searcher, inside), best_cosines(searcher, outside)
        for t, abstains, answers in curve(inner, outer):
            print(
                f"{name:8} {len(inside)}/{len(outside):<5} {t:9.2f}  {abstains:18.3f}  "
                f"{answers:19.3f}  {abstains + answers:.3f}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
