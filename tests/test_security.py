"""Security of the HTTP API: API keys, the admin token, request limits, document paths and the
seed files a build refuses."""

from __future__ import annotations

import hmac
import http.client
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from starlette.routing import BaseRoute

from service import cli
from service.api import create_app
from service.api import state as api_state
from service.api.schemas import QUESTION_MAX, TOP_K_MAX
from service.api.server import DrainingServer
from service.config import Settings
from service.indexing import Builder
from tests.conftest import FakeEmbedder, WriteSeed

Client = Callable[[Settings], TestClient]

KEY = "key-one-7c1e"
OTHER_KEY = "key-two-93ab"
ADMIN = "admin-token-5f0d"
SECRET = "TOP-SECRET-b3e1c4: must never leave the machine"
CHAT = {"messages": [{"role": "user", "content": "How many troops were sent?"}]}

# Every query route: (method, path, JSON body). The test below checks that no /v1 route
# escapes this list, so a new route cannot be added without deciding on its protection.
QUERY_ROUTES: list[tuple[str, str, dict[str, Any] | None]] = [
    ("GET", "/v1/ask?q=troops", None),
    ("POST", "/v1/ask", {"question": "How many troops were sent?"}),
    ("POST", "/v1/verify", {"text": "Ten thousand troops were sent."}),
    ("GET", "/v1/documents", None),
    ("GET", "/v1/documents/troops.txt", None),
    ("GET", "/v1/index", None),
    ("GET", "/v1/models", None),
    ("POST", "/v1/chat/completions", CHAT),
]
ADMIN_ROUTES: list[tuple[str, str]] = [
    ("POST", "/v1/index/rebuild"),
    ("GET", "/v1/index/rebuild/0123456789abcdef"),
]


def with_keys(settings: Settings, **update: Any) -> Settings:
    """A copy of settings with API keys (and any other update) applied."""
    return settings.model_copy(update={"api_keys": [KEY, OTHER_KEY], **update})


def call(
    client: TestClient, method: str, path: str, body: dict[str, Any] | None, token: str | None
) -> Any:
    """Send one request, with `Authorization: Bearer token` when token is given."""
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return client.request(method, path, json=body, headers=headers)


