"""The MCP server at /mcp, through the official `mcp` client against a real uvicorn server: the
five tools, their structured content and text, the documents as resources, and the API keys."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp.types import CallToolResult, TextContent, TextResourceContents

from service import __version__
from service.answering import ABSTAIN_TEXT
from service.api import create_app
from service.api.mcp import INSTRUCTIONS
from service.config import Settings
from service.embedding import Embedder
from service.generation import FLAG
from service.indexing import Builder
from tests.conftest import FakeEmbedder, WriteSeed, serve
from tests.test_generation_api import CHANGED, GOOD, Upstream, fake_llm
from tests.test_generation_api import serve as serve_llm

pytestmark = pytest.mark.anyio

KEY = "mcp-key-4d2a"
REPO = Path(__file__).resolve().parents[1]
SEED = REPO / "seeds" / "000_6103265ed68543fd.txt"

TROOPS = (
    "North Korea sent ten thousand troops to Russia in October.\n"
    "They were deployed in the Kursk region.\n"
)
CATS = "# Cats\n\nCats are small carnivorous mammals kept as pets.\n"
COFFEE = "Espresso is brewed by forcing hot water through finely ground coffee.\n"
SEEDS = {"troops.txt": TROOPS, "notes/cats.md": CATS, "café notes.txt": COFFEE}
# The order the build lists them in (the folder's files before its subfolders).
LISTED = ["café notes.txt", "troops.txt", "notes/cats.md"]
QUESTION = "How many troops did North Korea send?"


@pytest.fixture
def anyio_backend() -> str:
    """The MCP client runs on asyncio, as uvicorn does."""
    return "asyncio"


@pytest.fixture
def corpus(write_seed: WriteSeed, builder: Builder) -> None:
    """Three small seeds (one nested, one with a space and an accent), indexed."""
    for name, text in SEEDS.items():
        write_seed(name, text)
    builder.build()


@pytest.fixture
def url(corpus: None, settings: Settings, fake_embedder: FakeEmbedder) -> Iterator[str]:
    """A live server over the corpus, without API keys."""
    with serve(create_app(settings, embedder=fake_embedder)) as base:
        yield base


@pytest.fixture
def keyed_url(corpus: None, settings: Settings, fake_embedder: FakeEmbedder) -> Iterator[str]:
    """A live server over the corpus that requires KEY."""
    keyed = settings.model_copy(update={"api_keys": [KEY]})
    with serve(create_app(keyed, embedder=fake_embedder)) as base:
        yield base


@asynccontextmanager
async def connect(base: str, key: str | None = None) -> AsyncIterator[ClientSession]:
    """An initialized MCP session with the server at base (sending key as a bearer token)."""
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    async with (
        httpx2.AsyncClient(headers=headers) as http,
        streamable_http_client(f"{base}/mcp", http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


async def call(session: ClientSession, tool: str, **arguments: Any) -> CallToolResult:
    """Call a tool; the result of a tool call is always a CallToolResult here."""
    result = await session.call_tool(tool, arguments)
    assert isinstance(result, CallToolResult)
    return result


def text_of(result: CallToolResult) -> str:
    """The single text block of a tool result."""
    assert len(result.content) == 1
    block = result.content[0]
    assert isinstance(block, TextContent)
    return block.text


async def structured(session: ClientSession, tool: str, **arguments: Any) -> dict[str, Any]:
    """The structured content of a successful tool call."""
    result = await call(session, tool, **arguments)
    assert not result.is_error, text_of(result)
    body: dict[str, Any] | None = result.structured_content
    assert body is not None
    return body


async def rest(base: str, path: str, **params: Any) -> Any:
    """GET path from the HTTP API as JSON."""
    async with httpx.AsyncClient(base_url=base) as client:
        r = await client.get(path, params=params)
    assert r.status_code == 200, r.text
    return r.json()


def source_line(passage: dict[str, Any]) -> str:
    c = passage["citation"]
    return f"[{passage['rank']}] {c['source']}, lines {c['line_start']}-{c['line_end']}"


def rendered(passages: list[dict[str, Any]]) -> str:
    """The text rendering the tools give passages."""
    return "\n\n".join(f"{source_line(p)}\n{p['text']}" for p in passages)


async def check_citations(session: ClientSession, passages: list[dict[str, Any]]) -> None:
    """Every citation and highlight is get_document's text at its offsets, char for char."""
    texts: dict[str, str] = {}
    for passage in passages:
        cite = passage["citation"]
        if cite["source"] not in texts:
            whole = await structured(session, "get_document", source=cite["source"])
            texts[cite["source"]] = whole["text"]
        text = texts[cite["source"]]
        assert text[cite["char_start"] : cite["char_end"]] == passage["text"]
        span = await structured(
            session,
            "get_document",
            source=cite["source"],
            char_start=cite["char_start"],
            char_end=cite["char_end"],
        )
        assert (span["text"], span["line_start"], span["line_end"]) == (
            passage["text"],
            cite["line_start"],
            cite["line_end"],
        )
        for mark in passage["highlights"]:
            assert text[mark["char_start"] : mark["char_end"]] == mark["text"]


