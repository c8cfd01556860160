"""The OpenAI-compatible routes: payload shapes, SSE framing, errors, keys, CORS, and the official
`openai` client against a live server with the real model."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import httpx
import openai
import pytest
from fastapi.testclient import TestClient
from openai.types.chat import ChatCompletionMessageParam

from service.answering import ABSTAIN_TEXT
from service.api import create_app
from service.config import Settings
from service.embedding import Embedder
from service.indexing import Builder
from tests.conftest import FakeEmbedder, WriteSeed, serve

REPO = Path(__file__).resolve().parents[1]
SEED = REPO / "seeds" / "000_6103265ed68543fd.txt"
TROOPS = "How many troops has North Korea sent to Russia?"

ClientFor = Callable[[Settings], TestClient]

PARIS = "Paris is the capital of France.\nThe Eiffel Tower in Paris was finished in 1889.\n"
BANANAS = "Bananas are yellow fruit rich in potassium.\nMonkeys like to eat bananas.\n"
CAPITAL = "What is the capital of France?"


@pytest.fixture
def corpus(write_seed: WriteSeed, builder: Builder) -> None:
    """Two small seeds, indexed with the fake embedder."""
    write_seed("paris.txt", PARIS)
    write_seed("fruit/bananas.txt", BANANAS)
    builder.build()


@pytest.fixture
def client(corpus: None, settings: Settings, client_for: ClientFor) -> TestClient:
    """An app over the two-seed corpus, without keys or CORS."""
    return client_for(settings)


def chat(question: str, **extra: Any) -> dict[str, Any]:
    """A minimal chat request asking one question."""
    return {"model": "groundqa", "messages": [{"role": "user", "content": question}], **extra}


def sse_events(text: str) -> list[str]:
    """The data payloads of a Server-Sent Events body, checking the framing on the way."""
    assert text.endswith("\n\n")
    events = text[: -len("\n\n")].split("\n\n")
    for event in events:
        assert event.startswith("data: "), event
        assert "\n" not in event, event
    return [event[len("data: ") :] for event in events]


# ----------------------------------------------------------------------------- models


def test_models_lists_groundqa(client: TestClient) -> None:
    """groundqa and one model per collection, in the OpenAI list shape, created when the served
    build was."""
    r = client.get("/v1/models")
    assert r.status_code == 200
    body = r.json()
    created = body["data"][0]["created"]
    names = ["groundqa", "groundqa/default", "groundqa/fruit"]
    assert body == {
        "object": "list",
        "data": [
            {"id": name, "object": "model", "created": created, "owned_by": "groundqa"}
            for name in names
        ],
    }
    assert isinstance(created, int) and created > 1_700_000_000


# ----------------------------------------------------------------------------- completions


def test_completion_is_the_grounded_answer_with_sources(
    client: TestClient, fake_embedder: FakeEmbedder
) -> None:
    """The message is the ask answer, a blank line and the linked sources; annotations point at
    its markers; extras carry full citations."""
    ask = client.post("/v1/ask", json={"question": CAPITAL}).json()
    r = client.post("/v1/chat/completions", json=chat(CAPITAL))
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert set(body) == {
        "id", "object", "created", "model", "system_fingerprint", "choices", "usage",
        "citations", "grounded", "build_id",
    }  # fmt: skip
    assert body["id"].startswith("chatcmpl-")
    assert body["object"] == "chat.completion"
    assert isinstance(body["created"], int)
    assert body["model"] == "groundqa"
    build_id = ask["index"]["build_id"]
    assert body["build_id"] == body["system_fingerprint"] == build_id
    assert body["grounded"] is True
    link = "http://localhost/?doc=paris.txt&start=0&end=31"
    content = f"Paris is the capital of France. [1]\n\nSources:\n\n1. [paris.txt, line 1]({link})"
    assert ask["answer"]["text"] == "Paris is the capital of France. [1]"
    annotation = {"start_index": 32, "end_index": 35, "url": link, "title": "paris.txt, line 1"}
    assert content[32:35] == "[1]"
    assert body["choices"] == [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": content,
                "refusal": None,
                "annotations": [{"type": "url_citation", "url_citation": annotation}],
            },
            "logprobs": None,
            "finish_reason": "stop",
        }
    ]
    first = ask["passages"][0]
    span = {"span_start": 0, "span_end": 31, "span_url": link}
    assert body["citations"] == [
        {"number": 1, "rank": 1, "text": first["text"], **first["citation"], **span}
    ]
    core = ["rank", "text", "source", "title", "char_start", "char_end", "line_start", "line_end",
            "url"]  # fmt: skip
    assert {key: body["citations"][0][key] for key in core} == {
        "rank": 1,
        "text": PARIS.rstrip("\n"),
        "source": "paris.txt",
        "title": "Paris is the capital of France.",
        "char_start": 0,
        "char_end": len(PARIS) - 1,
        "line_start": 1,
        "line_end": 2,
        "url": "/v1/documents/paris.txt#L1-L2",
    }
    # Counted with the model's tokenizer (word pieces, no special tokens).
    tokens = fake_embedder.tokenizer.offsets
    prompt, completion = len(tokens([CAPITAL])[0]), len(tokens([content])[0])
    assert (prompt, completion) == (7, 48)
    assert body["usage"] == {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def test_citation_offsets_index_into_the_document(client: TestClient) -> None:
    """Each citation's span of the document served by its url is the cited text."""
    body = client.post("/v1/chat/completions", json=chat(CAPITAL)).json()
    for citation in body["citations"]:
        doc = client.get(citation["url"].split("#")[0]).json()
        assert doc["text"][citation["char_start"] : citation["char_end"]] == citation["text"]