def api_routes(routes: Sequence[BaseRoute]) -> Iterator[APIRoute]:
    """Every API route, also inside included routers (which recent FastAPI keeps unflattened)."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        inner = getattr(route, "original_router", None)
        if inner is not None:
            yield from api_routes(inner.routes)


def dependency_calls(route: APIRoute) -> set[Callable[..., Any]]:
    """Every dependency function a route runs, however deeply nested."""
    found: set[Callable[..., Any]] = set()
    stack = list(route.dependant.dependencies)
    while stack:
        dep = stack.pop()
        if dep.call is not None:
            found.add(dep.call)
        stack.extend(dep.dependencies)
    return found


# ----------------------------------------------------------------------------- API keys


def test_every_v1_route_is_a_listed_query_or_admin_route(settings: Settings) -> None:
    """No /v1 route exists without a decision: query routes need a key, index routes the
    admin token. Health, readiness and /metrics stay open on purpose (probes, scrapers)."""
    app = create_app(settings, embedder=None)
    templates = {
        ("GET", "/v1/ask"),
        ("POST", "/v1/ask"),
        ("POST", "/v1/verify"),
        ("GET", "/v1/documents"),
        ("GET", "/v1/documents/{source:path}"),
        ("GET", "/v1/index"),
        ("GET", "/v1/models"),
        ("POST", "/v1/chat/completions"),
    }
    admin = {("POST", "/v1/index/rebuild"), ("GET", "/v1/index/rebuild/{job_id}")}
    routes = [r for r in api_routes(app.routes) if r.path.startswith("/v1/")]
    assert {(m, r.path) for r in routes for m in r.methods or ()} == templates | admin
    documented = app.openapi()["paths"]
    assert {(m.upper(), p) for p in documented if p.startswith("/v1/") for m in documented[p]} == {
        (m, p.replace(":path", "")) for m, p in templates | admin
    }
    for route in routes:
        calls = dependency_calls(route)
        is_admin = any((m, route.path) in admin for m in route.methods or ())
        assert (api_state.require_admin in calls) == is_admin, route.path
        assert (api_state.require_api_key in calls) == (not is_admin), route.path


@pytest.mark.parametrize(("method", "path", "body"), QUERY_ROUTES)
def test_query_route_needs_a_valid_key(
    built: Settings, client_for: Client, method: str, path: str, body: dict[str, Any] | None
) -> None:
    client = client_for(with_keys(built))
    for token in (None, "", "wrong-key", KEY + "x", KEY[:-1], KEY.upper()):
        r = call(client, method, path, body, token)
        assert r.status_code == 401, token
        assert r.headers["www-authenticate"] == "Bearer"
        if not path.startswith(("/v1/chat/", "/v1/models")):  # those answer in OpenAI's shape
            assert r.json() == {
                "detail": "missing or invalid API key; send `Authorization: Bearer <key>`"
            }
    for token in (KEY, OTHER_KEY):
        assert call(client, method, path, body, token).status_code == 200, token


def test_key_outside_a_bearer_header_is_refused(built: Settings, client_for: Client) -> None:
    client = client_for(with_keys(built))
    for header in (f"Basic {KEY}", KEY, f"Bearer{KEY}", f"Token {KEY}", "Bearer", "Bearer  "):
        r = client.get("/v1/documents", headers={"Authorization": header})
        assert r.status_code == 401, header


def test_bearer_scheme_is_case_insensitive(built: Settings, client_for: Client) -> None:
    client = client_for(with_keys(built))
    r = client.get("/v1/documents", headers={"Authorization": f"bearer {KEY}"})
    assert r.status_code == 200


@pytest.mark.parametrize(("method", "path", "body"), QUERY_ROUTES)
def test_query_routes_are_open_without_configured_keys(
    built: Settings, client_for: Client, method: str, path: str, body: dict[str, Any] | None
) -> None:
    client = client_for(built)
    assert call(client, method, path, body, None).status_code == 200


def test_probes_and_metrics_stay_open_with_keys(built: Settings, client_for: Client) -> None:
    """Orchestrator probes and Prometheus scrapers carry no credentials."""
    client = client_for(with_keys(built, admin_token=ADMIN))
    for path in ("/healthz", "/readyz", "/metrics"):
        assert client.get(path).status_code == 200, path


def test_keys_are_compared_in_constant_time(
    built: Settings, client_for: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every configured key goes through hmac.compare_digest, even after a match."""
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return bool(real(a, b))

    monkeypatch.setattr(hmac, "compare_digest", spy)
    client = client_for(with_keys(built))
    assert client.get("/v1/documents", headers={"Authorization": f"Bearer {KEY}"}).is_success
    assert compared == [(KEY.encode(), KEY.encode()), (KEY.encode(), OTHER_KEY.encode())]


def test_secrets_never_reach_the_logs(
    built: Settings, client_for: Client, caplog: pytest.LogCaptureFixture
) -> None:
    """Neither keys nor the admin token nor the Authorization header are logged, at any level,
    whether the request is accepted or refused."""
    caplog.set_level(logging.DEBUG)
    client = client_for(with_keys(built, admin_token=ADMIN, log_questions=True))
    for token in (KEY, OTHER_KEY, "not-the-key"):
        client.get("/v1/ask?q=troops", headers={"Authorization": f"Bearer {token}"})
        client.post("/v1/ask", json={"question": "troops"}, headers={"Authorization": token})
    for token in (ADMIN, KEY):
        client.post("/v1/index/rebuild", headers={"Authorization": f"Bearer {token}"})
    access = [r for r in caplog.records if r.name == "groundqa.access"]
    assert len(access) == 8
    text = "\n".join(r.getMessage() for r in caplog.records)
    for secret in (KEY, OTHER_KEY, ADMIN, "not-the-key", "Bearer", "uthorization"):
        assert secret not in text