# ----------------------------------------------------------------------------- protocol


async def test_initialize_names_groundqa(url: str) -> None:
    async with connect(url) as session:
        init = await session.initialize()
    assert (init.server_info.name, init.server_info.version) == ("groundqa", __version__)
    assert init.instructions == INSTRUCTIONS
    assert init.capabilities.tools is not None
    assert init.capabilities.resources is not None


async def test_lists_exactly_the_five_read_only_tools(url: str) -> None:
    """Each tool declares its input and output schema and is marked read-only."""
    async with connect(url) as session:
        tools = (await session.list_tools()).tools
    assert [t.name for t in tools] == ["search", "ask", "verify", "get_document", "list_documents"]
    outputs = {t.name: set((t.output_schema or {}).get("properties", {})) for t in tools}
    assert outputs == {
        "search": {"question", "passages", "index"},
        "ask": {"question", "answer", "passages", "index", "took_ms", "generation"},
        "verify": {"sentences", "supported", "total", "index"},
        "get_document": {
            "source", "title", "sha256", "char_start", "char_end", "line_start", "line_end",
            "length", "text",
        },
        "list_documents": {"build_id", "documents"},
    }  # fmt: skip
    inputs = {
        t.name: (set(t.input_schema["properties"]), t.input_schema.get("required")) for t in tools
    }
    assert inputs == {
        "search": ({"question", "top_k", "mode", "sources", "collections"}, ["question"]),
        "ask": (
            {"question", "top_k", "mode", "sources", "answer_mode", "collections"},
            ["question"],
        ),
        "verify": ({"text", "sources"}, ["text"]),
        "get_document": ({"source", "char_start", "char_end"}, ["source"]),
        "list_documents": (set(), None),
    }
    top_k = tools[0].input_schema["properties"]["top_k"]
    assert (top_k["default"], top_k["minimum"], top_k["maximum"]) == (5, 1, 50)
    for tool in tools:
        assert tool.annotations is not None and tool.annotations.read_only_hint is True
        assert tool.description


# ----------------------------------------------------------------------------- tools


async def test_search_citations_reproduce_the_document_text(url: str) -> None:
    """search returns the ask API's passages; each citation and highlight is get_document's
    text at its offsets, and the text rendering cites each passage by [n] and lines."""
    async with connect(url) as session:
        result = await call(session, "search", question=QUESTION, top_k=3)
        assert not result.is_error
        body = result.structured_content
        assert body is not None
        assert len(body["passages"]) == 3
        await check_citations(session, body["passages"])
    ask = await rest(url, "/v1/ask", q=QUESTION, top_k=3)
    assert body == {"question": QUESTION, "passages": ask["passages"], "index": ask["index"]}
    assert body["passages"][0]["text"] == TROOPS.rstrip("\n")
    assert text_of(result) == rendered(body["passages"])
    assert text_of(result).startswith("[1] troops.txt, lines 1-2\nNorth Korea sent ten")


async def test_search_within_sources(url: str) -> None:
    async with connect(url) as session:
        body = await structured(session, "search", question=QUESTION, sources=["notes/*"])
    assert [p["citation"]["source"] for p in body["passages"]] == ["notes/cats.md"]


async def test_ask_is_the_ask_api_answer_with_its_sources(url: str) -> None:
    async with connect(url) as session:
        result = await call(session, "ask", question=QUESTION)
    body = result.structured_content
    assert body is not None and not result.is_error
    ask = await rest(url, "/v1/ask", q=QUESTION)
    assert {**body, "took_ms": 0} == {**ask, "took_ms": 0}
    answer = "North Korea sent ten thousand troops to Russia in October. [1]"
    assert body["answer"] == {"text": answer, "grounded": True, "citations": [1]}
    assert text_of(result) == f"{answer}\n\nSources:\n\n[1] troops.txt, lines 1-2\n{TROOPS[:-1]}"