def test_abstaining_answer_lists_closest_sources(client: TestClient) -> None:
    """When the sources do not answer, the message says so and lists the closest sources."""
    body = client.post("/v1/chat/completions", json=chat("Quarks gluons chromodynamics?")).json()
    assert body["grounded"] is False
    content = body["choices"][0]["message"]["content"]
    ranks = [c["rank"] for c in body["citations"]]
    assert ranks == [1, 2]
    where = {(1, 2): "lines 1-2", (1, 1): "line 1", (2, 2): "line 2"}
    lines = [
        f"{c['number']}. [{c['source']}, {where[c['line_start'], c['line_end']]}]"
        f"(http://localhost/?doc={quote(c['source'], safe='')}&start={c['char_start']}"
        f"&end={c['char_end']})"
        for c in body["citations"]
    ]
    assert content == "\n".join([ABSTAIN_TEXT, "", "Closest sources:", "", *lines])
    assert body["choices"][0]["message"]["annotations"] == []


def test_content_parts_ask_the_same_question(client: TestClient) -> None:
    """A list of text parts is read like a string; other parts are ignored."""
    parts = [
        {"type": "text", "text": "What is the capital"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
        {"type": "text", "text": "of France?"},
    ]
    body = {"model": "groundqa", "messages": [{"role": "user", "content": parts}]}
    r = client.post("/v1/chat/completions", json=body)
    assert r.status_code == 200
    assert r.json()["choices"][0]["message"]["content"].startswith(
        "Paris is the capital of France. [1]"
    )


def test_last_user_message_is_the_question(client: TestClient, fake_embedder: FakeEmbedder) -> None:
    """System and assistant turns are not searched; a long last question is searched alone."""
    messages = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Tell me about monkeys and bananas please."},
        {"role": "assistant", "content": "Monkeys like to eat bananas. [1]"},
        {"role": "user", "content": CAPITAL},
    ]
    fake_embedder.calls.clear()
    r = client.post("/v1/chat/completions", json={"model": "groundqa", "messages": messages})
    assert r.status_code == 200
    assert fake_embedder.calls[0] == [CAPITAL]
    assert r.json()["choices"][0]["message"]["content"].startswith("Paris is the capital")


