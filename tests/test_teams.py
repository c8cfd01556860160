"""Collections and scoped keys: two collections seeded with distinct canary strings (in their
text, titles and file names); for each of two keys, every route (schema-driven fuzzing with the
key, generated asks and chats, streaming, documents by guessed names, MCP tools and resources
with the official client) returns not a byte of the other collection. Revocation and expiry of
keys, and keys never appearing in logs, metrics or errors."""

from __future__ import annotations

import json
import logging
import random
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from mcp.shared.exceptions import MCPError
from mcp.types import TextContent, TextResourceContents
from schemathesis import Case, GenerationMode
from schemathesis.python import asgi

from service.access import Scope, collection_of
from service.api import create_app
from service.api.state import INVALID_KEY
from service.cli import main
from service.config import Settings
from service.errors import KeysFileError
from service.indexing import Builder
from service.keys import KeyRing, add_key, hash_key, read_keys
from service.store import build_path, read_manifest, read_pointer
from tests.conftest import FakeEmbedder, WriteSeed, serve
from tests.test_mcp import call, connect

HR_CANARY = "zebrafalcon"
ENG_CANARY = "quokkanebula"
SEEDS = {
    f"hr/{HR_CANARY}-leave-policy.md": (
        f"# {HR_CANARY.title()} leave policy\n\n"
        f"Every employee gets twenty days of paid leave a year under the {HR_CANARY} policy.\n"
        "Sick days and parental leave are requested from the people team.\n"
    ),
    f"hr/benefits/{HR_CANARY}-benefits.txt": (
        f"{HR_CANARY.title()} benefits\n"
        f"The {HR_CANARY} pension plan matches five percent of salary.\n"
        "To restart a benefits claim, write to the people team.\n"
    ),
    f"eng/{ENG_CANARY}-runbook.md": (
        f"# {ENG_CANARY.title()} runbook\n\n"
        f"To restart the database, drain the {ENG_CANARY} queue first.\n"
        "The on-call engineer is paged for every outage, as the policy says.\n"
    ),
    f"eng/{ENG_CANARY}-deploys.txt": (
        f"{ENG_CANARY.title()} deploys\n"
        f"Every deploy of the {ENG_CANARY} service runs the migration and the smoke test.\n"
        "Leave a note in the channel when a deploy is rolled back.\n"
    ),
}
COLLECTION_CANARY = {"hr": HR_CANARY, "eng": ENG_CANARY}
WORDS = [
    "leave", "policy", "restart", "database", "deploy", "benefits", "people", "team", "days",
    "engineer", "pension", "outage", "queue", "salary", "migration", "what", "how", "the",
    HR_CANARY, ENG_CANARY, "hr", "eng", "default",
]  # fmt: skip
GUESSES = [
    *SEEDS,
    "hr",
    "eng",
    "hr/",
    "eng/",
    f"{HR_CANARY}-leave-policy.md",
    f"{ENG_CANARY}-runbook.md",
    f"HR/{HR_CANARY}-leave-policy.md",
    f"ENG/{ENG_CANARY}-runbook.md",
    f"./hr/{HR_CANARY}-leave-policy.md",
    f"eng//{ENG_CANARY}-runbook.md",
    f"hr/benefits/../{HR_CANARY}-leave-policy.md",
    f"eng/{ENG_CANARY}-runbook.md%00",
    "hr/*",
    "eng/*",
    "*",
    "never-indexed.txt",
]
EXAMPLES = 35  # per operation, key and generation mode: some 250 schema-driven requests per key


def forbidden(other: str) -> list[str]:
    """What no response to a key outside collection `other` may contain (compared lowercase):
    its canary (text, titles and file names hold it), its paths, its name as a collection."""
    return [
        COLLECTION_CANARY[other],
        f"{other}/",
        f"{other}%2f",
        f'"{other}"',
        f"groundqa/{other}",
    ]


def assert_no_leak(text: str, other: str, where: object) -> None:
    """text holds nothing of collection `other`."""
    lowered = text.lower()
    for marker in forbidden(other):
        assert marker not in lowered, (where, marker, text[:500])


