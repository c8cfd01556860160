"""The FastAPI application factory: the lifespan loads the model and index once."""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, HTTPException, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service import __version__
from service.api.auth import AuthMiddleware
from service.api.inputs import HostCheckMiddleware, InputCheckMiddleware, clipped, printable
from service.api.mcp import McpEndpoint, McpRoute
from service.api.observability import LimitsMiddleware, ObservabilityMiddleware
from service.api.openai import install_error_handlers
from service.api.openai import router as openai_router
from service.api.routes import router
from service.api.state import AppState, principal_of
from service.api.web import router as web_router
from service.builds import IndexHolder
from service.config import Settings
from service.embedding import Embedder, embedder_for, rebuild_embedder
from service.errors import (
    BuildInProgressError,
    DocumentNotFoundError,
    GenerationUnavailableError,
    GroundQAError,
    IndexIncompatibleError,
    IndexNotBuiltError,
    InvalidSpanError,
    ModelLoadError,
)
from service.indexing import Builder
from service.keys import KeyRing, follow_keys
from service.rebuild import Job, RebuildManager, StaleCheck, follow_published, watch_seeds
from service.search import Searcher

log = logging.getLogger("groundqa")

STATUS_BY_ERROR: list[tuple[type[GroundQAError], int]] = [
    (BuildInProgressError, status.HTTP_409_CONFLICT),
    (DocumentNotFoundError, status.HTTP_404_NOT_FOUND),
    (GenerationUnavailableError, status.HTTP_400_BAD_REQUEST),
    (InvalidSpanError, status.HTTP_422_UNPROCESSABLE_CONTENT),
    (IndexNotBuiltError, status.HTTP_503_SERVICE_UNAVAILABLE),
    (IndexIncompatibleError, status.HTTP_503_SERVICE_UNAVAILABLE),
    (ModelLoadError, status.HTTP_503_SERVICE_UNAVAILABLE),
]


def _load(state: AppState, embedder: Embedder | None) -> None:
    """Load the model and the published build into state (runs off the event loop)."""
    settings = state.settings
    try:
        state.embedder = embedder or embedder_for(settings)
    except ModelLoadError as exc:
        state.load_error = str(exc)
        log.error("%s", exc)
        return
    # The first forward pass allocates and tunes kernels: pay for it before the first request.
    state.embedder.embed(["warm up"])
    state.holder = IndexHolder(settings.index_dir, state.embedder)
    state.searcher = Searcher(settings, state.embedder, state.holder)
    # An injected embedder (shared or fake) also embeds the server's rebuilds.
    builds = state.embedder if embedder else rebuild_embedder(settings, state.embedder)
    state.rebuilds = RebuildManager(settings, Builder(settings, builds), state.holder)
    metrics = state.metrics

    def record(job: Job) -> None:
        metrics.rebuilds.inc()
        metrics.rebuild_seconds.observe(state.rebuilds.last_build_seconds if state.rebuilds else 0)
        if job.state == "failed":
            metrics.build_errors.inc()

    state.rebuilds.on_finish.append(record)
    stale_check = StaleCheck(settings, state.embedder.model_id, settings.stale_check_interval)
    state.stale_check = stale_check
    state.rebuilds.on_finish.append(lambda _: stale_check.invalidate())
    try:
        state.holder.refresh()
    except GroundQAError as exc:
        # Keep serving health and admin routes; asks answer 503 with this hint, /readyz too.
        state.load_error = str(exc)
        log.error("%s", exc)


def access_mode(settings: Settings, keys: KeyRing | None) -> str:
    """One line saying who may use the service, logged at start."""
    if keys is not None:
        return (
            f"keys file {settings.keys_file} ({len(keys)} keys): every route but /healthz, "
            "/readyz and the page's files needs a key, and sees only its collections"
        )
    if settings.api_keys:
        return "GROUNDQA_API_KEYS: query routes need one of the keys (every collection)"
    return (
        "no keys configured: every query route is open to whoever reaches "
        f"{settings.host}:{settings.port} (set GROUNDQA_KEYS_FILE or GROUNDQA_API_KEYS)"
    )


