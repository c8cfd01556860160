"""The MCP server at /mcp: search, ask and read the indexed documents from MCP clients (desktop
assistants, IDEs, chat frontends) over stateless Streamable HTTP, with the query API keys."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from contextvars import ContextVar
from typing import Annotated
from urllib.parse import quote

import anyio.to_thread
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ResourceNotFoundError, ToolError
from mcp.server.transport_security import TransportSecuritySettings
from mcp.types import CallToolResult, TextContent, ToolAnnotations
from mcp.types import Resource as MCPResource
from pydantic import BaseModel, Field
from starlette.requests import Request
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from service import __version__
from service.answering import AskResult
from service.api.generated import generate_answer, require_llm, with_generation
from service.api.routes import answer, ask_limiter, not_found, run_verify, summaries, to_response
from service.api.schemas import (
    GLOBS_MAX,
    QUESTION_MAX,
    TOP_K_MAX,
    VERIFY_TEXT_MAX,
    AnswerMode,
    AskResponse,
    DocumentList,
    Glob,
    IndexRef,
    PassageOut,
    VerifyRequest,
    VerifyResponse,
)
from service.api.state import Access, AppState, get_access, require_api_key
from service.citations import place
from service.config import Mode
from service.errors import GroundQAError
from service.search import Searcher
from service.store import DocumentInfo

MCP_PATH = "/mcp"
RESOURCE_TEMPLATE = "groundqa://documents/{+source}"
RESOURCE_PREFIX = "groundqa://documents/"

INSTRUCTIONS = (
    "groundqa answers questions from an indexed set of documents. Every passage comes with a "
    "citation (source, lines, character offsets) into the exact indexed text, which "
    "get_document returns. Quote passages verbatim and cite them with their [n] markers."
)

# Every tool only reads the served build: clients may call them without asking the user.
READ_ONLY = ToolAnnotations(read_only_hint=True, idempotent_hint=True, open_world_hint=False)

Question = Annotated[
    str, Field(min_length=1, max_length=QUESTION_MAX, description="The question to answer.")
]
TopK = Annotated[int, Field(ge=1, le=TOP_K_MAX, description="How many passages to return.")]
ModeArg = Annotated[
    Mode | None, Field(description="Retrieval: hybrid, dense or keyword; default: the server's.")
]
Sources = Annotated[
    list[Glob] | None,
    Field(max_length=GLOBS_MAX, description="Glob patterns over `source` to search within."),
]
AnswerModeArg = Annotated[
    AnswerMode,
    Field(
        description="extractive (quoted sentences) or generated (composed by the server's LLM, "
        "every sentence verified against its cited span; needs GROUNDQA_LLM_BASE_URL)."
    ),
]
Collections = Annotated[
    list[str] | None,
    Field(max_length=50, description="Collections to search within (default: all you may see)."),
]

# The access of the MCP request being served: set by McpEndpoint before the SDK handles it;
# the SDK's tasks for the request are started from that context, so they inherit it.
_access: ContextVar[Access | None] = ContextVar("groundqa_mcp_access", default=None)


def current_access() -> Access:
    """The access of the MCP request in progress (a tool error outside one: never served)."""
    access = _access.get()
    if access is None:
        raise ToolError("no authenticated request")
    return access


class SearchOut(BaseModel):
    """Ranked passages for a question, each with its highlights and a verifiable citation."""

    question: str
    passages: list[PassageOut]
    index: IndexRef


class DocumentTextOut(BaseModel):
    """An indexed source's text, or the slice [char_start:char_end] of it."""

    source: str
    title: str
    sha256: str
    char_start: int
    char_end: int
    line_start: int
    line_end: int
    length: int = Field(description="Characters in the whole document.")
    text: str


def source_line(passage: PassageOut) -> str:
    """`[n] source, lines a-b` (and the slide, rows or pages): what an LLM cites a passage by."""
    c = passage.citation
    where = place(c)  # slide, sheet and rows, or pages
    at = f", {where}" if where else ""
    return f"[{passage.rank}] {c.source}{at}, lines {c.line_start}-{c.line_end}"


def render_passages(passages: Sequence[PassageOut]) -> str:
    """Each passage under its source line, separated by blank lines."""
    return "\n\n".join(f"{source_line(p)}\n{p.text}" for p in passages)