def test_follow_up_is_searched_with_the_earlier_turns(
    client: TestClient, fake_embedder: FakeEmbedder
) -> None:
    """An elliptical follow-up is searched with the previous question and the span its answer
    linked to, each encoded on its own (and cached), the question first."""
    first = client.post("/v1/chat/completions", json=chat(CAPITAL)).json()
    answer = first["choices"][0]["message"]["content"]
    messages = [
        {"role": "user", "content": CAPITAL},
        {"role": "assistant", "content": answer},
        {"role": "user", "content": "And the tower?"},
    ]
    fake_embedder.calls.clear()
    r = client.post("/v1/chat/completions", json={"model": "groundqa", "messages": messages})
    assert r.status_code == 200
    assert fake_embedder.calls[0] == ["And the tower?"]
    body = r.json()
    assert body["citations"][0]["source"] == "paris.txt"
    assert "Eiffel Tower" in body["choices"][0]["message"]["content"]


OPTIONAL_FIELDS: dict[str, Any] = {
    "temperature": 0.2,
    "top_p": 0.9,
    "n": 1,
    "max_tokens": 256,
    "max_completion_tokens": 256,
    "stop": ["no such text"],
    "presence_penalty": 0.5,
    "frequency_penalty": 0.5,
    "user": "user-1234",
    "seed": 7,
    "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
    "tool_choice": "auto",
    "parallel_tool_calls": False,
    "response_format": {"type": "text"},
    "stream_options": None,
    "logprobs": False,
    "top_logprobs": 0,
    "logit_bias": {"50256": -100},
    "metadata": {"session": "abc"},
    "store": False,
    "reasoning_effort": "low",
    "modalities": ["text"],
    "service_tier": "auto",
    "a_field_from_the_future": {"anything": [1, 2, 3]},
}


@pytest.mark.parametrize("field", sorted(OPTIONAL_FIELDS))
def test_optional_and_unknown_fields_are_accepted(client: TestClient, field: str) -> None:
    """Sampling, tool and unknown options are ignored, never rejected."""
    r = client.post("/v1/chat/completions", json=chat(CAPITAL, **{field: OPTIONAL_FIELDS[field]}))
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["finish_reason"] == "stop"


def test_all_optional_fields_at_once(client: TestClient) -> None:
    """Everything a client may send together, with `model` naming another model."""
    r = client.post("/v1/chat/completions", json=chat(CAPITAL, **OPTIONAL_FIELDS, model="gpt-4o"))
    assert r.status_code == 200, r.text
    assert r.json()["model"] == "groundqa"


# ----------------------------------------------------------------------------- streaming


def test_stream_is_sse_in_the_chunk_format(client: TestClient) -> None:
    """Role chunk, content chunks, a finish chunk with citations, then [DONE]."""
    full = client.post("/v1/chat/completions", json=chat(CAPITAL)).json()
    r = client.post("/v1/chat/completions", json=chat(CAPITAL, stream=True))
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert r.headers["cache-control"] == "no-cache"
    events = sse_events(r.text)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    envelope = {
        "id": chunks[0]["id"],
        "object": "chat.completion.chunk",
        "created": chunks[0]["created"],
        "model": "groundqa",
        "system_fingerprint": full["build_id"],
    }
    assert envelope["id"].startswith("chatcmpl-")

    def choice(delta: dict[str, str], finish: str | None = None) -> list[dict[str, Any]]:
        return [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]

    assert chunks[0] == {**envelope, "choices": choice({"role": "assistant"})}
    pieces = [c["choices"][0]["delta"]["content"] for c in chunks[1:-1]]
    assert chunks[1:-1] == [{**envelope, "choices": choice({"content": p})} for p in pieces]
    link = "[paris.txt, line 1](http://localhost/?doc=paris.txt&start=0&end=31)"
    assert pieces == ["Paris is the capital of France. ", "[1]\n", "\n", "Sources:\n", "\n",
                      "1. ", link]  # fmt: skip
    assert "".join(pieces) == full["choices"][0]["message"]["content"]
    annotations = full["choices"][0]["message"]["annotations"]
    assert chunks[-1] == {
        **envelope,
        "choices": choice({"annotations": annotations}, "stop"),
        "citations": full["citations"],
        "grounded": True,
        "build_id": full["build_id"],
    }


