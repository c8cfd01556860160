"""Conversational evaluation: turns asked in order with groundqa's own answers as history, scored
by turn position next to their standalone questions; the shipped conversation sets are valid."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from service import cli, evaluation
from service.answering import AskResult, ask
from service.config import Mode, Settings
from service.conversation import Turn
from service.errors import ConversationFileError
from service.evaluation import (
    Conversation,
    ConversationTurn,
    Outcome,
    PositionScores,
    Tally,
    evaluate_conversations,
    load_conversations,
)
from service.search import Searcher
from tests.conftest import FakeEmbedder

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench" / "conversations"
SEED_ARTICLE = ROOT / "seeds" / "000_6103265ed68543fd.txt"
# Read from the shared evaluation data beside the repository, never copied into it.
SQUAD = ROOT.parent / "shared" / "eval" / "squad"

TROOPS = (
    "North Korea sent about 12,000 troops to Russia.\n"
    "Many of the troops were deployed to the Kursk region.\n"
)
CATS = "Cats are small carnivorous mammals.\nCats sleep about 15 hours a day.\n"
CONVERSATIONS = {
    "conversations": [
        {
            "id": "troops",
            "turns": [
                {"standalone": "How many troops did North Korea send?", "answers": ["12,000"]},
                {
                    "question": "Where were they deployed?",
                    "standalone": "Where were the North Korean troops deployed?",
                    "answers": ["Kursk"],
                },
            ],
        },
        {
            "id": "cats",
            "turns": [
                {
                    "question": None,
                    "standalone": "How long do cats sleep?",
                    "answers": ["15 hours"],
                },
                {
                    "question": "What kind of mammals are they?",
                    "standalone": "What kind of mammals are cats?",
                    "answers": ["carnivorous"],
                },
                {"standalone": "Where did North Korea send troops?", "answers": ["RUSSIA"]},
            ],
        },
    ]
}


def write_json(path: Path, data: object) -> Path:
    """Write data as JSON and return the path."""
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """A seeds folder of two small documents."""
    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / "troops.txt").write_text(TROOPS, encoding="utf-8")
    (folder / "cats.txt").write_text(CATS, encoding="utf-8")
    return folder


@pytest.fixture
def eval_settings(tmp_path: Path) -> Settings:
    """Settings whose every default folder lies under tmp_path."""
    return Settings(
        _env_file=None,
        seeds_dir=tmp_path / "unused-seeds",
        index_dir=tmp_path / "unused-index",
        cache_dir=tmp_path / "cache",
        abstain_threshold=0.2,
        # The plain fused ranking and lexical answer sentences: these tests are about how turns
        # are asked and counted; the sentence signal would rank "Where were they deployed?"
        # right even alone, and the fake embedder's sentence cosines mean nothing.
        sentence_weight=0.0,
        sentence_meaning=0.0,
    )


class LastTurnOnly:
    """A stand-in for ask_conversation that answers the last user turn as if alone, and keeps
    the history it was given (so counts do not depend on the resolution being written)."""

    def __init__(self) -> None:
        self.histories: list[list[Turn]] = []

    def __call__(
        self,
        searcher: Searcher,
        turns: Sequence[Turn],
        *,
        top_k: int,
        mode: Mode | None = None,
        sources: Sequence[str] | None = None,
    ) -> AskResult:
        self.histories.append(list(turns))
        return ask(searcher, turns[-1].text, top_k=top_k, mode=mode, sources=sources)


def test_turns_are_asked_with_the_history_a_chat_frontend_sends(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    corpus: Path,
    eval_settings: Settings,
    fake_embedder: FakeEmbedder,
) -> None:
    """Each turn is asked after the earlier user turns and groundqa's own answers to them."""
    stub = LastTurnOnly()
    monkeypatch.setattr(evaluation, "ask_conversation", stub)
    path = write_json(tmp_path / "conv.json", CONVERSATIONS)
    report = evaluate_conversations(
        corpus, load_conversations(path), eval_settings, fake_embedder, progress=False
    )

    assert [[(t.role, t.text if t.role == "user" else "") for t in h] for h in stub.histories] == [
        [("user", "How many troops did North Korea send?")],
        [("user", "How many troops did North Korea send?"), ("assistant", ""),
         ("user", "Where were they deployed?")],
        [("user", "How long do cats sleep?")],
        [("user", "How long do cats sleep?"), ("assistant", ""),
         ("user", "What kind of mammals are they?")],
        [("user", "How long do cats sleep?"), ("assistant", ""),
         ("user", "What kind of mammals are they?"), ("assistant", ""),
         ("user", "Where did North Korea send troops?")],
    ]  # fmt: skip
    # The assistant turns are groundqa's answers, with the spans they cited.
    first_answer = stub.histories[1][1]
    assert first_answer.text.startswith("North Korea sent about 12,000 troops to Russia.")
    assert [(s.source, s.char_start) for s in first_answer.cited] == [("troops.txt", 0)]

    assert (report.conversations, report.documents, len(report.turns)) == (2, 2, 5)
    assert [(t.conversation, t.position, t.question) for t in report.turns] == [
        ("troops", 1, "How many troops did North Korea send?"),
        ("troops", 2, "Where were they deployed?"),
        ("cats", 1, "How long do cats sleep?"),
        ("cats", 2, "What kind of mammals are they?"),
        ("cats", 3, "Where did North Korea send troops?"),
    ]
    hit = Outcome(in_first_passage=True, in_first_highlight=True, in_answer=True, abstained=False)
    # Standalone, every question finds its document and its sentence.
    assert [t.alone for t in report.turns] == [hit] * 5
    # Taken alone, "Where were they deployed?" ranks the cats first; its answer still quotes
    # the troops' sentence from the second passage.
    lost = Outcome(
        in_first_passage=False, in_first_highlight=False, in_answer=True, abstained=False
    )
    assert [t.in_context for t in report.turns] == [hit, lost, hit, hit, hit]
    assert report.positions == (
        PositionScores("1", Tally(2, 2, 2, 2, 0), Tally(2, 2, 2, 2, 0)),
        PositionScores("2", Tally(2, 1, 1, 2, 0), Tally(2, 2, 2, 2, 0)),
        PositionScores("3", Tally(1, 1, 1, 1, 0), Tally(1, 1, 1, 1, 0)),
        PositionScores("follow-ups", Tally(3, 2, 2, 3, 0), Tally(3, 3, 3, 3, 0)),
        PositionScores("all", Tally(5, 4, 4, 5, 0), Tally(5, 5, 5, 5, 0)),
    )


