"""One bad request harms nobody else: unencodable input is refused at the edge, a failing
micro-batch member fails alone, and what anonymous clients send cannot grow the server."""

from __future__ import annotations

import re
import socket
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from service.api.inputs import check_body, printable
from service.api.server import header_deadline_protocol
from service.config import Settings
from service.embedding import MicroBatcher, Vectors
from service.embedding.microbatch import _Request
from service.store import CHUNKS_DB, ChunkStore, build_path, read_pointer
from tests.conftest import serve

ClientFor = Callable[[Settings], TestClient]

SURROGATE = b'"\\ud800"'


@pytest.fixture
def client(built: Settings, client_for: ClientFor) -> TestClient:
    return client_for(built)


def raw_post(client: TestClient, path: str, body: bytes) -> Any:
    return client.post(path, content=body, headers={"Content-Type": "application/json"})


NOT_A_NUMBER = "{} is not a JSON number groundqa accepts"
LONE = "{}: text holds a lone surrogate (not Unicode)"


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (b'{"question": "ok", "top_k": NaN}', NOT_A_NUMBER.format("NaN")),
        (b'{"question": "ok", "top_k": Infinity}', NOT_A_NUMBER.format("Infinity")),
        (b'{"question": "ok", "top_k": -Infinity}', NOT_A_NUMBER.format("-Infinity")),
        (b'{"question": "ok", "top_k": 1e999}', "1e999 is out of range"),
        (b'{"question": ' + SURROGATE + b"}", LONE.format("question")),
        (b'{"question": "ok", "sources": ["a", ' + SURROGATE + b"]}", LONE.format("sources.1")),
        (b'{"question": "ok", ' + SURROGATE + b": 1}", "body: a key holds a lone surrogate"),
    ],
)
def test_unencodable_ask_bodies_are_422(client: TestClient, body: bytes, detail: str) -> None:
    r = raw_post(client, "/v1/ask", body)
    assert (r.status_code, r.json()) == (422, {"detail": detail})


@pytest.mark.parametrize(
    "body",
    [
        b'{"messages": [{"role": "user", "content": ' + SURROGATE + b"}]}",
        b'{"messages": [{"role": "user", "content": [{"type": "text", "text": '
        + SURROGATE
        + b"}]}]}",
        b'{"messages": [{"role": "user", "content": "ok"}], "temperature": NaN}',
        b'{"messages": [{"role": "user", "content": "ok"}], "top_p": Infinity}',
    ],
)  # fmt: skip
def test_unencodable_chat_bodies_are_openai_400s(client: TestClient, body: bytes) -> None:
    r = raw_post(client, "/v1/chat/completions", body)
    assert r.status_code == 400
    error = r.json()["error"]
    assert (error["type"], error["code"]) == ("invalid_request_error", "invalid_value")


def test_unencodable_mcp_bodies_are_json_rpc_parse_errors(client: TestClient) -> None:
    body = (
        b'{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "search", '
        b'"arguments": {"question": ' + SURROGATE + b"}}}"
    )
    r = client.post(
        "/mcp",
        content=body,
        headers={"Content-Type": "application/json", "Accept": "application/json"},
    )
    assert r.status_code == 400
    assert r.json() == {
        "jsonrpc": "2.0",
        "id": None,
        "error": {
            "code": -32700,
            "message": "params.arguments.question: text holds a lone surrogate (not Unicode)",
        },
    }


def test_good_bodies_still_answer_after_a_refused_one(client: TestClient) -> None:
    assert raw_post(client, "/v1/ask", b'{"question": ' + SURROGATE + b"}").status_code == 422
    r = client.post("/v1/ask", json={"question": "North Korea sent troops to Russia", "top_k": 1})
    assert r.status_code == 200, r.text
    assert r.json()["passages"][0]["citation"]["source"] == "troops.txt"


def test_validation_errors_echo_unencodable_query_input_safely(client: TestClient) -> None:
    # Query strings are decoded with replacement characters: the echo must still be JSON.
    r = client.get("/v1/ask", params={"q": "ok", "top_k": "inf"})
    assert r.status_code == 422
    assert [(e["loc"], e["input"]) for e in r.json()["detail"]] == [(["query", "top_k"], "inf")]


def test_validation_errors_cut_an_over_long_echo(client: TestClient) -> None:
    question = "why " * 1000
    r = client.post("/v1/ask", json={"question": question})
    assert r.status_code == 422
    assert [(e["loc"], e["msg"], e["input"]) for e in r.json()["detail"]] == [
        (
            ["body", "question"],
            "String should have at most 2000 characters",
            f"{question[:100]}... (4000 characters)",
        )
    ]


def test_printable_makes_any_echo_json_safe() -> None:
    assert printable({"a\ud800": [float("nan"), float("-inf"), 1.5, "x\udfff", None]}) == {
        "a\\ud800": ["nan", "-inf", 1.5, "x\\udfff", None]
    }


@pytest.mark.parametrize(
    "body", [b"", b"not json", b'{"question": "fine", "top_k": 2.5}', b"[1, 2]", b'"\\u00e9"']
)
def test_check_body_leaves_other_bodies_to_the_routes(body: bytes) -> None:
    assert check_body(body) is None


