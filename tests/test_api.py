"""HTTP API: response shapes, verifiable citations, validation, safe document access, admin."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import quote

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from service.answering import ask
from service.api.routes import to_response
from service.builds import IndexHolder
from service.config import Settings
from service.indexing import Builder
from service.search import Searcher
from service.store import build_path, read_manifest, read_pointer
from tests.conftest import FakeEmbedder, WriteSeed

ClientFor = Callable[[Settings], TestClient]

PLANETS = (
    "# Planets\n\nSaturn has rings made of ice and rock.\n"
    "Jupiter is the largest planet in the solar system.\n\n"
    "## Moons\n\nTitan is the largest moon of Saturn. Europa may hide an ocean under its ice.\n"
)
KITCHEN = (
    "Kitchen notes\r\n\r\nBake the bread at 220 degrees for thirty minutes.\r\n"
    "Let the dough rise overnight in the fridge.\r\n"
)
SOURCES = {"guide/planets.md": PLANETS, "kitchen notes.txt": KITCHEN}
TOKEN = "s3cret-admin-token"

ASK_KEYS = {"question", "answer", "passages", "index", "took_ms"}
PASSAGE_KEYS = {"rank", "score", "text", "highlights", "citation"}
CITATION_KEYS = {
    "source",
    "title",
    "char_start",
    "char_end",
    "line_start",
    "line_end",
    "chunk_id",
    "url",
    "section",
    "page_start",
    "page_end",
    "collection",
    "slide",
    "sheet",
    "row_start",
    "row_end",
}


@pytest.fixture
def build_id(settings: Settings, builder: Builder, write_seed: WriteSeed) -> str:
    """The seeds indexed; returns the published build id."""
    for name, text in SOURCES.items():
        write_seed(name, text)
    return str(builder.build().build_id)


@pytest.fixture
def client(build_id: str, settings: Settings, client_for: ClientFor) -> TestClient:
    return client_for(settings)


def core_body(settings: Settings, fake: FakeEmbedder, question: str, top_k: int) -> dict[str, Any]:
    """What the core answers for question, as the API's JSON, without took_ms."""
    holder = IndexHolder(settings.index_dir, fake)
    holder.refresh()
    result = ask(Searcher(settings, fake, holder), question, top_k=top_k)
    body = to_response(result).model_dump(mode="json")
    body.pop("took_ms")
    return body


def without_took_ms(body: dict[str, Any]) -> dict[str, Any]:
    took = body.pop("took_ms")
    assert isinstance(took, float) and took >= 0
    return body


def line_of(text: str, offset: int) -> int:
    return 1 + text.count("\n", 0, offset)


def check_citations(client: TestClient, passages: Sequence[dict[str, Any]]) -> None:
    """Every passage's citation and highlights reproduce its text against the served document."""
    for passage in passages:
        cite = passage["citation"]
        r = client.get(cite["url"].split("#")[0])
        assert r.status_code == 200, r.text
        doc = r.json()
        text = doc["text"]
        assert doc["source"] == cite["source"]
        assert doc["text"] == SOURCES[cite["source"]]
        assert text[cite["char_start"] : cite["char_end"]] == passage["text"]
        assert cite["line_start"] == line_of(text, cite["char_start"])
        assert cite["line_end"] == line_of(text, cite["char_end"] - 1)
        assert cite["url"] == (
            f"/v1/documents/{quote(cite['source'])}#L{cite['line_start']}-L{cite['line_end']}"
        )
        assert passage["highlights"], passage
        for mark in passage["highlights"]:
            assert set(mark) == {"char_start", "char_end", "text"}
            assert text[mark["char_start"] : mark["char_end"]] == mark["text"]
            assert cite["char_start"] <= mark["char_start"] < mark["char_end"] <= cite["char_end"]


# --- ask -------------------------------------------------------------------------------------


