"""Routes of the ask, documents, index and health APIs."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Annotated

import anyio
import anyio.to_thread
from fastapi import APIRouter, HTTPException, Query, Response, status

from service.access import Scope, collection_of
from service.answering import AskResult, ask
from service.api.generated import generate_answer, require_llm, sentence_out, with_generation
from service.api.schemas import (
    AskQuery,
    AskRequest,
    AskResponse,
    CollectionList,
    CollectionOut,
    DocumentList,
    DocumentOut,
    DocumentSummary,
    ErrorOut,
    IndexInfo,
    IndexRef,
    JobOut,
    Ready,
    VerifyRequest,
    VerifyResponse,
)
from service.api.state import Access, AccessDep, Admin, ApiKey, AppState, SearcherDep, StateDep
from service.config import Mode
from service.conversation import Turn, ask_conversation
from service.errors import DocumentNotFoundError
from service.indexing import BuildPlan
from service.rebuild import StaleCheck
from service.search import Searcher
from service.store import DocumentInfo
from service.verification import resolve_spans, verify_text

# 422 is left to FastAPI: its validation errors are a list, documented as HTTPValidationError.
ERRORS: dict[int | str, dict[str, object]] = {
    401: {"model": ErrorOut},
    503: {"model": ErrorOut},
}
# Routes that read a body: not parseable (400), not sent in time (408), too large (413).
BODY_ERRORS: dict[int | str, dict[str, object]] = {
    400: {"model": ErrorOut},
    408: {"model": ErrorOut},
    413: {"model": ErrorOut},
}

router = APIRouter()


def to_response(result: AskResult) -> AskResponse:
    """The JSON body of an ask."""
    return AskResponse.model_validate(
        {
            "question": result.question,
            "answer": {
                "text": result.answer.text,
                "grounded": result.answer.grounded,
                "citations": list(result.answer.citations),
            },
            "passages": [
                {
                    "rank": p.rank,
                    "score": p.score,
                    "text": p.text,
                    "highlights": [vars_of(h) for h in p.highlights],
                    "citation": vars_of(p.citation),
                }
                for p in result.passages
            ],
            "index": {"build_id": result.build_id, "model": result.model},
            "took_ms": result.took_ms,
        }
    )


def vars_of(obj: object) -> dict[str, object]:
    """Fields of a slotted dataclass as a dict."""
    return {name: getattr(obj, name) for name in obj.__slots__}  # type: ignore[attr-defined]


def ask_limiter(state: AppState) -> anyio.CapacityLimiter:
    """The app's bound on asks computed at once (settings.ask_concurrency): enough threads to
    keep every core and the encoder's micro-batches busy; the rest wait on the event loop
    instead of crowding the shared threadpool."""
    limiter = state.extras.get("ask_limiter")
    if not isinstance(limiter, anyio.CapacityLimiter):
        limiter = anyio.CapacityLimiter(state.settings.ask_concurrency)
        state.extras["ask_limiter"] = limiter
    return limiter


async def answer(
    state: AppState,
    searcher: Searcher,
    question: str,
    *,
    top_k: int,
    mode: Mode | None = None,
    sources: list[str] | None = None,
    scope: Scope,
) -> AskResult:
    """Ask off the event loop (encoding and search are CPU-bound), at most
    settings.ask_concurrency at once, and record the stage timings. Only documents the scope
    sees are searched: every route passes the scope of its key."""
    return await bounded(
        state,
        partial(ask, searcher, question, top_k=top_k, mode=mode, sources=sources, scope=scope),
    )


async def converse(
    state: AppState, searcher: Searcher, turns: Sequence[Turn], *, top_k: int, scope: Scope
) -> AskResult:
    """Answer a conversation's last user turn, bounded and recorded as `answer` is."""
    return await bounded(
        state, partial(ask_conversation, searcher, turns, top_k=top_k, scope=scope)
    )


async def bounded(state: AppState, run: Callable[[], AskResult]) -> AskResult:
    """Run an ask in a worker thread, at most settings.ask_concurrency at once, and record
    its stage timings."""
    result = await anyio.to_thread.run_sync(run, limiter=ask_limiter(state))
    state.metrics.embed.observe(result.timings.get("embed_ms", 0.0) / 1000)
    state.metrics.search.observe(result.timings.get("search_ms", 0.0) / 1000)
    return result


