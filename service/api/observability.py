"""Observability and limits: Prometheus metrics, one JSON log line per request with a request
id, a request body cap and a body read timeout, all as plain ASGI middleware."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.store import Manifest

access_log = logging.getLogger("groundqa.access")
audit_log = logging.getLogger("groundqa.audit")
# Probes, the page's files and the API docs are not audited: they show no document data.
UNAUDITED = (
    "/healthz",
    "/readyz",
    "/",
    "/static/{name}",
    "/docs",
    "/docs/assets/{name}",
    "/openapi.json",
)

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
# Bodies are kept for the access log only with log_questions, and only this much of them.
QUESTION_LOG_BYTES = 16_384
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class Metrics:
    """The app's Prometheus metrics, in a registry of its own so apps never share counters."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "groundqa_http_requests",
            "HTTP requests by route, method and status.",
            ["route", "method", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "groundqa_http_request_duration_seconds",
            "HTTP request latency by route and status.",
            ["route", "method", "status"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.embed = Histogram(
            "groundqa_question_embed_seconds",
            "Time to embed a question.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.search = Histogram(
            "groundqa_search_seconds",
            "Time to search the indexes for a question.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.documents = Gauge(
            "groundqa_index_documents", "Documents in the served build.", registry=r
        )
        self.chunks = Gauge("groundqa_index_chunks", "Chunks in the served build.", registry=r)
        self.build_age = Gauge(
            "groundqa_index_build_age_seconds",
            "Seconds since the served build was created.",
            registry=r,
        )
        self.rebuilds = Counter("groundqa_rebuilds", "Rebuilds run by this server.", registry=r)
        self.rebuild_seconds = Histogram(
            "groundqa_rebuild_duration_seconds",
            "Duration of rebuilds run by this server.",
            buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800),
            registry=r,
        )
        self.build_errors = Counter(
            "groundqa_build_errors",
            "Rebuilds that failed (the previous build kept serving).",
            registry=r,
        )

        self.follow_errors = Counter(
            "groundqa_follow_errors",
            "Failed checks for a newly published build (the served build kept serving).",
            registry=r,
        )

    def observe_index(self, manifest: Manifest) -> None:
        """Set the index gauges from the served build's manifest."""
        self.documents.set(manifest.documents)
        self.chunks.set(manifest.chunks)
        created = datetime.fromisoformat(manifest.created_at)
        self.build_age.set_function(lambda: (datetime.now(UTC) - created).total_seconds())


# Methods a client may send are unbounded (any token): the label takes these, else "other".
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def _method_of(scope: Scope) -> str:
    """The request method when it is a standard one, else 'other' (bounded cardinality)."""
    method = str(scope.get("method", ""))
    return method if method in METHODS else "other"


def _route_of(scope: Scope) -> str:
    """The route template that matched (bounded cardinality), or 'unmatched'."""
    route = scope.get("route")
    if route is None and "endpoint" in scope:
        # Plain Starlette routes (FastAPI's /openapi.json) do not record themselves in the
        # scope as FastAPI's do: find the one that matched among the app's routes.
        app = scope.get("app")
        for candidate in getattr(getattr(app, "router", None), "routes", ()):
            if getattr(candidate, "endpoint", None) is scope["endpoint"]:
                route = candidate
                break
    path = getattr(route, "path", None)
    return str(path) if path else "unmatched"


class ObservabilityMiddleware:
    """Counts, times and logs every HTTP request; echoes or assigns X-Request-ID."""

    def __init__(self, app: ASGIApp, metrics: Metrics, log_questions: bool = False) -> None:
        self.app = app
        self.metrics = metrics
        self.log_questions = log_questions

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if _REQUEST_ID.fullmatch(incoming) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500
        started = time.perf_counter()
        body = bytearray()

        async def receive_and_keep() -> Message:
            message = await receive()
            if message["type"] == "http.request" and len(body) < QUESTION_LOG_BYTES:
                body.extend(message.get("body", b""))
            return message

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive_and_keep if self.log_questions else receive, send_with_id)
        finally:
            seconds = time.perf_counter() - started
            route = _route_of(scope)
            method = _method_of(scope)
            self.metrics.requests.labels(route, method, str(status)).inc()
            self.metrics.latency.labels(route, method, str(status)).observe(seconds)
            record: dict[str, Any] = {
                "ts": datetime.now(UTC).isoformat(timespec="milliseconds"),
                "request_id": request_id,
                "method": method,
                "route": route,
                "path": scope["path"],
                "status": status,
                "duration_ms": round(seconds * 1000, 2),
                "client": (scope.get("client") or ("", 0))[0],
            }
            if self.log_questions and scope.get("query_string"):
                record["query"] = scope["query_string"].decode("latin-1")
            if self.log_questions and (question := _question_of(bytes(body))) is not None:
                record["question"] = question
            access_log.info(json.dumps(record))
            if route not in UNAUDITED and method != "OPTIONS":
                audit_log.info(json.dumps(_audit_record(record, scope.get("state", {}))))