def test_stream_include_usage_adds_a_usage_chunk(client: TestClient) -> None:
    """With stream_options.include_usage, a last chunk with no choices carries the usage."""
    full = client.post("/v1/chat/completions", json=chat(CAPITAL)).json()
    body = chat(CAPITAL, stream=True, stream_options={"include_usage": True})
    events = sse_events(client.post("/v1/chat/completions", json=body).text)
    assert events[-1] == "[DONE]"
    usage = json.loads(events[-2])
    assert usage["choices"] == []
    assert usage["usage"] == full["usage"]
    assert json.loads(events[-3])["choices"][0]["finish_reason"] == "stop"


# ----------------------------------------------------------------------------- the contract


def completion(client: TestClient, **extra: Any) -> dict[str, Any]:
    """The completion of CAPITAL with extra request fields; asserts a 200."""
    r = client.post("/v1/chat/completions", json=chat(CAPITAL, **extra))
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
def test_token_limit_cuts_at_a_token_boundary(
    client: TestClient, fake_embedder: FakeEmbedder, field: str
) -> None:
    """The content is cut after the limit's last token, with finish_reason "length"; only the
    markers still inside it keep their annotation."""
    full = completion(client)["choices"][0]["message"]
    offsets = fake_embedder.tokenizer.offsets([full["content"]])[0]
    for limit, kept in ((5, 0), (12, 1)):
        body = completion(client, **{field: limit})
        choice = body["choices"][0]
        assert choice["finish_reason"] == "length"
        assert choice["message"]["content"] == full["content"][: offsets[limit - 1][1]]
        assert choice["message"]["annotations"] == full["annotations"][:kept]
        assert body["usage"]["completion_tokens"] == limit
    assert completion(client, **{field: len(offsets)})["choices"][0]["finish_reason"] == "stop"


def test_stop_sequence_ends_the_content_before_it(client: TestClient) -> None:
    """The content ends where the first stop sequence would begin; finish_reason stays stop."""
    body = completion(client, stop=["\n\nSources", "never"])
    assert body["choices"][0]["message"]["content"] == "Paris is the capital of France. [1]"
    assert body["choices"][0]["finish_reason"] == "stop"
    assert len(body["choices"][0]["message"]["annotations"]) == 1


def test_json_object_response_is_the_answer_object(client: TestClient) -> None:
    """response_format json_object: the content is a JSON object of answer, grounded flag and
    citations."""
    body = completion(client, response_format={"type": "json_object"})
    value = json.loads(body["choices"][0]["message"]["content"])
    assert value == {
        "answer": "Paris is the capital of France. [1]",
        "grounded": True,
        "citations": body["citations"],
    }


def test_json_schema_response_meets_the_schema(client: TestClient) -> None:
    """A strict schema asking for part of the answer object gets exactly that part."""
    schema = {
        "type": "object",
        "properties": {
            "answer": {"type": "string"},
            "grounded": {"type": "boolean"},
            "citations": {
                "type": "array",
                "items": {"$ref": "#/$defs/Cite"},
            },
        },
        "required": ["answer", "grounded", "citations"],
        "additionalProperties": False,
        "$defs": {
            "Cite": {
                "type": "object",
                "properties": {"source": {"type": "string"}, "char_start": {"type": "integer"}},
                "required": ["source", "char_start"],
                "additionalProperties": False,
            }
        },
    }
    fmt = {"type": "json_schema", "json_schema": {"name": "a", "schema": schema, "strict": True}}
    body = completion(client, response_format=fmt)
    assert json.loads(body["choices"][0]["message"]["content"]) == {
        "answer": "Paris is the capital of France. [1]",
        "grounded": True,
        "citations": [{"source": "paris.txt", "char_start": 0}],
    }


