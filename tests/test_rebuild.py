"""Rebuilds inside a running server: `serve --watch` rebuilds when a seed changes and the served
answers follow, without a restart."""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service import cli
from service.api.state import AppState
from service.builds import IndexHolder
from service.config import RebuildPriority, Settings
from service.embedding import Embedder, Vectors, rebuild_embedder
from service.embedding.background import (
    LOWEST_PRIORITY,
    CallerThreadEmbedder,
    lower_thread_priority,
)
from service.errors import ModelLoadError
from service.indexing import Builder, BuildReport
from service.rebuild import RebuildManager
from tests.conftest import FakeEmbedder, WriteSeed

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


# ------------------------------------------------------------------ rebuilds yield the cores


def thread_niceness() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


class NicenessSpy:
    """A builder stand-in recording the niceness of the thread that runs the build."""

    def __init__(self, builder: Builder) -> None:
        self.builder = builder
        self.niceness: list[int] = []

    def build(self, **kwargs: Any) -> BuildReport:
        self.niceness.append(thread_niceness())
        return self.builder.build(**kwargs)


linux_only = pytest.mark.skipif(sys.platform != "linux", reason="per-thread niceness is Linux's")


@linux_only
@pytest.mark.parametrize(("priority", "lowered"), [("low", True), ("normal", False)])
def test_a_rebuild_in_the_server_runs_at_the_lowest_priority(
    settings: Settings,
    builder: Builder,
    write_seed: WriteSeed,
    priority: RebuildPriority,
    lowered: bool,
) -> None:
    write_seed("log.txt", sky("blue"))
    configured = settings.model_copy(update={"rebuild_priority": priority})
    spy = NicenessSpy(builder)
    holder = IndexHolder(configured.index_dir, builder.embedder)
    manager = RebuildManager(configured, cast(Builder, spy), holder)
    before = thread_niceness()

    job = manager.run()

    assert job.state == "succeeded", job.error
    assert spy.niceness == [LOWEST_PRIORITY if lowered else before]
    assert thread_niceness() == before  # the serving threads keep theirs


@linux_only
def test_lowering_a_thread_leaves_the_others_alone() -> None:
    seen: list[int] = []

    def lowered() -> None:
        assert lower_thread_priority()
        seen.append(thread_niceness())

    before = thread_niceness()
    worker = threading.Thread(target=lowered)
    worker.start()
    worker.join()
    assert (seen, thread_niceness()) == ([LOWEST_PRIORITY], before)


class ThreadRecorder:
    """An inner encoder recording the thread of each call."""

    def __init__(self, serving: FakeEmbedder, model_id: str | None = None) -> None:
        self.serving = serving
        self.model_id = model_id or serving.model_id
        self.threads: list[int] = []

    def embed(self, texts: Sequence[str], *, progress: bool = False) -> Vectors:
        self.threads.append(threading.get_ident())
        return self.serving.embed(texts)


def test_the_rebuild_encoder_loads_once_on_first_use_and_runs_on_the_caller(
    fake_embedder: FakeEmbedder,
) -> None:
    inner = ThreadRecorder(fake_embedder)
    loads: list[int] = []

    def load() -> Embedder:
        loads.append(1)
        return cast(Embedder, inner)

    background = CallerThreadEmbedder(fake_embedder, load)
    assert (background.model_id, background.dim) == (fake_embedder.model_id, fake_embedder.dim)
    assert loads == []  # nothing loads with the server: only a rebuild pays for it
    vectors = background.embed(["one", "two"])
    background.embed(["three"])
    assert loads == [1] and inner.threads == [threading.get_ident()] * 2
    np.testing.assert_array_equal(vectors, fake_embedder.embed(["one", "two"]))


def test_a_rebuild_encoder_of_another_model_is_refused(fake_embedder: FakeEmbedder) -> None:
    other = ThreadRecorder(fake_embedder, model_id="another-model")
    background = CallerThreadEmbedder(fake_embedder, lambda: cast(Embedder, other))
    with pytest.raises(ModelLoadError, match="another-model"):
        background.embed(["one"])


def test_normal_priority_rebuilds_share_the_serving_encoder(
    settings: Settings, fake_embedder: FakeEmbedder
) -> None:
    normal = settings.model_copy(update={"rebuild_priority": "normal"})
    assert rebuild_embedder(normal, fake_embedder) is fake_embedder
    assert isinstance(rebuild_embedder(settings, fake_embedder), CallerThreadEmbedder)


def test_the_rebuild_encoder_gives_the_served_vectors(
    model_path: str, onnx_cache: Path, real_embedder: Embedder
) -> None:
    """Index rows embedded by a rebuild mix with the ones the served encoder embedded."""
    settings = Settings(_env_file=None, model=model_path, cache_dir=onnx_cache)
    texts = ["A US statement urged North Korea to cease.", "Harbour log. " * 60, "troops"]
    background = rebuild_embedder(settings, real_embedder)
    np.testing.assert_array_equal(background.embed(texts), real_embedder.embed(texts))
