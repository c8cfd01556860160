"""Under load nobody's answer changes and nobody's request fails: the same question gets the
same passages and scores alone and amid 16 other clients, and 16 normal clients see no error
while a 17th sends poison. Real bundled model, real uvicorn servers, real HTTP clients."""

from __future__ import annotations

import re
import shutil
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.poison import POISONS, SLOW_CLIENTS, run_poison
from service.api import create_app
from service.api.observability import METHODS
from service.api.server import header_deadline_protocol
from service.config import Settings
from service.embedding import Embedder, Tokenizer, Vectors
from service.indexing import Builder
from service.search import Searcher
from tests.conftest import serve

ROOT = Path(__file__).resolve().parent.parent
WAIT = 60.0  # seconds any one step may take before the test fails instead of hanging

DOCS = {
    "library.md": "# Library\n\nThe city library opens at nine in the morning and closes at six. "
    "Members may borrow twelve books at a time for three weeks.\n\nThe cafe on the second "
    "floor serves espresso, green tea and lemon cake.\n",
    "planets.txt": "Jupiter is the largest planet of the solar system. Saturn is known for its "
    "rings of ice and rock. Mars has two small moons, Phobos and Deimos.\n\nVenus is the "
    "hottest planet because its thick atmosphere traps heat.\n",
    "bread.md": "# Bread\n\nSourdough bread rises with wild yeast and lactic acid bacteria. The "
    "dough rests overnight in a cool place. A hot oven with steam gives it a crisp crust.\n",
    "vaccines.txt": "Vaccines train the immune system to recognise a pathogen without causing "
    "the disease. Most vaccines need two doses. Side effects are usually mild and short.\n",
}
QUESTIONS = (
    "How many North Korean troops were sent to Russia?",
    "When does the library open?",
    "Which planet is the largest?",
)
TOPICS = (
    "casualties in Kursk", "artillery shells", "borrowing books", "the cafe", "Saturn's rings",
    "Venus", "moons of Mars", "sourdough", "the crust", "vaccine doses", "side effects",
    "the immune system", "weapons payments", "the foreign ministry", "drone attacks",
    "a soldier's letter",
)  # fmt: skip


def other_questions(round_: int) -> list[str]:
    """16 questions no other round asks (the server caches question vectors)."""
    return [f"What do the sources say about {topic}? (round {round_})" for topic in TOPICS]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory, real_embedder: Embedder) -> Settings:
    """Settings over a real-model index of the bundled seed and four short documents."""
    root = tmp_path_factory.mktemp("load")
    seeds = root / "seeds"
    seeds.mkdir()
    for seed in (ROOT / "seeds").iterdir():
        shutil.copy(seed, seeds / seed.name)
    for name, text in DOCS.items():
        (seeds / name).write_text(text, encoding="utf-8")
    settings = Settings(
        _env_file=None, seeds_dir=seeds, index_dir=root / "index", cache_dir=root / "cache"
    )
    assert Builder(settings, real_embedder).build().published
    return settings


class HeldEmbedder:
    """The real embedder whose calls wait while `go` is clear (so concurrent questions pile up
    in the server's micro-batcher) and are recorded."""

    def __init__(self, inner: Embedder) -> None:
        self.inner = inner
        self.model_id: str = inner.model_id
        self.dim: int = inner.dim
        self.max_seq_length: int = inner.max_seq_length
        self.special_tokens: int = inner.special_tokens
        self.tokenizer: Tokenizer = inner.tokenizer
        self.go = threading.Event()
        self.go.set()
        self.calls: list[list[str]] = []
        self._lock = threading.Lock()

    def embed(self, texts: Sequence[str], *, progress: bool = False) -> Vectors:
        """The inner embedder's vectors, once `go` is set."""
        assert self.go.wait(WAIT), "the test never released the encoder"
        with self._lock:
            self.calls.append(list(texts))
        return self.inner.embed(texts, progress=progress)


