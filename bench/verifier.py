"""The verifier benchmark: faithful sentences vs corruptions, built at run time from SQuAD.

`python -m bench.verifier [../shared/eval/squad] [--limit N] [--seed-claims FILE] [--json]`.
No LLM is involved.
From each sampled SQuAD answer, the sentence of its paragraph holding the answer is a claim
citing that paragraph. Faithful items: the sentence itself and light rewrites that keep its
facts (marker placement, an opener moved, a parenthesis dropped, the first clause alone, a
contraction). Corrupted items: a number, a date (year or month) or a proper name swapped for
another of the same article; two names (else numbers) of the sentence trading places when a
word other than a list's stands between them ("A defeated B"); a negation inserted or
removed; the unchanged sentence citing
another paragraph of the same article (the most similar one). The verifier must reject every
corruption and accept every faithful item. Thresholds are chosen on half of the articles (the
most corruptions caught with at most 5 % of faithful items rejected) and reported on the other
half, and on everything at the shipped thresholds.

Then the seed set (`bench/verifier/seed_claims.json`, our own claims about the seed article,
every kind of corruption including swapped roles and words of opposite meaning): each claim
goes alone to POST /v1/verify of an app serving an index of that one seed file, exactly as a
user would send it (a claim with `cites_paragraph` names that paragraph as passage [1]), at
the shipped thresholds.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import re
import sys
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from service.chunking import split_sentences
from service.embedding import Embedder
from service.facts import NUMBER, facts
from service.keyword import STOPWORDS
from service.verification import (
    Claim,
    PassageText,
    Thresholds,
    lexical_agreement,
    verify_claim,
)

LEXICAL_GRID = (0.3, 0.4, 0.5, 0.6)
SEMANTIC_GRID = (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8)
DEFAULT_DATASET = Path(__file__).resolve().parent.parent.parent / "shared" / "eval" / "squad"
SEED_CLAIMS = Path(__file__).resolve().parent / "verifier" / "seed_claims.json"
SEEDS = Path(__file__).resolve().parent.parent / "seeds"
MONTHS = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]
_NAME = re.compile(r"(?<![.!?]\s)(?<!^)\b([A-Z][a-z]+(?:\s+[A-Z][a-z]+)*)")
_AUX = re.compile(r"\b(is|was|are|were|has|have|had|can|could|will|would|did|does|should)\b")
_NEGATED = re.compile(r"\s+(not|never)\b|n't\b")
_SUBORDINATE = re.compile(
    r"^(When|If|Although|Though|Following|To|As|After|Before|Because|Since|While|Once|Unless|"
    r"Until|In|On|At|By|During|With|Despite|For|From|Of|Under|Over)\b"
)
_OPENER = re.compile(r"^(In|On|By|During|After|Before|Since) ([^,]{3,40}), (\w)(.*)$", re.DOTALL)


@dataclass(frozen=True, slots=True)
class Item:
    """A claim citing passage 1, whether it is faithful, and how it was made."""

    kind: str
    faithful: bool
    claim: str
    passage: str
    article: str


def load(dataset: Path) -> tuple[dict[str, tuple[str, str]], list[tuple[str, int]]]:
    """SQuAD paragraphs by id (title, text) and (paragraph id, answer offset) pairs."""
    paragraphs: dict[str, tuple[str, str]] = {}
    with (dataset / "corpus.jsonl").open(encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            paragraphs[row["_id"]] = (row["title"], row["text"])
    answers: list[tuple[str, int]] = []
    with (dataset / "answers.jsonl").open(encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            answers.append((row["corpus_id"], int(row["answers"][0]["answer_start"])))
    return paragraphs, answers


def answer_sentence(text: str, offset: int) -> str | None:
    """The sentence of text holding offset, if it is a plain sentence of 6-60 words."""
    for span in split_sentences(text):
        if span.start <= offset < span.end:
            sentence = text[span.start : span.end]
            words = len(sentence.split())
            return sentence if 6 <= words <= 60 and sentence[-1] in ".!?" else None
    return None


def rewrites(sentence: str) -> list[tuple[str, str]]:
    """Light rewrites that keep every fact of the sentence."""
    out = [("verbatim", sentence), ("marker-before-period", sentence)]
    m = _OPENER.match(sentence)
    if m:
        rest = (m.group(3).upper() if m.group(3).islower() else m.group(3)) + m.group(4)
        out.append(("opener-moved", f"{rest.rstrip('.')} {m.group(1).lower()} {m.group(2)}."))
    dropped = re.sub(r"\s*\([^()]*\)", "", sentence)
    if dropped != sentence:
        out.append(("parenthesis-dropped", dropped))
    main = re.match(r"^(.{30,}?)(?:, and |, but |; | while )", sentence)
    if main and not _SUBORDINATE.match(sentence):
        out.append(("main-clause", main.group(1).rstrip(",;") + "."))
    contracted = re.sub(r"\b(is|was|are|were|did|does|do|has|have) not\b", r"\1n't", sentence)
    if contracted != sentence:
        out.append(("contraction", contracted))
    return out


def numbers_of(text: str) -> list[str]:
    """The digit strings of a text, as written."""
    return [m.group(1) for m in NUMBER.finditer(text)]


def names_of(text: str) -> list[str]:
    """Capitalised word runs that are not sentence openings."""
    return [
        m.group(1)
        for m in _NAME.finditer(text)
        if m.group(1) not in MONTHS and m.group(1).lower() not in STOPWORDS
    ]


def corruptions(sentence: str, article: str, rng: random.Random) -> list[tuple[str, str]]:
    """Corrupted versions of sentence, each changing one fact, using values of its article."""
    out: list[tuple[str, str]] = []
    have = facts(sentence)
    nums = [n for n in numbers_of(sentence) if not re.fullmatch(r"1[5-9]\d\d|20\d\d", n)]
    years = [n for n in numbers_of(sentence) if re.fullmatch(r"1[5-9]\d\d|20\d\d", n)]
    pool_nums = [n for n in numbers_of(article) if facts(n).numbers.isdisjoint(have.numbers)]
    if nums:
        other = [n for n in pool_nums if not re.fullmatch(r"1[5-9]\d\d|20\d\d", n)]
        target = rng.choice(nums)
        new = rng.choice(other) if other else str(int(float(target.replace(",", "")) + 3))
        out.append(
            ("number", re.sub(rf"(?<![\d.,]){re.escape(target)}(?![\d])", new, sentence, count=1))
        )
    if years:
        other = [n for n in pool_nums if re.fullmatch(r"1[5-9]\d\d|20\d\d", n)]
        target = rng.choice(years)
        new = rng.choice(other) if other else str(int(target) + 1)
        out.append(("date", sentence.replace(target, new, 1)))
    months = [m for m in MONTHS if re.search(rf"\b{m}\b", sentence)]
    if months:
        target = months[0]
        new = rng.choice([m for m in MONTHS if m != target])
        out.append(("date", re.sub(rf"\b{target}\b", new, sentence, count=1)))
    names = names_of(sentence)
    if names:
        target = rng.choice(names)
        words = {w.lower() for w in re.findall(r"\w+", sentence)}
        pool = [
            n
            for n in dict.fromkeys(names_of(article))
            if not {w.lower() for w in n.split()} & words
        ]
        if pool:
            out.append(
                ("name", re.sub(rf"\b{re.escape(target)}\b", rng.choice(pool), sentence, count=1))
            )
    swapped = swap_two(sentence)
    if swapped:
        out.append(("swap", swapped))
    if _NEGATED.search(sentence):
        out.append(("negation-removed", _NEGATED.sub("", sentence, count=1)))
    elif _AUX.search(sentence):
        out.append(("negation-added", _AUX.sub(r"\1 not", sentence, count=1)))
    return out


_LIST_WORDS = frozenset(
    ["and", "or", "of", "the", "a", "an", "as", "well", "nor", "both", "between"]
)


def swap_two(sentence: str) -> str | None:
    """The sentence with its first two different names (else numbers) trading places, when a
    relation word stands between them ("A defeated B"), not a list ("A, B and C")."""
    for pattern in (_NAME, NUMBER):
        spans = []
        for m in pattern.finditer(sentence):
            text = m.group(1)
            if pattern is _NAME and (text in MONTHS or text.lower() in STOPWORDS):
                continue
            if all(text != t for _, _, t in spans):
                spans.append((m.start(1), m.end(1), text))
        for (s1, e1, t1), (s2, e2, t2) in itertools.pairwise(spans):
            between = re.findall(r"[A-Za-z]+", sentence[e1:s2])
            if t1 in t2 or t2 in t1 or not any(w.lower() not in _LIST_WORDS for w in between):
                continue
            return sentence[:s1] + t2 + sentence[e1:s2] + t1 + sentence[e2:]
    return None


def items(dataset: Path, limit: int, seed: int = 13) -> list[Item]:
    """The benchmark items of up to `limit` distinct answer sentences."""
    paragraphs, answers = load(dataset)
    by_title: dict[str, list[str]] = defaultdict(list)
    for pid, (title, _) in paragraphs.items():
        by_title[title].append(pid)
    rng = random.Random(seed)
    order = list(range(len(answers)))
    rng.shuffle(order)
    seen: set[str] = set()
    out: list[Item] = []
    for i in order:
        if len(seen) >= limit:
            break
        pid, offset = answers[i]
        title, text = paragraphs[pid]
        sentence = answer_sentence(text, offset)
        if sentence is None or sentence in seen:
            continue
        seen.add(sentence)
        article = " ".join(paragraphs[p][1] for p in by_title[title])
        for kind, claim in rewrites(sentence):
            out.append(Item(kind, True, claim, text, title))
        for kind, claim in corruptions(sentence, article, rng):
            if claim != sentence:
                out.append(Item(kind, False, claim, text, title))
        others = [paragraphs[p][1] for p in by_title[title] if p != pid]
        # The most similar other paragraph of the article, unless it states the claim too (a
        # sentence of it holding 80 % of the claim's words): citing that one is no error.
        others = [t for t in others if not restates(sentence, t)]
        if others:
            wrong = max(others, key=lambda t: lexical_agreement(sentence, t))
            out.append(Item("wrong-passage", False, sentence, wrong, title))
    return out


def restates(sentence: str, paragraph: str) -> bool:
    """Whether a sentence of paragraph holds at least 80 % of sentence's content words."""
    return any(
        lexical_agreement(sentence, paragraph[s.start : s.end]) >= 0.8
        for s in split_sentences(paragraph)
    )


