"""Fuzz the HTTP API from its own OpenAPI schema with schemathesis: whatever the input, valid or
not, no 5xx, and every response (status, headers, body) conforms to the schema."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.python import asgi
from schemathesis.schemas import BaseSchema
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from service.api import create_app
from service.config import Settings
from service.indexing import Builder
from tests.conftest import FakeEmbedder, WriteSeed

ADMIN = "admin-token-5f0d"
# Examples per operation and mode; raise it for a deeper run: GROUNDQA_FUZZ_EXAMPLES=500.
EXAMPLES = int(os.environ.get("GROUNDQA_FUZZ_EXAMPLES", "25"))

# No 5xx; status, content type, headers and body as documented; invalid input refused (4xx).
# Not positive_data_acceptance: some rules (a non-blank question, a user message in a chat)
# are not expressible in the schema, and their 4xx answers are documented.
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]

# Invalid input may also be refused as too large (413): a long invalid string passes the body
# limit before validation sees it. Statuses are strings, as in schemathesis' own config file.
REJECTED = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429"]
CONFIG = SchemathesisConfig.from_dict(
    {"checks": {"negative_data_rejection": {"expected-statuses": REJECTED}}}
)

# The operations, read from the schema of an app that is never started (nothing is loaded).
_PATHS = create_app(Settings(_env_file=None)).openapi()["paths"]
OPERATIONS = sorted((method.upper(), path) for path, item in _PATHS.items() for method in item)
# Invalid input can only be generated for operations with query parameters or a body.
WITH_INPUT = {
    (method.upper(), path)
    for path, item in _PATHS.items()
    for method, spec in item.items()
    if "requestBody" in spec or any(p["in"] == "query" for p in spec.get("parameters", []))
}
# A query string carries only text: `sources=0.5` is a valid one-element list of strings, so
# schemathesis' "invalid" values for query parameters are not invalid to the server.
QUERY_CHECKS = [check for check in CHECKS if check is not negative_data_rejection]
CASES = [(m, p, GenerationMode.POSITIVE) for m, p in OPERATIONS] + [
    (m, p, GenerationMode.NEGATIVE) for m, p in OPERATIONS if (m, p) in WITH_INPUT
]


@pytest.fixture
def api(
    settings: Settings, builder: Builder, write_seed: WriteSeed, fake_embedder: FakeEmbedder
) -> Iterator[BaseSchema]:
    """The schema of an app over a small built index, with index administration enabled."""
    write_seed("troops.txt", "North Korea sent ten thousand troops to Russia in October.\n")
    write_seed("notes/cats.md", "# Cats\n\nCats are small carnivorous mammals kept as pets.\n")
    builder.build()
    # schemathesis' ASGI client names its host "testserver": allowed like a configured name.
    fuzzed = settings.model_copy(update={"admin_token": ADMIN, "allowed_hosts": ["testserver"]})
    app = create_app(fuzzed, embedder=fake_embedder)
    # schemathesis runs the app's lifespan on its first request and keeps it until told.
    yield schemathesis.openapi.from_asgi("/openapi.json", app, config=CONFIG)
    asgi.shutdown_lifespans()


def test_schema_lists_the_api() -> None:
    assert ("POST", "/v1/ask") in OPERATIONS
    assert ("GET", "/v1/documents/{source}") in OPERATIONS
    assert len(OPERATIONS) >= 9


@pytest.mark.parametrize(("method", "path", "mode"), CASES)
def test_operation_conforms_to_the_schema(
    api: BaseSchema, method: str, path: str, mode: GenerationMode
) -> None:
    operation = api[path][method]
    checks = QUERY_CHECKS if method == "GET" else CHECKS

    @given(case=operation.as_strategy(generation_mode=mode))
    @hypothesis_settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    def check(case: Case[Any]) -> None:
        case.call_and_validate(headers={"Authorization": f"Bearer {ADMIN}"}, checks=checks)

    check()