def test_misses_and_abstentions_are_counted_per_position(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    corpus: Path,
    eval_settings: Settings,
    fake_embedder: FakeEmbedder,
) -> None:
    """A follow-up that loses its referent misses; an unrelated question abstains."""
    monkeypatch.setattr(evaluation, "ask_conversation", LastTurnOnly())
    data = {
        "conversations": [
            {
                "id": "c",
                "turns": [
                    {"standalone": "How long do cats sleep?", "answers": ["15 hours"]},
                    {
                        "question": "And the troops, how many?",
                        "standalone": "How many North Korean troops?",
                        "answers": ["12,000"],
                    },
                    {
                        "question": "Zebra quantum violin?",
                        "standalone": "Zebra quantum violin?",
                        "answers": ["Kursk"],
                    },
                ],
            }
        ]
    }
    report = evaluate_conversations(
        corpus,
        load_conversations(write_json(tmp_path / "c.json", data)),
        eval_settings,
        fake_embedder,
        progress=False,
    )
    by_position = {p.position: p for p in report.positions}
    assert by_position["3"] == PositionScores("3", Tally(1, 0, 0, 0, 1), Tally(1, 0, 0, 0, 1))
    assert by_position["follow-ups"].standalone == Tally(2, 1, 1, 1, 1)
    assert by_position["all"].in_context.turns == 3


