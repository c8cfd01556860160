"""OpenAI-compatible Chat Completions and Models routes, so chat frontends can talk to groundqa.

The assistant message is the grounded answer of the conversation's last user turn (see
`service.conversation`): verbatim quotes with [n] markers, then a Markdown list linking each
source to its cited span. No text is generated. Every request parameter is either honoured
or refused with a 400 naming it (README, "Chat parameters").
"""

from __future__ import annotations

import inspect
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import asdict
from datetime import datetime
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

import jsonschema
from fastapi import APIRouter, FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.answering import AskResult
from service.api.generated import events, llm_config
from service.api.generated_chat import GeneratedCompletion, earlier_turns
from service.api.routes import converse
from service.api.schemas import QUESTION_MAX
from service.api.state import AccessDep, ApiKey, AppState, SearcherDep, StateDep
from service.conversation import Turn
from service.embedding import Tokenizer
from service.errors import GroundQAError, IndexNotBuiltError
from service.models import SpanRef
from service.rendering import Rendered, first_stop, render, truncate

MODEL_ID = "groundqa"
# With an LLM configured, `groundqa` answers with generated, verified text; this model name
# keeps a client on the quoted answers.
EXTRACTIVE_MODEL_ID = "groundqa-extractive"
OPENAI_PATHS = ("/v1/chat/", "/v1/models")
# A message longer than this is read only this far when it is context for a later turn.
CONTEXT_CHARS = 4000

router = APIRouter(tags=["openai"])


class ContentPart(BaseModel):
    """One part of a multi-part message; only `text` parts are read."""

    model_config = ConfigDict(extra="allow")

    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    """A message of the conversation."""

    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None

    @field_validator("content", mode="before")
    @classmethod
    def _string_or_parts(cls, value: object) -> object:
        # One clear error instead of one per member of the union.
        if value is not None and not isinstance(value, str | list):
            raise ValueError("content must be a string or a list of content parts")
        return value

    def text(self) -> str:
        """The message's text: the string, or its text parts joined by newlines."""
        if isinstance(self.content, str):
            return self.content
        parts = self.content or []
        return "\n".join(p.text for p in parts if p.type == "text" and p.text)


class ChatCompletionRequest(BaseModel):
    """The Chat Completions request; see README for what each parameter does here."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "examples": [
                {
                    "model": MODEL_ID,
                    "messages": [
                        {"role": "user", "content": "How many troops has North Korea sent?"}
                    ],
                }
            ]
        },
    )

    model: str = MODEL_ID
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool | None = False
    stream_options: dict[str, Any] | None = None
    temperature: float | None = None
    top_p: float | None = None
    n: int | None = None
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    stop: str | list[str] | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    response_format: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    user: str | None = None
    seed: int | None = None
    collections: list[str] | None = Field(
        None,
        max_length=50,
        description="groundqa: collections to answer from (narrows the key's scope); the model "
        "name `groundqa/<collection>` narrows too.",
    )

    def requested_collections(self) -> list[list[str]]:
        """The narrowings the request asks for: the model name's collection, the field's."""
        wanted = []
        prefix = MODEL_ID + "/"
        if self.model.startswith(prefix):
            wanted.append([self.model.removeprefix(prefix)])
        if self.collections is not None:
            wanted.append(self.collections)
        return wanted


class ModelCard(BaseModel):
    """A model the API serves."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(BaseModel):
    """The models the API serves: only groundqa."""

    object: Literal["list"] = "list"
    data: list[ModelCard]


class OpenAIErrorBody(BaseModel):
    """The fields of an OpenAI error."""

    message: str
    type: str
    code: str | None
    param: str | None


class OpenAIError(BaseModel):
    """An error in the OpenAI shape."""

    error: OpenAIErrorBody


ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": OpenAIError} for code in (400, 401, 503)}


class InvalidChatRequest(Exception):
    """A request that validates but cannot be answered (e.g. no user message)."""

    def __init__(self, message: str, param: str | None = "messages") -> None:
        super().__init__(message)
        self.param = param


# ----------------------------------------------------------------------------- the contract


