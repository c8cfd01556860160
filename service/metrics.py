"""Retrieval evaluation metrics (BEIR / pytrec_eval definitions) and a BEIR-layout loader."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.errors import DatasetError


def _check_k(k: int) -> None:
    """Raise ValueError unless k is a positive integer."""
    if k <= 0:
        raise ValueError(f"k must be a positive integer, got {k}")


def _top_k_unique(ranked: Sequence[str], k: int) -> list[str]:
    """Return the first k distinct ids of ranked, later duplicates of an id being ignored."""
    seen: set[str] = set()
    out: list[str] = []
    for doc_id in ranked:
        if doc_id in seen:
            continue
        seen.add(doc_id)
        out.append(doc_id)
        if len(out) == k:
            break
    return out


def ndcg_at_k(ranked: Sequence[str], qrels: Mapping[str, int], k: int) -> float:
    """nDCG@k with gain = grade (grades <= 0 gain 0), discount log2(rank + 1), ideal from qrels."""
    _check_k(k)
    dcg = sum(
        max(qrels.get(doc_id, 0), 0) / math.log2(rank + 1)
        for rank, doc_id in enumerate(_top_k_unique(ranked, k), start=1)
    )
    ideal = sorted((g for g in qrels.values() if g > 0), reverse=True)[:k]
    idcg = sum(g / math.log2(rank + 1) for rank, g in enumerate(ideal, start=1))
    return dcg / idcg if idcg > 0 else 0.0


def recall_at_k(ranked: Sequence[str], qrels: Mapping[str, int], k: int) -> float:
    """Fraction of relevant (grade > 0) documents found in the top k; 0.0 if none are relevant."""
    _check_k(k)
    relevant = {doc_id for doc_id, g in qrels.items() if g > 0}
    if not relevant:
        return 0.0
    return len(relevant.intersection(_top_k_unique(ranked, k))) / len(relevant)


def mrr_at_k(ranked: Sequence[str], qrels: Mapping[str, int], k: int) -> float:
    """Reciprocal rank of the first relevant (grade > 0) document in the top k, else 0.0."""
    _check_k(k)
    for rank, doc_id in enumerate(_top_k_unique(ranked, k), start=1):
        if qrels.get(doc_id, 0) > 0:
            return 1.0 / rank
    return 0.0


@dataclass(frozen=True)
class BeirDataset:
    """A BEIR-layout evaluation set: corpus, queries of one split, graded qrels, gold answers."""

    corpus: dict[str, tuple[str, str]]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    answers: dict[str, list[str]]


def _require(path: Path) -> Path:
    """Return path, raising DatasetError if it is not an existing file."""
    if not path.is_file():
        raise DatasetError(f"BEIR dataset file not found: {path}")
    return path


def _lines(handle: Iterable[str], path: Path) -> Iterator[str]:
    """The lines of a text file; DatasetError when it is not UTF-8."""
    try:
        yield from handle
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path}: not UTF-8 text ({exc.reason})") from exc


def _row_id(row: dict[str, Any], path: Path) -> str:
    """The `_id` of a corpus or queries row; DatasetError when it has none."""
    if "_id" not in row:
        raise DatasetError(f'{path}: a row has no "_id" field')
    return str(row["_id"])


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Parse a JSON-lines file into a list of objects, raising DatasetError on bad lines."""
    rows: list[dict[str, Any]] = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(_lines(fh, path), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DatasetError(f"{path}:{lineno}: invalid JSON ({exc.msg})") from exc
            if not isinstance(row, dict):
                raise DatasetError(f"{path}:{lineno}: expected a JSON object")
            rows.append(row)
    return rows


def _read_qrels(path: Path) -> dict[str, dict[str, int]]:
    """Parse a BEIR qrels TSV (header optional) into query -> doc -> grade."""
    qrels: dict[str, dict[str, int]] = {}
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(_lines(fh, path), start=1):
            fields = line.rstrip("\r\n").split("\t")
            if not line.strip() or (lineno == 1 and fields[0] == "query-id"):
                continue
            if len(fields) < 3:
                raise DatasetError(f"{path}:{lineno}: expected 3 tab-separated fields")
            try:
                grade = int(fields[2])
            except ValueError as exc:
                raise DatasetError(
                    f"{path}:{lineno}: score {fields[2]!r} is not an integer"
                ) from exc
            qrels.setdefault(fields[0], {})[fields[1]] = grade
    return qrels


def _answer_texts(raw: object) -> list[str]:
    """Normalise an answers.jsonl 'answers' value (strings or {'text': ...} objects) to strings."""
    if not isinstance(raw, list):
        return []
    out: list[str] = []
    for item in raw:
        if isinstance(item, str):
            out.append(item)
        elif isinstance(item, dict) and isinstance(item.get("text"), str):
            out.append(item["text"])
    return out


def beir_files(dataset_dir: Path, split: str) -> tuple[Path, Path, Path]:
    """The corpus, queries and split qrels files of a BEIR folder; DatasetError naming the
    first one missing."""
    dataset_dir = Path(dataset_dir)
    if not dataset_dir.is_dir():
        raise DatasetError(f"BEIR dataset directory not found: {dataset_dir}")
    return (
        _require(dataset_dir / "corpus.jsonl"),
        _require(dataset_dir / "queries.jsonl"),
        _require(dataset_dir / "qrels" / f"{split}.tsv"),
    )


def load_beir(dataset_dir: Path, split: str) -> BeirDataset:
    """Load a BEIR folder: corpus, the split's queries and qrels, optional answers.jsonl."""
    corpus_path, queries_path, qrels_path = beir_files(dataset_dir, split)

    corpus = {
        _row_id(row, corpus_path): (str(row.get("title") or ""), str(row.get("text") or ""))
        for row in _read_jsonl(corpus_path)
    }
    qrels = _read_qrels(qrels_path)
    queries = {
        _row_id(row, queries_path): str(row.get("text") or "")
        for row in _read_jsonl(queries_path)
        if _row_id(row, queries_path) in qrels
    }
    answers: dict[str, list[str]] = {}
    answers_path = dataset_dir / "answers.jsonl"
    if answers_path.is_file():
        for row in _read_jsonl(answers_path):
            qid = str(row.get("query_id", row.get("_id", "")))
            if qid in qrels:
                answers.setdefault(qid, []).extend(_answer_texts(row.get("answers")))
    return BeirDataset(corpus=corpus, queries=queries, qrels=qrels, answers=answers)
