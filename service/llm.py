"""A streaming client of any OpenAI-compatible Chat Completions server (Ollama, vLLM, llama.cpp's
server, LM Studio, a hosted API): content deltas in, every failure one `UpstreamError` out."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from service.config import Settings
from service.errors import UpstreamError


@dataclass(frozen=True, slots=True)
class LLMConfig:
    """Where the LLM is and how long a whole answer may take."""

    base_url: str
    model: str
    api_key: str | None
    timeout: float

    @classmethod
    def from_settings(cls, settings: Settings) -> LLMConfig | None:
        """The configured LLM, or None when GROUNDQA_LLM_BASE_URL is unset."""
        if not settings.llm_base_url:
            return None
        return cls(
            settings.llm_base_url.rstrip("/"),
            settings.llm_model,
            settings.llm_api_key,
            settings.llm_timeout,
        )


Message = dict[str, str]


def _delta(event: dict[str, Any]) -> tuple[str, str | None]:
    """The content and finish reason of one streamed chunk; UpstreamError when malformed or a
    refusal."""
    choices = event.get("choices")
    if not isinstance(choices, list):
        raise UpstreamError("the LLM server sent a chunk without choices")
    if not choices:  # a usage-only chunk
        return "", None
    choice = choices[0]
    if not isinstance(choice, dict):
        raise UpstreamError("the LLM server sent a malformed chunk")
    delta = choice.get("delta") or choice.get("message") or {}
    if not isinstance(delta, dict):
        raise UpstreamError("the LLM server sent a malformed chunk")
    if delta.get("refusal"):
        raise UpstreamError("the LLM refused to answer")
    content = delta.get("content") or ""
    if not isinstance(content, str):
        raise UpstreamError("the LLM server sent non-text content")
    finish = choice.get("finish_reason")
    return content, finish if isinstance(finish, str) else None


async def stream_chat(
    config: LLMConfig,
    messages: Sequence[Message],
    *,
    max_tokens: int | None = None,
    stop: Sequence[str] = (),
    sampling: Mapping[str, float | int] | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> AsyncIterator[str]:
    """The answer's content as the server streams it. Raises UpstreamError for a connection
    failure, a read slower than the timeout, an error status, malformed chunks, a refusal, or
    a stream that ends before the server said it finished. The caller bounds the whole."""
    body: dict[str, Any] = {"model": config.model, "messages": list(messages), "stream": True}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    if stop:
        body["stop"] = list(stop)
    body.update(sampling or {})  # temperature, top_p, seed, as the client asked
    headers = {"Accept": "text/event-stream"}
    if config.api_key:
        headers["Authorization"] = f"Bearer {config.api_key}"
    url = f"{config.base_url}/chat/completions"
    try:
        async with (
            httpx.AsyncClient(timeout=config.timeout, transport=transport) as client,
            client.stream("POST", url, json=body, headers=headers) as response,
        ):
            if response.status_code >= 400:
                raise UpstreamError(f"the LLM server answered HTTP {response.status_code}")
            if "text/event-stream" not in response.headers.get("content-type", ""):
                # A server that ignores `stream` answers one completion object.
                payload = _json(await response.aread())
                content, _ = _delta(payload)
                if content:
                    yield content
                return
            finished = False
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    finished = True
                    break
                content, finish = _delta(_json(data.encode()))
                finished = finished or finish is not None
                if content:
                    yield content
            if not finished:
                raise UpstreamError("the LLM stream stopped before the answer was finished")
    except httpx.TimeoutException as exc:
        raise UpstreamError(f"the LLM server took longer than {config.timeout:g} s") from exc
    except httpx.HTTPError as exc:
        raise UpstreamError(f"the LLM server could not be reached ({type(exc).__name__})") from exc


def _json(raw: bytes) -> dict[str, Any]:
    """A JSON object from the server, or UpstreamError."""
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise UpstreamError("the LLM server sent malformed JSON") from exc
    if not isinstance(value, dict):
        raise UpstreamError("the LLM server sent JSON that is not an object")
    return value