async def run_ask(
    state: AppState, searcher: Searcher, body: AskRequest, access: Access
) -> Response:
    """The answer to an ask request as JSON, from the key's scope narrowed to the request's
    collections.

    The body is validated once, by to_response, and serialised once: FastAPI would validate
    a returned model a second time against response_model (which still documents it)."""
    if body.answer_mode == "generated":
        require_llm(state)  # before retrieval: a misconfiguration fails at once
    result = await answer(
        state,
        searcher,
        body.question,
        top_k=body.top_k,
        mode=body.mode,
        sources=body.sources,
        scope=access.narrowed(body.collections),
    )
    access.record(result.build_id, len(result.passages))
    out = to_response(result)
    if body.answer_mode == "generated":
        out = with_generation(out, state, await generate_answer(state, searcher, result))
    return Response(out.model_dump_json(), media_type="application/json")


@router.post(
    "/v1/ask",
    response_model=AskResponse,
    responses={**ERRORS, **BODY_ERRORS},
    dependencies=[ApiKey],
    tags=["ask"],
)
async def ask_post(
    body: AskRequest, state: StateDep, searcher: SearcherDep, access: AccessDep
) -> Response:
    """Answer a question with ranked, cited passages."""
    return await run_ask(state, searcher, body, access)


@router.get(
    "/v1/ask", response_model=AskResponse, responses=ERRORS, dependencies=[ApiKey], tags=["ask"]
)
async def ask_get(
    params: Annotated[AskQuery, Query()],
    state: StateDep,
    searcher: SearcherDep,
    access: AccessDep,
) -> Response:
    """Answer `q` with ranked, cited passages."""
    body = AskRequest(
        question=params.q,
        top_k=params.top_k,
        mode=params.mode,
        sources=params.sources,
        collections=params.collections,
    )
    return await run_ask(state, searcher, body, access)


def summaries(documents: Sequence[DocumentInfo]) -> list[DocumentSummary]:
    """The listed form of documents."""
    return [
        DocumentSummary(
            source=d.source,
            title=d.title,
            sha256=d.sha256,
            chunks=d.chunks,
            collection=d.collection,
        )
        for d in documents
    ]


def not_found(source: str, hint: str = "see GET /v1/documents") -> DocumentNotFoundError:
    """The one error for a source that is not indexed or that the key may not see: the two
    are indistinguishable."""
    return DocumentNotFoundError(f"no indexed document {source!r}; {hint}")


def run_verify(searcher: Searcher, body: VerifyRequest, scope: Scope) -> VerifyResponse:
    """Verdicts on every sentence of body.text from the documents the scope sees (blocking:
    encodes and searches)."""
    spans = [(p.source, p.char_start, p.char_end) for p in body.passages or []]
    passages = resolve_spans(searcher, spans, scope)
    verdicts = verify_text(
        searcher, body.text, passages=passages, sources=body.sources, scope=scope
    )
    index = searcher.holder.current
    return VerifyResponse(
        sentences=[sentence_out(v) for v in verdicts],
        supported=sum(1 for v in verdicts if v.supported),
        total=len(verdicts),
        index=IndexRef(build_id=index.build_id, model=searcher.embedder.model_id),
    )


@router.post(
    "/v1/verify",
    response_model=VerifyResponse,
    responses={**ERRORS, **BODY_ERRORS, 404: {"model": ErrorOut}},
    dependencies=[ApiKey],
    tags=["verify"],
)
async def verify(
    body: VerifyRequest, state: StateDep, searcher: SearcherDep, access: AccessDep
) -> VerifyResponse:
    """Which sentences of a text the indexed documents support, each with its evidence span:
    against the given passages ([n] naming the n-th), else the best spans in the index."""
    return await anyio.to_thread.run_sync(
        partial(run_verify, searcher, body, access.scope), limiter=ask_limiter(state)
    )


@router.get("/v1/documents", response_model=DocumentList, dependencies=[ApiKey], tags=["documents"])
def list_documents(searcher: SearcherDep, access: AccessDep) -> DocumentList:
    """Sources indexed in the served build that the key may see."""
    index = searcher.holder.current
    documents = summaries(index.chunks.visible(access.scope))
    access.record(index.build_id, len(documents))
    return DocumentList(build_id=index.build_id, documents=documents)


@router.get(
    "/v1/documents/{source:path}",
    response_model=DocumentOut,
    responses={404: {"model": ErrorOut}},
    dependencies=[ApiKey],
    tags=["documents"],
)
def get_document(source: str, searcher: SearcherDep, access: AccessDep) -> DocumentOut:
    """The indexed text of one source; citation offsets index into it."""
    index = searcher.holder.current
    # Only sources in the build are served, from the build's own store: never a file read.
    info = index.chunks.document(source, access.scope)
    text = index.chunks.text(source) if info else None
    if info is None or text is None:
        raise not_found(source)
    access.record(index.build_id, 1)
    return DocumentOut(
        source=info.source,
        title=info.title,
        sha256=info.sha256,
        text=text,
        collection=info.collection,
    )


