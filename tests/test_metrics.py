"""Tests for service.metrics against hand-computed examples."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import pytest

from service.metrics import BeirDataset, load_beir, mrr_at_k, ndcg_at_k, recall_at_k

Metric = Callable[[Sequence[str], Mapping[str, int], int], float]
ALL_METRICS: list[Metric] = [ndcg_at_k, recall_at_k, mrr_at_k]


# ----------------------------------------------------------------------------- nDCG


def test_ndcg_graded_example() -> None:
    """Graded gains: the relevant docs sit at ranks 2 and 4."""
    # ranked x, a, y, b with grades a=2, b=1 (z=0 is judged non-relevant)
    # DCG  = 2/log2(2+1) + 1/log2(4+1) = 1.2618595 + 0.4306766 = 1.6925361
    # IDCG = 2/log2(1+1) + 1/log2(2+1) = 2.0000000 + 0.6309298 = 2.6309298
    # nDCG = 1.6925361 / 2.6309298 = 0.6433224
    qrels = {"a": 2, "b": 1, "z": 0}
    assert ndcg_at_k(["x", "a", "y", "b"], qrels, 10) == pytest.approx(0.6433224, abs=1e-7)
    assert ndcg_at_k(["x", "a", "y", "b"], qrels, 10) == pytest.approx(
        (2 / math.log2(3) + 1 / math.log2(5)) / (2 + 1 / math.log2(3))
    )


def test_ndcg_k_smaller_than_list() -> None:
    """Only the first k ranks count; the ideal list is also cut at k."""
    # k=2: DCG = 2/log2(3) = 1.2618595 (b at rank 4 is cut off)
    # IDCG@2 = 2/log2(2) + 1/log2(3) = 2.6309298 -> nDCG = 0.4796249
    qrels = {"a": 2, "b": 1}
    assert ndcg_at_k(["x", "a", "y", "b"], qrels, 2) == pytest.approx(0.4796249, abs=1e-7)


def test_ndcg_ideal_truncated_at_k() -> None:
    """Three relevant docs but k=2: the ideal DCG uses only the best two grades."""
    # DCG = 1/log2(3) = 0.6309298; IDCG@2 = 1/log2(2) + 1/log2(3) = 1.6309298
    # nDCG = 0.6309298 / 1.6309298 = 0.3868528
    qrels = {"a": 1, "b": 1, "c": 1}
    assert ndcg_at_k(["x", "a"], qrels, 2) == pytest.approx(0.3868528, abs=1e-7)


def test_ndcg_perfect_and_worst() -> None:
    """The ideal order scores 1.0, a list without relevant docs 0.0."""
    qrels = {"a": 3, "b": 1}
    assert ndcg_at_k(["a", "b", "x"], qrels, 10) == pytest.approx(1.0)
    assert ndcg_at_k(["x", "y"], qrels, 10) == 0.0


def test_ndcg_unjudged_and_negative_grades_gain_nothing() -> None:
    """Unjudged ids and grades <= 0 contribute no gain and are not in the ideal."""
    # only a (grade 1) is relevant and it is at rank 2: nDCG = (1/log2(3)) / 1 = 0.6309298
    qrels = {"a": 1, "n": -1, "z": 0}
    assert ndcg_at_k(["n", "a", "z"], qrels, 10) == pytest.approx(0.6309298, abs=1e-7)


def test_ndcg_duplicates_counted_once() -> None:
    """A repeated id is ignored after its first occurrence, as in a pytrec_eval run dict."""
    # a, a, b -> a, b: both relevant in ideal order, nDCG@2 = 1.0
    # (counting the duplicate would give 1 / (1 + 1/log2(3)) = 0.6131472)
    qrels = {"a": 1, "b": 1}
    assert ndcg_at_k(["a", "a", "b"], qrels, 2) == pytest.approx(1.0)


# ----------------------------------------------------------------------------- recall / MRR


def test_recall_examples() -> None:
    """Recall counts the relevant (grade > 0) docs found in the top k."""
    # relevant = {a, b}; c has grade 0
    # k=1: {c} -> 0/2; k=3: {c, a, x} -> 1/2; k=4: {c, a, x, b} -> 2/2
    qrels = {"a": 1, "b": 2, "c": 0}
    ranked = ["c", "a", "x", "b"]
    assert recall_at_k(ranked, qrels, 1) == 0.0
    assert recall_at_k(ranked, qrels, 3) == pytest.approx(0.5)
    assert recall_at_k(ranked, qrels, 4) == pytest.approx(1.0)
    assert recall_at_k(ranked, qrels, 100) == pytest.approx(1.0)


def test_recall_duplicates_do_not_take_slots() -> None:
    """Duplicates are dropped before cutting at k."""
    # a, a, b -> a, b: with k=2 both relevant are found -> 2/2
    assert recall_at_k(["a", "a", "b"], {"a": 1, "b": 1}, 2) == pytest.approx(1.0)


def test_mrr_examples() -> None:
    """MRR is 1/rank of the first relevant doc inside the top k."""
    # first relevant (a) is at rank 2 -> 1/2; with k=1 it is outside -> 0
    qrels = {"a": 1, "b": 2, "c": 0}
    ranked = ["c", "a", "x", "b"]
    assert mrr_at_k(ranked, qrels, 4) == pytest.approx(0.5)
    assert mrr_at_k(ranked, qrels, 1) == 0.0
    assert mrr_at_k(["b"], qrels, 10) == pytest.approx(1.0)
    # x, x, y, a -> x, y, a: a at rank 3 -> 1/3
    assert mrr_at_k(["x", "x", "y", "a"], qrels, 3) == pytest.approx(1 / 3)


@pytest.mark.parametrize("metric", ALL_METRICS)
@pytest.mark.parametrize("qrels", [{}, {"a": 0}, {"a": -1}])
def test_no_relevant_docs_score_zero(metric: Metric, qrels: dict[str, int]) -> None:
    """A query without relevant judgments scores 0.0 rather than dividing by zero."""
    assert metric(["a", "b"], qrels, 10) == 0.0


@pytest.mark.parametrize("metric", ALL_METRICS)
def test_empty_ranking_scores_zero(metric: Metric) -> None:
    """Retrieving nothing scores 0.0."""
    assert metric([], {"a": 1}, 10) == 0.0


@pytest.mark.parametrize("metric", ALL_METRICS)
@pytest.mark.parametrize("k", [0, -3])
def test_non_positive_k_rejected(metric: Metric, k: int) -> None:
    """k must be positive."""
    with pytest.raises(ValueError, match="k must be a positive integer"):
        metric(["a"], {"a": 1}, k)


# ----------------------------------------------------------------------------- load_beir


def _write_jsonl(path: Path, rows: list[dict[str, object]]) -> None:
    """Write rows as JSON lines."""
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def _make_dataset(root: Path, with_answers: bool) -> Path:
    """Create a tiny BEIR folder: 3 docs, 3 queries of which 2 are in the 'test' split."""
    _write_jsonl(
        root / "corpus.jsonl",
        [
            {"_id": "d1", "title": "Paris", "text": "Paris is the capital of France."},
            {"_id": "d2", "title": "", "text": "Bread needs flour."},
            {"_id": "d3", "text": "No title field at all."},
        ],
    )
    _write_jsonl(
        root / "queries.jsonl",
        [
            {"_id": "q1", "text": "capital of France?"},
            {"_id": "q2", "text": "what is in bread?"},
            {"_id": "q3", "text": "not in the split"},
        ],
    )
    (root / "qrels").mkdir()
    (root / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\nq1\td1\t2\nq1\td3\t0\nq2\td2\t1\n", encoding="utf-8"
    )
    if with_answers:
        _write_jsonl(
            root / "answers.jsonl",
            [
                {
                    "query_id": "q1",
                    "corpus_id": "d1",
                    "answers": [{"text": "Paris", "answer_start": 0}, {"text": "Paris"}],
                },
                {"query_id": "q3", "corpus_id": "d2", "answers": [{"text": "ignored"}]},
            ],
        )
    return root


def test_load_beir_reads_split(tmp_path: Path) -> None:
    """Corpus, split queries, graded qrels and answers are parsed."""
    ds = load_beir(_make_dataset(tmp_path, with_answers=True), "test")
    assert ds.corpus == {
        "d1": ("Paris", "Paris is the capital of France."),
        "d2": ("", "Bread needs flour."),
        "d3": ("", "No title field at all."),
    }
    assert ds.queries == {"q1": "capital of France?", "q2": "what is in bread?"}
    assert ds.qrels == {"q1": {"d1": 2, "d3": 0}, "q2": {"d2": 1}}
    assert ds.answers == {"q1": ["Paris", "Paris"]}


def test_load_beir_without_answers(tmp_path: Path) -> None:
    """A folder without answers.jsonl gives an empty answers dict."""
    ds = load_beir(_make_dataset(tmp_path, with_answers=False), "test")
    assert ds.answers == {}
    assert set(ds.queries) == {"q1", "q2"}


def test_load_beir_is_frozen(tmp_path: Path) -> None:
    """The dataset object cannot be reassigned."""
    ds = load_beir(_make_dataset(tmp_path, with_answers=False), "test")
    assert isinstance(ds, BeirDataset)
    with pytest.raises(dataclasses.FrozenInstanceError):
        ds.queries = {}  # type: ignore[misc]


@pytest.mark.parametrize("missing", ["corpus.jsonl", "queries.jsonl", "qrels/test.tsv"])
def test_load_beir_missing_file(tmp_path: Path, missing: str) -> None:
    """A missing required file raises ValueError naming it."""
    root = _make_dataset(tmp_path, with_answers=False)
    (root / missing).unlink()
    with pytest.raises(ValueError, match="not found") as info:
        load_beir(root, "test")
    assert missing.split("/")[-1] in str(info.value)


def test_load_beir_unknown_split_and_dir(tmp_path: Path) -> None:
    """An unknown split or a missing directory raises ValueError."""
    root = _make_dataset(tmp_path, with_answers=False)
    with pytest.raises(ValueError, match=r"dev\.tsv"):
        load_beir(root, "dev")
    with pytest.raises(ValueError, match="directory not found"):
        load_beir(tmp_path / "nope", "test")


def test_load_beir_bad_qrels_score(tmp_path: Path) -> None:
    """A non-integer relevance grade is reported with its line number."""
    root = _make_dataset(tmp_path, with_answers=False)
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\thigh\n")
    with pytest.raises(ValueError, match=r"test\.tsv:2"):
        load_beir(root, "test")