def _audit_record(access: dict[str, Any], state: dict[str, Any]) -> dict[str, Any]:
    """Who searched what: the key's name (never the key), the route, the collections searched,
    the build and how many passages or documents came back (nothing for a refused request)."""
    principal = state.get("principal")
    audit = state.get("audit", {})
    return {
        "ts": access["ts"],
        "request_id": access["request_id"],
        "audit": True,
        "key": getattr(principal, "name", None),
        "method": access["method"],
        "route": access["route"],  # "unmatched" for a request refused before routing
        "path": access["path"],
        "status": access["status"],
        "collections": audit.get("collections"),
        "build_id": audit.get("build_id"),
        "passages": audit.get("passages"),
    }


def _question_of(body: bytes) -> str | None:
    """The `question` of a JSON request body (POST /v1/ask), if it has one."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return None
    question = data.get("question") if isinstance(data, dict) else None
    return question if isinstance(question, str) else None


class LimitsMiddleware:
    """Rejects bodies over max_bytes with 413, and with 408 bodies not fully received within
    timeout seconds of the first read (a slow client cannot hold a request open for long)."""

    def __init__(self, app: ASGIApp, max_bytes: int, timeout: float) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            await _plain(send, 413, f"request body larger than {self.max_bytes} bytes")
            return
        received = 0
        started = False
        complete = False
        deadline: float | None = None

        async def limited() -> Message:
            nonlocal received, complete, deadline
            if complete:
                # The body is in; later reads wait for a disconnect (streaming responses).
                return await receive()
            now = asyncio.get_running_loop().time()
            deadline = deadline or now + self.timeout
            try:
                message = await asyncio.wait_for(receive(), max(deadline - now, 0.0))
            except TimeoutError:
                raise _BodyError(408, "request body not received in time") from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _BodyError(413, f"request body larger than {self.max_bytes} bytes")
                complete = not message.get("more_body", False)
            else:
                complete = True
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited, tracking_send)
        except _BodyError as exc:
            if not started:
                await _plain(send, exc.status_code, exc.detail)


class _BodyError(HTTPException):
    """An HTTPException, so FastAPI's body parsing re-raises it (it turns any other error into
    400) and the app's handlers answer it; the middleware answers it when nothing did."""

    def __init__(self, status: int, detail: str) -> None:
        # The rest of the body is never read: the connection cannot carry another request.
        super().__init__(status, detail, headers={"Connection": "close"})


async def _plain(send: Send, status: int, detail: str) -> None:
    """Send a small JSON error response and close the connection (the body was not read)."""
    await send_json(send, status, {"detail": detail})


async def send_json(send: Send, status: int, payload: object, *, close: bool = True) -> None:
    """Send a small JSON response; close the connection unless its body was read whole."""
    body = json.dumps(payload).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class JsonFormatter(logging.Formatter):
    """Log records as JSON lines; access records are already JSON objects."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.name in (access_log.name, audit_log.name):
            return message
        payload = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": message,
        }
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return json.dumps(payload)


def configure_logging(level: str = "INFO") -> None:
    """JSON lines on stderr for groundqa and uvicorn."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    for name in ("groundqa", "uvicorn", "uvicorn.error"):
        logging.getLogger(name).setLevel(level)
    # uvicorn's own access log would duplicate ours without the request id.
    logging.getLogger("uvicorn.access").disabled = True