@pytest.mark.parametrize(
    ("extra", "param", "message"),
    [
        ({"n": 2}, "n", "n: only one choice is returned; send n=1 or leave it out"),
        (
            {"tool_choice": "required"},
            "tool_choice",
            "tool_choice: groundqa answers in text and never calls a tool; use 'auto' or 'none'",
        ),
        (
            {"tool_choice": {"type": "function", "function": {"name": "f"}}},
            "tool_choice",
            "tool_choice: groundqa answers in text and never calls a tool; use 'auto' or 'none'",
        ),
        ({"logprobs": True}, "logprobs", "logprobs: answers are quoted, not sampled; no logprobs"),
        (
            {"modalities": ["text", "audio"]},
            "modalities",
            "modalities: groundqa answers in text only",
        ),
        (
            {"response_format": {"type": "xml"}},
            "response_format",
            "response_format.type: 'xml' is not supported; use text, json_object or json_schema",
        ),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}},
            "response_format",
            "response_format.json_schema.schema: a JSON schema object is required",
        ),
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {
                        "name": "x",
                        "schema": {
                            "type": "object",
                            "properties": {"confidence": {"type": "number"}},
                            "required": ["confidence"],
                        },
                    },
                }
            },
            "response_format",
            "response_format: the schema cannot be met by groundqa's answer object (answer: "
            "string, grounded: boolean, citations: array): 'confidence' is a required property",
        ),
    ],
)
def test_parameters_it_cannot_honour_are_refused(
    client: TestClient, extra: dict[str, Any], param: str, message: str
) -> None:
    """400 in the OpenAI shape, naming the parameter, instead of silently ignoring it."""
    r = client.post("/v1/chat/completions", json=chat(CAPITAL, **extra))
    assert r.status_code == 400
    assert r.json() == invalid(message, param)


def test_public_url_makes_the_links_absolute(
    corpus: None, settings: Settings, client_for: ClientFor
) -> None:
    """With GROUNDQA_PUBLIC_URL the source links start with it, whatever host was asked."""
    client = client_for(settings.model_copy(update={"public_url": "https://qa.example.com/kb/"}))
    body = completion(client)
    link = "https://qa.example.com/kb/?doc=paris.txt&start=0&end=31"
    assert body["choices"][0]["message"]["content"].endswith(f"({link})")
    assert body["choices"][0]["message"]["annotations"][0]["url_citation"]["url"] == link


# ----------------------------------------------------------------------------- errors


def invalid(message: str, param: str | None = "messages", code: str | None = None) -> Any:
    """The OpenAI error body of an invalid request."""
    return {
        "error": {
            "message": message, "type": "invalid_request_error", "code": code, "param": param,
        }
    }  # fmt: skip


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"model": "groundqa"}, invalid("messages: Field required", code="invalid_value")),
        (
            {"model": "groundqa", "messages": []},
            invalid(
                "messages: List should have at least 1 item after validation, not 0",
                code="invalid_value",
            ),
        ),
        (
            {"messages": "What is the capital of France?"},
            invalid("messages: Input should be a valid list", code="invalid_value"),
        ),
        (
            {"messages": [{"role": "system", "content": "Answer briefly."}]},
            invalid("messages must include a user message with text content"),
        ),
        (
            {"messages": [{"role": "user", "content": "   "}]},
            invalid("messages must include a user message with text content"),
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
            invalid("messages must include a user message with text content"),
        ),
        (
            {"messages": [{"role": "user", "content": 42}]},
            invalid(
                "messages.0.content: Value error, content must be a string or a list of "
                "content parts",
                "messages.0.content",
                "invalid_value",
            ),
        ),
        (
            {"messages": [{"role": "wizard", "content": "hi"}]},
            invalid(
                "messages.0.role: Input should be 'system', 'developer', 'user', 'assistant', "
                "'tool' or 'function'",
                "messages.0.role",
                "invalid_value",
            ),
        ),
        (
            {"messages": [{"role": "user", "content": "hi"}], "stream": "sometimes"},
            invalid(
                "stream: Input should be a valid boolean, unable to interpret input",
                "stream",
                "invalid_value",
            ),
        ),
        (
            {"messages": [{"role": "user", "content": "x" * 2001}]},
            invalid("the last user message is longer than 2000 characters"),
        ),
    ],
)
def test_invalid_requests_get_openai_errors(
    client: TestClient, body: dict[str, Any], expected: dict[str, Any]
) -> None:
    """400 with the OpenAI error shape naming the offending parameter."""
    r = client.post("/v1/chat/completions", json=body)
    assert r.status_code == 400
    assert r.json() == expected


