"""Rebuilds inside a running server: `serve --watch` rebuilds when a seed changes and the served
answers follow, without a restart."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from fastapi.testclient import TestClient

from service import cli
from service.api.state import AppState
from service.config import Settings
from service.indexing import Builder
from tests.conftest import WriteSeed

ClientFor = Callable[[Settings], TestClient]
QUESTION = "What colour was the sky over the harbour?"


def sky(colour: str) -> str:
    return f"Harbour log.\n\nThe sky over the harbour was {colour} all morning.\n"


def top_passage(client: TestClient) -> str:
    r = client.get("/v1/ask", params={"q": QUESTION, "top_k": 1})
    assert r.status_code == 200, r.text
    text: str = r.json()["passages"][0]["text"]
    return text


def test_serve_watch_flag_turns_watching_on(no_groundqa_env: None) -> None:
    args = cli.build_parser().parse_args(["serve", "--watch"])
    assert cli._settings(args).watch is True
    assert cli._settings(cli.build_parser().parse_args(["serve"])).watch is False


def test_watched_seed_edit_changes_served_answers_without_restart(
    settings: Settings, builder: Builder, write_seed: WriteSeed, client_for: ClientFor
) -> None:
    write_seed("log.txt", sky("blue"))
    first = builder.build().build_id
    client = client_for(settings.model_copy(update={"watch": True, "watch_debounce_ms": 50}))
    assert "blue" in top_passage(client)

    state = client.app.state.groundqa  # type: ignore[attr-defined]
    assert isinstance(state, AppState) and state.rebuilds is not None
    rebuilt = threading.Event()
    state.rebuilds.on_finish.append(lambda job: rebuilt.set())

    # The watcher may start listening a moment after startup: an edit it missed is written
    # again (one more change event) until a rebuild finishes, within a deadline.
    deadline = time.monotonic() + 30
    while not rebuilt.is_set():
        assert time.monotonic() < deadline, "no rebuild after editing a watched seed"
        write_seed("log.txt", sky("red"))
        rebuilt.wait(timeout=1.0)
    assert "red" in top_passage(client)
    r = client.get("/readyz")
    assert r.status_code == 200 and r.json()["build_id"] != first