# ----------------------------------------------------------------------------- admin token


@pytest.mark.parametrize(("method", "path"), ADMIN_ROUTES)
def test_admin_routes_are_disabled_without_a_token(
    built: Settings, client_for: Client, method: str, path: str
) -> None:
    client = client_for(with_keys(built))
    for token in (None, ADMIN, KEY):
        r = call(client, method, path, None, token)
        assert r.status_code == 403, token
        assert r.json() == {
            "detail": "index administration is disabled; set GROUNDQA_ADMIN_TOKEN to enable it"
        }


@pytest.mark.parametrize(("method", "path"), ADMIN_ROUTES)
def test_admin_routes_need_the_token(
    built: Settings, client_for: Client, method: str, path: str
) -> None:
    client = client_for(with_keys(built, admin_token=ADMIN))
    for token in (None, "", KEY, ADMIN + "x", ADMIN.upper(), ADMIN[:-1]):
        r = call(client, method, path, None, token)
        assert r.status_code == 401, token
        assert r.headers["www-authenticate"] == "Bearer"
        assert r.json() == {
            "detail": "missing or invalid admin token; send `Authorization: Bearer <token>`"
        }
    basic = client.request(method, path, headers={"Authorization": f"Basic {ADMIN}"})
    assert basic.status_code == 401  # the right token outside a bearer header


class GatedEmbedder(FakeEmbedder):
    """Blocks embedding inside background rebuilds until `gate` is set."""

    def __init__(self, fake: FakeEmbedder) -> None:
        super().__init__(fake.tokenizer)
        self.gate = threading.Event()

    def embed(self, texts: Any, *, progress: bool = False) -> Any:
        if threading.current_thread().name == "groundqa-rebuild":
            assert self.gate.wait(30)
        return super().embed(texts, progress=progress)


def test_one_rebuild_at_a_time(
    built: Settings, fake_embedder: FakeEmbedder, write_seed: WriteSeed
) -> None:
    embedder = GatedEmbedder(fake_embedder)
    auth = {"Authorization": f"Bearer {ADMIN}"}
    with TestClient(
        create_app(built.model_copy(update={"admin_token": ADMIN}), embedder=embedder)
    ) as client:
        write_seed("new.txt", "A new document that must be embedded by the rebuild.\n")
        first = client.post("/v1/index/rebuild", headers=auth)
        assert first.status_code == 202
        job = first.json()["job_id"]
        second = client.post("/v1/index/rebuild", headers=auth)
        assert second.status_code == 409
        assert second.json() == {"detail": f"rebuild {job} is already running; poll its status"}
        embedder.gate.set()
        deadline = time.monotonic() + 30
        while client.get(f"/v1/index/rebuild/{job}", headers=auth).json()["state"] == "running":
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert client.get(f"/v1/index/rebuild/{job}", headers=auth).json()["state"] == "succeeded"
        assert client.post("/v1/index/rebuild", headers=auth).status_code == 202


# ----------------------------------------------------------------------------- limits


def test_body_over_the_cap_is_413(built: Settings, client_for: Client) -> None:
    client = client_for(built)
    big = b'{"question": "' + b"x" * built.max_body_bytes + b'"}'
    r = client.post("/v1/ask", content=big, headers={"Content-Type": "application/json"})
    assert r.status_code == 413
    assert r.json() == {"detail": f"request body larger than {built.max_body_bytes} bytes"}