def test_malformed_json_gets_an_openai_error(client: TestClient) -> None:
    """A body that is not JSON."""
    r = client.post(
        "/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert r.status_code == 400
    assert r.json() == invalid("the request body is not valid JSON", None, "invalid_json")


def test_wrong_method_and_unknown_path_get_openai_errors(client: TestClient) -> None:
    """Routing errors under /v1/chat/ keep their status and take the OpenAI shape."""
    r = client.get("/v1/chat/completions")
    assert r.status_code == 405
    assert r.json() == invalid("Method Not Allowed", None)
    r = client.post("/v1/chat/nothing", json={})
    assert r.status_code == 404
    assert r.json() == {
        "error": {"message": "Not Found", "type": "not_found_error", "code": None, "param": None}
    }


def test_other_routes_keep_the_detail_shape(client: TestClient) -> None:
    """The OpenAI handler only reshapes its own paths."""
    r = client.post("/v1/ask", json={})
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["body", "question"]
    r = client.get("/v1/documents/missing.txt")
    assert r.status_code == 404
    assert r.json() == {"detail": "no indexed document 'missing.txt'; see GET /v1/documents"}
    r = client.get("/v1/nothing")
    assert r.status_code == 404
    assert r.json() == {"detail": "Not Found"}


def test_no_index_is_503_saying_how_to_build_it(settings: Settings, client_for: ClientFor) -> None:
    """Without a published build, chat answers 503 naming `groundqa index`; /v1/ask keeps detail."""
    client = client_for(settings)
    message = f"no index in {settings.index_dir}; run `groundqa index` to build it"
    r = client.post("/v1/chat/completions", json=chat(CAPITAL))
    assert r.status_code == 503
    assert r.json() == {
        "error": {
            "message": message, "type": "server_error", "code": "index_not_built", "param": None,
        }
    }  # fmt: skip
    r = client.post("/v1/chat/completions", json=chat(CAPITAL, stream=True))
    assert r.status_code == 503
    assert r.headers["content-type"] == "application/json"
    r = client.post("/v1/ask", json={"question": CAPITAL})
    assert r.status_code == 503
    assert r.json() == {"detail": message}


# ----------------------------------------------------------------------------- API keys


UNAUTHORIZED = {
    "error": {
        "message": "missing or invalid API key; send `Authorization: Bearer <key>`",
        "type": "authentication_error",
        "code": "invalid_api_key",
        "param": None,
    }
}


@pytest.fixture
def keyed(corpus: None, settings: Settings, client_for: ClientFor) -> TestClient:
    """An app that requires the key `k-right`."""
    return client_for(settings.model_copy(update={"api_keys": ["k-other", "k-right"]}))


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [("GET", "/v1/models", None), ("POST", "/v1/chat/completions", chat(CAPITAL))],
)
@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer k-wrong"}, {"Authorization": "Basic k-right"}]
)
def test_missing_or_wrong_key_is_401(
    keyed: TestClient,
    method: str,
    path: str,
    body: dict[str, Any] | None,
    headers: dict[str, str],
) -> None:
    """401 in the OpenAI shape, with the WWW-Authenticate challenge."""
    r = keyed.request(method, path, json=body, headers=headers)
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"
    assert r.json() == UNAUTHORIZED


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [("GET", "/v1/models", None), ("POST", "/v1/chat/completions", chat(CAPITAL))],
)
def test_right_key_is_200(
    keyed: TestClient, method: str, path: str, body: dict[str, Any] | None
) -> None:
    """Any configured key works."""
    r = keyed.request(method, path, json=body, headers={"Authorization": "Bearer k-right"})
    assert r.status_code == 200


def test_ask_route_keeps_its_401_shape(keyed: TestClient) -> None:
    """The key check on /v1/ask still answers FastAPI's detail."""
    r = keyed.post("/v1/ask", json={"question": CAPITAL})
    assert r.status_code == 401
    assert r.json() == {"detail": UNAUTHORIZED["error"]["message"]}


# ----------------------------------------------------------------------------- CORS