def test_ask_response_shape_and_values(
    client: TestClient, build_id: str, settings: Settings, fake_embedder: FakeEmbedder
) -> None:
    question = "Which planet is the largest in the solar system?"
    r = client.post("/v1/ask", json={"question": question, "top_k": 3})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == ASK_KEYS
    assert body["question"] == question
    assert body["index"] == {"build_id": build_id, "model": "fake-hash-64"}
    assert set(body["answer"]) == {"text", "grounded", "citations"}
    passages = body["passages"]
    assert [p["rank"] for p in passages] == [1, 2, 3]
    for p in passages:
        assert set(p) == PASSAGE_KEYS
        assert set(p["citation"]) == CITATION_KEYS
        assert isinstance(p["score"], float)
    assert [p["score"] for p in passages] == sorted((p["score"] for p in passages), reverse=True)
    top = passages[0]
    assert "Jupiter is the largest planet in the solar system." in top["text"]
    assert top["citation"]["source"] == "guide/planets.md"
    assert top["citation"]["title"] == "Planets"
    assert top["citation"]["page_start"] is None and top["citation"]["page_end"] is None
    answer = body["answer"]
    assert answer["grounded"] is True
    assert answer["citations"] and set(answer["citations"]) <= {1, 2, 3}
    # Each quoted sentence sits inside its passage's first highlight (which may add the
    # neighbouring sentence of the same paragraph).
    quotes = re.findall(r"(.+?) \[(\d+)\]", answer["text"])
    assert quotes == [("Jupiter is the largest planet in the solar system.", "1")]
    for quoted, rank in quotes:
        assert quoted in passages[int(rank) - 1]["highlights"][0]["text"]
    check_citations(client, passages)
    assert without_took_ms(body) == core_body(settings, fake_embedder, question, 3)


def test_get_ask_equals_post(client: TestClient) -> None:
    question = "How long does the bread bake?"
    posted = client.post("/v1/ask", json={"question": question, "top_k": 2})
    got = client.get("/v1/ask", params={"q": question, "top_k": 2})
    assert posted.status_code == got.status_code == 200
    assert without_took_ms(got.json()) == without_took_ms(posted.json())
    passages = got.json()["passages"]
    assert passages[0]["citation"]["source"] == "kitchen notes.txt"
    assert passages[0]["citation"]["url"].startswith("/v1/documents/kitchen%20notes.txt#L")
    check_citations(client, passages)


@pytest.mark.parametrize(
    "question",
    ["What hides an ocean?", "rings of ice", "dough fridge overnight", "zzz unknown words"],
)
def test_every_citation_reproduces_its_text(client: TestClient, question: str) -> None:
    r = client.post("/v1/ask", json={"question": question, "top_k": 50})
    assert r.status_code == 200, r.text
    passages = r.json()["passages"]
    assert passages
    check_citations(client, passages)


@pytest.mark.parametrize(
    ("payload", "loc", "kind"),
    [
        ({"question": ""}, ["body", "question"], "string_too_short"),
        ({"question": "   \n\t "}, ["body", "question"], "value_error"),
        ({"question": "x" * 5000}, ["body", "question"], "string_too_long"),
        ({"question": "ok", "top_k": 0}, ["body", "top_k"], "greater_than_equal"),
        ({"question": "ok", "top_k": 500}, ["body", "top_k"], "less_than_equal"),
        ({"question": "ok", "mode": "magic"}, ["body", "mode"], "literal_error"),
        ({"question": "ok", "colour": "red"}, ["body", "colour"], "extra_forbidden"),
        ({"top_k": 3}, ["body", "question"], "missing"),
    ],
)
def test_post_ask_validation(
    client: TestClient, payload: dict[str, Any], loc: list[str], kind: str
) -> None:
    r = client.post("/v1/ask", json=payload)
    assert r.status_code == 422
    assert [(e["loc"], e["type"]) for e in r.json()["detail"]] == [(loc, kind)]