def not_found(source: str) -> dict[str, str]:
    """The one 404 body of a document that is not indexed or not visible."""
    return {"detail": f"no indexed document {source!r}; see GET /v1/documents"}


@dataclass(frozen=True)
class Team:
    """A built index of the two collections, a keys file, and the keys made by the CLI."""

    settings: Settings
    keys_file: Path
    keys: dict[str, str]  # collection (or "admin") -> key

    def bearer(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[who]}"}


def cli_add(capsys: pytest.CaptureFixture[str], keys_file: Path, *args: str) -> dict[str, str]:
    """Run `groundqa keys add ... --json` and return its JSON output."""
    capsys.readouterr()
    assert main(["keys", "add", *args, "--json", "--file", str(keys_file)]) == 0
    out: dict[str, str] = json.loads(capsys.readouterr().out)
    return out


@pytest.fixture
def team(
    settings: Settings,
    builder: Builder,
    write_seed: WriteSeed,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> Team:
    for name, text in SEEDS.items():
        write_seed(name, text)
    write_seed("welcome.txt", "Welcome to the handbook. Ask about leave or deploys.\n")
    builder.build()
    keys_file = tmp_path / "keys.toml"
    keys = {
        "hr": cli_add(capsys, keys_file, "hr-team", "--collections", "hr")["key"],
        "eng": cli_add(capsys, keys_file, "eng-team", "--collections", "eng")["key"],
        "admin": cli_add(capsys, keys_file, "ops", "--collections", "*", "--admin")["key"],
    }
    return Team(settings.model_copy(update={"keys_file": keys_file}), keys_file, keys)


@pytest.fixture
def client(team: Team, client_for: Callable[[Settings], TestClient]) -> TestClient:
    return client_for(team.settings)


OTHER = {"hr": "eng", "eng": "hr"}


# ----------------------------------------------------------------------------- collections


def test_collection_is_the_top_level_folder() -> None:
    assert collection_of("hr/leave.md") == "hr"
    assert collection_of("eng/runbooks/db.md") == "eng"
    assert collection_of("welcome.txt") == "default"


def test_manifest_and_chunk_store_record_the_collection(team: Team) -> None:
    build_id = read_pointer(team.settings.index_dir)
    assert build_id is not None
    manifest = read_manifest(build_path(team.settings.index_dir, build_id))
    assert {s: f.collection for s, f in manifest.files.items()} == {
        **{s: s.split("/")[0] for s in SEEDS},
        "welcome.txt": "default",
    }


def test_scope_narrows_and_never_widens() -> None:
    hr = Scope(frozenset({"hr"}))
    assert hr.narrow(["hr", "eng"]).collections == frozenset({"hr"})
    assert hr.narrow(["eng"]).collections == frozenset()
    assert Scope().narrow(["eng"]).collections == frozenset({"eng"})
    assert not hr.narrow(["eng"]).allows("eng/x.md", "eng")
    globbed = Scope(frozenset({"hr"}), ("hr/benefits/*",))
    assert globbed.allows("hr/benefits/a.txt", "hr")
    assert not globbed.allows("hr/leave.md", "hr")


# ----------------------------------------------------------------------------- visibility


@pytest.mark.parametrize("who", ["hr", "eng"])
def test_each_key_sees_only_its_collection(team: Team, client: TestClient, who: str) -> None:
    headers = team.bearer(who)
    own = sorted(s for s in SEEDS if s.startswith(f"{who}/"))
    docs = client.get("/v1/documents", headers=headers).json()["documents"]
    assert sorted(d["source"] for d in docs) == own
    assert {d["collection"] for d in docs} == {who}
    assert client.get("/v1/collections", headers=headers).json()["collections"] == [
        {"name": who, "documents": len(own)}
    ]
    index = client.get("/v1/index", headers=headers).json()
    assert (index["documents"], index["skipped"], index["stale"]) == (len(own), [], False)
    models = [m["id"] for m in client.get("/v1/models", headers=headers).json()["data"]]
    assert models == ["groundqa", f"groundqa/{who}"]
    canary = COLLECTION_CANARY[who]
    body = client.post(
        "/v1/ask", json={"question": f"What does the {canary} policy say?"}, headers=headers
    ).json()
    assert body["passages"]
    assert {p["citation"]["collection"] for p in body["passages"]} == {who}
    for source in own:
        assert client.get(f"/v1/documents/{source}", headers=headers).json()["collection"] == who


def test_admin_key_sees_every_collection(team: Team, client: TestClient) -> None:
    body = client.get("/v1/collections", headers=team.bearer("admin")).json()
    assert body["collections"] == [
        {"name": "default", "documents": 1},
        {"name": "eng", "documents": 2},
        {"name": "hr", "documents": 2},
    ]


def test_requests_narrow_but_never_widen(team: Team, client: TestClient) -> None:
    hr = team.bearer("hr")
    question = f"How do I restart the {ENG_CANARY} database?"
    for body in (
        {"question": question, "collections": ["eng"]},
        {"question": question, "collections": ["eng", "hr"]},
        {"question": question, "collections": ["*"]},
        {"question": question, "sources": ["eng/*"]},
    ):
        passages = client.post("/v1/ask", json=body, headers=hr).json()["passages"]
        assert all(p["citation"]["collection"] == "hr" for p in passages), body
        assert body.get("collections") != ["eng"] or passages == []
    admin = team.bearer("admin")
    narrowed = client.post(
        "/v1/ask", json={"question": question, "collections": ["eng"]}, headers=admin
    ).json()["passages"]
    assert narrowed and {p["citation"]["collection"] for p in narrowed} == {"eng"}
    chat = {"model": "groundqa/eng", "messages": [{"role": "user", "content": question}]}
    reply = client.post("/v1/chat/completions", json=chat, headers=admin).json()
    assert {c["collection"] for c in reply["citations"]} == {"eng"}
    chat = {"model": "groundqa/eng", "messages": [{"role": "user", "content": question}]}
    reply = client.post("/v1/chat/completions", json=chat, headers=hr).json()
    assert reply["citations"] == []


def test_out_of_scope_documents_are_indistinguishable_from_missing_ones(
    team: Team, client: TestClient
) -> None:
    for who, other in OTHER.items():
        headers = team.bearer(who)
        for guess in GUESSES:
            r = client.get(f"/v1/documents/{guess}", headers=headers)
            # The client removes dot segments: judge by the path the server was asked for.
            asked = unquote(r.url.path.removeprefix("/v1/documents/"))
            if asked in SEEDS and asked.startswith(f"{who}/"):
                assert r.status_code == 200, guess
                continue
            assert r.status_code == 404, guess
            assert r.json() == not_found(asked), guess
            # The body echoes only what was asked: take that out and nothing is left.
            assert_no_leak(r.json()["detail"].replace(repr(asked), ""), other, guess)


# ----------------------------------------------------------------------------- generated requests


def generated_questions(seed: int, n: int) -> list[str]:
    """n questions of words from both collections (canaries included)."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 7))) for _ in range(n)]


def sse_text(text: str) -> str:
    """The concatenated payloads of a Server-Sent Events body."""
    return "".join(line[6:] for line in text.splitlines() if line.startswith("data: "))


@pytest.mark.parametrize("who", ["hr", "eng"])
def test_generated_requests_on_every_route_never_leak(
    team: Team, client: TestClient, who: str
) -> None:
    """Asks (GET and POST, with narrowing), chats (plain, streamed, by model name, with links
    to the other collection in earlier turns), lists, index, models: nothing of the other."""
    other = OTHER[who]
    headers = team.bearer(who)
    rng = random.Random(who)
    requests = 0
    for question in generated_questions(len(who), 120):
        narrowing = rng.choice([None, [other], [who, other], ["*"], [who]])
        sources = rng.choice([None, [f"{other}/*"], ["*"], [f"{other}/**"]])
        body: dict[str, Any] = {"question": question, "top_k": rng.randint(1, 10)}
        body["mode"] = rng.choice(["hybrid", "dense", "keyword"])
        if narrowing is not None:
            body["collections"] = narrowing
        if sources is not None:
            body["sources"] = sources
        r = client.post("/v1/ask", json=body, headers=headers)
        assert r.status_code == 200, r.text
        answer = r.json()
        answer.pop("question")  # the request's own words
        assert_no_leak(json.dumps(answer), other, body)
        r = client.get("/v1/ask", params={"q": question, "collections": other}, headers=headers)
        answer = r.json()
        assert answer["passages"] == []
        answer.pop("question")
        assert_no_leak(json.dumps(answer), other, question)
        requests += 2
    link = f"http://testserver/?doc={other}%2F{COLLECTION_CANARY[other]}-runbook.md&start=0&end=40"
    for i, question in enumerate(generated_questions(len(who) + 10, 60)):
        messages: list[dict[str, Any]] = [
            {"role": "user", "content": f"Tell me about {COLLECTION_CANARY[other]}"},
            {"role": "assistant", "content": f"It says so [1]\n\nSources:\n\n1. [x]({link})"},
            {"role": "user", "content": question},
        ]
        chat: dict[str, Any] = {"messages": messages[i % 3 :] if i % 2 else messages[2:]}
        chat["model"] = rng.choice(["groundqa", f"groundqa/{other}", f"groundqa/{who}"])
        if i % 4 == 0:
            chat["collections"] = [other]
        chat["stream"] = i % 3 == 0
        r = client.post("/v1/chat/completions", json=chat, headers=headers)
        assert r.status_code == 200, r.text
        text = sse_text(r.text) if chat["stream"] else r.text
        # A chat echoes the model name it was asked for; nothing else of the other collection.
        assert_no_leak(text.replace(f'"groundqa/{other}"', ""), other, chat)
        requests += 1
    for path in ("/v1/documents", "/v1/collections", "/v1/index", "/v1/models"):
        r = client.get(path, headers=headers)
        assert r.status_code == 200
        assert_no_leak(r.text, other, path)
        requests += 1
    assert requests >= 300


@pytest.fixture
def fuzz_schema(
    team: Team, fake_embedder: FakeEmbedder
) -> Iterator[tuple[Team, schemathesis.BaseSchema]]:
    """The API's schema, loaded with a key from an app with the keys file (it needs one)."""
    app = create_app(team.settings, embedder=fake_embedder)
    yield team, schemathesis.openapi.from_asgi("/openapi.json", app, headers=team.bearer("hr"))
    asgi.shutdown_lifespans()


@pytest.mark.parametrize("who", ["hr", "eng"])
def test_schema_driven_fuzzing_with_a_scoped_key_never_leaks(
    fuzz_schema: tuple[Team, schemathesis.BaseSchema], who: str
) -> None:
    """Every operation of the OpenAPI schema, valid and invalid input, sent with the key."""
    team, schema = fuzz_schema
    other = OTHER[who]
    sent = 0
    paths = schema.raw_schema["paths"]
    for operation in schema.get_all_operations():
        op = operation.ok()  # type: ignore[union-attr]
        spec = paths[op.path][op.method.lower()]
        # Invalid input exists only for operations that take some.
        queries = [p for p in spec.get("parameters", []) if p["in"] == "query"]
        takes_input = "requestBody" in spec or bool(queries)
        modes = [GenerationMode.POSITIVE] + [GenerationMode.NEGATIVE] * takes_input
        for mode in modes:

            @given(case=op.as_strategy(generation_mode=mode))
            @hypothesis_settings(
                max_examples=EXAMPLES,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            def check(case: Case[Any]) -> None:
                nonlocal sent
                response = case.call(headers=team.bearer(who))
                sent += 1
                assert response.status_code < 500, (case.path, response.text)
                text = response.text
                for echoed in echoed_inputs(case):
                    text = text.replace(echoed, "")
                assert_no_leak(text, other, (case.method, case.formatted_path))

            check()
    assert sent >= 200, sent


def echoed_inputs(case: Case[Any]) -> list[str]:
    """Strings of the request that an error or a response may echo back (a 404 names the
    asked-for source, a 422 the invalid value): generated text, not the other collection's."""
    values: list[str] = []

    def walk(value: object) -> None:
        if isinstance(value, str):
            values.append(value)
            values.append(json.dumps(value)[1:-1])
        elif isinstance(value, dict):
            for k, v in value.items():
                walk(k)
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)

    for part in (case.path_parameters, case.query, case.body):
        walk(part)
    return sorted((v for v in values if v), key=len, reverse=True)


# ----------------------------------------------------------------------------- MCP


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def live(team: Team, fake_embedder: FakeEmbedder) -> Iterator[tuple[Team, str]]:
    with serve(create_app(team.settings, embedder=fake_embedder)) as base:
        yield team, base


@pytest.mark.anyio
@pytest.mark.parametrize("who", ["hr", "eng"])
async def test_mcp_tools_and_resources_see_only_the_keys_collection(
    live: tuple[Team, str], who: str
) -> None:
    team, base = live
    other = OTHER[who]
    async with connect(base, team.keys[who]) as session:
        listed = (await session.list_resources()).resources
        assert sorted(r.name for r in listed) == sorted(s for s in SEEDS if s.startswith(who))
        for resource in listed:
            read = await session.read_resource(resource.uri)
            contents = read.contents[0]
            assert isinstance(contents, TextResourceContents)
            assert_no_leak(contents.text, other, resource.uri)
        docs = await call(session, "list_documents")
        assert docs.structured_content is not None
        assert_no_leak(json.dumps(docs.structured_content), other, "list_documents")
        calls = 0
        for question in generated_questions(len(who) + 20, 40):
            for tool in ("search", "ask"):
                for collections in (None, [other], [who, other]):
                    args: dict[str, Any] = {"question": question}
                    if collections is not None:
                        args["collections"] = collections
                    result = await call(session, tool, **args)
                    assert not result.is_error
                    body = dict(result.structured_content or {})
                    body.pop("question")
                    block = result.content[0]
                    assert isinstance(block, TextContent)
                    assert_no_leak(json.dumps(body) + block.text, other, (tool, args))
                    calls += 1
        assert calls == 240
        for guess in GUESSES:
            if guess in SEEDS and guess.startswith(f"{who}/"):
                continue
            result = await call(session, "get_document", source=guess)
            assert result.is_error
            block = result.content[0]
            assert isinstance(block, TextContent)
            assert block.text == (
                f"Error executing tool get_document: no indexed document {guess!r}; "
                "call list_documents for the indexed sources"
            )
            with pytest.raises(MCPError) as refused:
                await session.read_resource(f"groundqa://documents/{guess}")
            assert_no_leak(str(refused.value).replace(guess, ""), other, guess)


# ----------------------------------------------------------------------------- keys


def test_every_closed_route_needs_a_key_with_a_keys_file(client: TestClient) -> None:
    for path in ("/v1/documents", "/v1/collections", "/v1/index", "/openapi.json", "/docs"):
        r = client.get(path)
        assert r.status_code == 401, path
        assert r.json() == {"detail": INVALID_KEY}
    assert client.post("/mcp", json={}).status_code == 401
    r = client.get("/v1/models")
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    for path in ("/healthz", "/readyz", "/", "/static/app.js", "/static/app.css"):
        assert client.get(path).status_code == 200, path


def test_metrics_and_rebuilds_need_an_admin_key(team: Team, client: TestClient) -> None:
    assert client.get("/metrics", headers=team.bearer("hr")).status_code == 403
    assert client.get("/metrics", headers=team.bearer("admin")).status_code == 200
    r = client.post("/v1/index/rebuild", headers=team.bearer("hr"))
    assert (r.status_code, r.json()) == (403, {"detail": "this key may not administer the index"})
    assert client.post("/v1/index/rebuild", headers=team.bearer("admin")).status_code == 202


def test_keys_file_holds_only_hashes(team: Team, capsys: pytest.CaptureFixture[str]) -> None:
    text = team.keys_file.read_text()
    for key in team.keys.values():
        assert key not in text
        assert hash_key(key) in text
    assert stat.S_IMODE(team.keys_file.stat().st_mode) == 0o600
    entries = read_keys(team.keys_file)
    assert {n: (e.collections, e.admin) for n, e in entries.items()} == {
        "hr-team": (("hr",), False),
        "eng-team": (("eng",), False),
        "ops": (("*",), True),
    }
    capsys.readouterr()
    assert main(["keys", "list", "--file", str(team.keys_file)]) == 0
    listed = capsys.readouterr().out
    assert listed == "hr-team: hr\neng-team: eng\nops: * (admin)\n"
    assert main(["keys", "revoke", "nobody", "--file", str(team.keys_file)]) == 2
    assert main(["keys", "add", "hr-team", "--collections", "hr", "--file", str(team.keys_file)])


def test_revoked_key_is_refused_within_the_reload_interval(team: Team, client: TestClient) -> None:
    """`groundqa keys revoke` on the running server: refused within 5 s (default interval)."""
    assert team.settings.keys_reload_interval <= 5
    ring = client.app.state.groundqa.keys  # type: ignore[attr-defined]
    assert isinstance(ring, KeyRing)
    assert client.get("/v1/documents", headers=team.bearer("hr")).status_code == 200
    generation = ring.generation
    started = datetime.now(UTC)
    assert main(["keys", "revoke", "hr-team", "--file", str(team.keys_file)]) == 0
    with ring.reloaded:
        assert ring.reloaded.wait_for(lambda: ring.generation > generation, timeout=5.0)
    assert (datetime.now(UTC) - started).total_seconds() < 5
    r = client.get("/v1/documents", headers=team.bearer("hr"))
    assert (r.status_code, r.json()) == (401, {"detail": INVALID_KEY})
    assert client.get("/v1/documents", headers=team.bearer("eng")).status_code == 200


def test_expired_key_is_refused(team: Team, client_for: Callable[[Settings], TestClient]) -> None:
    today = datetime.now(UTC).date()
    old = add_key(team.keys_file, "old", ["hr"], expires=today - timedelta(days=1))
    fresh = add_key(team.keys_file, "fresh", ["hr"], expires=today)
    client = client_for(team.settings)
    r = client.get("/v1/documents", headers={"Authorization": f"Bearer {old}"})
    assert r.status_code == 401
    assert r.json() == {"detail": f"this API key expired on {today - timedelta(days=1)}"}
    assert client.get("/v1/documents", headers={"Authorization": f"Bearer {fresh}"}).is_success


def test_broken_keys_file_stops_the_start(team: Team) -> None:
    team.keys_file.write_text("[keys.hr]\nhash = 'plain-text-key'\ncollections = ['hr']\n")
    with pytest.raises(KeysFileError, match="`hash` must be 'sha256:' and 64 hex digits"):
        create_app(team.settings)


def test_keys_never_reach_logs_metrics_or_errors(
    team: Team, client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    expired = add_key(team.keys_file, "gone", ["hr"], expires=datetime(2020, 1, 1).date())
    ring = client.app.state.groundqa.keys  # type: ignore[attr-defined]
    generation = ring.generation
    with ring.reloaded:
        assert ring.reloaded.wait_for(lambda: ring.generation > generation, timeout=5.0)
    secrets = [*team.keys.values(), expired, "gqa_not-a-key"]
    bodies = []
    for secret in secrets:
        headers = {"Authorization": f"Bearer {secret}"}
        bodies.append(client.get("/v1/ask?q=leave", headers=headers).text)
        bodies.append(client.get("/v1/documents/nope.md", headers=headers).text)
        bodies.append(client.post("/v1/index/rebuild", headers=headers).text)
        bodies.append(client.post("/mcp", json={}, headers=headers).text)
    bodies.append(client.get("/metrics", headers=team.bearer("admin")).text)
    text = "\n".join(bodies + [r.getMessage() for r in caplog.records])
    for secret in secrets:
        assert secret not in text
        assert hash_key(secret).split(":")[1] not in text
    audit = [json.loads(r.getMessage()) for r in caplog.records if r.name == "groundqa.audit"]
    asked = [a for a in audit if a["path"] == "/v1/ask"]
    assert [(a["key"], a["collections"], a["status"]) for a in asked] == [
        ("hr-team", ["hr"], 200),
        ("eng-team", ["eng"], 200),
        ("ops", "*", 200),
        (None, None, 401),
        (None, None, 401),
    ]
    build_id = read_pointer(team.settings.index_dir)
    assert all(a["build_id"] == build_id and a["passages"] >= 0 for a in asked[:3])


def test_open_mode_says_so_at_start(
    settings: Settings,
    client_for: Callable[[Settings], TestClient],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="groundqa")
    client_for(settings)
    assert any("access: no keys configured" in r.getMessage() for r in caplog.records)


def test_page_lists_the_keys_collections(team: Team, client: TestClient) -> None:
    """The page is served without a key; its selector is filled from /v1/collections."""
    page = client.get("/").text
    script = client.get("/static/app.js").text
    assert 'id="collection"' in page
    # What the selector does in a browser is tested in test_web; here, that it is wired up.
    assert '"/v1/collections"' in script and "body.collections = [collectionSelect.value]" in script
    for who in ("hr", "eng"):
        names = client.get("/v1/collections", headers=team.bearer(who)).json()["collections"]
        assert [c["name"] for c in names] == [who]


def test_simple_mode_keys_keep_working_beside_a_keys_file(
    team: Team, client_for: Callable[[Settings], TestClient]
) -> None:
    """GROUNDQA_API_KEYS see every collection; GROUNDQA_ADMIN_TOKEN administers."""
    settings = team.settings.model_copy(
        update={"api_keys": ["simple-key-1"], "admin_token": "admin-token-2"}
    )
    client = client_for(settings)
    simple = {"Authorization": "Bearer simple-key-1"}
    names = [c["name"] for c in client.get("/v1/collections", headers=simple).json()["collections"]]
    assert names == ["default", "eng", "hr"]
    assert client.get("/metrics", headers=simple).status_code == 403
    token = {"Authorization": "Bearer admin-token-2"}
    assert client.get("/metrics", headers=token).status_code == 200


def test_keys_add_validates_and_prints_the_key_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "conf" / "keys.toml"
    assert main(["keys", "add", "bad name", "--collections", "hr", "--file", str(path)]) == 2
    assert "invalid key name 'bad name'" in capsys.readouterr().err
    assert main(["keys", "add", "x", "--collections", ",", "--file", str(path)]) == 2
    assert main(["keys", "add", "x", "--collections", "hr", "--file", str(path)]) == 0
    out = capsys.readouterr()
    key = out.out.strip()
    assert key.startswith("gqa_") and len(key) > 40
    assert "shown only now" in out.err and key not in out.err
    entry = read_keys(path)["x"]
    assert entry.hash == hash_key(key) and entry.expires is None
    with pytest.raises(SystemExit) as usage:  # argparse: usage error, exit status 2
        main(["keys", "add", "y", "--collections", "hr", "--expires", "2027-01-32"])
    assert usage.value.code == 2
    assert "not a date (YYYY-MM-DD): '2027-01-32'" in capsys.readouterr().err


def test_keys_command_needs_a_file(
    no_groundqa_env: None,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)  # no .env here
    assert main(["keys", "list"]) == 2
    assert capsys.readouterr().err == (
        "error: no keys file: set GROUNDQA_KEYS_FILE or pass --file PATH\n"
    )


def test_a_build_of_the_previous_format_is_rebuilt_in_full(
    team: Team, builder: Builder, client_for: Callable[[Settings], TestClient]
) -> None:
    """Builds from before collections (format 1) are refused with the rebuild hint, and the
    next `groundqa index` rebuilds everything with collections recorded."""
    build_id = read_pointer(team.settings.index_dir)
    assert build_id is not None
    manifest = build_path(team.settings.index_dir, build_id) / "manifest.json"
    data = json.loads(manifest.read_text())
    data["format_version"] = 1
    manifest.write_text(json.dumps(data))
    client = client_for(team.settings)
    r = client.get("/v1/documents", headers=team.bearer("hr"))
    assert r.status_code == 503 and "run `groundqa index`" in r.json()["detail"]
    report = builder.build()
    assert report.full_rebuild_reason is not None
    assert "unsupported format" in report.full_rebuild_reason
    rebuilt = read_pointer(team.settings.index_dir)
    assert rebuilt is not None and rebuilt != build_id
    files = read_manifest(build_path(team.settings.index_dir, rebuilt)).files
    assert files[f"hr/{HR_CANARY}-leave-policy.md"].collection == "hr"