def cached(
    embed: Callable[[Sequence[str]], npt.NDArray[np.float32]],
) -> Callable[[Sequence[str]], npt.NDArray[np.float32]]:
    """embed remembering every vector: the threshold grid re-verifies the same texts."""
    memo: dict[str, npt.NDArray[np.float32]] = {}

    def run(texts: Sequence[str]) -> npt.NDArray[np.float32]:
        todo = [t for t in dict.fromkeys(texts) if t not in memo]
        if todo:
            for t, v in zip(todo, embed(todo), strict=True):
                memo[t] = np.asarray(v, dtype=np.float32)
        return np.stack([memo[t] for t in texts])

    return run


def verdicts(
    batch: Sequence[Item],
    embed: Callable[[Sequence[str]], npt.NDArray[np.float32]],
    thresholds: Thresholds,
) -> list[bool]:
    """Whether the verifier accepts each item (its claim citing [1], its passage)."""
    out = []
    for item in batch:
        claim = Claim(item.claim, (1,), 0, len(item.claim))
        passage = PassageText(1, item.article, 0, item.passage)
        out.append(verify_claim(claim, [passage], embed, thresholds).supported)
    return out


def rates(batch: Sequence[Item], accepted: Sequence[bool]) -> dict[str, float | int]:
    """Catch rate of corruptions, false-rejection rate of faithful items, and counts."""
    bad = [a for it, a in zip(batch, accepted, strict=True) if not it.faithful]
    good = [a for it, a in zip(batch, accepted, strict=True) if it.faithful]
    return {
        "corrupted": len(bad),
        "caught": round(sum(not a for a in bad) / max(len(bad), 1), 4),
        "faithful": len(good),
        "false_rejections": round(sum(not a for a in good) / max(len(good), 1), 4),
    }