def test_chunked_body_over_the_cap_is_413(built: Settings, client_for: Client) -> None:
    """Without Content-Length the cap applies to the bytes actually received."""
    client = client_for(built)

    def chunks() -> Iterator[bytes]:
        yield b'{"question": "'
        for _ in range(built.max_body_bytes // 1000 + 1):
            yield b"x" * 1000
        yield b'"}'

    r = client.post("/v1/ask", content=chunks(), headers={"Content-Type": "application/json"})
    assert "content-length" not in r.request.headers
    assert r.status_code == 413
    assert r.json() == {"detail": f"request body larger than {built.max_body_bytes} bytes"}


def test_body_at_the_cap_is_read(built: Settings, client_for: Client) -> None:
    client = client_for(built)
    body = b'{"question": "troops"}'
    body += b" " * (built.max_body_bytes - len(body))
    r = client.post("/v1/ask", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 200


POST_BOUNDS: list[tuple[dict[str, Any], int]] = [
    ({"question": "x" * QUESTION_MAX}, 200),
    ({"question": "x" * (QUESTION_MAX + 1)}, 422),
    ({"question": ""}, 422),
    ({"question": " \n\t"}, 422),
    ({"question": "troops", "top_k": TOP_K_MAX}, 200),
    ({"question": "troops", "top_k": TOP_K_MAX + 1}, 422),
    ({"question": "troops", "top_k": 0}, 422),
    ({"question": "troops", "top_k": -1}, 422),
    ({"question": "troops", "sources": ["*"] * 51}, 422),
    ({"question": "troops", "unknown": 1}, 422),
]


def test_ask_post_bounds(built: Settings, client_for: Client) -> None:
    client = client_for(built)
    for body, status in POST_BOUNDS:
        assert client.post("/v1/ask", json=body).status_code == status, body


GET_BOUNDS: list[tuple[str, int]] = [
    ("q=" + "x" * QUESTION_MAX, 200),
    ("q=" + "x" * (QUESTION_MAX + 1), 422),
    ("q=", 422),
    ("", 422),
    (f"q=troops&top_k={TOP_K_MAX}", 200),
    (f"q=troops&top_k={TOP_K_MAX + 1}", 422),
    ("q=troops&top_k=0", 422),
    ("q=troops&top_k=many", 422),
]


def test_ask_get_bounds(built: Settings, client_for: Client) -> None:
    client = client_for(built)
    for query, status in GET_BOUNDS:
        assert client.get(f"/v1/ask?{query}").status_code == status, query


@contextmanager
def running(app: FastAPI) -> Iterator[int]:
    """Serve app with uvicorn in a thread on a free loopback port; yields the port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, timeout_keep_alive=5))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    try:
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def read_until_closed(conn: socket.socket, limit: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes, and how long that took."""
    started = time.monotonic()
    conn.settimeout(limit)
    data = b""
    while True:
        try:
            chunk = conn.recv(65536)
        except TimeoutError:
            break
        if not chunk:
            break
        data += chunk
    return data, time.monotonic() - started


@pytest.mark.parametrize(
    ("framing", "partial"),
    [
        (b"Content-Length: 100\r\n", b'{"question"'[:10]),
        (b"Transfer-Encoding: chunked\r\n", b'a\r\n{"question\r\n'),
    ],
)
def test_slow_body_is_408(
    built: Settings, fake_embedder: FakeEmbedder, framing: bytes, partial: bytes
) -> None:
    """A client that sends the headers and part of the body, then stalls, gets 408 and the
    connection is closed after the timeout: it cannot hold the request open."""
    timeout = 1.0
    app = create_app(built.model_copy(update={"request_timeout": timeout}), embedder=fake_embedder)
    with running(app) as port, socket.create_connection(("127.0.0.1", port)) as conn:
        conn.sendall(
            b"POST /v1/ask HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            + framing
            + b"\r\n"
            + partial
        )
        data, took = read_until_closed(conn, limit=timeout + 5)
    assert data.startswith(b"HTTP/1.1 408 "), data
    assert b"connection: close" in data.lower()
    assert data.endswith(b'{"detail":"request body not received in time"}')
    assert timeout - 0.1 <= took < timeout + 3


def test_serve_sets_keep_alive_and_graceful_shutdown(
    built: Settings, fake_embedder: FakeEmbedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`groundqa serve` runs the draining server and bounds idle keep-alive connections and the
    shutdown grace period."""
    seen: dict[str, Any] = {}
    handlers: dict[int, Any] = {}
    monkeypatch.setattr(cli, "_builder", lambda s, *_: Builder(s, fake_embedder))
    monkeypatch.setattr(DrainingServer, "run", lambda self: seen.update(vars(self.config)))
    monkeypatch.setattr("service.api.observability.configure_logging", lambda level: None)
    monkeypatch.setattr(signal, "signal", lambda sig, handler: handlers.update({sig: handler}))
    code = cli.main(["serve", "--seeds", str(built.seeds_dir), "--index", str(built.index_dir)])
    assert code == 0
    assert seen["timeout_keep_alive"] == 5
    assert seen["timeout_graceful_shutdown"] == 30
    with pytest.raises(SystemExit) as exited:
        handlers[signal.SIGTERM](signal.SIGTERM, None)
    assert exited.value.code == 0


# ----------------------------------------------------------------------------- documents


TRAVERSALS = [
    "../secret.txt",
    "../../secret.txt",
    "sub/../../secret.txt",
    "..%2fsecret.txt",
    "%2e%2e%2fsecret.txt",
    "%2e%2e/secret.txt",
    "%252e%252e%252fsecret.txt",
    "..%5csecret.txt",
    "..\\secret.txt",
    "/SECRET_ABS",
    "%2fSECRET_ABS",
    "SECRET_ABS",
    "troops.txt%00",
    "troops.txt%00../secret.txt",
    "%00",
    "data.bin",
    "link.txt",
    ".hidden.txt",
    "troops.txt/",
    "TROOPS.TXT",
]


@pytest.fixture
def with_secret(built: Settings, tmp_path: Path, builder: Builder, write_seed: WriteSeed) -> Path:
    """A secret file beside seeds/, linked from seeds/, plus unindexable files in seeds/."""
    secret = tmp_path / "secret.txt"
    secret.write_text(SECRET)
    (built.seeds_dir / "link.txt").symlink_to(secret)
    write_seed("data.bin", SECRET)
    write_seed(".hidden.txt", SECRET)
    builder.build()
    return secret


def test_documents_serve_only_indexed_sources_over_http(
    built: Settings, fake_embedder: FakeEmbedder, with_secret: Path
) -> None:
    """Raw request targets, sent as is (no client-side normalisation), to a real server:
    every one is 404 or 422, and the secret never appears in a response."""
    app = create_app(built, embedder=fake_embedder)
    with running(app) as port:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        ok = get_raw(conn, "/v1/documents/troops.txt")
        assert ok[0] == 200 and b"ten thousand troops" in ok[1]
        for raw in TRAVERSALS:
            target = "/v1/documents/" + raw.replace("SECRET_ABS", str(with_secret).lstrip("/"))
            status, body = get_raw(conn, target)
            assert status in (404, 422), (target, status, body)
            assert SECRET.encode() not in body and b"TOP-SECRET" not in body, target
        listed = get_raw(conn, "/v1/documents")[1]
        assert b"secret" not in listed.lower() and b"link.txt" not in listed
        conn.close()


def get_raw(conn: http.client.HTTPConnection, target: str) -> tuple[int, bytes]:
    """GET a request target exactly as written."""
    conn.putrequest("GET", target, skip_accept_encoding=True)
    conn.endheaders()
    response = conn.getresponse()
    return response.status, response.read()


def test_documents_refuse_traversal_in_process(
    built: Settings, client_for: Client, with_secret: Path
) -> None:
    """The same targets through the test client (which normalises dot segments itself)."""
    client = client_for(built)
    for raw in TRAVERSALS:
        target = "/v1/documents/" + raw.replace("SECRET_ABS", str(with_secret).lstrip("/"))
        r = client.get(target)
        assert r.status_code in (404, 422), target
        assert "TOP-SECRET" not in r.text, target


# ----------------------------------------------------------------------------- seeds


def test_build_skips_bad_seeds_and_serves_the_rest(
    settings: Settings,
    builder: Builder,
    write_seed: WriteSeed,
    tmp_path: Path,
    client_for: Client,
) -> None:
    """Binary, bad UTF-8, empty, too large, unsupported, unreadable and outside-linked files are
    skipped with their reasons, in the build summary and in GET /v1/index; the rest is served."""
    seeds = settings.seeds_dir
    write_seed("good.txt", "North Korea sent ten thousand troops to Russia.\n")
    write_seed("notes/good.md", "# Cats\n\nCats are small mammals.\n")
    (seeds / "binary.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    (seeds / "latin1.txt").write_bytes("caf\u00e9 au lait\n".encode("latin-1"))
    (seeds / "empty.txt").write_bytes(b"")
    (seeds / "blank.md").write_bytes(b"  \n\n\t\n")
    (seeds / "huge.txt").write_bytes(b"word " * 300)
    secret = tmp_path / "secret.txt"
    secret.write_text(SECRET)
    (seeds / "outside.txt").symlink_to(secret)
    (tmp_path / "elsewhere").mkdir()
    (seeds / "outside-dir").symlink_to(tmp_path / "elsewhere")
    (seeds / "dangling.txt").symlink_to(seeds / "missing.txt")
    os.mkfifo(seeds / "pipe.txt")
    (seeds / "image.png").write_bytes(b"\x89PNG")
    (seeds / "Makefile").write_bytes(b"all:")
    small = settings.model_copy(update={"max_file_bytes": 1000})
    report = Builder(small, builder.embedder).build()

    expected = [
        {"source": "Makefile", "reason": "unsupported file type (none)"},
        {"source": "binary.txt", "reason": "binary file (contains NUL bytes)"},
        {"source": "blank.md", "reason": "empty file"},
        {"source": "dangling.txt", "reason": "unreadable: No such file or directory"},
        {"source": "empty.txt", "reason": "empty file"},
        {"source": "huge.txt", "reason": "larger than 1000 bytes"},
        {"source": "image.png", "reason": "unsupported file type .png"},
        {"source": "latin1.txt", "reason": "not valid UTF-8 (byte 3)"},
        {"source": "outside-dir", "reason": "symlink pointing outside the seeds folder"},
        {"source": "outside.txt", "reason": "symlink pointing outside the seeds folder"},
        {"source": "pipe.txt", "reason": "not a regular file"},
    ]

    def by_source(items: list[dict[str, str]]) -> list[dict[str, str]]:
        return sorted(items, key=lambda s: s["source"])

    assert report.published
    assert by_source(report.skipped) == expected
    assert report.files_indexed == 2
    summary = cli.summary_text(report)
    for skip in expected:
        assert f"  skipped {skip['source']}: {skip['reason']}" in summary

    client = client_for(small)
    info = client.get("/v1/index").json()
    assert by_source(info["skipped"]) == expected
    assert (info["documents"], info["stale"]) == (2, False)
    listed = client.get("/v1/documents").json()["documents"]
    assert sorted(d["source"] for d in listed) == ["good.txt", "notes/good.md"]
    answer = client.get("/v1/ask?q=how many troops&top_k=5").json()
    assert answer["passages"][0]["citation"]["source"] == "good.txt"
    assert {p["citation"]["source"] for p in answer["passages"]} <= {"good.txt", "notes/good.md"}
    leak = client.get("/v1/ask?q=TOP-SECRET must never leave the machine").json()
    assert "TOP-SECRET" not in str(leak["passages"]) + leak["answer"]["text"]


def test_unparseable_seed_does_not_make_the_index_stale(
    settings: Settings, builder: Builder, write_seed: WriteSeed, client_for: Client
) -> None:
    write_seed("good.txt", "Readable text.\n")
    write_seed("empty.txt", "")
    first = builder.build()
    again = builder.build()
    assert client_for(settings).get("/v1/index").json()["stale"] is False
    assert (again.published, again.build_id) == (False, first.build_id)