async def test_ask_abstains_with_the_closest_sources(
    corpus: None, settings: Settings, fake_embedder: FakeEmbedder
) -> None:
    """Below the abstain threshold the answer abstains; the text still lists what was found."""
    strict = settings.model_copy(update={"abstain_threshold": 0.99})
    with serve(create_app(strict, embedder=fake_embedder)) as base:
        async with connect(base) as session:
            result = await call(session, "ask", question="What is the capital of France?")
    body = result.structured_content
    assert body is not None
    assert body["answer"] == {"text": ABSTAIN_TEXT, "grounded": False, "citations": []}
    closest = rendered(body["passages"])
    assert text_of(result) == f"{ABSTAIN_TEXT}\n\nClosest sources:\n\n{closest}"


async def test_verify_is_the_verify_api(url: str) -> None:
    """The verdicts of POST /v1/verify, and a text naming each sentence's verdict."""
    text = "North Korea sent ten thousand troops to Russia in October. Cats are reptiles."
    async with connect(url) as session:
        body = await structured(session, "verify", text=text)
        rendered = text_of(await call(session, "verify", text=text))
    async with httpx.AsyncClient(base_url=url) as client:
        expected = (await client.post("/v1/verify", json={"text": text})).json()
    assert body == expected
    assert [s["supported"] for s in body["sentences"]] == [True, False]
    assert rendered.startswith("1 of 2 sentences supported.\n\nSUPPORTED: North Korea")
    assert "NOT SUPPORTED: Cats are reptiles." in rendered


async def test_generated_ask_without_an_llm_is_a_tool_error(url: str) -> None:
    async with connect(url) as session:
        result = await call(session, "ask", question=QUESTION, answer_mode="generated")
    assert result.is_error is True
    assert "GROUNDQA_LLM_BASE_URL" in text_of(result)


@pytest.fixture
def llm_url(corpus: None, settings: Settings, fake_embedder: FakeEmbedder) -> Iterator[str]:
    """A live server over the corpus whose LLM is the deterministic fake upstream, answering
    one faithful sentence and one whose number was changed."""
    upstream = Upstream(text=f"{GOOD} {CHANGED}")
    with serve_llm(fake_llm(upstream)) as llm:
        generating = settings.model_copy(update={"llm_base_url": llm, "llm_timeout": 5})
        with serve(create_app(generating, embedder=fake_embedder)) as base:
            yield base


async def test_generated_ask_verifies_every_sentence(llm_url: str) -> None:
    """MCP ask with answer_mode generated: the /v1/ask body with its generation, a verdict
    per sentence, and each supported sentence's evidence is the document's text at its span."""
    async with connect(llm_url) as session:
        body = await structured(session, "ask", question=QUESTION, answer_mode="generated")
        rendered = text_of(await call(session, "ask", question=QUESTION, answer_mode="generated"))
        document = (await structured(session, "get_document", source="troops.txt"))["text"]
    gen = body["generation"]
    assert body["answer"] == {
        "text": f"{GOOD} {CHANGED}{FLAG}",
        "grounded": False,
        "citations": [1],
    }
    assert (gen["supported"], gen["flagged"], gen["dropped"], gen["fallback"]) == (1, 1, 0, None)
    good, changed = gen["sentences"]
    assert (good["supported"], good["reason"], good["citations"]) == (True, None, [1])
    evidence = good["evidence"]
    assert evidence["source"] == "troops.txt"
    assert document[evidence["char_start"] : evidence["char_end"]] == evidence["text"]
    assert evidence["text"] == "North Korea sent ten thousand troops to Russia in October."
    assert body["answer"]["text"][good["start"] : good["end"]] == GOOD
    assert (changed["supported"], changed["evidence"]) == (False, None)
    assert changed["reason"] == "not in the cited span: 12000"
    assert rendered.startswith(f"{GOOD} {CHANGED}{FLAG}")


async def test_list_documents_is_the_documents_api(url: str) -> None:
    async with connect(url) as session:
        result = await call(session, "list_documents")
    body = result.structured_content
    docs = await rest(url, "/v1/documents")
    assert body == docs
    assert [d["source"] for d in docs["documents"]] == LISTED
    assert text_of(result) == (
        f"3 documents in build {docs['build_id']}:\n"
        "- café notes.txt: Espresso is brewed by forcing hot water through finely ground "
        "coffee. (1 chunk)\n"
        "- troops.txt: North Korea sent ten thousand troops to Russia in October. (1 chunk)\n"
        "- notes/cats.md: Cats (1 chunk)"
    )


