"""OpenAI-compatible Chat Completions and Models routes, so chat frontends can talk to groundqa.

The assistant message is always the grounded answer of `service.answering.ask`: verbatim quotes
with [n] markers, then the sources they cite. No text is generated.
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

from fastapi import APIRouter, FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.answering import AskResult
from service.api.routes import answer
from service.api.schemas import QUESTION_MAX
from service.api.state import ApiKey, SearcherDep, StateDep
from service.citations import Passage
from service.errors import GroundQAError, IndexNotBuiltError

MODEL_ID = "groundqa"
# A last user message shorter than this many words is searched with the previous one.
SHORT_QUESTION_WORDS = 5
CLOSEST_SOURCES = 3
OPENAI_PATHS = ("/v1/chat/", "/v1/models")

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
    """The Chat Completions request; sampling and tool options are accepted and ignored."""

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
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    stop: str | list[str] | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    user: str | None = None
    seed: int | None = None


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


def search_query(messages: Sequence[ChatMessage]) -> str:
    """The last user message, followed by the previous user message when the last is short
    (a follow-up such as "and in Kursk?" keeps the context it refers to)."""
    asked = [t for t in (m.text().strip() for m in messages if m.role == "user") if t]
    if not asked:
        raise InvalidChatRequest("messages must include a user message with text content")
    question = asked[-1]
    if len(question) > QUESTION_MAX:
        raise InvalidChatRequest(f"the last user message is longer than {QUESTION_MAX} characters")
    if len(asked) > 1 and len(question.split()) < SHORT_QUESTION_WORDS:
        with_context = f"{question}\n{asked[-2]}"
        if len(with_context) <= QUESTION_MAX:
            return with_context
    return question


def cited_passages(result: AskResult) -> list[Passage]:
    """The passages the answer cites, or the closest ones when it abstains."""
    if result.answer.grounded:
        ranks = set(result.answer.citations)
        return [p for p in result.passages if p.rank in ranks]
    return result.passages[:CLOSEST_SOURCES]


def source_line(passage: Passage) -> str:
    """`[n] source, lines a-b`."""
    c = passage.citation
    return f"[{passage.rank}] {c.source}, lines {c.line_start}-{c.line_end}"


def answer_content(result: AskResult) -> str:
    """The assistant message: the answer, a blank line, and the sources it cites."""
    listed = cited_passages(result)
    if not listed:
        return result.answer.text
    heading = "Sources:" if result.answer.grounded else "Closest sources:"
    return "\n".join([result.answer.text, "", heading, *map(source_line, listed)])


def citation_objects(result: AskResult) -> list[dict[str, Any]]:
    """The citations of the listed sources, as in the ask API, plus rank and text."""
    return [{"rank": p.rank, "text": p.text, **asdict(p.citation)} for p in cited_passages(result)]


def count_words(texts: Sequence[str]) -> int:
    """A rough token count: whitespace-separated words."""
    return sum(len(t.split()) for t in texts)


def content_pieces(content: str) -> list[str]:
    """The content cut after each sentence and line, for streaming; joined they give it back."""
    return [p for p in re.split(r"(?<=\n)|(?<=[.!?] )", content) if p]


class Completion:
    """One answered chat request, rendered as a completion or as a stream of chunks."""

    def __init__(self, body: ChatCompletionRequest, result: AskResult) -> None:
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.result = result
        self.content = answer_content(result)
        self.citations = citation_objects(result)
        prompt = count_words([m.text() for m in body.messages])
        completion = count_words([self.content])
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
            "citations": self.citations,
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
                    "message": {"role": "assistant", "content": self.content},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": self.usage,
            **self._extras(),
        }

    def chunks(self, include_usage: bool) -> list[dict[str, Any]]:
        """The `chat.completion.chunk` objects of a stream, in order."""

        def chunk(delta: dict[str, str], finish: str | None = None) -> dict[str, Any]:
            return {
                **self._envelope("chat.completion.chunk"),
                "choices": [
                    {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
                ],
            }

        out = [chunk({"role": "assistant"})]
        out += [chunk({"content": piece}) for piece in content_pieces(self.content)]
        out.append({**chunk({}, "stop"), **self._extras()})
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


@router.get("/v1/models", response_model=ModelList, responses=ERRORS, dependencies=[ApiKey])
def list_models(state: StateDep) -> ModelList:
    """The one model: groundqa, answering from the indexed sources."""
    holder = state.holder
    created = int(time.time())
    if holder is not None and holder.loaded:
        created = int(datetime.fromisoformat(holder.current.manifest.created_at).timestamp())
    return ModelList(data=[ModelCard(id=MODEL_ID, created=created, owned_by=MODEL_ID)])


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
    body: ChatCompletionRequest, state: StateDep, searcher: SearcherDep
) -> Response:
    """Answer the last user message from the indexed sources, with citations."""
    query = search_query(body.messages)
    result = await answer(state, searcher, query, top_k=searcher.settings.top_k)
    completion = Completion(body, result)
    if not body.stream:
        return JSONResponse(completion.response())
    include_usage = bool((body.stream_options or {}).get("include_usage"))
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