def check_supported(body: ChatCompletionRequest) -> None:
    """Refuse, naming it, any parameter whose effect groundqa cannot give."""
    if body.n is not None and body.n != 1:
        raise InvalidChatRequest("n: only one choice is returned; send n=1 or leave it out", "n")
    if body.logprobs or body.top_logprobs:
        param = "logprobs" if body.logprobs else "top_logprobs"
        raise InvalidChatRequest(f"{param}: answers are quoted, not sampled; no logprobs", param)
    choice = body.tool_choice
    if choice is not None and choice not in ("none", "auto"):
        raise InvalidChatRequest(
            "tool_choice: groundqa answers in text and never calls a tool; use 'auto' or 'none'",
            "tool_choice",
        )
    extra = body.model_extra or {}
    if extra.get("audio") or any(m != "text" for m in extra.get("modalities") or []):
        raise InvalidChatRequest("modalities: groundqa answers in text only", "modalities")
    kind = (body.response_format or {}).get("type", "text")
    if kind not in ("text", "json_object", "json_schema"):
        raise InvalidChatRequest(
            f"response_format.type: {kind!r} is not supported; use text, json_object or "
            "json_schema",
            "response_format",
        )
    if kind == "json_schema":
        schema = (body.response_format or {}).get("json_schema", {}).get("schema")
        if not isinstance(schema, dict):
            raise InvalidChatRequest(
                "response_format.json_schema.schema: a JSON schema object is required",
                "response_format",
            )


def message_turns(messages: Sequence[ChatMessage]) -> list[Turn]:
    """The user and assistant messages as conversation turns; an assistant message names the
    spans it cited through the links of its sources list (or its annotations)."""
    turns: list[Turn] = []
    for message in messages:
        text = message.text()
        if message.role == "user":
            turns.append(Turn("user", text.strip()[:CONTEXT_CHARS] if turns else text.strip()))
        elif message.role == "assistant":
            urls = re.findall(r"\]\((\S+?)\)", text)
            for annotation in (message.model_extra or {}).get("annotations") or []:
                if isinstance(annotation, dict):
                    urls.append(str((annotation.get("url_citation") or {}).get("url", "")))
            turns.append(Turn("assistant", text[:CONTEXT_CHARS], linked_spans(urls)))
    asked = [t for t in turns if t.role == "user" and t.text]
    if not asked:
        raise InvalidChatRequest("messages must include a user message with text content")
    if len(asked[-1].text) > QUESTION_MAX:
        raise InvalidChatRequest(f"the last user message is longer than {QUESTION_MAX} characters")
    # Only the user's turns are questions; anything after the last one is not part of it.
    last = max(i for i, t in enumerate(turns) if t.role == "user" and t.text)
    return turns[: last + 1]


def linked_spans(urls: Sequence[str]) -> tuple[SpanRef, ...]:
    """The spans named by deep links (`?doc=SOURCE&start=N&end=M`) among urls, once each."""
    spans: dict[SpanRef, None] = {}
    for url in urls:
        query = parse_qs(urlsplit(url).query)
        try:
            ref = SpanRef(query["doc"][0], int(query["start"][0]), int(query["end"][0]))
        except (KeyError, IndexError, ValueError):
            continue
        spans[ref] = None
    return tuple(spans)


def count_tokens(tokenizer: Tokenizer, texts: Sequence[str]) -> int:
    """Tokens of texts as the model's tokenizer splits them (special tokens excluded)."""
    return sum(len(offsets) for offsets in tokenizer.offsets([t for t in texts if t]))


def answer_object(result: AskResult, rendered: Rendered) -> dict[str, Any]:
    """The answer as JSON: text, grounded flag, and full citation objects."""
    return {
        "answer": rendered.content.split("\n\n", 1)[0] if rendered.sources else rendered.content,
        "grounded": result.answer.grounded,
        "citations": citation_objects(rendered),
    }


def citation_objects(rendered: Rendered) -> list[dict[str, Any]]:
    """The listed sources as full citations, with their number in the list, passage rank and
    text, and the cited span with its deep link."""
    return [
        {
            "number": s.number,
            "rank": s.passage.rank,
            "text": s.passage.text,
            **asdict(s.passage.citation),
            "span_start": s.char_start,
            "span_end": s.char_end,
            "span_url": s.url,
        }
        for s in rendered.sources
    ]