async def test_get_document_whole_and_slice(url: str) -> None:
    """The whole indexed text by default; a slice names its lines and offsets."""
    async with connect(url) as session:
        whole = await call(session, "get_document", source="troops.txt")
        part = await call(session, "get_document", source="troops.txt", char_start=59, char_end=98)
    sha = (await rest(url, "/v1/documents/troops.txt"))["sha256"]
    title = "North Korea sent ten thousand troops to Russia in October."
    assert whole.structured_content == {
        "source": "troops.txt", "title": title, "sha256": sha, "char_start": 0,
        "char_end": len(TROOPS), "line_start": 1, "line_end": 2, "length": len(TROOPS),
        "text": TROOPS,
    }  # fmt: skip
    assert text_of(whole) == f"troops.txt, lines 1-2, characters 0-99 of 99\n\n{TROOPS}"
    assert part.structured_content == {
        "source": "troops.txt", "title": title, "sha256": sha, "char_start": 59,
        "char_end": 98, "line_start": 2, "line_end": 2, "length": len(TROOPS),
        "text": "They were deployed in the Kursk region.",
    }  # fmt: skip
    assert text_of(part) == (
        "troops.txt, lines 2-2, characters 59-98 of 99\n\nThey were deployed in the Kursk region."
    )


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (
            {"source": "nope.txt"},
            "no indexed document 'nope.txt'; call list_documents for the indexed sources",
        ),
        (
            {"source": "troops.txt", "char_start": 10, "char_end": 500},
            "character range 10-500 is outside 'troops.txt', which has 99 characters; "
            "pass 0 <= char_start <= char_end <= 99",
        ),
        (
            {"source": "troops.txt", "char_start": 20, "char_end": 10},
            "character range 20-10 is outside 'troops.txt', which has 99 characters; "
            "pass 0 <= char_start <= char_end <= 99",
        ),
    ],
    ids=["unknown source", "past the end", "reversed"],
)
async def test_get_document_errors_say_what_to_do(
    url: str, arguments: dict[str, Any], message: str
) -> None:
    async with connect(url) as session:
        result = await call(session, "get_document", **arguments)
    assert result.is_error is True
    assert result.structured_content is None
    assert text_of(result) == f"Error executing tool get_document: {message}"


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ({"question": "   "}, "question must not be blank"),
        ({"question": QUESTION, "top_k": 0}, "top_k"),
        ({"question": QUESTION, "top_k": 51}, "top_k"),
        ({"question": QUESTION, "mode": "fuzzy"}, "mode"),
        ({"question": "x" * 2001}, "question"),
    ],
    ids=["blank", "top_k 0", "top_k 51", "unknown mode", "too long"],
)
@pytest.mark.parametrize("tool", ["search", "ask"])
async def test_invalid_arguments_are_tool_errors(
    url: str, tool: str, arguments: dict[str, Any], expected: str
) -> None:
    async with connect(url) as session:
        result = await call(session, tool, **arguments)
    assert result.is_error is True
    assert expected in text_of(result)


async def test_without_an_index_tools_say_to_run_groundqa_index(
    settings: Settings, fake_embedder: FakeEmbedder
) -> None:
    """The server starts without a build; every tool answers a tool error naming the fix."""
    with serve(create_app(settings, embedder=fake_embedder)) as base:
        async with connect(base) as session:
            results = {
                "search": await call(session, "search", question=QUESTION),
                "ask": await call(session, "ask", question=QUESTION),
                "get_document": await call(session, "get_document", source="troops.txt"),
                "list_documents": await call(session, "list_documents"),
            }
            resources = (await session.list_resources()).resources
    for tool, result in results.items():
        assert result.is_error is True, tool
        assert text_of(result).startswith(f"Error executing tool {tool}: no index in "), tool
        assert "run `groundqa index`" in text_of(result), tool
    assert resources == []


# ----------------------------------------------------------------------------- resources