# --- micro-batches ---------------------------------------------------------------------------


def test_a_failing_member_of_a_micro_batch_fails_alone() -> None:
    calls: list[list[str]] = []

    def encode(texts: Sequence[str]) -> Vectors:
        calls.append(list(texts))
        if "poison" in texts:
            raise ValueError("cannot tokenize")
        return np.array([[float(len(t))] for t in texts], dtype=np.float32)

    batcher = MicroBatcher(encode, max_texts=64, workers=1)
    requests = [_Request(texts, Future()) for texts in (["a"], ["poison", "bb"], ["ccc", "d"])]
    batcher._run(requests)
    assert requests[0].future.result().tolist() == [[1.0]]
    with pytest.raises(ValueError, match="cannot tokenize"):
        requests[1].future.result()
    assert requests[2].future.result().tolist() == [[3.0], [1.0]]
    assert calls == [["a", "poison", "bb", "ccc", "d"], ["a"], ["poison", "bb"], ["ccc", "d"]]


# --- bounded growth --------------------------------------------------------------------------


def _series(client: TestClient) -> list[str]:
    text = client.get("/metrics").text
    return [line for line in text.splitlines() if line.startswith("groundqa_http_requests_total")]


def test_random_methods_do_not_grow_metrics(client: TestClient) -> None:
    for i in range(20):
        client.request(f"X{'Q' * 50}{i}", "/v1/ask")
        client.request(f"Y{i}", f"/nowhere/{i}")
    methods = {m for line in _series(client) for m in re.findall(r'method="([^"]*)"', line)}
    assert "other" in methods and methods <= {"other", "GET"}
    routes = {m for line in _series(client) for m in re.findall(r'route="([^"]*)"', line)}
    assert routes <= {"/v1/ask", "unmatched", "/metrics"}
    before = len(_series(client))
    for i in range(20, 40):
        client.request(f"Z{i}", "/v1/ask")
    assert len(_series(client)) == before


@pytest.mark.parametrize(
    ("sources", "kind"),
    [(["x" * 257], "string_too_long"), ([""], "string_too_short")],
)
def test_globs_are_capped_in_length(client: TestClient, sources: list[str], kind: str) -> None:
    r = client.post("/v1/ask", json={"question": "troops", "sources": sources})
    assert r.status_code == 422
    assert [(e["loc"], e["type"]) for e in r.json()["detail"]] == [(["body", "sources", 0], kind)]


def test_globs_are_capped_in_count(client: TestClient) -> None:
    r = client.post("/v1/ask", json={"question": "troops", "sources": ["*"] * 51})
    assert r.status_code == 422
    assert [e["type"] for e in r.json()["detail"]] == ["too_long"]


def test_globs_are_not_kept_in_an_unbounded_cache(built: Settings) -> None:
    import fnmatch

    build_id = read_pointer(built.index_dir)
    assert build_id is not None
    store = ChunkStore(build_path(built.index_dir, build_id) / CHUNKS_DB)
    fnmatch._compile_pattern.cache_clear()  # type: ignore[attr-defined]
    rows = store.rows_matching([f"*{i}-never-*" for i in range(100)] + ["troops.*"])
    assert rows is not None and len(rows) > 0
    assert fnmatch._compile_pattern.cache_info().currsize == 0  # type: ignore[attr-defined]


# --- slow clients ----------------------------------------------------------------------------


@contextmanager
def _served(app: FastAPI, header_timeout: float) -> Iterator[int]:
    protocol = header_deadline_protocol(header_timeout)
    with serve(app, lifespan="off", http=protocol) as url:
        yield int(url.rsplit(":", 1)[1])


def _read_all(conn: socket.socket) -> bytes:
    data = b""
    while chunk := conn.recv(65536):
        data += chunk
    return data


def _hello() -> FastAPI:
    app = FastAPI()

    @app.get("/hello")
    def hello() -> dict[str, str]:
        return {"hello": "world"}

    return app


def test_headers_must_arrive_in_time() -> None:
    with _served(_hello(), header_timeout=0.3) as port:
        # A client that never finishes its headers is cut off (recv sees the close).
        with socket.create_connection(("127.0.0.1", port), timeout=20) as slow:
            slow.sendall(b"GET /hello HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            assert _read_all(slow) == b""
        # After an answered request, an idle-then-partial second request is cut off too.
        with socket.create_connection(("127.0.0.1", port), timeout=20) as conn:
            conn.sendall(b"GET /hello HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            first = b""
            while not first.endswith(b"}"):
                first += conn.recv(65536)
            assert first.startswith(b"HTTP/1.1 200") and first.endswith(b'{"hello":"world"}')
            conn.sendall(b"GET /hello HTTP/1.1\r\n")
            assert _read_all(conn) == b""


def test_a_prompt_request_is_answered_with_a_short_header_timeout() -> None:
    with (
        _served(_hello(), header_timeout=0.3) as port,
        socket.create_connection(("127.0.0.1", port), timeout=20) as conn,
    ):
        conn.sendall(b"GET /hello HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        assert _read_all(conn).startswith(b"HTTP/1.1 200")
