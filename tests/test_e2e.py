"""End to end with the real bundled model over the real seed article: the first passage holds
the answer, every citation reproduces its text, and an off-topic question abstains."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.api import create_app
from service.config import Settings
from service.embedding import Embedder
from service.indexing import Builder
from tests.conftest import LOCAL

pytestmark = pytest.mark.e2e

SEED = Path(__file__).resolve().parent.parent / "seeds" / "000_6103265ed68543fd.txt"

FACTS = [
    ("How many troops has North Korea sent to fight for Russia?", "12,000"),
    ("How much has Russia paid North Korea for weapons?", "$5.5 billion"),
    ("How much did Russia pay for North Korean troop support?", "$576 million"),
    ("In which region are the North Korean troops deployed?", "Kursk"),
    ("How many North Korean soldiers were killed or wounded according to Zelensky?", "3,000"),
    ("How many casualties did South Korea's Joint Chiefs of Staff estimate?", "1,100"),
    ("What share of the Russian forces' artillery shell stockpile comes from North Korea?", "60%"),
    (
        "Which newspaper reported that North Korea is ramping up ammunition production?",
        "The Wall Street Journal",
    ),
    ("Which South Korean MP explained the high number of casualties?", "Lee Seong-kweun"),
    (
        "How did the North Korean foreign ministry describe criticism from the US?",
        "reckless provocation",
    ),
]


@pytest.fixture(scope="module")
def embedder(real_embedder: Embedder) -> Embedder:
    """The real bundled model."""
    return real_embedder


@pytest.fixture(scope="module")
def e2e_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    root = tmp_path_factory.mktemp("e2e")
    seeds = root / "seeds"
    seeds.mkdir()
    shutil.copyfile(SEED, seeds / SEED.name)
    return Settings(_env_file=None, seeds_dir=seeds, index_dir=root / "index")


@pytest.fixture(scope="module")
def client(e2e_settings: Settings, embedder: Embedder) -> Iterator[TestClient]:
    report = Builder(e2e_settings, embedder).build()
    assert report.published and report.files_indexed == 1 and report.skipped == []
    with TestClient(create_app(e2e_settings, embedder=embedder), base_url=LOCAL) as client:
        yield client


def ask(client: TestClient, question: str, top_k: int = 5) -> dict[str, Any]:
    r = client.post("/v1/ask", json={"question": question, "top_k": top_k})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def check_citations(client: TestClient, body: dict[str, Any]) -> None:
    """Each passage and highlight is the served document's text at its offsets."""
    texts: dict[str, str] = {}
    for passage in body["passages"]:
        cite = passage["citation"]
        if cite["source"] not in texts:
            r = client.get(cite["url"].split("#")[0])
            assert r.status_code == 200, r.text
            texts[cite["source"]] = r.json()["text"]
        text = texts[cite["source"]]
        assert text[cite["char_start"] : cite["char_end"]] == passage["text"]
        assert cite["line_start"] == 1 + text.count("\n", 0, cite["char_start"])
        assert cite["line_end"] == 1 + text.count("\n", 0, cite["char_end"] - 1)
        for mark in passage["highlights"]:
            assert text[mark["char_start"] : mark["char_end"]] == mark["text"]
    assert texts == {SEED.name: SEED.read_text(encoding="utf-8")}


@pytest.mark.parametrize(("question", "answer"), FACTS, ids=[a for _, a in FACTS])
def test_first_passage_holds_the_answer(client: TestClient, question: str, answer: str) -> None:
    body = ask(client, question)
    assert answer in body["passages"][0]["text"], body["passages"][0]["text"]
    assert body["answer"]["grounded"] is True
    check_citations(client, body)


def test_off_topic_question_abstains(client: TestClient) -> None:
    body = ask(client, "What is the capital of France?")
    assert body["answer"] == {
        "text": "The indexed sources do not answer this question.",
        "grounded": False,
        "citations": [],
    }
    check_citations(client, body)


def test_index_and_documents(client: TestClient, embedder: Embedder) -> None:
    info = client.get("/v1/index").json()
    assert (info["model"], info["documents"], info["stale"]) == (embedder.model_id, 1, False)
    docs = client.get("/v1/documents").json()["documents"]
    assert [d["source"] for d in docs] == [SEED.name]
    assert client.get("/readyz").json() == {"status": "ready", "build_id": info["build_id"]}
