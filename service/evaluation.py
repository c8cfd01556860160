"""Evaluation: index a BEIR-layout dataset through the normal pipeline and score retrieval,
or score multi-turn conversations against the same questions asked standalone."""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from tqdm import tqdm

from service.answering import (
    AskResult,
    ask,
    best_highlights,
    best_sentences,
    sentence_choice,
)
from service.builds import IndexHolder
from service.config import Mode, Settings
from service.conversation import Turn, ask_conversation, assistant_turn
from service.embedding import Embedder
from service.errors import ConversationFileError
from service.indexing import Builder, BuildReport
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


def _cache_root(dataset_dir: Path, settings: Settings, cache_dir: Path | None) -> Path:
    """The folder of a dataset's evaluation index, one per dataset path."""
    key = hashlib.sha256(str(dataset_dir.resolve()).encode()).hexdigest()[:10]
    return (cache_dir or settings.cache_dir / "eval") / f"{dataset_dir.name}-{key}"


def _open_index(
    ds_settings: Settings, embedder: Embedder, progress: bool
) -> tuple[Searcher, BuildReport, float]:
    """Build (or update) the index of ds_settings' seeds through the normal pipeline and open
    a searcher on it; returns the searcher, the build report and the build's seconds."""
    started = time.perf_counter()
    report = Builder(ds_settings, embedder).build(show_progress=progress)
    build_seconds = time.perf_counter() - started
    holder = IndexHolder(ds_settings.index_dir, embedder)
    holder.refresh()
    return Searcher(ds_settings, embedder, holder), report, build_seconds


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
    root = _cache_root(dataset_dir, settings, cache_dir)
    ds_settings = settings.model_copy(
        update={"seeds_dir": root / "seeds", "index_dir": root / "index"}
    )
    mapping = write_corpus(dataset, ds_settings.seeds_dir)
    searcher, report, build_seconds = _open_index(ds_settings, embedder, progress)
    holder = searcher.holder

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
            choice = sentence_choice(question, searcher.settings)
            best = best_sentences(
                result.terms, result.hits[:1], result.index.keyword, choice=choice
            )
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


# --- conversations: follow-up turns asked in context, next to their spelled-out versions ------

CONVERSATION_TOP_K = 5
# Positions reported beside each turn position: every turn after the first, and all turns.
FOLLOW_UPS = "follow-ups"
ALL_TURNS = "all"


@dataclass(frozen=True, slots=True)
class ConversationTurn:
    """A user turn as typed (None: same as standalone), spelled out, and its gold answers;
    a turn naming a dataset query_id gets its standalone and answers from the dataset."""

    question: str | None
    standalone: str | None
    answers: tuple[str, ...]
    query_id: str | None = None


@dataclass(frozen=True, slots=True)
class Conversation:
    """An evaluation conversation: its user turns, in order."""

    id: str
    turns: tuple[ConversationTurn, ...]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one answer got right against a turn's gold answers."""

    in_first_passage: bool
    in_first_highlight: bool
    in_answer: bool
    abstained: bool


@dataclass(frozen=True, slots=True)
class TurnResult:
    """One turn asked in its conversation and asked standalone."""

    conversation: str
    position: int
    question: str
    standalone: str
    in_context: Outcome
    alone: Outcome


@dataclass(frozen=True, slots=True)
class Tally:
    """Counts of outcomes over some turns."""

    turns: int
    in_first_passage: int
    in_first_highlight: int
    in_answer: int
    abstained: int


@dataclass(frozen=True, slots=True)
class PositionScores:
    """The tallies of the turns at one position ("1", "2", ..., follow-ups, all)."""

    position: str
    in_context: Tally
    standalone: Tally


@dataclass(frozen=True, slots=True)
class ConversationReport:
    """A conversational evaluation: scores by turn position and every turn's outcomes."""

    dataset: str
    conversations_file: str
    conversations: int
    documents: int
    chunks: int
    build_id: str
    positions: tuple[PositionScores, ...]
    turns: tuple[TurnResult, ...]


_TURN_KEYS = {"question", "standalone", "answers", "query_id"}


def _parse_turn(raw: object, where: str) -> ConversationTurn:
    """One turn object of a conversations file; ValueError naming where it is wrong."""
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: expected an object")
    unknown = sorted(set(raw) - _TURN_KEYS)
    if unknown:
        raise ValueError(f"{where}: unknown field {unknown[0]!r}")
    question, standalone = raw.get("question"), raw.get("standalone")
    query_id, answers = raw.get("query_id"), raw.get("answers")
    for name, value in (("question", question), ("standalone", standalone)):
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise ValueError(f"{where}: {name!r} must be a non-empty string or null")
    if query_id is not None:
        if not isinstance(query_id, str) or not query_id:
            raise ValueError(f"{where}: 'query_id' must be a non-empty string")
        if standalone is not None or answers is not None:
            raise ValueError(f"{where}: give either 'query_id' or 'standalone' and 'answers'")
        return ConversationTurn(question, None, (), query_id)
    if standalone is None:
        raise ValueError(f"{where}: needs 'query_id' or 'standalone'")
    if (
        not isinstance(answers, list)
        or not answers
        or not all(isinstance(a, str) and a.strip() for a in answers)
    ):
        raise ValueError(f"{where}: 'answers' must be a non-empty list of non-empty strings")
    return ConversationTurn(question, standalone, tuple(answers))