def _resolve(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    """A schema with a local `$ref` followed (`#/$defs/Name`, as pydantic writes them)."""
    ref = schema.get("$ref")
    if not isinstance(ref, str) or not ref.startswith("#/"):
        return schema
    node: Any = root
    for part in ref[2:].split("/"):
        node = node.get(part, {}) if isinstance(node, dict) else {}
    return node if isinstance(node, dict) else {}


def project(value: Any, schema: dict[str, Any], root: dict[str, Any]) -> Any:
    """value keeping only the object properties the schema declares, recursively, so that a
    strict schema asking for fewer fields than groundqa has can still be met."""
    schema = _resolve(schema, root)
    if isinstance(value, dict) and isinstance(schema.get("properties"), dict):
        props: dict[str, Any] = schema["properties"]
        return {k: project(v, props[k], root) for k, v in value.items() if k in props}
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [project(v, schema["items"], root) for v in value]
    return value


def formatted(body: ChatCompletionRequest, result: AskResult, rendered: Rendered) -> Rendered:
    """The content in the requested response_format: Markdown text, or a JSON object."""
    fmt = body.response_format or {}
    kind = fmt.get("type", "text")
    if kind == "text":
        return rendered
    value: Any = answer_object(result, rendered)
    if kind == "json_schema":
        schema = fmt["json_schema"]["schema"]
        value = project(value, schema, schema)
        try:
            jsonschema.validate(value, schema)
        except jsonschema.SchemaError as exc:
            raise InvalidChatRequest(
                f"response_format.json_schema.schema is not a valid JSON schema: {exc.message}",
                "response_format",
            ) from exc
        except jsonschema.ValidationError as exc:
            raise InvalidChatRequest(
                "response_format: the schema cannot be met by groundqa's answer object "
                f"(answer: string, grounded: boolean, citations: array): {exc.message}",
                "response_format",
            ) from exc
    return Rendered(json.dumps(value, ensure_ascii=False), (), rendered.sources)


def url_citations(rendered: Rendered) -> list[dict[str, Any]]:
    """`url_citation` annotations: each [n] marker's position in the content and its link."""
    return [
        {
            "type": "url_citation",
            "url_citation": {
                "start_index": m.start,
                "end_index": m.end,
                "url": m.source.url,
                "title": m.source.label,
            },
        }
        for m in rendered.markers
    ]


def content_pieces(content: str) -> list[str]:
    """The content cut after each sentence and line, for streaming; joined they give it back."""
    return [p for p in re.split(r"(?<=\n)|(?<=[.!?] )", content) if p]


class Completion:
    """One answered chat request, rendered as a completion or as a stream of chunks."""

    def __init__(
        self,
        body: ChatCompletionRequest,
        result: AskResult,
        tokenizer: Tokenizer,
        base_url: str,
    ) -> None:
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.result = result
        rendered = formatted(body, result, render(result, base_url))
        self.finish_reason = "stop"
        stops = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
        at = first_stop(rendered.content, stops)
        if at is not None:
            rendered = truncate(rendered, at)
        limit = body.max_completion_tokens or body.max_tokens
        if limit is not None:
            offsets = tokenizer.offsets([rendered.content])[0] if rendered.content else []
            if len(offsets) > limit:
                rendered = truncate(rendered, offsets[limit - 1][1])
                self.finish_reason = "length"
        self.rendered = rendered
        self.content = rendered.content
        prompt = count_tokens(tokenizer, [m.text() for m in body.messages])
        completion = count_tokens(tokenizer, [self.content])
        self.usage = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }

    def _envelope(self, obj: str) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": obj,
            "created": self.created,
            "model": MODEL_ID,
            "system_fingerprint": self.result.build_id,
        }

    def _extras(self) -> dict[str, Any]:
        return {
            "citations": citation_objects(self.rendered),
            "grounded": self.result.answer.grounded,
            "build_id": self.result.build_id,
        }

    def response(self) -> dict[str, Any]:
        """The `chat.completion` object."""
        return {
            **self._envelope("chat.completion"),
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": self.content,
                        "refusal": None,
                        "annotations": url_citations(self.rendered),
                    },
                    "logprobs": None,
                    "finish_reason": self.finish_reason,
                }
            ],
            "usage": self.usage,
            **self._extras(),
        }

    def chunks(self, include_usage: bool) -> list[dict[str, Any]]:
        """The `chat.completion.chunk` objects of a stream, in order; the annotations and
        citations come with the last content chunk, when the whole content is known."""

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            return {
                **self._envelope("chat.completion.chunk"),
                "choices": [
                    {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
                ],
            }

        out = [chunk({"role": "assistant"})]
        out += [chunk({"content": piece}) for piece in content_pieces(self.content)]
        out.append(
            {
                **chunk({"annotations": url_citations(self.rendered)}, self.finish_reason),
                **self._extras(),
            }
        )
        if include_usage:
            out.append(
                {**self._envelope("chat.completion.chunk"), "choices": [], "usage": self.usage}
            )
        return out


async def sse(chunks: list[dict[str, Any]]) -> AsyncIterator[str]:
    """Server-Sent Events: one `data:` event per chunk, then `data: [DONE]`."""
    for chunk in chunks:
        yield f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n"
    yield "data: [DONE]\n\n"


async def sse_stream(chunks: AsyncIterator[dict[str, Any]]) -> AsyncIterator[str]:
    """Server-Sent Events of chunks as they are made, then `data: [DONE]`."""
    async for chunk in chunks:
        yield f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n"
    yield "data: [DONE]\n\n"


def generates(state: AppState, body: ChatCompletionRequest) -> bool:
    """Whether the LLM composes this chat answer: one is configured, the client did not pick
    the extractive model, and it asked for text (JSON formats stay extractive)."""
    kind = (body.response_format or {}).get("type", "text")
    return llm_config(state) is not None and body.model != EXTRACTIVE_MODEL_ID and kind == "text"


@router.get("/v1/models", response_model=ModelList, responses=ERRORS, dependencies=[ApiKey])
def list_models(state: StateDep, access: AccessDep) -> ModelList:
    """groundqa, answering from every collection the key sees, and `groundqa/<collection>`
    for each of them."""
    holder = state.holder
    created = int(time.time())
    names = [MODEL_ID]
    if holder is not None and holder.loaded:
        index = holder.current
        created = int(datetime.fromisoformat(index.manifest.created_at).timestamp())
        names += [f"{MODEL_ID}/{c}" for c in index.chunks.collections(access.scope)]
        access.record(index.build_id, 0)
    if llm_config(state):
        names.insert(1, EXTRACTIVE_MODEL_ID)
    return ModelList(data=[ModelCard(id=n, created=created, owned_by=MODEL_ID) for n in names])


@router.post(
    "/v1/chat/completions",
    responses={
        **ERRORS,
        200: {
            "content": {"text/event-stream": {}},
            "description": "A completion, or its chunks as Server-Sent Events when streaming.",
        },
    },
    dependencies=[ApiKey],
)
async def chat_completions(
    body: ChatCompletionRequest,
    request: Request,
    state: StateDep,
    searcher: SearcherDep,
    access: AccessDep,
) -> Response:
    """Answer the conversation's last user message from the indexed sources the key sees (and
    the request narrows to), with citations."""
    check_supported(body)
    turns = message_turns(body.messages)
    scope = access.scope
    for wanted in body.requested_collections():
        scope = scope.narrow(wanted)
    access.narrowed(None if scope.collections is None else sorted(scope.collections))
    result = await converse(state, searcher, turns, top_k=searcher.settings.top_k, scope=scope)
    access.record(result.build_id, len(result.passages))
    base_url = state.settings.public_url or str(request.base_url)
    include_usage = bool((body.stream_options or {}).get("include_usage"))
    if generates(state, body):
        stops = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
        generated = GeneratedCompletion(
            result,
            events(
                state,
                searcher,
                result,
                earlier=earlier_turns([(t.role, t.text) for t in turns[:-1]]),
                max_tokens=body.max_completion_tokens or body.max_tokens,
                stop=stops,
                sampling={
                    k: v
                    for k, v in (
                        ("temperature", body.temperature),
                        ("top_p", body.top_p),
                        ("seed", body.seed),
                    )
                    if v is not None
                },
            ),
            searcher.embedder.tokenizer,
            base_url,
            count_tokens(searcher.embedder.tokenizer, [m.text() for m in body.messages]),
            MODEL_ID,
        )
        if not body.stream:
            return JSONResponse(await generated.response())
        return StreamingResponse(
            sse_stream(generated.chunks(include_usage)),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    completion = Completion(body, result, searcher.embedder.tokenizer, base_url)
    if not body.stream:
        return JSONResponse(completion.response())
    return StreamingResponse(
        sse(completion.chunks(include_usage)),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


# ----------------------------------------------------------------------------- errors

Handler = Callable[[Request, Exception], Awaitable[Response]]


def error_type(status_code: int) -> str:
    """The OpenAI error type for an HTTP status."""
    if status_code == status.HTTP_401_UNAUTHORIZED:
        return "authentication_error"
    if status_code == status.HTTP_403_FORBIDDEN:
        return "permission_error"
    if status_code == status.HTTP_404_NOT_FOUND:
        return "not_found_error"
    if status_code == status.HTTP_429_TOO_MANY_REQUESTS:
        return "rate_limit_error"
    if status_code >= 500:
        return "server_error"
    return "invalid_request_error"


def openai_error(
    status_code: int,
    message: str,
    *,
    code: str | None = None,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """An error response in the OpenAI shape."""
    body = OpenAIError(
        error=OpenAIErrorBody(
            message=message,
            type=error_type(status_code),
            code=code,
            param=param,
        )
    )
    return JSONResponse(body.model_dump(), status_code=status_code, headers=headers)


def _validation_error(exc: RequestValidationError) -> JSONResponse:
    """400 naming the first invalid field, as OpenAI does."""
    first = exc.errors()[0] if exc.errors() else {}
    if first.get("type") == "json_invalid":
        message = "the request body is not valid JSON"
        return openai_error(status.HTTP_400_BAD_REQUEST, message, code="invalid_json")
    loc = [str(part) for part in first.get("loc", ()) if part != "body"]
    param = ".".join(loc) or None
    message = str(first.get("msg", "invalid request"))
    if param:
        message = f"{param}: {message}"
    return openai_error(status.HTTP_400_BAD_REQUEST, message, code="invalid_value", param=param)


def _reshape(response: Response, exc: Exception) -> Response:
    """Turn a `{"detail": ...}` error response into the OpenAI shape, keeping status and headers."""
    try:
        detail = json.loads(bytes(response.body)).get("detail")
    except (ValueError, AttributeError):
        detail = None
    message = detail if isinstance(detail, str) else str(exc) or "request failed"
    code = None
    if isinstance(exc, IndexNotBuiltError):
        code = "index_not_built"
    elif response.status_code == status.HTTP_401_UNAUTHORIZED:
        code = "invalid_api_key"
    elif response.status_code == status.HTTP_503_SERVICE_UNAVAILABLE:
        code = "service_unavailable"
    headers = {
        k: v
        for k, v in response.headers.items()
        if k.lower() not in {"content-length", "content-type"}
    }
    return openai_error(response.status_code, message, code=code, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    """Answer errors under /v1/chat/ and /v1/models in the OpenAI shape.

    Call after the app's own handlers are registered: they still handle every other path, and
    their responses for these paths are reshaped, so status codes stay in one place.
    """

    def wrap(exc_class: type[Exception]) -> Handler:
        fallback = app.exception_handlers[exc_class]

        async def original(request: Request, exc: Exception) -> Response:
            response = fallback(request, exc)
            return await response if inspect.isawaitable(response) else response

        async def handle(request: Request, exc: Exception) -> Response:
            if not request.url.path.startswith(OPENAI_PATHS):
                return await original(request, exc)
            if isinstance(exc, RequestValidationError):
                return _validation_error(exc)
            return _reshape(await original(request, exc), exc)

        return handle

    for exc_class in (StarletteHTTPException, RequestValidationError, GroundQAError):
        if exc_class in app.exception_handlers:
            app.add_exception_handler(exc_class, wrap(exc_class))
    app.add_exception_handler(InvalidChatRequest, _invalid_chat_request)


async def _invalid_chat_request(request: Request, exc: Exception) -> Response:
    """400 for a chat request without a question (only raised on the chat route)."""
    param = exc.param if isinstance(exc, InvalidChatRequest) else None
    return openai_error(status.HTTP_400_BAD_REQUEST, str(exc), param=param)