def render_search(out: SearchOut) -> str:
    """The text rendering of a search."""
    if not out.passages:
        return "No indexed passage matches this question."
    return render_passages(out.passages)


def render_ask(out: AskResponse) -> str:
    """The answer, then the passages it cites (or, when it abstains, the closest ones)."""
    if out.answer.grounded:
        cited = [p for p in out.passages if p.rank in out.answer.citations]
        return f"{out.answer.text}\n\nSources:\n\n{render_passages(cited)}"
    if not out.passages:
        return out.answer.text
    return f"{out.answer.text}\n\nClosest sources:\n\n{render_passages(out.passages)}"


def render_verify(out: VerifyResponse) -> str:
    """One line per sentence: its verdict, then the evidence span or the reason."""
    lines = []
    for s in out.sentences:
        if s.evidence is not None:
            e = s.evidence
            where = f"{e.source}, characters {e.char_start}-{e.char_end}: {e.text}"
            lines.append(f"SUPPORTED: {s.text}\n    {where}")
        else:
            lines.append(f"NOT SUPPORTED: {s.text}\n    ({s.reason})")
    return f"{out.supported} of {out.total} sentences supported.\n\n" + "\n".join(lines)


def render_document(out: DocumentTextOut) -> str:
    """A header naming the span, a blank line, then the text verbatim."""
    span = f"characters {out.char_start}-{out.char_end} of {out.length}"
    return f"{out.source}, lines {out.line_start}-{out.line_end}, {span}\n\n{out.text}"


def render_documents(out: DocumentList) -> str:
    """One line per indexed source."""
    if not out.documents:
        return f"No documents in build {out.build_id}."
    lines = [
        f"- {d.source}: {d.title} ({d.chunks} chunk{'s' if d.chunks != 1 else ''})"
        for d in out.documents
    ]
    return f"{len(lines)} documents in build {out.build_id}:\n" + "\n".join(lines)


def tool_result(out: BaseModel, text: str) -> CallToolResult:
    """Structured content (validated against the tool's output schema) plus its text."""
    return CallToolResult(
        content=[TextContent(type="text", text=text)],
        structured_content=out.model_dump(mode="json"),
    )


def document_uri(source: str) -> str:
    """The MCP resource URI of an indexed source."""
    return RESOURCE_PREFIX + quote(source, safe="/")


def searcher_of(state: AppState) -> Searcher:
    """The searcher, or a tool error while the model or index is not loaded."""
    if state.searcher is None:
        raise ToolError(state.load_error or "the model is still loading; retry in a few seconds")
    return state.searcher


def read_document(state: AppState, source: str, access: Access) -> tuple[DocumentInfo, str]:
    """An indexed source the access may see and its text, from the served build (blocking:
    reads the store); one not visible is reported exactly as one not indexed."""
    index = searcher_of(state).holder.current
    # Only sources in the build are served, from the build's own store: never a file read.
    info = index.chunks.document(source, access.scope)
    text = index.chunks.text(source) if info else None
    if info is None or text is None:
        raise not_found(source, "call list_documents for the indexed sources")
    access.record(index.build_id, 1)
    return info, text


def line_of(text: str, offset: int) -> int:
    """The 1-based line holding text[offset]."""
    return 1 + text.count("\n", 0, offset)


def document_slice(
    info: DocumentInfo, text: str, char_start: int | None, char_end: int | None
) -> DocumentTextOut:
    """The slice [char_start:char_end] of a document; a tool error for a range outside it."""
    start = 0 if char_start is None else char_start
    end = len(text) if char_end is None else char_end
    if not 0 <= start <= end <= len(text):
        raise ToolError(
            f"character range {start}-{end} is outside {info.source!r}, which has "
            f"{len(text)} characters; pass 0 <= char_start <= char_end <= {len(text)}"
        )
    return DocumentTextOut(
        source=info.source,
        title=info.title,
        sha256=info.sha256,
        char_start=start,
        char_end=end,
        line_start=line_of(text, start),
        line_end=line_of(text, max(end - 1, start)),
        length=len(text),
        text=text[start:end],
    )