ALLOWED = "https://chat.example.org"


@pytest.fixture
def cors(corpus: None, settings: Settings, client_for: ClientFor) -> TestClient:
    """An app allowing one origin (configured as the environment would: comma-separated)."""
    origins = Settings.model_validate({"cors_origins": f"{ALLOWED}, http://localhost:3000"})
    return client_for(settings.model_copy(update={"cors_origins": origins.cors_origins}))


def preflight(origin: str) -> dict[str, str]:
    """Headers of a browser's preflight for an authenticated JSON POST."""
    return {
        "Origin": origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type",
    }


def test_cors_preflight_from_an_allowed_origin(cors: TestClient) -> None:
    """200 echoing the origin, with the allowed methods and headers."""
    r = cors.options("/v1/chat/completions", headers=preflight(ALLOWED))
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == ALLOWED
    assert r.headers["access-control-allow-methods"] == "GET, POST, OPTIONS"
    assert {h.strip() for h in r.headers["access-control-allow-headers"].split(",")} >= {
        "Authorization", "Content-Type",
    }  # fmt: skip
    r = cors.post("/v1/chat/completions", json=chat(CAPITAL), headers={"Origin": ALLOWED})
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == ALLOWED


def test_cors_preflight_from_another_origin_is_refused(cors: TestClient) -> None:
    """400 and no allow-origin header."""
    r = cors.options("/v1/chat/completions", headers=preflight("https://evil.example"))
    assert r.status_code == 400
    assert "access-control-allow-origin" not in r.headers
    r = cors.post("/v1/chat/completions", json=chat(CAPITAL), headers={"Origin": "https://x.y"})
    assert "access-control-allow-origin" not in r.headers


def test_no_cors_without_configured_origins(client: TestClient) -> None:
    """By default no origin is allowed: preflights are not answered."""
    r = client.options("/v1/chat/completions", headers=preflight(ALLOWED))
    assert r.status_code == 405
    assert "access-control-allow-origin" not in r.headers


# ----------------------------------------------------------------------------- live server


def seed_index(folder: Path, embedder: Embedder) -> Settings:
    """Settings over a copy of the real seed in folder, indexed with embedder."""
    seeds = folder / "seeds"
    seeds.mkdir()
    shutil.copy(SEED, seeds / SEED.name)
    settings = Settings(_env_file=None, seeds_dir=seeds, index_dir=folder / "index")
    Builder(settings, embedder).build()
    return settings


@pytest.fixture(scope="module")
def live_url(tmp_path_factory: pytest.TempPathFactory, real_embedder: Embedder) -> Iterator[str]:
    """A real server with the real model over the real seed."""
    settings = seed_index(tmp_path_factory.mktemp("openai-live"), real_embedder)
    with serve(create_app(settings, embedder=real_embedder)) as url:
        yield url


@pytest.mark.e2e
def test_official_openai_client(live_url: str) -> None:
    """The `openai` package lists the model, gets a cited answer, and streams the same text."""
    client = openai.OpenAI(base_url=f"{live_url}/v1", api_key="x", max_retries=0, timeout=60)
    assert [m.id for m in client.models.list()] == ["groundqa", "groundqa/default"]
    messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": TROOPS}]

    completion = client.chat.completions.create(model="groundqa", messages=messages)
    content = completion.choices[0].message.content
    assert content is not None
    assert "12,000" in content
    assert "[1]" in content
    assert "\n\nSources:\n\n1. [000_6103265ed68543fd.txt, line 3](" in content
    assert completion.choices[0].finish_reason == "stop"
    citations = (completion.model_extra or {})["citations"]
    assert citations[0]["rank"] == 1
    assert "12,000" in citations[0]["text"]

    stream = client.chat.completions.create(model="groundqa", messages=messages, stream=True)
    streamed = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert streamed == content


@pytest.mark.e2e
def test_official_openai_client_errors(live_url: str) -> None:
    """The client raises its typed error with our message for a request without a question."""
    client = openai.OpenAI(base_url=f"{live_url}/v1", api_key="x", max_retries=0, timeout=60)
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model="groundqa", messages=[{"role": "system", "content": "Be brief."}]
        )
    assert caught.value.status_code == 400
    assert caught.value.param == "messages"
    assert "messages must include a user message" in caught.value.message