def test_the_json_and_the_table_carry_counts_and_rates(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    corpus: Path,
    fake_embedder: FakeEmbedder,
    no_groundqa_env: None,
) -> None:
    """`groundqa eval SEEDS --conversations FILE --json` prints one JSON object."""
    monkeypatch.setattr(evaluation, "ask_conversation", LastTurnOnly())
    monkeypatch.setattr("service.embedding.embedder_for", lambda settings: fake_embedder)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GROUNDQA_ABSTAIN_THRESHOLD", "0.2")  # as eval_settings: same counts
    monkeypatch.setenv("GROUNDQA_SENTENCE_WEIGHT", "0")
    path = write_json(tmp_path / "conv.json", CONVERSATIONS)
    argv = ["eval", str(corpus), "--conversations", str(path), "--cache", str(tmp_path / "c")]
    assert cli.main([*argv, "--json"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    body: dict[str, Any] = json.loads(out)
    assert sorted(body) == [
        "build_id",
        "chunks",
        "conversations",
        "conversations_file",
        "dataset",
        "documents",
        "positions",
        "turns",
    ]
    assert [p["position"] for p in body["positions"]] == ["1", "2", "3", "follow-ups", "all"]
    assert body["positions"][3]["in_context"] == {
        "turns": 3,
        "in_first_passage": 2,
        "in_first_highlight": 2,
        "in_answer": 3,
        "abstained": 0,
        "in_first_passage_rate": 0.6667,
        "in_first_highlight_rate": 0.6667,
        "in_answer_rate": 1.0,
        "abstained_rate": 0.0,
    }
    assert body["turns"][1]["question"] == "Where were they deployed?"
    assert body["turns"][1]["alone"]["in_first_passage"] is True
    assert body["turns"][1]["in_context"]["in_first_passage"] is False

    assert cli.main(argv) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0] == (
        f"{corpus} conversations={path}: 2 conversations, 5 turns, 2 documents, 2 chunks"
    )
    assert table[1].split() == [
        "turn", "n",
        "passage@1", "conv", "passage@1", "alone", "highlight@1", "conv", "highlight@1", "alone",
        "answer", "conv", "answer", "alone", "abstained", "conv", "abstained", "alone",
    ]  # fmt: skip
    assert table[5].split() == ["follow-ups", "3"] + ["66.7%", "2", "100.0%", "3"] * 2 + [
        "100.0%", "3", "100.0%", "3", "0.0%", "0", "0.0%", "0",
    ]  # fmt: skip


def test_query_id_turns_take_question_and_answers_from_a_beir_dataset(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    eval_settings: Settings,
    fake_embedder: FakeEmbedder,
) -> None:
    """A query_id turn is that query's question (standalone) with its gold answers."""
    stub = LastTurnOnly()
    monkeypatch.setattr(evaluation, "ask_conversation", stub)
    beir = tmp_path / "beir"
    (beir / "qrels").mkdir(parents=True)
    (beir / "corpus.jsonl").write_text(
        json.dumps({"_id": "d1", "title": "Troops", "text": TROOPS}) + "\n"
        + json.dumps({"_id": "d2", "title": "Cats", "text": CATS}) + "\n",
        encoding="utf-8",
    )  # fmt: skip
    (beir / "queries.jsonl").write_text(
        json.dumps({"_id": "q1", "text": "How many troops did North Korea send?"}) + "\n"
        + json.dumps({"_id": "q2", "text": "Where were the North Korean troops deployed?"})
        + "\n",
        encoding="utf-8",
    )  # fmt: skip
    (beir / "answers.jsonl").write_text(
        json.dumps({"query_id": "q1", "answers": [{"text": "12,000"}, {"text": "12,000"}]})
        + "\n" + json.dumps({"query_id": "q2", "answers": [{"text": "Kursk region"}]}) + "\n",
        encoding="utf-8",
    )  # fmt: skip
    (beir / "qrels" / "dev.tsv").write_text("q1\td1\t1\nq2\td1\t1\n", encoding="utf-8")
    data = {
        "conversations": [
            {
                "id": "t",
                "turns": [
                    {"query_id": "q1", "question": None},
                    {"query_id": "q2", "question": "Where were they deployed?"},
                ],
            }
        ]
    }
    conversations = load_conversations(write_json(tmp_path / "c.json", data))
    assert conversations[0].turns[1] == ConversationTurn(
        "Where were they deployed?", None, (), "q2"
    )
    report = evaluate_conversations(
        beir, conversations, eval_settings, fake_embedder, split="dev", progress=False
    )
    assert [(t.question, t.standalone) for t in report.turns] == [
        ("How many troops did North Korea send?", "How many troops did North Korea send?"),
        ("Where were they deployed?", "Where were the North Korean troops deployed?"),
    ]
    assert report.positions[-1] == PositionScores("all", Tally(2, 1, 1, 2, 0), Tally(2, 2, 2, 2, 0))
    assert report.documents == 2
    # The dataset's documents are written under the cache, not next to the dataset.
    assert sorted(p.name for p in beir.iterdir()) == [
        "answers.jsonl",
        "corpus.jsonl",
        "qrels",
        "queries.jsonl",
    ]


def test_a_query_id_needs_a_beir_dataset(
    tmp_path: Path, corpus: Path, eval_settings: Settings, fake_embedder: FakeEmbedder
) -> None:
    """Over a seeds folder there is no query to look a query_id up in."""
    data = {"conversations": [{"id": "x", "turns": [{"query_id": "q1"}]}]}
    path = write_json(tmp_path / "c.json", data)
    with pytest.raises(ConversationFileError) as info:
        evaluate_conversations(
            corpus,
            load_conversations(path),
            eval_settings,
            fake_embedder,
            conversations_file=str(path),
            progress=False,
        )
    assert str(info.value) == (
        f"{path}: conversation 'x' names query_id 'q1' but the dataset is a seeds folder, not BEIR"
    )


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("{", "invalid JSON at line 1 (Expecting property name enclosed in double quotes)"),
        ("[]", "expected an object with a non-empty 'conversations' list"),
        ('{"conversations": []}', "expected an object with a non-empty 'conversations' list"),
        ('{"conversations": [{"id": "a"}]}', "conversations[0]: 'turns' must be a non-empty list"),
        (
            '{"conversations": [{"id": "a", "turns": [{"query_id": "q"}]},'
            ' {"id": "a", "turns": [{"query_id": "q"}]}]}',
            "conversations[1]: 'id' must be a unique non-empty string",
        ),
        (
            '{"conversations": [{"id": "a", "turns": [{"question": "Why?"}]}]}',
            "conversations[0].turns[0]: needs 'query_id' or 'standalone'",
        ),
        (
            '{"conversations": [{"id": "a", "turns": [{"standalone": "Why?", "answers": []}]}]}',
            "conversations[0].turns[0]: 'answers' must be a non-empty list of non-empty strings",
        ),
        (
            '{"conversations": [{"id": "a", "turns": [{"query_id": "q", "answers": ["x"]}]}]}',
            "conversations[0].turns[0]: give either 'query_id' or 'standalone' and 'answers'",
        ),
        (
            '{"conversations": [{"id": "a", "turns": [{"query_id": "q", "answer": "x"}]}]}',
            "conversations[0].turns[0]: unknown field 'answer'",
        ),
    ],
)
def test_a_malformed_file_names_what_is_wrong(tmp_path: Path, content: str, reason: str) -> None:
    """Each defect is reported with the file and the place in it, on one line."""
    path = tmp_path / "c.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ConversationFileError) as info:
        load_conversations(path)
    assert str(info.value) == f"{path}: {reason}"