class GroundQAServer(MCPServer):
    """MCPServer whose resource list is the served build's documents, read when asked (a
    rebuild changes them; resources registered up front would go stale)."""

    def __init__(self, state: AppState) -> None:
        # The SDK calls logging.basicConfig: WARNING keeps it from raising the root logger to
        # INFO in a host that has not configured logging (groundqa's CLI configures it first).
        super().__init__(
            "groundqa", version=__version__, instructions=INSTRUCTIONS, log_level="WARNING"
        )
        self.state = state

    async def list_resources(self) -> list[MCPResource]:
        """One text resource per indexed source the request may see; none while no build is
        served."""
        holder = self.state.holder
        access = _access.get()
        if holder is None or not holder.loaded or access is None:
            return []
        index = holder.current
        documents = index.chunks.visible(access.scope)
        access.record(index.build_id, len(documents))
        return [
            MCPResource(
                uri=document_uri(d.source),
                name=d.source,
                title=d.title,
                description=f"The indexed text of {d.source}; citation offsets index into it.",
                mime_type="text/plain",
            )
            for d in documents
        ]


def build_server(state: AppState) -> GroundQAServer:
    """The MCP server of an app: five read-only tools and the documents as resources."""
    server = GroundQAServer(state)

    async def run_ask(
        question: str,
        top_k: int,
        mode: Mode | None,
        sources: list[str] | None,
        collections: list[str] | None,
    ) -> AskResult:
        """The shared ask of the HTTP API (bounded, off the loop, timed) within the key's
        scope; domain errors become tool errors whose message says what to do."""
        if not question.strip():
            raise ToolError("question must not be blank")
        access = current_access()
        try:
            result = await answer(
                state,
                searcher_of(state),
                question,
                top_k=top_k,
                mode=mode,
                sources=sources,
                scope=access.narrowed(collections),
            )
        except GroundQAError as exc:
            raise ToolError(str(exc)) from exc
        access.record(result.build_id, len(result.passages))
        return result

    @server.tool(
        annotations=READ_ONLY,
        description="Search the indexed documents for passages answering a question: ranked best "
        "first, each with its highlighted sentences and a citation (source, lines, character "
        "offsets) into the exact indexed text, which get_document returns.",
    )
    async def search(
        question: Question,
        top_k: TopK = 5,
        mode: ModeArg = None,
        sources: Sources = None,
        collections: Collections = None,
    ) -> Annotated[CallToolResult, SearchOut]:
        """The ranked passages of an ask, without the answer."""
        body = to_response(await run_ask(question, top_k, mode, sources, collections))
        out = SearchOut(question=body.question, passages=body.passages, index=body.index)
        return tool_result(out, render_search(out))

    @server.tool(
        annotations=READ_ONLY,
        description="Answer a question from the indexed documents: sentences quoted verbatim "
        "with [n] markers naming the cited passages, which follow with their citations; or an "
        "abstention (grounded: false) with the closest passages when none answers it.",
    )
    async def ask(
        question: Question,
        top_k: TopK = 5,
        mode: ModeArg = None,
        sources: Sources = None,
        answer_mode: AnswerModeArg = "extractive",
        collections: Collections = None,
    ) -> Annotated[CallToolResult, AskResponse]:
        """The body of POST /v1/ask for the same arguments."""
        if answer_mode == "generated":
            try:
                require_llm(state)
            except GroundQAError as exc:
                raise ToolError(str(exc)) from exc
        result = await run_ask(question, top_k, mode, sources, collections)
        out = to_response(result)
        if answer_mode == "generated":
            searcher = searcher_of(state)
            out = with_generation(out, state, await generate_answer(state, searcher, result))
        return tool_result(out, render_ask(out))

    @server.tool(
        annotations=READ_ONLY,
        description="Check a text (an answer from any model) against the indexed documents: "
        "per sentence, whether a span of a document supports it (every number, date and name "
        "in the span, no negation added or lost, the same meaning), with that span's source "
        "and exact character offsets.",
    )
    async def verify(
        text: Annotated[
            str,
            Field(min_length=1, max_length=VERIFY_TEXT_MAX, description="The text to check."),
        ],
        sources: Sources = None,
    ) -> Annotated[CallToolResult, VerifyResponse]:
        """The body of POST /v1/verify for the same text and sources."""
        body = VerifyRequest(text=text, sources=sources)
        scope = current_access().scope
        try:
            out = await anyio.to_thread.run_sync(
                run_verify, searcher_of(state), body, scope, limiter=ask_limiter(state)
            )
        except GroundQAError as exc:
            raise ToolError(str(exc)) from exc
        return tool_result(out, render_verify(out))

    @server.tool(
        annotations=READ_ONLY,
        description="The exact indexed text of a source, or its [char_start:char_end] slice: "
        "a citation's offsets reproduce its passage here character for character.",
    )
    async def get_document(
        source: Annotated[str, Field(description="An indexed source, as list_documents names it.")],
        char_start: Annotated[
            int | None, Field(description="Start offset (default 0), as in citations.")
        ] = None,
        char_end: Annotated[
            int | None, Field(description="End offset, exclusive (default: the end).")
        ] = None,
    ) -> Annotated[CallToolResult, DocumentTextOut]:
        """text[char_start:char_end] of an indexed source; a tool error for another source."""
        try:
            info, text = await anyio.to_thread.run_sync(
                read_document, state, source, current_access()
            )
        except GroundQAError as exc:
            raise ToolError(str(exc)) from exc
        out = document_slice(info, text, char_start, char_end)
        return tool_result(out, render_document(out))

    @server.tool(
        annotations=READ_ONLY,
        description="The indexed sources (documents) of the served build, with their title, "
        "sha256 and number of chunks.",
    )
    async def list_documents() -> Annotated[CallToolResult, DocumentList]:
        """The body of GET /v1/documents."""
        access = current_access()
        try:
            index = searcher_of(state).holder.current
        except GroundQAError as exc:
            raise ToolError(str(exc)) from exc
        documents = summaries(index.chunks.visible(access.scope))
        access.record(index.build_id, len(documents))
        out = DocumentList(build_id=index.build_id, documents=documents)
        return tool_result(out, render_documents(out))

    @server.resource(
        RESOURCE_TEMPLATE,
        name="document",
        title="Indexed document",
        description="The exact indexed text of a source; citation offsets index into it.",
        mime_type="text/plain",
    )
    async def document(source: str) -> str:
        """The indexed text of source; unknown sources are a resource-not-found error."""
        try:
            _, text = await anyio.to_thread.run_sync(read_document, state, source, current_access())
        except (GroundQAError, ToolError) as exc:
            raise ResourceNotFoundError(str(exc)) from exc
        return text

    return server