def by_kind(batch: Sequence[Item], accepted: Sequence[bool]) -> dict[str, dict[str, float]]:
    """Per kind: how many items, and the share the verifier got right."""
    groups: dict[str, list[bool]] = defaultdict(list)
    for item, ok in zip(batch, accepted, strict=True):
        groups[item.kind].append(ok == item.faithful)
    return {k: {"n": len(v), "right": round(sum(v) / len(v), 4)} for k, v in sorted(groups.items())}


def calibrate(
    batch: Sequence[Item], embed: Callable[[Sequence[str]], npt.NDArray[np.float32]]
) -> Thresholds:
    """The most lenient thresholds that catch within one point of the most corruptions caught
    with at most 5 % false rejections: real paraphrases stray further than these rewrites."""
    results: list[tuple[float, float, Thresholds]] = []
    for lexical in LEXICAL_GRID:
        for semantic in SEMANTIC_GRID:
            t = Thresholds(lexical, semantic)
            r = rates(batch, verdicts(batch, embed, t))
            if float(r["false_rejections"]) <= 0.05:
                results.append((float(r["caught"]), float(r["false_rejections"]), t))
    if not results:
        return Thresholds()
    best = max(c for c, _, _ in results)
    near = [r for r in results if r[0] >= best - 0.01]
    return min(near, key=lambda r: (r[2].lexical + r[2].semantic, r[1]))[2]