def test_cli_missing_file_is_one_line_and_exit_2(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    no_groundqa_env: None,
) -> None:
    """A missing conversations file fails before any model loads: exit 2, one stderr line."""

    def no_model(settings: Settings) -> None:
        raise AssertionError("the model must not load")

    monkeypatch.setattr("service.embedding.embedder_for", no_model)
    missing = tmp_path / "missing.json"
    code = cli.main(["eval", str(tmp_path), "--conversations", str(missing)])
    out, err = capsys.readouterr()
    assert (code, out, err) == (2, "", f"error: conversations file not found: {missing}\n")


def test_cli_malformed_file_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, no_groundqa_env: None
) -> None:
    """A malformed file: exit 2 and the reason on one line."""
    path = tmp_path / "bad.json"
    path.write_text('{"conversations": [\n  {"id": 1}\n]}', encoding="utf-8")
    code = cli.main(["eval", str(tmp_path), "--conversations", str(path)])
    out, err = capsys.readouterr()
    assert (code, out) == (2, "")
    assert err == f"error: {path}: conversations[0]: 'id' must be a unique non-empty string\n"


# --- the shipped conversation sets ---------------------------------------------------------


def check_shape(conversations: Sequence[Conversation]) -> None:
    """2 to 4 turns each; every later turn worded differently or marked as a new question."""
    assert all(2 <= len(c.turns) <= 4 for c in conversations)