@router.get(
    "/v1/collections", response_model=CollectionList, dependencies=[ApiKey], tags=["documents"]
)
def list_collections(searcher: SearcherDep, access: AccessDep) -> CollectionList:
    """The collections the key may see, with their document counts (the page's selector)."""
    index = searcher.holder.current
    counts = index.chunks.collections(access.scope)
    access.record(index.build_id, 0)
    return CollectionList(
        build_id=index.build_id,
        collections=[CollectionOut(name=n, documents=c) for n, c in counts.items()],
    )


def _seeds_plan(state: AppState, searcher: Searcher) -> BuildPlan | None:
    """The plan a build of seeds/ would follow now against the served build (the cached scan,
    shared by every caller for settings.stale_check_interval); None when seeds/ is unreadable."""
    checker = state.stale_check
    if checker is None:
        checker = state.stale_check = StaleCheck(
            state.settings, searcher.embedder.model_id, state.settings.stale_check_interval
        )
    return checker.plan(searcher.holder.current.build_id)


def visible_stale(plan: BuildPlan | None, scope: Scope) -> bool:
    """Whether seeds/ changed since the build, judged on the files the scope sees (a change
    elsewhere is not the key's business) or on settings that rebuild everything."""
    if plan is None or plan.full_reason:
        return True
    changed = (*plan.added, *plan.modified, *plan.deleted)
    return any(scope.allows(source, collection_of(source)) for source in changed)


@router.get("/v1/index", response_model=IndexInfo, dependencies=[ApiKey], tags=["index"])
def index_info(state: StateDep, searcher: SearcherDep, access: AccessDep) -> IndexInfo:
    """The published build and whether seeds/ has changed since, counted over the documents
    and skipped files the key may see."""
    index = searcher.holder.current
    manifest = index.manifest
    scope = access.scope
    visible = index.chunks.visible(scope)
    skipped = [s for s in manifest.skipped if scope.allows(s.source, collection_of(s.source))]
    access.record(index.build_id, 0)
    plan = _seeds_plan(state, searcher)
    return IndexInfo(
        build_id=index.build_id,
        model=manifest.model.id,
        created_at=manifest.created_at,
        documents=len(visible),
        chunks=sum(d.chunks for d in visible),
        stale=visible_stale(plan, scope),
        skipped=[vars_of(s) for s in skipped],
        # Why the next build would re-embed everything (settings changed, build unusable), not
        # why the served one did: that was "no published build" for every first build.
        rebuild_reason=plan.full_reason if plan is not None else None,
    )


@router.post(
    "/v1/index/rebuild",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobOut,
    responses={401: {"model": ErrorOut}, 403: {"model": ErrorOut}, 409: {"model": ErrorOut}},
    dependencies=[Admin],
    tags=["index"],
)
def start_rebuild(state: StateDep) -> JobOut:
    """Start an incremental rebuild in the background; poll its status."""
    if state.rebuilds is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "the model is still loading")
    job = state.rebuilds.start()  # BuildInProgressError: 409, by the app's error table
    return JobOut.model_validate(job.as_dict())


@router.get(
    "/v1/index/rebuild/{job_id}",
    response_model=JobOut,
    responses={401: {"model": ErrorOut}, 403: {"model": ErrorOut}, 404: {"model": ErrorOut}},
    dependencies=[Admin],
    tags=["index"],
)
def rebuild_status(job_id: str, state: StateDep) -> JobOut:
    """Progress and result of a rebuild."""
    job = state.rebuilds.jobs.get(job_id) if state.rebuilds else None
    if job is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no rebuild job {job_id!r}")
    return JobOut.model_validate(job.as_dict())


# Health routes take no API key: orchestrator probes (Docker, Kubernetes) send no credentials.
@router.get("/healthz", tags=["health"])
def healthz() -> dict[str, str]:
    """The process is alive."""
    return {"status": "ok"}


@router.get("/readyz", response_model=Ready, responses={503: {"model": ErrorOut}}, tags=["health"])
def readyz(state: StateDep) -> Ready:
    """Ready once the model and a valid build are loaded."""
    holder = state.holder
    if state.searcher is None or holder is None or not holder.loaded:
        waiting = "model still loading" if state.searcher is None else "no valid index build"
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, state.load_error or f"not ready: {waiting}"
        )
    served = holder.current.build_id
    if state.follow.error is not None:
        # Still answering from the served build, but not from what is published: say so.
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            f"cannot follow published builds (still serving build {served}): {state.follow.error}",
        )
    return Ready(status="ready", build_id=served)