def seed_items(path: Path) -> tuple[str, list[Item], list[int | None]]:
    """The seed set's source, its claims as items (passage: the seed's text) and the
    paragraph each cites (None: none named)."""
    data = json.loads(path.read_text(encoding="utf-8"))
    source = str(data["source"])
    text = (SEEDS / source).read_text(encoding="utf-8")
    rows = data["claims"]
    batch = [Item(r["kind"], bool(r["faithful"]), r["text"], text, source) for r in rows]
    return source, batch, [r.get("cites_paragraph") for r in rows]


def paragraph_span(text: str, number: int) -> tuple[int, int]:
    """Offsets of the number-th (1-based) non-empty line of text."""
    start = 0
    lines = text.split("\n")
    for i, line in enumerate(lines):
        if i == number - 1:
            return start, start + len(line)
        start += len(line) + 1
    raise ValueError(f"the seed has {len(lines)} lines, not {number}")


def seed_verdicts(path: Path, embedder: Embedder) -> tuple[list[Item], list[bool]]:
    """Each seed claim sent alone to POST /v1/verify of an app over an index of its seed."""
    import tempfile

    from fastapi.testclient import TestClient

    from service.api.app import create_app
    from service.config import Settings
    from service.indexing import Builder

    source, batch, cites = seed_items(path)
    with tempfile.TemporaryDirectory() as tmp:
        seeds = Path(tmp) / "seeds"
        seeds.mkdir()
        (seeds / source).write_bytes((SEEDS / source).read_bytes())
        settings = Settings(_env_file=None, seeds_dir=seeds, index_dir=Path(tmp) / "index")
        Builder(settings, embedder).build()
        accepted: list[bool] = []
        app = create_app(settings, embedder=embedder)
        with TestClient(app, base_url="http://localhost") as client:
            for item, paragraph in zip(batch, cites, strict=True):
                body: dict[str, object] = {"text": item.claim}
                if paragraph is not None:
                    start, end = paragraph_span(item.passage, paragraph)
                    body["passages"] = [{"source": source, "char_start": start, "char_end": end}]
                r = client.post("/v1/verify", json=body)
                r.raise_for_status()
                sentences = r.json()["sentences"]
                accepted.append(bool(sentences) and all(s["supported"] for s in sentences))
    return batch, accepted


def squad_report(
    dataset: Path, limit: int, embed: Callable[[Sequence[str]], npt.NDArray[np.float32]]
) -> dict[str, object]:
    """Calibration on half of the SQuAD articles, rates on the other half and on all."""
    batch = items(dataset, limit)
    articles = sorted({it.article for it in batch})
    calib_titles = set(articles[::2])
    calib = [it for it in batch if it.article in calib_titles]
    held = [it for it in batch if it.article not in calib_titles]
    chosen = calibrate(calib, embed)
    shipped = Thresholds()
    return {
        "items": len(batch),
        "calibrated": {"lexical": chosen.lexical, "semantic": chosen.semantic},
        "calibration_half": rates(calib, verdicts(calib, embed, chosen)),
        "held_out_half": rates(held, verdicts(held, embed, chosen)),
        "shipped": {"lexical": shipped.lexical, "semantic": shipped.semantic},
        "all_at_shipped": rates(batch, accepted := verdicts(batch, embed, shipped)),
        "by_kind_at_shipped": by_kind(batch, accepted),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.verifier", description=__doc__)
    parser.add_argument("dataset", nargs="?", type=Path, default=DEFAULT_DATASET)
    parser.add_argument("--limit", type=int, default=400, help="answer sentences (default 400)")
    parser.add_argument("--seed-claims", type=Path, default=SEED_CLAIMS, help="the seed set")
    parser.add_argument("--seed-only", action="store_true", help="only the seed set")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    from service.config import Settings
    from service.embedding import embedder_for

    embedder = embedder_for(Settings())
    embed = cached(embedder.embed)
    report: dict[str, object] = (
        {} if args.seed_only else squad_report(args.dataset, args.limit, embed)
    )
    seed_batch, seed_accepted = seed_verdicts(args.seed_claims, embedder)
    report["seed"] = rates(seed_batch, seed_accepted)
    report["seed_by_kind"] = by_kind(seed_batch, seed_accepted)
    report["seed_wrong"] = [
        it.claim for it, ok in zip(seed_batch, seed_accepted, strict=True) if ok != it.faithful
    ]
    if args.json:
        print(json.dumps(report, sort_keys=True))
    else:
        print(json.dumps(report, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