@pytest.mark.parametrize(
    ("params", "loc", "kind"),
    [
        ({"q": "  "}, ["query", "q"], "value_error"),
        ({"q": "x" * 5000}, ["query", "q"], "string_too_long"),
        ({"q": "ok", "top_k": "0"}, ["query", "top_k"], "greater_than_equal"),
        ({"q": "ok", "top_k": "500"}, ["query", "top_k"], "less_than_equal"),
        ({"q": "ok", "colour": "red"}, ["query", "colour"], "extra_forbidden"),
        ({}, ["query", "q"], "missing"),
    ],
)
def test_get_ask_validation(
    client: TestClient, params: dict[str, str], loc: list[str], kind: str
) -> None:
    r = client.get("/v1/ask", params=params)
    assert r.status_code == 422
    assert [(e["loc"], e["type"]) for e in r.json()["detail"]] == [(loc, kind)]


def test_blank_question_message_names_the_field(client: TestClient) -> None:
    r = client.post("/v1/ask", json={"question": "   "})
    assert r.json()["detail"][0]["msg"] == "Value error, question must not be blank"


# --- documents -------------------------------------------------------------------------------


def test_list_documents(client: TestClient, build_id: str, settings: Settings) -> None:
    r = client.get("/v1/documents")
    assert r.status_code == 200
    body = r.json()
    manifest = read_manifest(build_path(settings.index_dir, build_id))
    assert body["build_id"] == build_id
    assert sorted(body["documents"], key=lambda d: d["source"]) == [
        {
            "source": name,
            "title": manifest.files[name].title,
            "sha256": hashlib.sha256(text.encode()).hexdigest(),
            "chunks": manifest.files[name].chunks,
            "collection": manifest.files[name].collection,
        }
        for name, text in sorted(SOURCES.items())
    ]
    assert [d["title"] for d in sorted(body["documents"], key=lambda d: d["source"])] == [
        "Planets",
        "Kitchen notes",
    ]


def test_get_document_text_is_exact(client: TestClient) -> None:
    r = client.get("/v1/documents/kitchen%20notes.txt")
    assert r.status_code == 200
    assert r.json() == {
        "source": "kitchen notes.txt",
        "title": "Kitchen notes",
        "sha256": hashlib.sha256(KITCHEN.encode()).hexdigest(),
        "text": KITCHEN,
        "collection": "default",
    }


