"""Observability: Prometheus metrics, the JSON access log with request ids, readiness, and a
graceful shutdown of the real server."""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from service.api import create_app
from service.api import server as server_module
from service.api.observability import JsonFormatter, access_log
from service.api.server import DrainingServer
from service.config import Settings
from service.indexing import Builder
from service.store import build_path, published_manifest, read_pointer
from service.vectors import VECTORS
from tests.conftest import LOCAL, WriteSeed

Client = Callable[[Settings], TestClient]
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

ADMIN = "admin-token-5f0d"
METRICS = [
    "groundqa_http_requests_total",
    "groundqa_http_request_duration_seconds_bucket",
    "groundqa_http_request_duration_seconds_count",
    "groundqa_question_embed_seconds_count",
    "groundqa_search_seconds_count",
    "groundqa_index_documents",
    "groundqa_index_chunks",
    "groundqa_index_build_age_seconds",
    "groundqa_rebuilds_total",
    "groundqa_rebuild_duration_seconds_count",
    "groundqa_build_errors_total",
]
LOG_FIELDS = {"ts", "request_id", "method", "route", "path", "status", "duration_ms", "client"}


def scrape(client: TestClient) -> Samples:
    """Every sample of GET /metrics by (name, labels)."""
    r = client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"] == CONTENT_TYPE_LATEST
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value, 0 when absent."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def access_records(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    """The access log lines captured, parsed."""
    return [json.loads(r.getMessage()) for r in caplog.records if r.name == access_log.name]


def wait_for_job(client: TestClient, job_id: str) -> dict[str, Any]:
    """Wait until a rebuild and its metrics callbacks are done; its status body."""
    job = client.app.state.groundqa.rebuilds.jobs[job_id]  # type: ignore[attr-defined]
    assert job.done.wait(30)
    body: dict[str, Any] = client.get(
        f"/v1/index/rebuild/{job_id}", headers={"Authorization": f"Bearer {ADMIN}"}
    ).json()
    return body


# ----------------------------------------------------------------------------- metrics


def test_metrics_lists_every_metric(built: Settings, client_for: Client) -> None:
    client = client_for(built)
    client.get("/v1/ask?q=troops")
    text = client.get("/metrics").text
    for name in METRICS:
        assert f"\n{name}" in text, name
    assert "# TYPE groundqa_http_request_duration_seconds histogram" in text


def test_request_metrics_count_by_route_and_status(built: Settings, client_for: Client) -> None:
    client = client_for(built)
    before = scrape(client)
    assert client.get("/v1/ask?q=troops").status_code == 200
    assert client.post("/v1/ask", json={"question": "cats"}).status_code == 200
    assert client.post("/v1/ask", json={"question": "cats"}).status_code == 200
    chat = {"model": "groundqa", "messages": [{"role": "user", "content": "troops"}]}
    assert client.post("/v1/chat/completions", json=chat).status_code == 200
    assert client.get("/v1/ask?q=").status_code == 422
    assert client.get("/v1/documents/troops.txt").status_code == 200
    assert client.get("/v1/documents/nope.txt").status_code == 404
    assert client.get("/no/such/route").status_code == 404
    after = scrape(client)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    requests = "groundqa_http_requests_total"
    latency = "groundqa_http_request_duration_seconds_count"
    for route, method, status, count in [
        ("/v1/ask", "GET", "200", 1),
        ("/v1/ask", "POST", "200", 2),
        ("/v1/ask", "GET", "422", 1),
        ("/v1/documents/{source:path}", "GET", "200", 1),
        ("/v1/documents/{source:path}", "GET", "404", 1),
        ("unmatched", "GET", "404", 1),
    ]:
        labels = {"route": route, "method": method, "status": status}
        assert delta(requests, **labels) == count, labels
        assert delta(latency, **labels) == count, labels
    assert delta(requests, route="/v1/chat/completions", method="POST", status="200") == 1
    assert delta("groundqa_question_embed_seconds_count") == 4  # three asks and the chat
    assert delta("groundqa_search_seconds_count") == 4
    assert delta("groundqa_search_seconds_sum") > 0


def test_docs_and_page_requests_are_counted_by_route(built: Settings, client_for: Client) -> None:
    client = client_for(built)
    before = scrape(client)
    for url in ("/docs", "/openapi.json", "/docs/assets/swagger-ui.css", "/", "/static/app.js"):
        assert client.get(url).status_code == 200, url
    after = scrape(client)
    name = "groundqa_http_requests_total"
    counted = {
        dict(labels)["route"]: after[(n, labels)] - before.get((n, labels), 0.0)
        for n, labels in after
        if n == name and dict(labels)["method"] == "GET" and dict(labels)["status"] == "200"
    }
    assert {route: count for route, count in counted.items() if count} == {
        "/docs": 1,
        "/openapi.json": 1,
        "/docs/assets/{name}": 1,
        "/": 1,
        "/static/{name}": 1,
        "/metrics": 1,  # the first scrape
    }


def test_index_gauges_follow_the_served_build(
    built: Settings, client_for: Client, write_seed: WriteSeed
) -> None:
    client = client_for(built.model_copy(update={"reload_interval": 0.05}))
    manifest = published_manifest(built.index_dir)
    assert manifest is not None
    samples = scrape(client)
    assert value(samples, "groundqa_index_documents") == 2
    assert value(samples, "groundqa_index_chunks") == manifest.chunks
    # The age is computed at scrape time from the manifest's created_at, not frozen at load.
    created = datetime.fromisoformat(manifest.created_at)
    before = (datetime.now(UTC) - created).total_seconds()
    age = value(scrape(client), "groundqa_index_build_age_seconds")
    after = (datetime.now(UTC) - created).total_seconds()
    assert 0 <= before <= age <= after < 120

    write_seed("new.txt", "A third document, published by another process.\n")
    report = Builder(built, client.app.state.groundqa.embedder).build()  # type: ignore[attr-defined]
    deadline = time.monotonic() + 10
    while client.get("/readyz").json()["build_id"] != report.build_id:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert value(scrape(client), "groundqa_index_documents") == 3


def test_rebuild_metrics_count_runs_and_failures(
    built: Settings, client_for: Client, write_seed: WriteSeed
) -> None:
    client = client_for(built.model_copy(update={"admin_token": ADMIN}))
    auth = {"Authorization": f"Bearer {ADMIN}"}
    before = scrape(client)
    assert value(before, "groundqa_rebuilds_total") == 0

    write_seed("new.txt", "A third document for the rebuild.\n")
    job = client.post("/v1/index/rebuild", headers=auth).json()["job_id"]
    assert wait_for_job(client, job)["state"] == "succeeded"
    ok = scrape(client)
    assert value(ok, "groundqa_rebuilds_total") == 1
    assert value(ok, "groundqa_rebuild_duration_seconds_count") == 1
    assert value(ok, "groundqa_rebuild_duration_seconds_sum") > 0
    assert value(ok, "groundqa_build_errors_total") == 0
    assert value(ok, "groundqa_index_documents") == 3

    shutil.rmtree(built.seeds_dir)
    job = client.post("/v1/index/rebuild", headers=auth).json()["job_id"]
    failed = wait_for_job(client, job)
    assert failed["state"] == "failed"
    assert failed["error"].startswith(f"seeds folder {built.seeds_dir} does not exist")
    bad = scrape(client)
    assert value(bad, "groundqa_rebuilds_total") == 2
    assert value(bad, "groundqa_rebuild_duration_seconds_count") == 2
    assert value(bad, "groundqa_build_errors_total") == 1
    assert value(bad, "groundqa_index_documents") == 3  # the previous build keeps serving
    assert client.get("/v1/ask?q=troops").status_code == 200


def test_apps_do_not_share_metrics(built: Settings, client_for: Client) -> None:
    first, second = client_for(built), client_for(built)
    first.get("/v1/ask?q=troops")
    labels = {"route": "/v1/ask", "method": "GET", "status": "200"}
    assert value(scrape(first), "groundqa_http_requests_total", **labels) == 1
    assert value(scrape(second), "groundqa_http_requests_total", **labels) == 0


# ----------------------------------------------------------------------------- access log


def test_one_json_line_per_request(
    built: Settings, client_for: Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=access_log.name)
    client = client_for(built)
    statuses = [
        client.get("/v1/ask?q=troops").status_code,
        client.post("/v1/ask", json={"question": "x" * 3000}).status_code,
        client.post("/v1/ask", content=b"x" * (built.max_body_bytes + 1)).status_code,
        client.get("/v1/documents/troops.txt").status_code,
        client.get("/nowhere").status_code,
        client.get("/healthz").status_code,
    ]
    assert statuses == [200, 422, 413, 200, 404, 200]
    records = access_records(caplog)
    assert [(r["method"], r["route"], r["status"]) for r in records] == [
        ("GET", "/v1/ask", 200),
        ("POST", "/v1/ask", 422),
        ("POST", "unmatched", 413),
        ("GET", "/v1/documents/{source:path}", 200),
        ("GET", "unmatched", 404),
        ("GET", "/healthz", 200),
    ]
    for record in records:
        assert set(record) == LOG_FIELDS
        assert isinstance(record["duration_ms"], float) and record["duration_ms"] >= 0
        assert record["client"] == "testclient"
    assert records[3]["path"] == "/v1/documents/troops.txt"
    assert all(r.levelno == logging.INFO for r in caplog.records if r.name == access_log.name)


@pytest.mark.parametrize("request_id", ["abc-123", "req.42:a_b", "x" * 128, "0"])
def test_valid_request_id_is_echoed_and_logged(
    built: Settings, client_for: Client, caplog: pytest.LogCaptureFixture, request_id: str
) -> None:
    caplog.set_level(logging.INFO, logger=access_log.name)
    r = client_for(built).get("/v1/ask?q=troops", headers={"X-Request-ID": request_id})
    assert r.headers["x-request-id"] == request_id
    assert [rec["request_id"] for rec in access_records(caplog)] == [request_id]


@pytest.mark.parametrize("request_id", [None, "", "has space", "x" * 129, "a/b", "é", "a\tb"])
def test_missing_or_invalid_request_id_is_replaced(
    built: Settings, client_for: Client, caplog: pytest.LogCaptureFixture, request_id: str | None
) -> None:
    caplog.set_level(logging.INFO, logger=access_log.name)
    client = client_for(built)
    headers = {b"x-request-id": request_id.encode()} if request_id is not None else {}
    ids = [client.get("/healthz", headers=headers).headers["x-request-id"] for _ in range(2)]
    assert ids[0] != ids[1]
    for generated in ids:
        assert len(generated) == 32 and int(generated, 16) >= 0
    assert [rec["request_id"] for rec in access_records(caplog)] == ids


def test_errors_carry_the_request_id(built: Settings, client_for: Client) -> None:
    client = client_for(built)
    for r in [
        client.get("/v1/ask?q=", headers={"X-Request-ID": "e-1"}),
        client.post("/v1/ask", content=b"x" * 70_000, headers={"X-Request-ID": "e-1"}),
        client.get("/nowhere", headers={"X-Request-ID": "e-1"}),
    ]:
        assert r.headers["x-request-id"] == "e-1"


QUESTION_GET = "zebra quokka marker one"
QUESTION_POST = "walrus narwhal marker two"
QUESTION_CHAT = "axolotl pangolin marker three"


def ask_three_ways(client: TestClient) -> None:
    assert client.get("/v1/ask", params={"q": QUESTION_GET}).status_code == 200
    assert client.post("/v1/ask", json={"question": QUESTION_POST}).status_code == 200
    chat = {"messages": [{"role": "user", "content": QUESTION_CHAT}]}
    assert client.post("/v1/chat/completions", json=chat).status_code == 200


def test_questions_are_not_logged_by_default(
    built: Settings, client_for: Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    ask_three_ways(client_for(built))
    assert len(access_records(caplog)) == 3
    # Everything the server side logged (the test client's own httpx lines are not the server's).
    logged = "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith("httpx"))
    for word in ("zebra", "quokka", "walrus", "narwhal", "axolotl", "pangolin"):
        assert word not in logged


def test_questions_are_logged_when_enabled(
    built: Settings, client_for: Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=access_log.name)
    ask_three_ways(client_for(built.model_copy(update={"log_questions": True})))
    get, post, _ = access_records(caplog)
    assert get["query"] == "q=zebra+quokka+marker+one"
    assert post["question"] == QUESTION_POST


def test_json_formatter() -> None:
    formatter = JsonFormatter()
    access = logging.LogRecord(access_log.name, logging.INFO, "", 0, '{"a": 1}', None, None)
    assert formatter.format(access) == '{"a": 1}'
    other = logging.LogRecord("groundqa.rebuild", logging.ERROR, "", 0, "x %s", ("y",), None)
    line = json.loads(formatter.format(other))
    assert {k: line[k] for k in ("level", "logger", "message")} == {
        "level": "error",
        "logger": "groundqa.rebuild",
        "message": "x y",
    }


# ----------------------------------------------------------------------------- readiness


def test_not_ready_without_a_build_then_ready_after_one(
    settings: Settings, builder: Builder, write_seed: WriteSeed, client_for: Client
) -> None:
    client = client_for(settings.model_copy(update={"reload_interval": 0.05}))
    assert client.get("/healthz").json() == {"status": "ok"}
    r = client.get("/readyz")
    assert (r.status_code, r.json()) == (503, {"detail": "not ready: no valid index build"})
    assert client.get("/v1/ask?q=troops").status_code == 503

    write_seed("troops.txt", "North Korea sent ten thousand troops to Russia in October.\n")
    report = builder.build()  # as `groundqa index` in another process would
    deadline = time.monotonic() + 10
    while (r := client.get("/readyz")).status_code != 200:
        assert r.status_code == 503 and time.monotonic() < deadline
        time.sleep(0.02)
    assert r.json() == {"status": "ready", "build_id": report.build_id}
    assert read_pointer(settings.index_dir) == report.build_id
    assert client.get("/v1/ask?q=troops").status_code == 200


def test_not_ready_with_a_damaged_build(built: Settings, client_for: Client) -> None:
    build_id = read_pointer(built.index_dir)
    assert build_id is not None
    (build_path(built.index_dir, build_id) / VECTORS).write_bytes(b"not a faiss index")
    client = client_for(built)
    r = client.get("/readyz")
    assert r.status_code == 503
    assert r.json()["detail"].startswith(f"index build {build_id} is damaged (")
    assert r.json()["detail"].endswith(
        f"run `groundqa index --full --index {built.index_dir}` to rebuild it"
    )
    assert client.get("/healthz").status_code == 200


def test_not_ready_when_the_model_cannot_load(settings: Settings, tmp_path: Path) -> None:
    missing = tmp_path / "no-model"
    app = create_app(settings.model_copy(update={"model": str(missing)}))
    with TestClient(app, base_url=LOCAL) as client:
        r = client.get("/readyz")
        assert r.status_code == 503
        assert r.json()["detail"].startswith(f"model folder {missing} does not exist")
        assert client.get("/v1/ask?q=troops").status_code == 503
        assert client.get("/healthz").status_code == 200


# ----------------------------------------------------------------------------- shutdown


async def queued_then_shut_down(server_class: type[uvicorn.Server], count: int) -> list[bytes]:
    """Queue count requests to a started server whose event loop has not run since, shut it
    down, and return what each client received."""
    app = FastAPI()

    @app.get("/ok")
    async def ok() -> dict[str, bool]:
        return {"ok": True}

    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, lifespan="off")
    config.load()
    server = server_class(config)
    server.lifespan = config.lifespan_class(config)
    await server.startup()
    port = server.servers[0].sockets[0].getsockname()[1]
    clients = []
    # The event loop does not run here: the kernel completes each connection and queues it,
    # as it does for clients that connect while the loop is busy when the signal comes.
    for _ in range(count):
        client = socket.create_connection(("127.0.0.1", port), timeout=10)
        client.sendall(b"GET /ok HTTP/1.1\r\nHost: test\r\n\r\n")
        clients.append(client)
    await server.shutdown()
    replies = []
    for client in clients:
        try:
            replies.append(client.recv(65536))
        except ConnectionResetError:
            replies.append(b"reset")
        client.close()
    return replies


def test_shutdown_serves_connections_queued_before_it() -> None:
    """Connections the kernel queued before a shutdown are answered, where uvicorn's own
    shutdown resets them."""
    served = asyncio.run(queued_then_shut_down(DrainingServer, 8))
    assert [reply.split(b"\r\n", 1)[0] for reply in served] == [b"HTTP/1.1 200 OK"] * 8
    assert all(reply.endswith(b'{"ok":true}') for reply in served)
    dropped = asyncio.run(queued_then_shut_down(uvicorn.Server, 8))
    assert dropped == [b"reset"] * 8


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.mark.e2e
def test_sigterm_finishes_in_flight_requests(tmp_path: Path) -> None:
    """`groundqa serve` with the real model: SIGTERM right after 20 concurrent asks are sent;
    every ask still gets its 200 and the process exits with status 0."""
    seeds = tmp_path / "seeds"
    seeds.mkdir()
    for i, topic in enumerate(["troops", "cats", "rivers", "volcanoes"]):
        text = " ".join(f"Sentence {n} about {topic} and their many properties." for n in range(40))
        (seeds / f"doc{i}.txt").write_text(text + "\n")
    port = free_port()
    env = {
        **os.environ,
        "GROUNDQA_SEEDS_DIR": str(seeds),
        "GROUNDQA_INDEX_DIR": str(tmp_path / "index"),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }
    log = (tmp_path / "server.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "service", "serve", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, (tmp_path / "server.log").read_text()
            assert time.monotonic() < deadline, "server not ready in time"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.2)

        # One request held in flight deterministically: headers and half of its body are
        # sent before SIGTERM, the rest after. Graceful shutdown must still answer it.
        body = json.dumps({"question": "which rivers and cats are mentioned?", "top_k": 20})
        held = socket.create_connection(("127.0.0.1", port), timeout=60)
        held.sendall(
            (
                f"POST /v1/ask HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n{body[:10]}"
            ).encode()
        )
        count = 20
        sent = threading.Semaphore(0)
        results: list[int | BaseException] = []

        def ask(n: int) -> None:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                payload = json.dumps({"question": f"question {n} about rivers", "top_k": 20})
                conn.request("POST", "/v1/ask", payload, {"Content-Type": "application/json"})
                sent.release()
                response = conn.getresponse()
                response.read()
                results.append(response.status)
            except BaseException as exc:
                sent.release()
                results.append(exc)

        threads = [threading.Thread(target=ask, args=(n,)) for n in range(count)]
        for thread in threads:
            thread.start()
        for _ in range(count):
            assert sent.acquire(timeout=30)
        proc.send_signal(signal.SIGTERM)
        held.sendall(body[10:].encode())
        reply = b""
        while b"\r\n\r\n" not in reply:
            part = held.recv(65536)
            if not part:
                break
            reply += part
        held.close()
        for thread in threads:
            thread.join(60)
        assert proc.wait(60) == 0, (tmp_path / "server.log").read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    assert reply.startswith(b"HTTP/1.1 200 "), reply[:200]
    assert results == [200] * count


def test_queued_bytes_are_seen_on_descriptors_past_1024() -> None:
    """The shutdown's check for queued requests works however many files the process holds
    (select() refused descriptors past 1024: memory-mapped build files and connections add up)."""
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1100:
        pytest.skip(f"the open-file limit is {soft}")
    filler = [os.dup(0) for _ in range(1030)]
    try:
        left, right = socket.socketpair()
        assert left.fileno() > 1024
        with left, right:
            assert not server_module._any_readable([left])
            right.sendall(b"GET / HTTP/1.1\r\n")
            assert server_module._any_readable([left])
    finally:
        for fd in filler:
            os.close(fd)
