"""Who is asking: every HTTP request's bearer key is read once, here, into the request's
principal (its name and scope); with a keys file, requests without a valid key are refused
before any route runs, except the health probes and the page's own files."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from starlette.types import ASGIApp, Receive, Scope, Send

from service.api.state import AppState, authenticate

# Open even with a keys file: orchestrator probes send no credentials, and the page's files
# hold no document data (the page asks for a key before it calls the API).
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/"})
OPEN_PREFIXES = ("/static/",)
OPENAI_PREFIXES = ("/v1/chat/", "/v1/models")


def bearer_of(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The token of an `Authorization: Bearer` header, if any."""
    header = dict(headers).get(b"authorization", b"").decode("latin-1")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def is_open(path: str) -> bool:
    """Whether a path is served without a key even with a keys file."""
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)


class AuthMiddleware:
    """Sets scope["state"]["principal"] (None when the key is missing or invalid, with the
    reason in "refusal"); with a keys file, answers 401 for every closed path without one."""

    def __init__(self, app: ASGIApp, state: AppState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        result = authenticate(self.state, bearer_of(scope["headers"]), datetime.now(UTC).date())
        holder = scope.setdefault("state", {})
        holder["principal"] = result.principal
        holder["refusal"] = result.refusal
        if (
            result.principal is None
            and self.state.keys is not None
            and scope["method"] != "OPTIONS"
            and not is_open(scope["path"])
        ):
            await _refuse(send, scope["path"], result.refusal or "missing or invalid API key")
            return
        await self.app(scope, receive, send)


async def _refuse(send: Send, path: str, message: str) -> None:
    """401 in the API's shape (OpenAI's under its paths); the message never holds the key."""
    if path.startswith(OPENAI_PREFIXES):
        error = {"message": message, "type": "authentication_error"}
        payload: dict[str, object] = {"error": {**error, "code": "invalid_api_key", "param": None}}
    else:
        payload = {"detail": message}
    body = json.dumps(payload).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 401,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"www-authenticate", b"Bearer"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