def create_app(settings: Settings | None = None, *, embedder: Embedder | None = None) -> FastAPI:
    """A groundqa app for settings; pass an embedder to share one already loaded (or a fake).
    A keys file that cannot be read raises KeysFileError here, before anything is served."""
    settings = settings or Settings()
    state = AppState(settings=settings)
    state.follow.on_failure.append(lambda _: state.metrics.follow_errors.inc())
    if settings.keys_file is not None:
        state.keys = KeyRing(settings.keys_file)
    mcp = McpEndpoint(state)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        log.info("access: %s", access_mode(settings, state.keys))
        await run_in_threadpool(_load, state, embedder)
        stop = threading.Event()
        threads = []
        if state.keys is not None:
            threads.append(
                threading.Thread(
                    target=follow_keys,
                    args=(state.keys, settings.keys_reload_interval, stop),
                    name="groundqa-keys",
                    daemon=True,
                )
            )
        if state.holder is not None:
            threads.append(
                threading.Thread(
                    target=follow_published,
                    args=(state.holder, settings.reload_interval, stop, state.follow),
                    name="groundqa-follow",
                    daemon=True,
                )
            )
        if settings.watch and state.rebuilds is not None:
            threads.append(
                threading.Thread(
                    target=watch_seeds,
                    args=(settings, state.rebuilds, stop),
                    name="groundqa-watch",
                    daemon=True,
                )
            )
        for thread in threads:
            thread.start()
        try:
            async with mcp.run():
                yield
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=5)
            if state.searcher is not None:
                state.searcher.close()

    app = FastAPI(
        title="groundqa",
        version=__version__,
        description="Source-grounded question answering: every passage cites the exact span of "
        "its source document.",
        lifespan=lifespan,
        # /docs is served by the web router from packaged assets, not FastAPI's CDN pages.
        docs_url=None,
        redoc_url=None,
    )
    app.state.groundqa = state
    app.include_router(router)
    app.include_router(openai_router)
    app.include_router(web_router)
    # An ASGI app, outside FastAPI's dependencies: it checks the query API keys itself.
    app.router.routes.append(McpRoute(mcp))
    # Innermost: the principal is known before any route runs; CORS preflights, body limits
    # and the access log happen outside it.
    app.add_middleware(AuthMiddleware, state=state)
    # Added last = outermost: limits apply before anything reads the body; every response,
    # errors included, is counted and logged.
    # Inside the limits: a body is capped in size and time before it is read for the check.
    app.add_middleware(InputCheckMiddleware)
    app.add_middleware(
        LimitsMiddleware, max_bytes=settings.max_body_bytes, timeout=settings.request_timeout
    )
    if settings.cors_origins:
        # Inside the observability middleware, so preflights are counted and logged too.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "OPTIONS"],
            # A browser MCP client sends and reads the protocol's own headers.
            allow_headers=[
                "Authorization",
                "Content-Type",
                "Mcp-Protocol-Version",
                "Mcp-Session-Id",
            ],
            expose_headers=["Mcp-Session-Id"],
        )
    if not settings.api_keys and settings.keys_file is None:
        # Inside the observability middleware: refusals are counted and logged.
        app.add_middleware(HostCheckMiddleware, allowed=settings.allowed_hosts)
    app.add_middleware(
        ObservabilityMiddleware, metrics=state.metrics, log_questions=settings.log_questions
    )

    # Open with GROUNDQA_API_KEYS, like /healthz and /readyz: Prometheus scrapers and probes
    # send no credentials. It shows counts and timings, never questions or text; with a keys
    # file it needs an admin key, as its document counts span every collection.
    @app.get("/metrics", include_in_schema=False)
    def metrics(request: Request) -> Response:
        """Prometheus metrics."""
        principal = principal_of(request)
        if state.keys is not None and (principal is None or not principal.admin):
            raise HTTPException(status.HTTP_403_FORBIDDEN, "/metrics needs an admin key")
        if state.holder is not None and state.holder.loaded:
            state.metrics.observe_index(state.holder.current.manifest)
        return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's own handler echoes each invalid input, which JSON may not be able to hold
        # and which may be a whole over-long question.
        errors = clipped(printable(jsonable_encoder(exc.errors())))
        return JSONResponse({"detail": errors}, 422)

    @app.exception_handler(GroundQAError)
    async def domain_error(request: Request, exc: GroundQAError) -> JSONResponse:
        code = next((c for t, c in STATUS_BY_ERROR if isinstance(exc, t)), 500)
        return JSONResponse({"detail": str(exc)}, status_code=code)

    # Last: wraps the handlers above so /v1/chat/ and /v1/models errors take OpenAI's shape.
    install_error_handlers(app)
    return app