def load_conversations(path: Path) -> tuple[Conversation, ...]:
    """Parse a conversations file ({"conversations": [{"id", "turns": [...]}]}); raises
    ConversationFileError with a one-line reason when it is missing or malformed."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConversationFileError(f"conversations file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConversationFileError(f"cannot read conversations file {path}: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise ConversationFileError(
            f"{path}: invalid JSON at line {exc.lineno} ({exc.msg})"
        ) from exc
    try:
        items = raw.get("conversations") if isinstance(raw, dict) else None
        if not isinstance(items, list) or not items:
            raise ValueError("expected an object with a non-empty 'conversations' list")
        out: list[Conversation] = []
        seen: set[str] = set()
        for i, item in enumerate(items):
            where = f"conversations[{i}]"
            if not isinstance(item, dict):
                raise ValueError(f"{where}: expected an object")
            cid, turns = item.get("id"), item.get("turns")
            if not isinstance(cid, str) or not cid or cid in seen:
                raise ValueError(f"{where}: 'id' must be a unique non-empty string")
            seen.add(cid)
            if not isinstance(turns, list) or not turns:
                raise ValueError(f"{where}: 'turns' must be a non-empty list")
            parsed = tuple(_parse_turn(t, f"{where}.turns[{j}]") for j, t in enumerate(turns))
            out.append(Conversation(cid, parsed))
    except ValueError as exc:
        raise ConversationFileError(f"{path}: {exc}") from exc
    return tuple(out)


def _resolve(
    conversations: Sequence[Conversation], dataset: BeirDataset | None, origin: str
) -> tuple[Conversation, ...]:
    """Fill query_id turns from the dataset (its question is the standalone, its answers the
    gold) and default each question to its standalone; ConversationFileError when impossible."""
    out = []
    for conv in conversations:
        turns = []
        for turn in conv.turns:
            if turn.query_id is not None:
                if dataset is None:
                    raise ConversationFileError(
                        f"{origin}: conversation {conv.id!r} names query_id "
                        f"{turn.query_id!r} but the dataset is a seeds folder, not BEIR"
                    )
                standalone = dataset.queries.get(turn.query_id)
                answers = tuple(dict.fromkeys(dataset.answers.get(turn.query_id, ())))
                if standalone is None or not answers:
                    raise ConversationFileError(
                        f"{origin}: conversation {conv.id!r}: query_id {turn.query_id!r} "
                        "has no question or no gold answers in the dataset's split"
                    )
                turn = replace(turn, standalone=standalone, answers=answers)
            assert turn.standalone is not None  # the parser or the dataset set it
            turns.append(replace(turn, question=turn.question or turn.standalone))
        out.append(Conversation(conv.id, tuple(turns)))
    return tuple(out)


def judge(result: AskResult, answers: Sequence[str]) -> Outcome:
    """Where a gold answer shows up in an ask's result (case-insensitive substring)."""
    first = result.passages[0] if result.passages else None
    highlights = first.highlights if first else ()
    return Outcome(
        in_first_passage=first is not None and _contains(first.text, answers),
        in_first_highlight=bool(highlights) and _contains(highlights[0].text, answers),
        in_answer=result.answer.grounded and _contains(result.answer.text, answers),
        abstained=not result.answer.grounded,
    )


def _tally(outcomes: Sequence[Outcome]) -> Tally:
    """Count outcomes."""
    return Tally(
        turns=len(outcomes),
        in_first_passage=sum(o.in_first_passage for o in outcomes),
        in_first_highlight=sum(o.in_first_highlight for o in outcomes),
        in_answer=sum(o.in_answer for o in outcomes),
        abstained=sum(o.abstained for o in outcomes),
    )


def score_positions(turns: Sequence[TurnResult]) -> tuple[PositionScores, ...]:
    """Tallies per turn position, then over follow-ups (positions >= 2), then over all turns."""
    groups: list[tuple[str, list[TurnResult]]] = [
        (str(p), [t for t in turns if t.position == p]) for p in sorted({t.position for t in turns})
    ]
    groups.append((FOLLOW_UPS, [t for t in turns if t.position >= 2]))
    groups.append((ALL_TURNS, list(turns)))
    return tuple(
        PositionScores(
            name, _tally([t.in_context for t in group]), _tally([t.alone for t in group])
        )
        for name, group in groups
    )


