"""Swapping the served build under load: no request fails, every answer names a published build,
and a request keeps answering from the build it started with even after that build is pruned."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.answering import ask
from service.api.state import AppState
from service.builds import IndexHolder
from service.config import Settings
from service.indexing import Builder
from service.search import Searcher
from service.store import read_pointer
from tests.conftest import FakeEmbedder, WriteSeed

ClientFor = Callable[[Settings], TestClient]
TOKEN = "swap-admin-token"
QUESTIONS = [
    "Which version of the release notes is this?",
    "What colour is the sky in the report?",
    "How many moons were counted?",
]


def report_text(version: int) -> str:
    return (
        f"Release notes, version {version}.\n\n"
        f"The sky in report {version} was {['blue', 'grey', 'red', 'green'][version % 4]}.\n"
        f"Observers counted {version + 2} moons during revision {version}.\n"
    )


def app_state(client: TestClient) -> AppState:
    state = client.app.state.groundqa  # type: ignore[attr-defined]
    assert isinstance(state, AppState)
    return state


def wait_for(condition: Callable[[], bool], seconds: float, what: str) -> None:
    """Poll condition until it holds; fail after seconds."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def test_rebuilds_under_continuous_asks(
    settings: Settings, builder: Builder, write_seed: WriteSeed, client_for: ClientFor
) -> None:
    write_seed("report.txt", report_text(0))
    write_seed("other/static.md", "# Static\n\nThis file never changes during the test.\n")
    published = {str(builder.build().build_id)}
    client = client_for(settings.model_copy(update={"admin_token": TOKEN}))
    headers = {"Authorization": f"Bearer {TOKEN}"}

    seen: list[tuple[int, str | None, str]] = []
    lock = threading.Lock()
    stop = threading.Event()

    def asker() -> None:
        i = 0
        while not stop.is_set():
            r = client.post("/v1/ask", json={"question": QUESTIONS[i % len(QUESTIONS)]})
            build = r.json().get("index", {}).get("build_id") if r.status_code == 200 else None
            with lock:
                seen.append((r.status_code, build, "" if r.status_code == 200 else r.text))
            i += 1

    def served(build_id: str) -> Callable[[], bool]:
        def check() -> bool:
            with lock:
                return any(b == build_id for _, b, _ in seen[-20:])

        return check

    thread = threading.Thread(target=asker, name="asker")
    thread.start()
    try:
        wait_for(lambda: len(seen) >= 5, 30, "the first answers")
        for version in range(1, 6):
            write_seed("report.txt", report_text(version))
            r = client.post("/v1/index/rebuild", headers=headers)
            assert r.status_code == 202, r.text
            job = app_state(client).rebuilds.jobs[r.json()["job_id"]]  # type: ignore[union-attr]
            assert job.done.wait(30)
            assert job.state == "succeeded", job.error
            assert job.result is not None and job.result["published"] is True
            new_id = str(job.result["build_id"])
            published.add(new_id)
            wait_for(served(new_id), 30, f"an answer from build {new_id}")
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive()

    failures = [(status, text) for status, _, text in seen if status != 200]
    assert failures == []
    assert {b for _, b, _ in seen} == published
    assert len(published) == 6
    assert read_pointer(settings.index_dir) in published


def test_request_in_flight_survives_swap_and_prune(
    settings: Settings,
    builder: Builder,
    write_seed: WriteSeed,
    client_for: ClientFor,
    fake_embedder: FakeEmbedder,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    write_seed("report.txt", report_text(0))
    old_id = str(builder.build().build_id)
    question = "How many moons did observers count?"
    entered, release = threading.Event(), threading.Event()
    embed = fake_embedder.embed

    def gated(texts: Sequence[str], *, progress: bool = False) -> Any:
        if question in texts and not release.is_set():
            entered.set()  # the request has read the served build and is now embedding
            assert release.wait(30)
        return embed(texts, progress=progress)

    monkeypatch.setattr(fake_embedder, "embed", gated)  # before the app binds the method
    client = client_for(settings)
    state = app_state(client)
    manager = state.rebuilds
    assert manager is not None
    response: dict[str, Any] = {}

    def request() -> None:
        r = client.post("/v1/ask", json={"question": question, "top_k": 3})
        response.update(status=r.status_code, body=r.json())

    thread = threading.Thread(target=request, name="in-flight")
    thread.start()
    try:
        assert entered.wait(30)
        for version in (1, 2, 3):
            write_seed("report.txt", report_text(version))
            job = manager.run()
            assert job.state == "succeeded", job.error
        assert state.holder is not None and state.holder.current.build_id != old_id
        assert not (settings.index_dir / "builds" / old_id).exists()  # pruned
    finally:
        release.set()
        thread.join(30)

    assert response["status"] == 200, response
    body = response["body"]
    assert body["index"]["build_id"] == old_id
    assert [p["text"] for p in body["passages"]] == [report_text(0).strip()]
    r = client.post("/v1/ask", json={"question": question})
    assert r.json()["index"]["build_id"] == read_pointer(settings.index_dir)


def test_loaded_index_keeps_working_after_its_build_is_pruned(
    settings: Settings, builder: Builder, write_seed: WriteSeed, fake_embedder: FakeEmbedder
) -> None:
    write_seed("report.txt", report_text(0))
    builder.build()
    holder = IndexHolder(settings.index_dir, fake_embedder)
    holder.refresh()
    held = holder.current
    for version in (1, 2, 3):
        write_seed("report.txt", report_text(version))
        builder.build()
    assert not held.folder.exists()

    outcome: dict[str, Any] = {}

    def use() -> None:  # a thread that never touched the held build before
        try:
            result = ask(Searcher(settings, fake_embedder, holder), "moons counted", top_k=3)
            outcome["build_id"] = result.build_id
            outcome["texts"] = [p.text for p in result.passages]
            outcome["document"] = held.chunks.text("report.txt")
            outcome["chunks"] = [c.text for c in held.chunks.iter_chunks("report.txt")]
        except Exception as exc:  # reported below with its message
            outcome["error"] = repr(exc)

    thread = threading.Thread(target=use)
    thread.start()
    thread.join(30)
    assert "error" not in outcome, outcome["error"]
    assert outcome["build_id"] == held.build_id
    assert outcome["document"] == report_text(0)
    assert outcome["texts"] == outcome["chunks"] == [report_text(0).strip()]