class McpEndpoint:
    """The ASGI app of /mcp: the query API key check, then the SDK's Streamable HTTP transport.

    Stateless with JSON responses: each POST is answered on its own, so any replica behind a
    load balancer can take any request and no session outlives its request.
    """

    def __init__(self, state: AppState) -> None:
        self.state = state
        self.server = build_server(state)

    @asynccontextmanager
    async def run(self) -> AsyncIterator[None]:
        """Serve MCP requests while the block runs (inside the app's lifespan)."""
        # A session manager runs only once: a new one per lifespan lets an app start again.
        self.server.streamable_http_app(
            streamable_http_path=MCP_PATH,
            stateless_http=True,
            json_response=True,
            max_request_body_size=self.state.settings.max_body_bytes,
            # The SDK's Host/Origin check is for servers on localhost; groundqa listens where
            # it is deployed, and browsers are governed by the app's CORS settings and API
            # keys as on every other route.
            transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
        )
        async with self.server.session_manager.run():
            yield

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Refuse a missing or wrong key with the API's 401, else hand the request to MCP."""
        # Raises HTTPException before anything is sent: the app's handler renders it.
        request = Request(scope)
        await require_api_key(request, self.state)
        token = _access.set(await get_access(request))
        try:
            await self.server.session_manager.handle_request(scope, receive, send)
        finally:
            _access.reset(token)


class McpRoute(Route):
    """The route of /mcp; like FastAPI's routes it records itself in the scope, where the
    access log and the request metrics read the route to label a request by."""

    def __init__(self, endpoint: McpEndpoint) -> None:
        super().__init__(MCP_PATH, endpoint, name="mcp", include_in_schema=False)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve the request, labelled /mcp (FastAPI sets the route only for its own)."""
        scope["route"] = self
        await super().handle(scope, receive, send)
