"""What the running app holds: settings, the model, the served build, the rebuild manager."""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from datetime import date
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, status

from service.access import Principal, Scope
from service.api.observability import Metrics
from service.builds import IndexHolder
from service.config import Settings
from service.embedding import Embedder
from service.keys import KeyRing
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
    keys: KeyRing | None = None  # with GROUNDQA_KEYS_FILE
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


def _matches(token: str | None, secrets: list[str]) -> bool:
    """Constant-time membership test of token among secrets."""
    if token is None:
        return False
    found = False
    for secret in secrets:
        found |= hmac.compare_digest(token.encode(), secret.encode())
    return found


ANONYMOUS = "anonymous"  # the principal of an open service (no keys configured)
INVALID_KEY = "missing or invalid API key; send `Authorization: Bearer <key>`"


def keys_required(settings: Settings) -> bool:
    """Whether query routes need a key: with a keys file or GROUNDQA_API_KEYS."""
    return settings.keys_file is not None or bool(settings.api_keys)


@dataclass(frozen=True, slots=True)
class Authentication:
    """The outcome of reading a request's key: who it is, or why it was refused."""

    principal: Principal | None
    refusal: str | None = None


def authenticate(state: AppState, token: str | None, today: date) -> Authentication:
    """Who the bearer token is: a key of the keys file (its scope), one of GROUNDQA_API_KEYS
    (every collection), the admin token (every collection, admin), or anonymous when no keys
    are configured. Every secret is compared in constant time; nothing here logs the token."""
    settings = state.settings
    if token is not None:
        entry = state.keys.match(token) if state.keys is not None else None
        if entry is not None:
            if entry.expired(today):
                return Authentication(None, f"this API key expired on {entry.expires}")
            return Authentication(entry.principal())
        # Every key is compared, even after a match: the time taken tells nothing.
        hits = [_matches(token, [key]) for key in settings.api_keys]
        if any(hits):
            return Authentication(Principal(f"api-key-{hits.index(True) + 1}"))
        if settings.admin_token and _matches(token, [settings.admin_token]):
            return Authentication(Principal("admin-token", admin=True))
    if not keys_required(settings):
        return Authentication(Principal(ANONYMOUS))
    return Authentication(None, INVALID_KEY)


def principal_of(request: Request) -> Principal | None:
    """The principal the auth middleware found for the request (None: no valid key)."""
    principal = request.scope.get("state", {}).get("principal")
    return principal if isinstance(principal, Principal) else None


def _unauthorized(request: Request) -> HTTPException:
    refusal = request.scope.get("state", {}).get("refusal")
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED,
        refusal if isinstance(refusal, str) else INVALID_KEY,
        headers={"WWW-Authenticate": "Bearer"},
    )


async def require_api_key(request: Request, state: StateDep) -> None:
    """Query routes: open when no keys are configured, else a valid bearer key is required."""
    if principal_of(request) is None:
        raise _unauthorized(request)


class Access:
    """What a request may see, and its audit record (filled as the request searches)."""

    def __init__(self, request_state: dict[str, Any], principal: Principal) -> None:
        self.principal = principal
        self.scope = principal.scope
        self._audit: dict[str, Any] = request_state.setdefault("audit", {})
        self._audit["collections"] = self.scope.label()

    def narrowed(self, collections: list[str] | None) -> Scope:
        """The key's scope narrowed to requested collections (never wider), as searched."""
        scope = self.scope.narrow(collections)
        self._audit["collections"] = scope.label()
        return scope

    def record(self, build_id: str, passages: int) -> None:
        """Note the build answered from and how many passages (or documents) were returned."""
        self._audit["build_id"] = build_id
        self._audit["passages"] = passages


async def get_access(request: Request) -> Access:
    """The request's access: 401 without a valid key where keys are required."""
    principal = principal_of(request)
    if principal is None:
        raise _unauthorized(request)
    return Access(request.scope.setdefault("state", {}), principal)


AccessDep = Annotated[Access, Depends(get_access)]


async def require_admin(request: Request, state: StateDep) -> None:
    """Index routes: an admin key of the keys file or GROUNDQA_ADMIN_TOKEN; disabled without
    either."""
    principal = principal_of(request)
    if principal is not None and principal.admin:
        return
    if not state.settings.admin_token and state.keys is None:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            "index administration is disabled; set GROUNDQA_ADMIN_TOKEN to enable it",
        )
    if principal is not None and principal.keyed:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "this key may not administer the index")
    raise HTTPException(
        status.HTTP_401_UNAUTHORIZED,
        "missing or invalid admin token; send `Authorization: Bearer <token>`",
        headers={"WWW-Authenticate": "Bearer"},
    )


ApiKey = Depends(require_api_key)
Admin = Depends(require_admin)