class Arrivals:
    """Counts the calls reaching a searcher's micro-batcher; lets a test wait for a count."""

    def __init__(self, searcher: Searcher, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        self._cond = threading.Condition()
        encode = searcher._encode  # what every uncached question goes through

        def counted(texts: Sequence[str]) -> Vectors:
            with self._cond:
                self.count += 1
                self._cond.notify_all()
            return encode(texts)

        monkeypatch.setattr(searcher, "_encode", counted)

    def wait_for(self, count: int) -> None:
        """Return once `count` questions have arrived in all."""
        with self._cond:
            assert self._cond.wait_for(lambda: self.count >= count, WAIT), (self.count, count)


def ask(url: str, question: str) -> dict[str, Any]:
    """POST /v1/ask on a connection of its own; the body without its timing."""
    with httpx.Client(base_url=url, timeout=WAIT) as client:
        r = client.post("/v1/ask", json={"question": question, "top_k": 10})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    body.pop("took_ms")
    return body


@pytest.fixture(scope="module")
def alone_url(corpus: Settings, real_embedder: Embedder) -> Iterator[str]:
    """A server answering one question at a time."""
    with serve(create_app(corpus, embedder=real_embedder)) as url:
        yield url


def ask_amid(
    url: str, question: str, others: Sequence[str], held: HeldEmbedder, arrivals: Arrivals
) -> dict[str, dict[str, Any]]:
    """Every answer when `question` is asked while `others` are asked by clients of their
    own, all of them in the server's encoder at once."""
    got: dict[str, dict[str, Any]] = {}
    start = threading.Barrier(len(others))

    def client(text: str, wait: bool) -> None:
        if wait:
            start.wait(WAIT)
        got[text] = ask(url, text)

    held.go.clear()
    before = arrivals.count
    threads = [threading.Thread(target=client, args=(t, True)) for t in others]
    for thread in threads:
        thread.start()
    # The others are in the server: the first hold the encoder, the rest wait for it; the
    # question joins them, then the encoder runs the waiting ones in one shared call.
    arrivals.wait_for(before + len(others))
    threads.append(threading.Thread(target=client, args=(question, False)))
    threads[-1].start()
    arrivals.wait_for(before + len(others) + 1)
    held.go.set()
    for thread in threads:
        thread.join(WAIT)
    return got


def test_a_question_gets_the_same_passages_and_scores_alone_and_amid_16_clients(
    corpus: Settings, real_embedder: Embedder, alone_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every ask of the 17 reaches the encoder at once (the default 8 would queue the rest in
    # the server before they could share the encoder's calls).
    settings = corpus.model_copy(update={"ask_concurrency": 32})
    assert settings.micro_batch > 0  # micro-batching on, as served by default
    held = HeldEmbedder(real_embedder)
    app = create_app(settings, embedder=held)
    with serve(app) as url:
        searcher = app.state.groundqa.searcher
        assert isinstance(searcher, Searcher)
        arrivals = Arrivals(searcher, monkeypatch)
        for round_, question in enumerate(QUESTIONS):
            alone = ask(alone_url, question)
            others = other_questions(round_)
            got = ask_amid(url, question, others, held, arrivals)
            assert set(got) == {question, *others}
            shared = [call for call in held.calls if question in call]
            assert len(shared) == 1 and len(shared[0]) > 1, shared  # encoded with others
            assert got[question] == alone
            assert alone["passages"]  # every chunk of the small index, ranked


# The poisoning client's kinds and what each must get: a 4xx (or 200 for globs that are only
# long), never a 5xx or a dropped connection.
POISON_ANSWERS = {
    "chat lone surrogate": {"400"},
    "ask lone surrogate": {"422"},
    "ask NaN": {"422"},
    "chat Infinity": {"400"},
    "random method": {"405", "404"},
    "50 long globs": {"200"},
}
HTTP_ROUTES = {"/v1/ask", "/v1/chat/completions", "/metrics", "unmatched"}


def test_normal_clients_see_no_errors_while_a_client_sends_poison(
    corpus: Settings, real_embedder: Embedder
) -> None:
    app = create_app(corpus, embedder=real_embedder)
    with serve(app, http=header_deadline_protocol(0.5)) as url:
        runs = [
            run_poison(url, QUESTIONS, concurrency=16, seconds=seconds, baseline=False, seed=i)
            for i, seconds in enumerate((2.0, 1.0))
        ]
    for run in runs:
        assert (run.poisoned.errors, run.poisoned.first_error) == (0, None)
        assert run.poisoned.requests >= 16
        answers = {kind: set(got) for kind, got in run.poison.answers.items()}
        assert answers == {kind: answers.get(kind) for kind in POISONS}  # every kind was sent
        for kind, got in answers.items():
            assert got <= POISON_ANSWERS[kind], (kind, run.poison.answers[kind])
        assert run.poison.slow_cut >= 1  # slow headers are cut off
        assert run.poison.slow_opened - run.poison.slow_cut <= SLOW_CLIENTS  # (open at the end)
    labels = runs[0].metrics_after.http_label_sets
    for label in labels:
        method, route = re.search(r'method="([^"]*)".*route="([^"]*)"', label).groups()  # type: ignore[union-attr]
        assert method in METHODS | {"other"} and route in HTTP_ROUTES, label
    # More poison of the same kinds adds no series: the label sets are fixed.
    assert runs[1].metrics_after.http_label_sets == labels
    assert runs[1].metrics_after.series == runs[1].metrics_before.series
