"""Evaluation: index a BEIR-layout dataset through the normal pipeline and score retrieval."""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from service.answering import best_highlights, best_sentences
from service.builds import IndexHolder
from service.config import Mode, Settings
from service.embedding import Embedder
from service.indexing import Builder
from service.metrics import BeirDataset, load_beir, mrr_at_k, ndcg_at_k, recall_at_k
from service.search import Searcher

MODES: tuple[Mode, ...] = ("hybrid", "dense", "keyword")
# Chunks fetched per query: enough for Recall@100 at document level when documents have
# a few chunks each.
CHUNK_DEPTH = 300
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


@dataclass(frozen=True, slots=True)
class ModeScores:
    """Document-level metrics of one retrieval mode, averaged over the split's queries."""

    mode: str
    queries: int
    ndcg_at_10: float
    recall_at_10: float
    recall_at_100: float
    mrr_at_10: float
    queries_per_second: float
    answer_in_first_passage: float | None = None
    answer_in_top5_passages: float | None = None
    answer_in_first_highlight: float | None = None


def source_name(doc_id: str) -> str:
    """A file name for a corpus id that round-trips through doc_id_of."""
    safe = _UNSAFE.sub("_", doc_id)
    if safe != doc_id:
        safe += "-" + hashlib.sha256(doc_id.encode()).hexdigest()[:8]
    return f"{safe}.txt"


def write_corpus(dataset: BeirDataset, seeds: Path) -> dict[str, str]:
    """Write each corpus document as one seed file (title line, blank line, text) if missing;
    returns source -> corpus id."""
    seeds.mkdir(parents=True, exist_ok=True)
    mapping: dict[str, str] = {}
    for doc_id, (title, text) in dataset.corpus.items():
        name = source_name(doc_id)
        mapping[name] = doc_id
        body = f"{title.strip()}\n\n{text.strip()}\n" if title.strip() else f"{text.strip()}\n"
        path = seeds / name
        if not path.exists() or path.read_text(encoding="utf-8") != body:
            path.write_text(body, encoding="utf-8")
    return mapping


def _contains(text: str, answers: Sequence[str]) -> bool:
    """Whether any gold answer occurs in text (case-insensitive)."""
    low = text.lower()
    return any(a.lower() in low for a in answers if a.strip())


def evaluate(
    dataset_dir: Path,
    split: str,
    settings: Settings,
    embedder: Embedder,
    modes: Sequence[Mode] = MODES,
    cache_dir: Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Index the dataset (cached) and score every query of the split in each mode."""
    dataset = load_beir(dataset_dir, split)
    key = hashlib.sha256(str(dataset_dir.resolve()).encode()).hexdigest()[:10]
    root = (cache_dir or settings.cache_dir / "eval") / f"{dataset_dir.name}-{key}"
    ds_settings = settings.model_copy(
        update={"seeds_dir": root / "seeds", "index_dir": root / "index"}
    )
    mapping = write_corpus(dataset, ds_settings.seeds_dir)
    started = time.perf_counter()
    report = Builder(ds_settings, embedder).build(show_progress=progress)
    build_seconds = time.perf_counter() - started
    holder = IndexHolder(ds_settings.index_dir, embedder)
    holder.refresh()
    searcher = Searcher(ds_settings, embedder, holder)

    results = []
    for mode in modes:
        results.append(_score_mode(dataset, searcher, mapping, mode, progress))
    return {
        "dataset": str(dataset_dir),
        "split": split,
        "documents": len(dataset.corpus),
        "queries": len(dataset.queries),
        "chunks": report.chunks,
        "build_id": holder.current.build_id,
        "build_seconds": round(build_seconds, 2),
        "modes": [vars_of(r) for r in results],
    }


def vars_of(scores: ModeScores) -> dict[str, Any]:
    """Rounded fields of ModeScores."""
    out: dict[str, Any] = {}
    for name in scores.__slots__:
        value = getattr(scores, name)
        out[name] = round(value, 4) if isinstance(value, float) else value
    return out


def _score_mode(
    dataset: BeirDataset,
    searcher: Searcher,
    mapping: dict[str, str],
    mode: Mode,
    progress: bool,
) -> ModeScores:
    ndcg = r10 = r100 = mrr = 0.0
    first = top5 = highlight = 0
    with_answers = bool(dataset.answers)
    queries = list(dataset.queries.items())
    started = time.perf_counter()
    for qid, question in tqdm(queries, desc=f"eval {mode}", disable=not progress, unit="q"):
        result = searcher.search(question, top_k=CHUNK_DEPTH, mode=mode)
        ranked: list[str] = []
        seen: set[str] = set()
        for hit in result.hits:
            doc_id = mapping.get(hit.chunk.source, hit.chunk.source)
            if doc_id not in seen:  # a document ranks where its best chunk ranks
                seen.add(doc_id)
                ranked.append(doc_id)
        qrels = dataset.qrels[qid]
        ndcg += ndcg_at_k(ranked, qrels, 10)
        r10 += recall_at_k(ranked, qrels, 10)
        r100 += recall_at_k(ranked, qrels, 100)
        mrr += mrr_at_k(ranked, qrels, 10)
        if with_answers and result.hits:
            answers = dataset.answers.get(qid, [])
            first += _contains(result.hits[0].chunk.text, answers)
            top5 += any(_contains(h.chunk.text, answers) for h in result.hits[:5])
            best = best_sentences(result.terms, result.hits[:1], result.index.keyword)
            marks = best_highlights(best)[0]
            highlight += bool(marks) and _contains(marks[0].text, answers)
    seconds = time.perf_counter() - started
    n = max(len(queries), 1)
    return ModeScores(
        mode=mode,
        queries=len(queries),
        ndcg_at_10=ndcg / n,
        recall_at_10=r10 / n,
        recall_at_100=r100 / n,
        mrr_at_10=mrr / n,
        queries_per_second=len(queries) / seconds if seconds else 0.0,
        answer_in_first_passage=first / n if with_answers else None,
        answer_in_top5_passages=top5 / n if with_answers else None,
        answer_in_first_highlight=highlight / n if with_answers else None,
    )


def table(result: dict[str, Any]) -> str:
    """The metrics as a plain-text table."""
    head = ["mode", "nDCG@10", "R@10", "R@100", "MRR@10", "q/s"]
    extra = result["modes"] and result["modes"][0]["answer_in_first_passage"] is not None
    if extra:
        head += ["ans@1", "ans@5", "ans@hl"]
    rows = [head]
    for m in result["modes"]:
        row = [
            m["mode"],
            f"{m['ndcg_at_10']:.4f}",
            f"{m['recall_at_10']:.4f}",
            f"{m['recall_at_100']:.4f}",
            f"{m['mrr_at_10']:.4f}",
            f"{m['queries_per_second']:.1f}",
        ]
        if extra:
            row += [
                f"{m['answer_in_first_passage']:.4f}",
                f"{m['answer_in_top5_passages']:.4f}",
                f"{m['answer_in_first_highlight']:.4f}",
            ]
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = [
        f"{result['dataset']} split={result['split']}: {result['documents']} documents, "
        f"{result['chunks']} chunks, {result['queries']} queries"
    ]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)
