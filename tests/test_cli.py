"""Command line: JSON for machines, text for people, one line on stderr for each error."""

from __future__ import annotations

import argparse
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from service import cli
from service.answering import ask
from service.api.routes import to_response
from service.builds import IndexHolder
from service.config import Settings
from service.indexing import build_lock
from service.parsers import SUPPORTED
from service.search import Searcher
from service.store import read_pointer
from tests.conftest import FakeEmbedder, WriteSeed

DOCUMENTED_KEYS = {
    "build_id",
    "files_indexed",
    "added",
    "modified",
    "deleted",
    "unchanged",
    "skipped",
    "chunks",
    "chunks_embedded",
    "chunks_reused",
    "seconds",
    "full_rebuild_reason",
}
GUIDE = "# Guide\n\nThe library opens at nine in the morning.\nIt closes at six.\n"
NOTES = "Notes\n\nThe cafe serves espresso and green tea.\n"


@pytest.fixture(autouse=True)
def clean_environment(
    no_groundqa_env: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[None]:
    """No GROUNDQA_* variables or .env file of the caller; the CLI's log level restored."""
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    logger = logging.getLogger("groundqa")
    level = logger.level
    yield
    logger.setLevel(level)


@pytest.fixture
def fake_model(monkeypatch: pytest.MonkeyPatch, fake_embedder: FakeEmbedder) -> FakeEmbedder:
    """Every model the CLI loads is the fake (the CLI imports load_embedder when it runs)."""

    def load(*args: Any, **kwargs: Any) -> FakeEmbedder:
        return fake_embedder

    monkeypatch.setattr("service.embedding.load_embedder", load)
    monkeypatch.setattr("service.embedding.embedder_for", load, raising=False)
    return fake_embedder


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `groundqa argv...`."""
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def paths(settings: Settings) -> list[str]:
    return ["--seeds", str(settings.seeds_dir), "--index", str(settings.index_dir)]


def index_json(capsys: pytest.CaptureFixture[str], settings: Settings, *extra: str) -> Any:
    code, out, err = run(capsys, "index", *paths(settings), "--json", *extra)
    assert (code, err) == (0, "")
    assert out.endswith("}\n") and out.count("\n") == 1
    return json.loads(out)


def test_index_json(
    capsys: pytest.CaptureFixture[str],
    settings: Settings,
    fake_model: FakeEmbedder,
    write_seed: WriteSeed,
) -> None:
    write_seed("guide.md", GUIDE)
    write_seed("sub/notes.txt", NOTES)
    write_seed("image.png", "not text")
    report = index_json(capsys, settings)
    assert set(report) >= DOCUMENTED_KEYS
    build_id = read_pointer(settings.index_dir)
    assert isinstance(report["seconds"], float) and report["seconds"] >= 0
    assert {k: report[k] for k in DOCUMENTED_KEYS - {"seconds"}} == {
        "build_id": build_id,
        "files_indexed": 2,
        "added": ["guide.md", "sub/notes.txt"],
        "modified": [],
        "deleted": [],
        "unchanged": [],
        "skipped": [{"source": "image.png", "reason": "unsupported file type .png"}],
        "chunks": 2,
        "chunks_embedded": 2,
        "chunks_reused": 0,
        "full_rebuild_reason": "no published build",
    }
    assert (report["published"], report["dry_run"]) == (True, False)

    write_seed("sub/notes.txt", NOTES.replace("green tea", "black tea"))
    report = index_json(capsys, settings)
    assert {k: report[k] for k in DOCUMENTED_KEYS - {"seconds", "build_id"}} == {
        "files_indexed": 2,
        "added": [],
        "modified": ["sub/notes.txt"],
        "deleted": [],
        "unchanged": ["guide.md"],
        "skipped": [{"source": "image.png", "reason": "unsupported file type .png"}],
        "chunks": 2,
        "chunks_embedded": 1,
        "chunks_reused": 1,
        "full_rebuild_reason": None,
    }
    assert report["build_id"] == read_pointer(settings.index_dir) != build_id

    report = index_json(capsys, settings, "--full")
    assert (report["chunks_embedded"], report["full_rebuild_reason"]) == (2, "--full requested")


def test_index_text_summary(
    capsys: pytest.CaptureFixture[str],
    settings: Settings,
    fake_model: FakeEmbedder,
    write_seed: WriteSeed,
) -> None:
    write_seed("guide.md", GUIDE)
    code, out, err = run(capsys, "index", *paths(settings))
    assert (code, err) == (0, "")
    build_id = read_pointer(settings.index_dir)
    lines = out.splitlines()
    assert lines[:-1] == [
        f"Published build {build_id}.",
        "Full rebuild: no published build.",
        "Files: 1 added, 0 modified, 0 deleted, 0 unchanged; 1 indexed, 0 skipped.",
        "  added: guide.md",
        "Chunks: 1 total, 1 embedded, 0 reused from cache.",
    ]
    assert re.fullmatch(r"Took \d+\.\d\d s\.", lines[-1])
    code, out, _ = run(capsys, "index", *paths(settings))
    assert out.splitlines()[0] == f"Index is up to date (build {build_id}); nothing to do."

    # The summary names what changed: the first five of each, then a count.
    write_seed("guide.md", GUIDE + "\nOne more line.\n")
    for n in range(7):
        write_seed(f"notes/{n}.txt", f"Note {n} says the library opens at {n} o'clock.\n")
    (settings.seeds_dir / "empty.txt").write_text("")
    code, out, _ = run(capsys, "index", *paths(settings))
    assert out.splitlines()[1:5] == [
        "Files: 8 added, 1 modified, 0 deleted, 0 unchanged; 8 indexed, 1 skipped.",
        "  added: empty.txt, notes/0.txt, notes/1.txt, notes/2.txt, notes/3.txt and 3 more",
        "  modified: guide.md",
        "  skipped empty.txt: empty file",
    ]


def test_index_dry_run(
    capsys: pytest.CaptureFixture[str],
    settings: Settings,
    fake_model: FakeEmbedder,
    write_seed: WriteSeed,
) -> None:
    write_seed("guide.md", GUIDE)
    write_seed("notes.txt", NOTES)
    code, out, err = run(capsys, "index", *paths(settings), "--dry-run")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[:-1] == [
        "Dry run: nothing written.",
        "Full rebuild: no published build.",
        "Files: 2 added, 0 modified, 0 deleted, 0 unchanged; 2 indexed, 0 skipped.",
        "  added: guide.md, notes.txt",
    ]
    assert re.fullmatch(r"Took \d+\.\d\d s\.", lines[-1])
    assert not settings.index_dir.exists()
    assert fake_model.calls == []

    report = index_json(capsys, settings, "--dry-run")
    assert (report["dry_run"], report["published"], report["build_id"], report["added"]) == (
        True,
        False,
        None,
        ["guide.md", "notes.txt"],
    )
    assert not settings.index_dir.exists()


def test_ask_json_prints_the_api_body(
    capsys: pytest.CaptureFixture[str],
    settings: Settings,
    fake_model: FakeEmbedder,
    write_seed: WriteSeed,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GROUNDQA_ABSTAIN_THRESHOLD", str(settings.abstain_threshold))
    write_seed("guide.md", GUIDE)
    write_seed("notes.txt", NOTES)
    index_json(capsys, settings)
    question = "When does the library open?"
    code, out, err = run(capsys, "ask", question, *paths(settings), "--json", "--top-k", "2")
    assert (code, err) == (0, "")
    assert out.count("\n") == 1
    body = json.loads(out)
    assert body.pop("took_ms") >= 0
    holder = IndexHolder(settings.index_dir, fake_model)
    holder.refresh()
    expected = to_response(ask(Searcher(settings, fake_model, holder), question, top_k=2))
    expected_body = expected.model_dump(mode="json")
    expected_body.pop("took_ms")
    assert body == expected_body
    assert body["index"] == {"build_id": read_pointer(settings.index_dir), "model": "fake-hash-64"}
    top = body["passages"][0]
    assert top["citation"]["source"] == "guide.md"
    assert GUIDE[top["citation"]["char_start"] : top["citation"]["char_end"]] == top["text"]


def test_ask_text(
    capsys: pytest.CaptureFixture[str],
    settings: Settings,
    fake_model: FakeEmbedder,
    write_seed: WriteSeed,
) -> None:
    write_seed("guide.md", GUIDE)
    index_json(capsys, settings)
    code, out, err = run(capsys, "ask", "library opening hours", *paths(settings), "--top-k", "1")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].startswith("Answer: ")
    assert re.fullmatch(r"\[1\] guide\.md, lines 1-4 \(score -?\d+\.\d{4}\)", lines[2])
    # The passage whole, every line of it indented under its source line.
    assert lines[3:7] == [
        "    # Guide",
        "",
        "    The library opens at nine in the morning.",
        "    It closes at six.",
    ]
    assert re.fullmatch(rf"build {read_pointer(settings.index_dir)}, \d+\.\d ms", lines[-1])


def test_verify_json_and_text(
    capsys: pytest.CaptureFixture[str],
    settings: Settings,
    fake_model: FakeEmbedder,
    write_seed: WriteSeed,
) -> None:
    """`groundqa verify` prints the verify API's body (or a line per sentence) and exits 1
    when a sentence is not supported."""
    write_seed("guide.md", GUIDE)
    index_json(capsys, settings)
    supported = "The library opens at nine in the morning."
    code, out, err = run(capsys, "verify", supported, *paths(settings), "--json")
    assert (code, err) == (0, "")
    body = json.loads(out)
    evidence = body["sentences"][0]["evidence"]
    assert GUIDE[evidence["char_start"] : evidence["char_end"]] == evidence["text"] == supported
    code, out, err = run(capsys, "verify", f"{supported} It opens at ten.", *paths(settings))
    assert (code, err) == (1, "")
    assert out.splitlines()[0] == f"SUPPORTED      {supported}"
    assert out.splitlines()[2] == "NOT SUPPORTED  It opens at ten."
    assert out.splitlines()[-1] == "1 of 2 sentences supported."


# --- errors: a non-zero exit and exactly one line on stderr -----------------------------------


def test_missing_seeds_folder(
    capsys: pytest.CaptureFixture[str],
    settings: Settings,
    fake_model: FakeEmbedder,
) -> None:
    missing = settings.seeds_dir / "nope"
    code, out, err = run(
        capsys, "index", "--seeds", str(missing), "--index", str(settings.index_dir)
    )
    assert (code, out) == (2, "")
    assert err == (
        f"error: seeds folder {missing} does not exist; create it and add files of a supported "
        f"type ({SUPPORTED})\n"
    )


def test_seeds_folder_that_is_a_file(
    capsys: pytest.CaptureFixture[str], settings: Settings, fake_model: FakeEmbedder
) -> None:
    seed = settings.seeds_dir / "notes.txt"
    seed.parent.mkdir(parents=True, exist_ok=True)
    seed.write_text(NOTES)
    code, out, err = run(capsys, "index", "--seeds", str(seed), "--index", str(settings.index_dir))
    assert (code, out) == (2, "")
    assert err == (
        f"error: seeds folder {seed} is a file, not a folder; pass the folder that holds the "
        f"files to index ({SUPPORTED})\n"
    )


def test_empty_seeds_folder_says_what_to_add(
    capsys: pytest.CaptureFixture[str], settings: Settings, fake_model: FakeEmbedder
) -> None:
    settings.seeds_dir.mkdir(parents=True, exist_ok=True)
    code, out, err = run(capsys, "index", *paths(settings))
    assert (code, err) == (0, "")
    assert f"No files indexed: add files of a supported type ({SUPPORTED}).\n" in out


def test_ask_without_index(
    capsys: pytest.CaptureFixture[str],
    settings: Settings,
    fake_model: FakeEmbedder,
) -> None:
    code, out, err = run(capsys, "ask", "anything?", *paths(settings))
    assert (code, out) == (2, "")
    assert err == f"error: no index in {settings.index_dir}; run `groundqa index` to build it\n"


def test_index_while_another_build_runs(
    capsys: pytest.CaptureFixture[str],
    settings: Settings,
    fake_model: FakeEmbedder,
    write_seed: WriteSeed,
) -> None:
    write_seed("guide.md", GUIDE)
    with build_lock(settings.index_dir):
        code, out, err = run(capsys, "index", *paths(settings))
    assert (code, out) == (3, "")
    assert err == (
        f"error: another build of {settings.index_dir} is running; "
        "wait for it to finish and try again\n"
    )


@pytest.mark.parametrize("command", ["index", "ask"])
def test_unknown_model_path(
    capsys: pytest.CaptureFixture[str],
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    write_seed: WriteSeed,
    command: str,
) -> None:
    """The real loader (no fake): a model folder that does not exist is a ModelLoadError."""
    monkeypatch.setenv("GROUNDQA_MODEL", "/nonexistent")
    write_seed("guide.md", GUIDE)
    argv = ["index"] if command == "index" else ["ask", "a question"]
    code, out, err = run(capsys, *argv, *paths(settings))
    assert (code, out) == (2, "")
    assert err == (
        "error: model folder /nonexistent does not exist; set GROUNDQA_MODEL to a local "
        "sentence-transformers folder or unset it to use the bundled all-MiniLM-L6-v2\n"
    )
    assert not settings.index_dir.exists()


def test_eval_of_a_missing_dataset_fails_before_loading_the_model(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_model(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the model was loaded")

    monkeypatch.setattr("service.embedding.embedder_for", no_model)
    code, out, err = run(capsys, "eval", "/does/not/exist")
    assert (code, out) == (2, "")
    assert err == "error: BEIR dataset directory not found: /does/not/exist\n"


CORPUS = '{"_id": "d1", "title": "T", "text": "Some text."}\n'
QUERIES = '{"_id": "q1", "text": "some?"}\n'
QRELS = "query-id\tcorpus-id\tscore\nq1\td1\t1\n"


@pytest.mark.parametrize(
    ("files", "message"),
    [
        (
            {"queries.jsonl": QUERIES, "qrels/test.tsv": QRELS},
            "BEIR dataset file not found: {}/corpus.jsonl",
        ),
        (
            {"corpus.jsonl": CORPUS, "queries.jsonl": QUERIES},
            "BEIR dataset file not found: {}/qrels/test.tsv",
        ),
        (
            {"corpus.jsonl": "{not json\n", "queries.jsonl": QUERIES, "qrels/test.tsv": QRELS},
            "{}/corpus.jsonl:1: invalid JSON (Expecting property name enclosed in double quotes)",
        ),
        (
            {"corpus.jsonl": '{"text": "x"}\n', "queries.jsonl": QUERIES, "qrels/test.tsv": QRELS},
            '{}/corpus.jsonl: a row has no "_id" field',
        ),
        (
            {"corpus.jsonl": CORPUS, "queries.jsonl": QUERIES, "qrels/test.tsv": "q1\td1\n"},
            "{}/qrels/test.tsv:1: expected 3 tab-separated fields",
        ),
    ],
    ids=["no-corpus", "no-split", "bad-json", "no-id", "bad-qrels"],
)
def test_eval_of_a_malformed_dataset_is_one_line(
    capsys: pytest.CaptureFixture[str],
    fake_model: FakeEmbedder,
    tmp_path: Path,
    files: dict[str, str],
    message: str,
) -> None:
    dataset = tmp_path / "dataset"
    for name, text in files.items():
        (dataset / name).parent.mkdir(parents=True, exist_ok=True)
        (dataset / name).write_text(text)
    code, out, err = run(capsys, "eval", str(dataset), "--cache", str(tmp_path / "cache"))
    assert (code, out) == (2, "")
    assert err == f"error: {message.format(dataset)}\n"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["ask", ""], "error: QUESTION: String should have at least 1 character"),
        (["ask", "   "], "error: QUESTION: question must not be blank"),
        (["ask", "x" * 2001], "error: QUESTION: String should have at most 2000 characters"),
        (["ask", "--top-k", "0", "x"],
         "error: --top-k: Input should be greater than or equal to 1"),
        (["ask", "--top-k", "51", "x"], "error: --top-k: Input should be less than or equal to 50"),
        (
            ["ask", "--top-k", "many", "x"],
            "error: argument --top-k: invalid int value: 'many' (see `groundqa ask --help`)",
        ),
        (["frobnicate"], "error: argument command: invalid choice: 'frobnicate' (choose from "
                         "'index', 'ask', 'verify', 'serve', 'eval', 'keys') "
                         "(see `groundqa --help`)"),
    ],
)  # fmt: skip
def test_misuse_is_one_line_and_exit_2_before_the_model_loads(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
    message: str,
) -> None:
    """The CLI applies the API's limits with its messages; argparse's errors are one line too."""

    def no_model(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the model was loaded")

    monkeypatch.setattr("service.embedding.embedder_for", no_model)
    try:
        code = cli.main(argv)
    except SystemExit as exc:  # argparse's own errors exit from inside parse_args
        code = int(str(exc.code))
    out, err = capsys.readouterr()
    assert (code, out, err) == (2, "", message + "\n")


# --- help: every option described, with the defaults a run would use --------------------------


def subparsers(parser: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """Every (sub)command's parser, by its prog name."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                yield child.prog, child
                yield from subparsers(child)


def test_every_option_has_help_text() -> None:
    commands = dict(subparsers(cli.build_parser()))
    assert {"groundqa index", "groundqa ask", "groundqa keys revoke"} <= set(commands)
    undescribed = [
        (prog, action.dest)
        for prog, parser in commands.items()
        for action in parser._actions
        if not isinstance(action, argparse._SubParsersAction) and not (action.help or "").strip()
    ]
    assert undescribed == []


def help_of(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """The --help text of a command, whitespace collapsed (argparse wraps to the terminal)."""
    with pytest.raises(SystemExit) as exit_info:
        cli.main([*argv, "--help"])
    assert exit_info.value.code == 0
    return " ".join(capsys.readouterr().out.split())


def test_help_shows_the_effective_defaults(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert "--seeds FOLDER seeds folder (default: seeds)" in help_of(capsys, "index")
    monkeypatch.setenv("GROUNDQA_SEEDS_DIR", "/srv/seeds")
    monkeypatch.setenv("GROUNDQA_TOP_K", "7")
    monkeypatch.setenv("GROUNDQA_PORT", "9000")
    text = help_of(capsys, "ask")
    assert "--seeds FOLDER seeds folder (default: /srv/seeds, from GROUNDQA_SEEDS_DIR)" in text
    assert "--index FOLDER index folder (default: index)" in text
    assert "--top-k N passages, 1-50 (default: 7, from GROUNDQA_TOP_K)" in text
    assert "--mode {hybrid,dense,keyword} retrieval (default: hybrid)" in text
    assert "--port PORT port to bind (default: 9000, from GROUNDQA_PORT)" in help_of(
        capsys, "serve"
    )


def test_an_invalid_environment_variable_is_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GROUNDQA_PORT", "many")
    code, out, err = run(capsys, "index", "--help")
    assert (code, out) == (2, "")
    assert err == (
        "error: GROUNDQA_PORT: Input should be a valid integer, unable to parse string as an "
        "integer\n"
    )


def test_an_invalid_option_value_names_the_option(
    capsys: pytest.CaptureFixture[str], fake_model: FakeEmbedder
) -> None:
    code, out, err = run(capsys, "serve", "--port", "0")
    assert (code, out, err) == (
        2,
        "",
        "error: --port: Input should be greater than or equal to 1\n",
    )


def test_ask_takes_its_default_top_k_from_the_environment(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    settings: Settings,
    fake_model: FakeEmbedder,
    write_seed: WriteSeed,
) -> None:
    for n in range(4):
        write_seed(f"{n}.txt", f"Note {n} says the library opens at {n} o'clock.\n")
    index_json(capsys, settings)
    monkeypatch.setenv("GROUNDQA_TOP_K", "3")
    code, out, err = run(capsys, "ask", "When does the library open?", *paths(settings), "--json")
    assert (code, err) == (0, "")
    assert len(json.loads(out)["passages"]) == 3


# --- eval's split ----------------------------------------------------------------------------


def beir_dataset(root: Path, *splits: str) -> Path:
    """A one-document BEIR folder with the given qrels splits."""
    root.mkdir(parents=True)
    (root / "corpus.jsonl").write_text(CORPUS)
    (root / "queries.jsonl").write_text(QUERIES)
    (root / "qrels").mkdir()
    for split in splits:
        (root / "qrels" / f"{split}.tsv").write_text(QRELS)
    return root


@pytest.mark.parametrize(
    ("splits", "argv", "chosen"),
    [
        (["train"], [], "train"),
        (["dev", "test", "train"], [], "test"),
        (["dev", "train"], ["--split", "dev"], "dev"),
    ],
)
def test_eval_picks_a_split(
    tmp_path: Path,
    splits: list[str],
    argv: list[str],
    chosen: str,
) -> None:
    dataset = beir_dataset(tmp_path / "data", *splits)
    args = cli.build_parser().parse_args(["eval", str(dataset), *argv])
    assert cli.eval_split(dataset, args.split) == chosen


@pytest.mark.parametrize(
    ("splits", "argv", "message"),
    [
        (["dev", "train"], ["--split", "test"],
         "--split test: {} has no such split; it has dev, train"),
        (["dev", "train"], [], "{} has several splits (dev, train): pick one with --split"),
    ],
)  # fmt: skip
def test_eval_without_a_clear_split_is_one_line_before_the_model_loads(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    splits: list[str],
    argv: list[str],
    message: str,
) -> None:
    def no_model(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the model was loaded")

    monkeypatch.setattr("service.embedding.embedder_for", no_model)
    dataset = beir_dataset(tmp_path / "data", *splits)
    code, out, err = run(capsys, "eval", str(dataset), *argv)
    assert (code, out, err) == (2, "", f"error: {message.format(dataset)}\n")
