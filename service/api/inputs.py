"""Request bodies a JSON encoder cannot echo are refused at the edge, before any route runs.

`json.loads` accepts `NaN`, `Infinity`, `1e999` and lone surrogates (`"\\ud800"`, valid JSON);
none of them can be written back out as JSON or UTF-8, and a lone surrogate makes the
tokenizer raise. One check over the parsed body covers every route (ask, chat, MCP), so no
field can forget it.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.observability import send_json

_SURROGATE = re.compile("[\ud800-\udfff]")
OPENAI_PATHS = ("/v1/chat/", "/v1/models")


class UnsafeInput(ValueError):
    """A value in a request body that cannot be processed or echoed."""


def _constant(name: str) -> float:
    raise UnsafeInput(f"{name} is not a JSON number groundqa accepts")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise UnsafeInput(f"{text} is out of range")
    return value


def _where(path: list[str]) -> str:
    return ".".join(path) or "body"


def _check(value: Any, path: list[str]) -> None:
    """Raise UnsafeInput naming the first string (key or value) with a lone surrogate."""
    stack: list[tuple[Any, list[str]]] = [(value, path)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                raise UnsafeInput(f"{_where(where)}: text holds a lone surrogate (not Unicode)")
        elif isinstance(item, dict):
            for key, child in item.items():
                if _SURROGATE.search(key):
                    raise UnsafeInput(f"{_where(where)}: a key holds a lone surrogate")
                stack.append((child, [*where, key]))
        elif isinstance(item, list):
            stack.extend((child, [*where, str(i)]) for i, child in enumerate(item))


def printable(value: Any) -> Any:
    """value with every non-finite float and lone surrogate made JSON-safe (as text)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {printable(k): printable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [printable(v) for v in value]
    return value


# A 422 echoes each invalid input: a long one is cut to this many characters (saying so).
ECHO_CHARS = 100


def clipped(value: Any, limit: int = ECHO_CHARS) -> Any:
    """value with every string longer than limit cut to its first limit characters and the
    length it had (an echo need not carry the whole of an over-long question back)."""
    if isinstance(value, str) and len(value) > limit:
        return f"{value[:limit]}... ({len(value)} characters)"
    if isinstance(value, dict):
        return {k: clipped(v, limit) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clipped(v, limit) for v in value]
    return value


def check_body(body: bytes) -> str | None:
    """Why body cannot be accepted, or None (also for bodies that are not JSON at all: the
    routes answer those with their own 400/422)."""
    try:
        data = json.loads(body, parse_constant=_constant, parse_float=_finite)
    except UnsafeInput as exc:
        return str(exc)
    except (ValueError, RecursionError):
        return None
    try:
        _check(data, [])
    except UnsafeInput as exc:
        return str(exc)
    return None


def _error_body(path: str, detail: str) -> tuple[int, dict[str, Any]]:
    """The status and body of a refusal, in the shape the route's clients expect."""
    if path.startswith(OPENAI_PATHS):
        error = {"message": detail, "type": "invalid_request_error", "param": None}
        return 400, {"error": {**error, "code": "invalid_value"}}
    if path.rstrip("/") == "/mcp":
        return 400, {"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": detail}}
    return 422, {"detail": detail}


class InputCheckMiddleware:
    """Reads a request's body (already capped by LimitsMiddleware), refuses it when it holds
    NaN, infinities or lone surrogates, and otherwise hands it on unchanged."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        last: Message = {"type": "http.request", "body": b"", "more_body": False}
        failure: Exception | None = None
        try:
            while True:
                message = await receive()
                if message["type"] != "http.request":
                    last = message
                    break
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    break
        except Exception as exc:  # too large, too slow: the app answers it as it always did
            failure = exc
        body = b"".join(chunks)
        complete = failure is None and last["type"] == "http.request"
        if complete and (detail := check_body(body)) is not None:
            code, payload = _error_body(scope["path"], detail)
            await send_json(send, code, payload, close=False)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            if failure is not None:
                raise failure
            if last["type"] != "http.request":
                return last
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


def host_of(header: str) -> str:
    """The host name of a Host header, without port or IPv6 brackets, lower case."""
    value = header.strip().lower()
    if value.startswith("["):
        return value[1:].partition("]")[0]
    return value.rpartition(":")[0] if value.count(":") == 1 else value


class HostCheckMiddleware:
    """Without API keys, answers only requests addressed to a loopback name or an allowed
    host: a web page cannot reach a local groundqa through a DNS name it rebinds to 127.0.0.1."""

    def __init__(self, app: ASGIApp, allowed: list[str]) -> None:
        self.app = app
        self.any = "*" in allowed
        self.allowed = LOOPBACK_HOSTS | {host_of(h) for h in allowed}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.any:
            await self.app(scope, receive, send)
            return
        header = dict(scope["headers"]).get(b"host", b"").decode("latin-1")
        host = host_of(header)
        if host in self.allowed or host.endswith(".localhost"):
            await self.app(scope, receive, send)
            return
        detail = (
            f"host {header[:100]!r} is not allowed: without GROUNDQA_API_KEYS groundqa answers "
            "loopback addresses only; set GROUNDQA_ALLOWED_HOSTS (or API keys) to serve others"
        )
        await send_json(send, 403, {"detail": detail}, close=False)
