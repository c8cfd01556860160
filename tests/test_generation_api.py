"""Generated answers through the API against a deterministic fake LLM server (a small ASGI app
served by uvicorn on a loopback port): verdicts, spans, policies and every upstream failure."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import pytest
from fastapi.testclient import TestClient
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from service.config import Settings
from service.generation import FLAG, NOTE
from tests.conftest import serve as serve_app

TROOPS = "North Korea sent ten thousand troops to Russia in October.\n"
QUESTION = "How many troops did North Korea send?"
GOOD = "North Korea sent ten thousand troops to Russia in October [1]."
CHANGED = "North Korea sent twelve thousand troops to Russia in October [1]."
EXTRACTIVE = "North Korea sent ten thousand troops to Russia in October. [1]"


@dataclass
class Upstream:
    """What the fake LLM answers next, and the requests it received."""

    mode: str = "ok"
    text: str = GOOD
    requests: list[dict[str, Any]] = field(default_factory=list)
    release: anyio.Event | None = None


def chunk(content: str | None, finish: str | None = None) -> str:
    body = {"choices": [{"index": 0, "delta": {"content": content}, "finish_reason": finish}]}
    return f"data: {json.dumps(body)}\n\n"


def fake_llm(upstream: Upstream) -> Starlette:
    """An OpenAI-compatible streaming server whose behaviour upstream.mode picks."""

    async def completions(request: Request) -> Response:
        upstream.requests.append(await request.json())
        mode = upstream.mode
        if mode == "500":
            return PlainTextResponse("boom", status_code=500)
        if mode == "json-garbage":
            return PlainTextResponse("data: {not json\n\n", media_type="text/event-stream")
        if mode == "refusal":
            body = {"choices": [{"index": 0, "delta": {"refusal": "I won't."}}]}
            return PlainTextResponse(
                f"data: {json.dumps(body)}\n\n", media_type="text/event-stream"
            )
        if mode == "non-stream":
            return JSONResponse({"choices": [{"message": {"content": upstream.text}}]})

        async def events() -> AsyncIterator[str]:
            words = upstream.text.split(" ")
            if mode == "empty":
                yield chunk(None, "stop")
                yield "data: [DONE]\n\n"
                return
            for i, word in enumerate(words):
                yield chunk(word + (" " if i < len(words) - 1 else ""))
                if mode in ("cut", "stall") and i == 3:
                    if mode == "stall":
                        upstream.release = anyio.Event()
                        await upstream.release.wait()
                    return  # the connection closes without finish_reason or [DONE]
            yield chunk("", "stop")
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return Starlette(routes=[Route("/v1/chat/completions", completions, methods=["POST"])])


@contextmanager
def serve(app: Starlette) -> Iterator[str]:
    """The fake LLM on a free loopback port; yields its OpenAI base URL."""
    with serve_app(app, lifespan="off", timeout_graceful_shutdown=1) as url:
        yield f"{url}/v1"


@pytest.fixture
def upstream() -> Iterator[tuple[Upstream, str]]:
    state = Upstream()
    with serve(fake_llm(state)) as url:
        yield state, url


@pytest.fixture
def indexed(settings: Settings, builder: Any, write_seed: Callable[[str, str], Any]) -> Settings:
    write_seed("troops.txt", TROOPS)
    write_seed("cats.md", "# Cats\n\nCats are small carnivorous mammals kept as pets.\n")
    builder.build()
    return settings


ClientFor = Callable[[Settings], TestClient]


@pytest.fixture
def client(indexed: Settings, upstream: tuple[Upstream, str], client_for: ClientFor) -> TestClient:
    return client_for(indexed.model_copy(update={"llm_base_url": upstream[1], "llm_timeout": 5}))


def ask(client: TestClient, **extra: Any) -> dict[str, Any]:
    r = client.post("/v1/ask", json={"question": QUESTION, "top_k": 2, **extra})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def stream(client: TestClient, **extra: Any) -> list[dict[str, Any]]:
    body = {"messages": [{"role": "user", "content": QUESTION}], "stream": True, **extra}
    with client.stream("POST", "/v1/chat/completions", json=body) as r:
        assert r.status_code == 200
        lines = [ln[6:] for ln in r.iter_lines() if ln.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    return [json.loads(ln) for ln in lines[:-1]]


def content_of(chunks: list[dict[str, Any]]) -> str:
    return "".join(
        c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices")
    )


def verifications(chunks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        a["verification"]
        for c in chunks
        if c.get("choices")
        for a in c["choices"][0]["delta"].get("annotations") or []
        if a["type"] == "verification"
    ]


def test_without_an_llm_nothing_changes(indexed: Settings, client_for: ClientFor) -> None:
    client = client_for(indexed)
    body = ask(client)
    assert "generation" not in body and body["answer"]["text"] == EXTRACTIVE
    models = [m["id"] for m in client.get("/v1/models").json()["data"]]
    assert models == ["groundqa", "groundqa/default"]
    r = client.post("/v1/ask", json={"question": QUESTION, "answer_mode": "generated"})
    assert r.status_code == 400
    assert r.json()["detail"].startswith("answer_mode 'generated' needs an LLM")


def test_ask_stays_extractive_unless_generated_is_asked(client: TestClient) -> None:
    assert "generation" not in ask(client)


def test_generated_ask_verifies_each_sentence(
    client: TestClient, upstream: tuple[Upstream, str]
) -> None:
    state, _ = upstream
    state.text = f"{GOOD} {CHANGED}"
    body = ask(client, answer_mode="generated")
    gen = body["generation"]
    assert body["answer"] == {
        "text": f"{GOOD} {CHANGED}{FLAG}",
        "grounded": False,
        "citations": [1],
    }
    assert (gen["supported"], gen["flagged"], gen["dropped"], gen["fallback"]) == (1, 1, 0, None)
    good, changed = gen["sentences"]
    doc = client.get("/v1/documents/troops.txt").json()["text"]
    ev = good["evidence"]
    assert doc[ev["char_start"] : ev["char_end"]] == ev["text"] == TROOPS.strip()
    assert body["answer"]["text"][good["start"] : good["end"]] == GOOD
    assert changed["supported"] is False and changed["evidence"] is None
    assert "12000" in changed["reason"]
    # The prompt numbers the passages and asks for [n] after every sentence.
    prompt = state.requests[-1]["messages"]
    assert "[1] " + TROOPS.strip() in prompt[-1]["content"] and "[1]" in prompt[0]["content"]


def test_streamed_chat_gives_a_verdict_after_every_sentence(
    client: TestClient, upstream: tuple[Upstream, str]
) -> None:
    state, _ = upstream
    state.text = f"{GOOD} {CHANGED}"
    chunks = stream(client)
    content = content_of(chunks)
    assert content.startswith(f"{GOOD} {CHANGED}{FLAG}\n\nSources:\n\n- \\[1\\] [troops.txt")
    checks = verifications(chunks)
    assert [v["verified"] for v in checks] == [True, False]
    for v in checks:
        assert content[v["start_index"] : v["end_index"]].startswith(v["text"][:-1])
    assert checks[0]["evidence"]["text"] == TROOPS.strip()
    last = chunks[-1]
    assert last["choices"][0]["finish_reason"] == "stop"
    assert last["verification"] == {
        "sentences": 2, "supported": 1, "flagged": 1, "dropped": 0, "fallback": None,
    }  # fmt: skip


def test_drop_policy_removes_the_changed_number(
    indexed: Settings, upstream: tuple[Upstream, str], client_for: ClientFor
) -> None:
    state, url = upstream
    state.text = f"{CHANGED} {GOOD}"
    client = client_for(indexed.model_copy(update={"llm_base_url": url, "verify": "drop"}))
    r = client.post(
        "/v1/chat/completions", json={"messages": [{"role": "user", "content": QUESTION}]}
    )
    body = r.json()
    content = body["choices"][0]["message"]["content"]
    assert content.split("\n\n")[0] == GOOD
    assert body["verification"]["dropped"] == 1 and body["verification"]["supported"] == 1


def test_the_extractive_model_name_keeps_quoting(client: TestClient) -> None:
    assert [m["id"] for m in client.get("/v1/models").json()["data"]] == [
        "groundqa",
        "groundqa-extractive",
        "groundqa/default",
    ]
    chunks = stream(client, model="groundqa-extractive")
    assert content_of(chunks).startswith(EXTRACTIVE)
    assert "verification" not in chunks[-1]


@pytest.mark.parametrize("mode", ["500", "json-garbage", "refusal", "empty", "cut", "stall"])
@pytest.mark.parametrize("streamed", [True, False])
def test_upstream_failure_falls_back_to_the_extractive_answer(
    indexed: Settings,
    upstream: tuple[Upstream, str],
    client_for: ClientFor,
    mode: str,
    streamed: bool,
) -> None:
    state, url = upstream
    state.mode = mode
    client = client_for(indexed.model_copy(update={"llm_base_url": url, "llm_timeout": 0.5}))
    try:
        if streamed:
            chunks = stream(client)
            content, summary = content_of(chunks), chunks[-1]["verification"]
        else:
            r = client.post(
                "/v1/chat/completions", json={"messages": [{"role": "user", "content": QUESTION}]}
            )
            assert r.status_code == 200
            content = r.json()["choices"][0]["message"]["content"]
            summary = r.json()["verification"]
    finally:
        if state.release is not None:
            state.release.set()
    assert summary["fallback"] is not None
    assert summary["fallback"].startswith(NOTE.split("(")[0])
    note_at = content.index(summary["fallback"])
    assert content[note_at + len(summary["fallback"]) :].lstrip().startswith(EXTRACTIVE)
    assert "Sources:" in content


def test_an_llm_that_is_down_falls_back(indexed: Settings, client_for: ClientFor) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there
    client = client_for(indexed.model_copy(update={"llm_base_url": f"http://127.0.0.1:{port}/v1"}))
    body = ask(client, answer_mode="generated")
    assert body["answer"]["text"] == EXTRACTIVE
    assert "could not be reached" in body["generation"]["fallback"]


def test_a_server_that_ignores_stream_still_answers(
    client: TestClient, upstream: tuple[Upstream, str]
) -> None:
    upstream[0].mode = "non-stream"
    body = ask(client, answer_mode="generated")
    assert body["answer"]["text"] == GOOD and body["generation"]["supported"] == 1


def test_verify_finds_the_supporting_span_in_the_index(client: TestClient) -> None:
    r = client.post(
        "/v1/verify",
        json={"text": "North Korea sent ten thousand troops to Russia. Cats are large reptiles."},
    )
    assert r.status_code == 200
    body = r.json()
    assert (body["supported"], body["total"]) == (1, 2)
    first, second = body["sentences"]
    assert first["evidence"] == {
        "source": "troops.txt",
        "char_start": 0,
        "char_end": len(TROOPS.strip()),
        "text": TROOPS.strip(),
    }
    assert second["supported"] is False and second["evidence"] is None and second["reason"]


def test_verify_against_named_passages(client: TestClient) -> None:
    text = "North Korea sent ten thousand troops to Russia [1]. The same claim [2]."
    passages = [{"source": "troops.txt"}, {"source": "cats.md"}]
    body = client.post("/v1/verify", json={"text": text, "passages": passages}).json()
    assert [s["supported"] for s in body["sentences"]] == [True, False]
    assert body["sentences"][0]["citations"] == [1]
    wrong = client.post(
        "/v1/verify",
        json={
            "text": "North Korea sent ten thousand troops to Russia [1].",
            "passages": passages[1:],
        },
    ).json()
    assert wrong["sentences"][0]["supported"] is False


@pytest.mark.parametrize(
    ("passage", "status"),
    [
        ({"source": "nope.txt"}, 404),
        ({"source": "troops.txt", "char_start": 5, "char_end": 999}, 422),
    ],
)
def test_verify_refuses_unknown_spans(
    client: TestClient, passage: dict[str, Any], status: int
) -> None:
    r = client.post("/v1/verify", json={"text": "Anything.", "passages": [passage]})
    assert r.status_code == status
    assert isinstance(r.json()["detail"], str)