def document_span(base: str, url: str) -> tuple[str, str]:
    """The document named by a deep link, fetched from the API, and the span it highlights."""
    query = parse_qs(urlsplit(url).query)
    source, start, end = query["doc"][0], int(query["start"][0]), int(query["end"][0])
    text = httpx.get(f"{base}/v1/documents/{quote(source)}", timeout=30).json()["text"]
    return text, text[start:end]


CASUALTIES = [
    ("Why are North Korean casualties so high?", "unfamiliar"),
    ("What kind of attacks can't they counter?", "drone attacks"),
    ("Who said that?", "Lee Seong-kweun"),
]


@pytest.mark.e2e
def test_openai_client_follows_a_conversation(live_url: str) -> None:
    """Three turns, each sent with the whole history as chat frontends do: the follow-ups are
    answered from the passage they refer to, and every annotation points at an [n] marker
    whose link opens a span the answer quotes."""
    client = openai.OpenAI(base_url=f"{live_url}/v1", api_key="x", max_retries=0, timeout=60)
    messages: list[ChatCompletionMessageParam] = []
    for question, expected in CASUALTIES:
        messages.append({"role": "user", "content": question})
        reply = client.chat.completions.create(model="groundqa", messages=messages)
        message = reply.choices[0].message
        content = message.content or ""
        assert (reply.model_extra or {})["grounded"] is True
        assert expected in content.split("\n\nSources:")[0]
        assert message.annotations
        for annotation in message.annotations:
            cited = annotation.url_citation
            assert re.fullmatch(r"\[\d+\]", content[cited.start_index : cited.end_index])
            assert cited.url.startswith(f"{live_url}/?doc=000_6103265ed68543fd.txt&start=")
            _, span = document_span(live_url, cited.url)
            assert span in content
        messages.append({"role": "assistant", "content": content})

    cut = client.chat.completions.create(model="groundqa", messages=messages, max_tokens=5)
    assert cut.choices[0].finish_reason == "length"
    assert cut.usage is not None and cut.usage.completion_tokens == 5
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="groundqa", messages=messages, n=2)
    assert caught.value.param == "n"


@pytest.mark.e2e
def test_langchain_keeps_every_citation_in_the_content(live_url: str) -> None:
    """LangChain's ChatOpenAI keeps only the content, and there the Sources render (CommonMark,
    markdown-it-py) as a list of links, each opening a span that the answer quotes; its
    structured output works through response_format json_schema."""
    from langchain_core.messages import AIMessage, HumanMessage
    from langchain_openai import ChatOpenAI
    from markdown_it import MarkdownIt
    from pydantic import BaseModel as Schema

    llm = ChatOpenAI(
        model="groundqa", base_url=f"{live_url}/v1", api_key="x", max_retries=0, timeout=60
    )
    history: list[HumanMessage | AIMessage] = []
    for question, expected in CASUALTIES[:2]:
        history.append(HumanMessage(question))
        reply = llm.invoke(history)
        content = str(reply.content)
        answer = content.split("\n\nSources:")[0]
        assert expected in answer
        tokens = MarkdownIt("commonmark").parse(content)
        kinds = [t.type for t in tokens]
        assert "ordered_list_open" in kinds
        links = [
            child.attrGet("href")
            for t in tokens
            if t.type == "inline"
            for child in t.children or []
            if child.type == "link_open"
        ]
        markers = re.findall(r"\[(\d+)\]", answer)
        assert len(links) == len(set(markers)) >= 1
        for href in links:
            _, span = document_span(live_url, str(href))
            assert span in answer
        history.append(AIMessage(content))

    class Grounded(Schema):
        answer: str
        grounded: bool

    structured = llm.with_structured_output(Grounded, method="json_schema")
    result = structured.invoke(CASUALTIES[0][0])
    assert isinstance(result, Grounded)
    assert result.grounded is True
    assert "unfamiliar" in result.answer
