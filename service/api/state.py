"""What the running app holds: settings, the model, the served build, the rebuild manager."""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status

from service.api.observability import Metrics
from service.builds import IndexHolder
from service.config import Settings
from service.embedding import Embedder
from service.rebuild import FollowHealth, RebuildManager, StaleCheck
from service.search import Searcher


@dataclass
class AppState:
    """Filled by the lifespan; routes read it through the dependencies below."""

    settings: Settings
    embedder: Embedder | None = None
    holder: IndexHolder | None = None
    searcher: Searcher | None = None
    rebuilds: RebuildManager | None = None
    load_error: str | None = None
    metrics: Metrics = field(default_factory=Metrics)
    follow: FollowHealth = field(default_factory=FollowHealth)
    stale_check: StaleCheck | None = None
    extras: dict[str, object] = field(default_factory=dict)


# The dependencies are `async def` although they never await: FastAPI runs a plain `def`
# dependency in the threadpool, a thread hand-off per dependency on every request.
async def get_state(request: Request) -> AppState:
    """The app's state."""
    state: AppState = request.app.state.groundqa
    return state


StateDep = Annotated[AppState, Depends(get_state)]


async def get_searcher(state: StateDep) -> Searcher:
    """The searcher, or 503 while the model is not loaded."""
    if state.searcher is None:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            state.load_error or "the model is still loading; retry in a few seconds",
        )
    return state.searcher


SearcherDep = Annotated[Searcher, Depends(get_searcher)]


def bearer_token(request: Request) -> str | None:
    """The token of an `Authorization: Bearer` header, if any."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _matches(token: str | None, secrets: list[str]) -> bool:
    """Constant-time membership test of token among secrets."""
    if token is None:
        return False
    found = False
    for secret in secrets:
        found |= hmac.compare_digest(token.encode(), secret.encode())
    return found


async def require_api_key(request: Request, state: StateDep) -> None:
    """Query routes: open when no keys are configured, else a valid bearer key is required."""
    keys = state.settings.api_keys
    if keys and not _matches(bearer_token(request), keys):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing or invalid API key; send `Authorization: Bearer <key>`",
            headers={"WWW-Authenticate": "Bearer"},
        )


async def require_admin(request: Request, state: StateDep) -> None:
    """Index routes: disabled without GROUNDQA_ADMIN_TOKEN, else the token is required."""
    token = state.settings.admin_token
    if not token:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            "index administration is disabled; set GROUNDQA_ADMIN_TOKEN to enable it",
        )
    if not _matches(bearer_token(request), [token]):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing or invalid admin token; send `Authorization: Bearer <token>`",
            headers={"WWW-Authenticate": "Bearer"},
        )


ApiKey = Depends(require_api_key)
Admin = Depends(require_admin)