async def test_documents_are_resources(url: str) -> None:
    """Each indexed source is listed as a resource whose contents are its exact indexed text."""
    async with connect(url) as session:
        listed = (await session.list_resources()).resources
        templates = (await session.list_resource_templates()).resource_templates
        contents = {r.uri: (await session.read_resource(r.uri)) for r in listed}
        with pytest.raises(MCPError) as unknown:
            await session.read_resource("groundqa://documents/nope.txt")
    assert [(r.uri, r.name, r.mime_type) for r in listed] == [
        ("groundqa://documents/caf%C3%A9%20notes.txt", "café notes.txt", "text/plain"),
        ("groundqa://documents/troops.txt", "troops.txt", "text/plain"),
        ("groundqa://documents/notes/cats.md", "notes/cats.md", "text/plain"),
    ]
    assert [r.title for r in listed] == [
        "Espresso is brewed by forcing hot water through finely ground coffee.",
        "North Korea sent ten thousand troops to Russia in October.",
        "Cats",
    ]
    assert [(t.uri_template, t.mime_type) for t in templates] == [
        ("groundqa://documents/{+source}", "text/plain")
    ]
    texts = []
    for uri, result in contents.items():
        assert not isinstance(result, Exception)
        [block] = result.contents
        assert isinstance(block, TextResourceContents)
        assert (block.uri, block.mime_type) == (uri, "text/plain")
        texts.append(block.text)
    assert texts == [SEEDS[source] for source in LISTED]
    assert str(unknown.value) == (
        "no indexed document 'nope.txt'; call list_documents for the indexed sources"
    )


# ----------------------------------------------------------------------------- API keys


@pytest.mark.parametrize("key", [None, "wrong-key"], ids=["missing", "wrong"])
async def test_missing_or_wrong_key_is_401(keyed_url: str, key: str | None) -> None:
    """The HTTP API's 401, before any MCP processing; the official client refuses to go on."""
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    initialize = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "test", "version": "0"},
        },
    }
    async with httpx.AsyncClient(base_url=keyed_url) as client:
        r = await client.post(
            "/mcp",
            json=initialize,
            headers={**headers, "Accept": "application/json, text/event-stream"},
        )
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"
    assert r.json() == {"detail": "missing or invalid API key; send `Authorization: Bearer <key>`"}
    with pytest.RaisesGroup(pytest.RaisesExc(MCPError), flatten_subgroups=True):
        async with connect(keyed_url, key):
            pass


async def test_right_key_is_served(keyed_url: str) -> None:
    async with connect(keyed_url, KEY) as session:
        assert len((await session.list_tools()).tools) == 5
        body = await structured(session, "search", question=QUESTION, top_k=1)
    assert body["passages"][0]["citation"]["source"] == "troops.txt"


async def test_mcp_requests_are_counted(url: str) -> None:
    """Requests to /mcp show in the request metrics under their route."""
    async with connect(url) as session:
        await call(session, "list_documents")
    async with httpx.AsyncClient(base_url=url) as client:
        metrics = (await client.get("/metrics")).text
    assert 'groundqa_http_requests_total{method="POST",route="/mcp",status="200"}' in metrics


# ----------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def seed_url(tmp_path_factory: pytest.TempPathFactory, real_embedder: Embedder) -> Iterator[str]:
    """A live server with the real model over the real seed article."""
    root = tmp_path_factory.mktemp("mcp-e2e")
    seeds = root / "seeds"
    seeds.mkdir()
    shutil.copyfile(SEED, seeds / SEED.name)
    settings = Settings(_env_file=None, seeds_dir=seeds, index_dir=root / "index")
    assert Builder(settings, real_embedder).build().published
    with serve(create_app(settings, embedder=real_embedder)) as base:
        yield base


@pytest.mark.e2e
async def test_real_model_citations_reproduce_the_seed(seed_url: str) -> None:
    """With the bundled model, search finds the answer first and every citation of search
    and ask is the seed's text at its offsets; ask quotes it with a [1] marker."""
    question = "How many troops has North Korea sent to fight for Russia?"
    async with connect(seed_url) as session:
        found = await structured(session, "search", question=question, top_k=5)
        asked = await structured(session, "ask", question=question, top_k=5)
        await check_citations(session, found["passages"] + asked["passages"])
        whole = await structured(session, "get_document", source=SEED.name)
    assert len(found["passages"]) == 5
    assert "12,000" in found["passages"][0]["text"]
    assert whole["text"] == SEED.read_text(encoding="utf-8")
    assert asked["answer"]["grounded"] is True
    assert "[1]" in asked["answer"]["text"] and 1 in asked["answer"]["citations"]