def run_conversations(
    searcher: Searcher,
    conversations: Sequence[Conversation],
    *,
    top_k: int = CONVERSATION_TOP_K,
    mode: Mode | None = None,
    progress: bool = False,
) -> tuple[TurnResult, ...]:
    """Ask each conversation's turns in order as a chat frontend does (earlier user turns and
    groundqa's own answers as history), and each turn's standalone version alone."""
    results = []
    for conv in tqdm(conversations, desc="conversations", disable=not progress, unit="conv"):
        history: list[Turn] = []
        for position, turn in enumerate(conv.turns, start=1):
            assert turn.question is not None and turn.standalone is not None  # resolved
            history.append(Turn("user", turn.question))
            in_context = ask_conversation(searcher, history, top_k=top_k, mode=mode)
            history.append(assistant_turn(in_context))
            alone = ask(searcher, turn.standalone, top_k=top_k, mode=mode)
            results.append(
                TurnResult(
                    conversation=conv.id,
                    position=position,
                    question=turn.question,
                    standalone=turn.standalone,
                    in_context=judge(in_context, turn.answers),
                    alone=judge(alone, turn.answers),
                )
            )
    return tuple(results)


def is_beir(dataset_dir: Path) -> bool:
    """Whether a folder is a BEIR-layout dataset (else it is read as a seeds folder)."""
    return (dataset_dir / "corpus.jsonl").is_file()


def evaluate_conversations(
    dataset_dir: Path,
    conversations: Sequence[Conversation],
    settings: Settings,
    embedder: Embedder,
    *,
    split: str = "test",
    conversations_file: str = "",
    mode: Mode | None = None,
    cache_dir: Path | None = None,
    progress: bool = True,
) -> ConversationReport:
    """Index a BEIR dataset or a seeds folder (cached) and score the conversations on it."""
    root = _cache_root(dataset_dir, settings, cache_dir)
    dataset: BeirDataset | None = None
    if is_beir(dataset_dir):
        dataset = load_beir(dataset_dir, split)
        seeds_dir = root / "seeds"
    else:
        seeds_dir = dataset_dir  # a seeds folder is indexed as it is, never written to
    resolved = _resolve(conversations, dataset, conversations_file or "conversations")
    ds_settings = settings.model_copy(update={"seeds_dir": seeds_dir, "index_dir": root / "index"})
    if dataset is not None:
        write_corpus(dataset, seeds_dir)
    searcher, report, _ = _open_index(ds_settings, embedder, progress)
    turns = run_conversations(searcher, resolved, mode=mode, progress=progress)
    return ConversationReport(
        dataset=str(dataset_dir),
        conversations_file=conversations_file,
        conversations=len(resolved),
        documents=report.files_indexed,
        chunks=report.chunks,
        build_id=searcher.holder.current.build_id,
        positions=score_positions(turns),
        turns=turns,
    )


def _rates(tally: Tally) -> dict[str, Any]:
    """A tally's counts and their rates over its turns."""
    out: dict[str, Any] = asdict(tally)
    n = tally.turns
    for name in ("in_first_passage", "in_first_highlight", "in_answer", "abstained"):
        out[f"{name}_rate"] = round(getattr(tally, name) / n, 4) if n else None
    return out


def conversation_json(report: ConversationReport) -> dict[str, Any]:
    """The report as JSON-ready data: tallies with counts and rates, and every turn."""
    out = asdict(report)
    out["positions"] = [
        {
            "position": p.position,
            "in_context": _rates(p.in_context),
            "standalone": _rates(p.standalone),
        }
        for p in report.positions
    ]
    return out


_COLUMNS = (
    ("passage@1", "in_first_passage"),
    ("highlight@1", "in_first_highlight"),
    ("answer", "in_answer"),
    ("abstained", "abstained"),
)


def conversation_table(report: ConversationReport) -> str:
    """The report as a plain-text table: each metric in conversation (conv) and asked
    standalone (alone), as percent and count."""
    head = ["turn", "n"] + [f"{label} {how}" for label, _ in _COLUMNS for how in ("conv", "alone")]
    rows = [head]
    for p in report.positions:
        row = [p.position, str(p.in_context.turns)]
        for _, field_name in _COLUMNS:
            for tally in (p.in_context, p.standalone):
                count = getattr(tally, field_name)
                pct = 100 * count / tally.turns if tally.turns else 0.0
                row.append(f"{pct:5.1f}% {count:3d}")
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = [
        f"{report.dataset} conversations={report.conversations_file}: {report.conversations} "
        f"conversations, {len(report.turns)} turns, {report.documents} documents, "
        f"{report.chunks} chunks"
    ]
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)