def raw_get(app: FastAPI, path: str) -> tuple[int, bytes]:
    """GET path exactly as given (no client-side dot-segment normalisation)."""
    messages: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"localhost")],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    asyncio.run(app(scope, receive, send))  # type: ignore[arg-type]
    start = next(m for m in messages if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
    return int(start["status"]), body


@pytest.mark.parametrize(
    ("url", "source"),
    [
        ("/v1/documents/nope.txt", "nope.txt"),
        ("/v1/documents/guide", "guide"),
        ("/v1/documents/%2e%2e%2fseeds%2fguide%2fplanets.md", "../seeds/guide/planets.md"),
        ("/v1/documents/%2E%2E/%2E%2E/etc/passwd", "../../etc/passwd"),
        ("/v1/documents//etc/passwd", "/etc/passwd"),
        ("/v1/documents/%2Fetc%2Fpasswd", "/etc/passwd"),
        ("/v1/documents/guide%2Fplanets.md%00", "guide/planets.md\x00"),
        ("/v1/documents/kitchen%00notes.txt", "kitchen\x00notes.txt"),
    ],
)
def test_unknown_and_traversal_sources_are_404(client: TestClient, url: str, source: str) -> None:
    r = client.get(url)
    assert r.status_code == 404
    assert r.json() == {"detail": f"no indexed document {source!r}; see GET /v1/documents"}


@pytest.mark.parametrize(
    ("path", "source"),
    [
        ("/v1/documents/../seeds/guide/planets.md", "../seeds/guide/planets.md"),
        ("/v1/documents/guide/../kitchen notes.txt", "guide/../kitchen notes.txt"),
        ("/v1/documents/./guide/planets.md", "./guide/planets.md"),
        ("/v1/documents/../../../../etc/passwd", "../../../../etc/passwd"),
    ],
)
def test_dot_segments_are_not_resolved(client: TestClient, path: str, source: str) -> None:
    """Sent verbatim (as a raw HTTP client would), dot segments name no indexed source."""
    app = client.app
    assert isinstance(app, FastAPI)
    status, body = raw_get(app, path)
    assert status == 404
    assert json.loads(body) == {"detail": f"no indexed document {source!r}; see GET /v1/documents"}


# --- no index, readiness, index info ---------------------------------------------------------


def test_without_index(settings: Settings, client_for: ClientFor) -> None:
    client = client_for(settings)
    hint = f"no index in {settings.index_dir}; run `groundqa index` to build it"
    r = client.post("/v1/ask", json={"question": "anything"})
    assert (r.status_code, r.json()) == (503, {"detail": hint})
    r = client.get("/v1/ask", params={"q": "anything"})
    assert (r.status_code, r.json()) == (503, {"detail": hint})
    for url in ("/v1/documents", "/v1/documents/a.txt", "/v1/index"):
        r = client.get(url)
        assert (r.status_code, r.json()) == (503, {"detail": hint}), url
    r = client.get("/readyz")
    assert r.status_code == 503
    assert r.json() == {"detail": "not ready: no valid index build"}
    r = client.get("/healthz")
    assert (r.status_code, r.json()) == (200, {"status": "ok"})


def test_readyz_reports_the_build(client: TestClient, build_id: str) -> None:
    r = client.get("/readyz")
    assert (r.status_code, r.json()) == (200, {"status": "ready", "build_id": build_id})


def test_index_info_and_staleness(
    client_for: ClientFor, build_id: str, settings: Settings, write_seed: WriteSeed
) -> None:
    # No reuse of the scan (test_operators checks the cached one): every call sees the edit.
    client = client_for(settings.model_copy(update={"stale_check_interval": 0}))
    manifest = read_manifest(build_path(settings.index_dir, build_id))
    expected = {
        "build_id": build_id,
        "model": "fake-hash-64",
        "created_at": manifest.created_at,
        "documents": 2,
        "chunks": manifest.chunks,
        "stale": False,
        "skipped": [],
        # The served build was a first build, but nothing calls for a full rebuild now.
        "rebuild_reason": None,
    }
    r = client.get("/v1/index")
    assert (r.status_code, r.json()) == (200, expected)
    write_seed("kitchen notes.txt", KITCHEN.replace("220", "230"))
    assert client.get("/v1/index").json() == {**expected, "stale": True}
    write_seed("kitchen notes.txt", KITCHEN)
    assert client.get("/v1/index").json() == expected
    write_seed("new.txt", "A new file.")
    assert client.get("/v1/index").json() == {**expected, "stale": True}


def test_index_info_says_why_the_next_build_is_a_full_one(
    client_for: ClientFor, build_id: str, settings: Settings
) -> None:
    tokens = settings.chunk_tokens
    client = client_for(settings.model_copy(update={"chunk_tokens": tokens + 8}))
    body = client.get("/v1/index").json()
    assert (body["build_id"], body["stale"], body["rebuild_reason"]) == (
        build_id,
        True,
        f"settings changed: chunk_tokens {tokens!r} -> {tokens + 8!r}",
    )


# --- admin -----------------------------------------------------------------------------------


def poll_job(client: TestClient, job_id: str, deadline: float) -> dict[str, Any]:
    """The job's status once it is no longer running (fails after deadline seconds)."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    stop = time.monotonic() + deadline
    while True:
        r = client.get(f"/v1/index/rebuild/{job_id}", headers=headers)
        assert r.status_code == 200, r.text
        job: dict[str, Any] = r.json()
        if job["state"] != "running":
            return job
        assert time.monotonic() < stop, f"rebuild still running: {job}"
        time.sleep(0.01)


def test_admin_rebuild(
    build_id: str,
    settings: Settings,
    client_for: ClientFor,
    fake_embedder: FakeEmbedder,
    write_seed: WriteSeed,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = client_for(settings.model_copy(update={"admin_token": TOKEN}))
    headers = {"Authorization": f"Bearer {TOKEN}"}
    entered, release = threading.Event(), threading.Event()
    embed = fake_embedder.embed

    def gated(texts: Sequence[str], *, progress: bool = False) -> Any:
        if threading.current_thread().name == "groundqa-rebuild" and not release.is_set():
            entered.set()
            assert release.wait(30)
        return embed(texts, progress=progress)

    monkeypatch.setattr(fake_embedder, "embed", gated)
    write_seed("kitchen notes.txt", KITCHEN.replace("220 degrees", "250 degrees"))

    r = client.post("/v1/index/rebuild", headers=headers)
    assert r.status_code == 202, r.text
    job = r.json()
    assert set(job) == {
        "job_id",
        "state",
        "stage",
        "progress",
        "started_at",
        "finished_at",
        "result",
        "error",
    }
    assert (job["state"], job["finished_at"], job["result"], job["error"]) == (
        "running",
        None,
        None,
        None,
    )
    job_id = job["job_id"]
    assert entered.wait(30)
    r = client.get(f"/v1/index/rebuild/{job_id}", headers=headers)
    assert (r.json()["state"], r.json()["stage"], r.json()["progress"]) == (
        "running",
        "embedding",
        0.1,
    )

    r = client.post("/v1/index/rebuild", headers=headers)
    assert (r.status_code, r.json()) == (
        409,
        {"detail": f"rebuild {job_id} is already running; poll its status"},
    )
    # Asks keep being answered from the published build while the rebuild runs.
    r = client.post("/v1/ask", json={"question": "bread degrees"})
    assert r.json()["index"]["build_id"] == build_id

    release.set()
    done = poll_job(client, job_id, deadline=30)
    new_id = read_pointer(settings.index_dir)
    assert new_id is not None and new_id != build_id
    assert (done["state"], done["stage"], done["progress"], done["error"]) == (
        "succeeded",
        "published",
        1.0,
        None,
    )
    assert done["finished_at"] is not None
    result = done["result"]
    assert (result["build_id"], result["published"], result["modified"], result["unchanged"]) == (
        new_id,
        True,
        ["kitchen notes.txt"],
        ["guide/planets.md"],
    )
    assert result["previous_build_id"] == build_id

    r = client.post("/v1/ask", json={"question": "At how many degrees does the bread bake?"})
    body = r.json()
    assert body["index"]["build_id"] == new_id
    assert "Bake the bread at 250 degrees" in body["passages"][0]["text"]
    assert not any("220 degrees" in p["text"] for p in body["passages"])
    assert client.get("/readyz").json() == {"status": "ready", "build_id": new_id}
    assert client.get("/v1/index").json()["stale"] is False

    r = client.post("/v1/index/rebuild", headers=headers)  # nothing changed: still succeeds
    assert r.status_code == 202
    again = poll_job(client, r.json()["job_id"], deadline=30)
    assert (again["state"], again["result"]["published"], again["result"]["build_id"]) == (
        "succeeded",
        False,
        new_id,
    )
    assert (again["stage"], again["progress"]) == ("published", 1.0)


def test_unknown_job_is_404(build_id: str, settings: Settings, client_for: ClientFor) -> None:
    client = client_for(settings.model_copy(update={"admin_token": TOKEN}))
    r = client.get("/v1/index/rebuild/nope", headers={"Authorization": f"Bearer {TOKEN}"})
    assert (r.status_code, r.json()) == (404, {"detail": "no rebuild job 'nope'"})