def test_the_seed_set_has_gold_answers_verbatim_in_the_seed() -> None:
    """Every seed answer occurs in the seed article; first turns are typed as spelled out."""
    conversations = load_conversations(BENCH / "seed.json")
    check_shape(conversations)
    assert len(conversations) >= 12
    text = SEED_ARTICLE.read_text(encoding="utf-8")
    for conv in conversations:
        assert conv.turns[0].question is None, conv.id
        for turn in conv.turns:
            assert turn.query_id is None and turn.standalone, conv.id
            assert [a for a in turn.answers if a not in text] == [], conv.id
    follow_ups = [t for c in conversations for t in c.turns[1:]]
    assert sum(t.question is not None for t in follow_ups) >= 25
    # Some later turns are new, self-contained questions (not to be dragged back).
    assert sum(t.question is None for t in follow_ups) >= 3


def test_the_squad_set_stores_only_ids_and_our_wording() -> None:
    """No SQuAD text in the repository: each turn is a query_id and our follow-up wording."""
    conversations = load_conversations(BENCH / "squad.json")
    check_shape(conversations)
    assert len(conversations) >= 30
    assert len(conversations) + len(load_conversations(BENCH / "seed.json")) >= 40
    for conv in conversations:
        assert conv.turns[0].question is None, conv.id
        assert all(t.query_id and t.standalone is None for t in conv.turns), conv.id


@pytest.mark.skipif(not SQUAD.is_dir(), reason=f"SQuAD not found at {SQUAD}")
def test_the_squad_set_names_dev_queries_of_one_article_per_conversation() -> None:
    """Every query_id is a SQuAD dev question, and a conversation stays on one article unless
    a turn is marked as a new question."""
    from service.metrics import load_beir

    dataset = load_beir(SQUAD, "dev")
    titles = {
        qid: dataset.corpus[next(iter(docs))][0] for qid, docs in dataset.qrels.items() if docs
    }
    for conv in load_conversations(BENCH / "squad.json"):
        for before, turn in zip(conv.turns, conv.turns[1:], strict=False):
            assert turn.query_id in dataset.queries and dataset.answers.get(turn.query_id)
            assert before.query_id is not None and turn.query_id is not None
            if turn.question is not None:  # a follow-up: about the article of the turn before
                assert titles[turn.query_id] == titles[before.query_id], conv.id
