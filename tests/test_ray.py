"""The Ray engine builds exactly what the local engine builds (chunk ids, manifest, vectors,
top-10 results), incrementally, and fails with an install hint when Ray is missing.

The Ray tests start one local cluster (2 CPUs) for the module; they are marked `ray` and skipped
when Ray is not installed (`pip install 'groundqa[ray]'`)."""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from service import cli
from service.builds import IndexHolder
from service.chunking import embedding_text
from service.config import Settings
from service.embedding import Embedder, Vectors, load_embedder
from service.errors import ModelLoadError
from service.evaluation import write_corpus
from service.indexing import CACHE_FILE, Builder, text_key
from service.metrics import BeirDataset
from service.models import Hit
from service.ray_engine import INSTALL_HINT, RayEngine, RayUnavailableError
from service.search import Searcher
from service.store import CHUNKS_DB, ChunkStore, EmbeddingCache, build_path, read_pointer
from tests.conftest import FakeEmbedder, WriteSeed

ROOT = Path(__file__).resolve().parent.parent
# Read from the shared evaluation data beside the repository, never copied into it.
SCIFACT = ROOT.parent / "shared" / "eval" / "scifact"
ABSTRACTS = 200
QUESTIONS = 20
VECTOR_TOLERANCE = 1e-6  # a text's vector is a function of the text, whatever the engine
# Build-specific manifest fields; everything else must be equal between engines.
PER_BUILD = {"build_id", "created_at"}

ray_test = pytest.mark.ray


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[None]:
    """A local 2-CPU Ray cluster shared by the module's Ray tests (engines join it)."""
    ray = pytest.importorskip("ray", reason=f"Ray is not installed: {INSTALL_HINT}")
    # Workers import tests.conftest (the fake embedder) whatever folder pytest started in.
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        logging_level=logging.WARNING,
        runtime_env={"env_vars": {"PYTHONPATH": path, "HF_HUB_OFFLINE": "1"}},
    )
    yield
    ray.shutdown()


class Spy:
    """Records every text an engine is asked to embed."""

    def __init__(self, engine: RayEngine) -> None:
        self.texts: list[str] = []
        self._embed = engine.embed
        engine.embed = self  # type: ignore[method-assign]

    def __call__(self, texts: Sequence[str]) -> Vectors:
        self.texts.extend(texts)
        return self._embed(texts)


def fake_factory(fake: FakeEmbedder) -> functools.partial[FakeEmbedder]:
    """How Ray actors load the fake embedder (pickled, class by reference)."""
    return functools.partial(FakeEmbedder, fake.tokenizer, fake.dim, fake.max_seq_length)


def chunk_rows(settings: Settings) -> list[Any]:
    """Every chunk of the published build, in row (= vector id) order."""
    folder = build_path(settings.index_dir, str(read_pointer(settings.index_dir)))
    store = ChunkStore(folder / CHUNKS_DB)
    return list(store.chunks(range(store.chunk_count)).values())


def shared_manifest(settings: Settings) -> dict[str, Any]:
    """The published manifest without its build-specific fields."""
    folder = build_path(settings.index_dir, str(read_pointer(settings.index_dir)))
    manifest = json.loads((folder / "manifest.json").read_text())
    return {k: v for k, v in manifest.items() if k not in PER_BUILD}


def all_vectors(settings: Settings, embedder: Embedder) -> Any:
    holder = IndexHolder(settings.index_dir, embedder)
    holder.refresh()
    index = holder.current.vectors.faiss
    return index.reconstruct_n(0, index.ntotal)


# --------------------------------------------------------------------- without Ray installed


def test_engine_ray_without_ray_is_one_line_with_the_install_command(
    no_groundqa_env: None,
    capsys: pytest.CaptureFixture[str],
    settings: Settings,
    write_seed: WriteSeed,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError

    def no_model(*args: Any, **kwargs: Any) -> Embedder:
        raise AssertionError("the model must not load when the engine cannot run")

    monkeypatch.setattr("service.embedding.embedder_for", no_model)
    write_seed("notes.txt", "Notes\n\nThe cafe serves espresso.\n")
    argv = ["index", "--seeds", str(settings.seeds_dir), "--index", str(settings.index_dir)]
    code = cli.main([*argv, "--engine", "ray", "--json"])
    out, err = capsys.readouterr()
    assert (code, out) == (2, "")
    assert err == (
        "error: --engine ray needs Ray, which is not installed: run "
        "`pip install 'groundqa[ray]'` (or use --engine local)\n"
    )
    assert not settings.index_dir.exists()


def test_ray_engine_without_ray_raises_the_domain_error(
    settings: Settings, fake_embedder: FakeEmbedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(RayUnavailableError) as info:
        RayEngine(settings, fake_embedder)
    assert INSTALL_HINT in str(info.value)


# ------------------------------------------------------------------------------- with Ray


def notes(version: int) -> str:
    return (
        f"Notes {version}\n\nThe library opens at nine in the morning. It closes at six.\n\n"
        f"The cafe on floor {version} serves espresso and green tea.\n"
    )


@ray_test
def test_ray_build_is_incremental_and_equals_the_local_build(
    ray_cluster: None,
    settings: Settings,
    tmp_path: Path,
    fake_embedder: FakeEmbedder,
    write_seed: WriteSeed,
) -> None:
    small = settings.model_copy(update={"chunk_tokens": 32})
    for i in range(6):
        write_seed(f"doc{i}.md", f"# Document {i}\n\n" + " ".join(notes(i).split("\n")[2:]) * 3)
    write_seed("notes.txt", notes(0))
    write_seed("empty.txt", " \n")  # parsed on a worker: skipped and rejected as locally
    engine = RayEngine(small, fake_embedder, factory=fake_factory(fake_embedder))
    spy = Spy(engine)
    ray_builder = Builder(small, fake_embedder, engine)

    first = ray_builder.build()
    chunks = chunk_rows(small)
    assert first.published and first.chunks == len(chunks) > 7
    assert sorted(spy.texts) == sorted({embedding_text(c) for c in chunks})
    assert first.skipped == [{"source": "empty.txt", "reason": "empty file"}]

    spy.texts.clear()
    write_seed("notes.txt", notes(0).replace("green tea", "black tea"))
    second = ray_builder.build()
    after = chunk_rows(small)
    new = {embedding_text(c) for c in after} - {embedding_text(c) for c in chunks}
    assert (second.modified, second.full_rebuild_reason) == (["notes.txt"], None)
    assert len(new) == 1 and spy.texts == sorted(new)  # only the edited chunk's text
    assert (second.chunks_embedded, second.chunks_reused) == (1, len(after) - 1)

    # The same seeds built by the local engine into another folder: the very same build.
    local = small.model_copy(update={"index_dir": tmp_path / "local-index"})
    report = Builder(local, FakeEmbedder(fake_embedder.tokenizer)).build()
    assert (report.chunks, report.skipped) == (second.chunks, second.skipped)
    assert chunk_rows(local) == after
    manifest = shared_manifest(local)
    ray_manifest = shared_manifest(small)
    assert ray_manifest["previous_build_id"] == first.build_id
    manifest.pop("previous_build_id"), ray_manifest.pop("previous_build_id")
    manifest.pop("rebuild_reason"), ray_manifest.pop("rebuild_reason")
    assert ray_manifest == manifest
    assert np.array_equal(all_vectors(small, fake_embedder), all_vectors(local, fake_embedder))


@ray_test
def test_actor_loading_another_model_fails_the_build_with_the_domain_error(
    ray_cluster: None, settings: Settings, fake_embedder: FakeEmbedder, write_seed: WriteSeed
) -> None:
    write_seed("notes.txt", notes(0))
    other = functools.partial(FakeEmbedder, fake_embedder.tokenizer, 32)  # fake-hash-32
    engine = RayEngine(settings, fake_embedder, factory=other)
    with pytest.raises(ModelLoadError) as info:
        Builder(settings, fake_embedder, engine).build()
    assert str(info.value) == (
        "a Ray worker loaded model fake-hash-32 (dimension 32) but the build uses fake-hash-64 "
        "(dimension 64); give every node the same model and encoder"
    )
    assert read_pointer(settings.index_dir) is None


@ray_test
def test_cli_engine_ray(
    ray_cluster: None,
    no_groundqa_env: None,
    capsys: pytest.CaptureFixture[str],
    settings: Settings,
    fake_embedder: FakeEmbedder,
    write_seed: WriteSeed,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("service.embedding.embedder_for", lambda *a, **k: fake_embedder)
    monkeypatch.setattr(
        "service.ray_engine.settings_factory", lambda s: fake_factory(fake_embedder)
    )
    write_seed("guide.md", "# Guide\n\nThe library opens at nine in the morning.\n")
    write_seed("sub/notes.txt", "Notes\n\nThe cafe serves espresso and green tea.\n")
    argv = ["index", "--seeds", str(settings.seeds_dir), "--index", str(settings.index_dir)]
    code = cli.main([*argv, "--engine", "ray", "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err  # (Ray itself may log warnings on stderr)
    report = json.loads(out)
    assert report["build_id"] == read_pointer(settings.index_dir)
    assert (report["files_indexed"], report["chunks"], report["chunks_embedded"]) == (2, 2, 2)
    assert (report["published"], report["full_rebuild_reason"]) == (True, "no published build")


# ------------------------------------------------------- the real model on SciFact abstracts


def scifact_seeds(seeds: Path, count: int) -> None:
    """The first `count` SciFact abstracts as seed files (title line, blank line, text)."""
    corpus: dict[str, tuple[str, str]] = {}
    with (SCIFACT / "corpus.jsonl").open(encoding="utf-8") as lines:
        for line in lines:
            row = json.loads(line)
            corpus[str(row["_id"])] = (str(row.get("title") or ""), str(row.get("text") or ""))
            if len(corpus) == count:
                break
    write_corpus(BeirDataset(corpus=corpus, queries={}, qrels={}, answers={}), seeds)


def ranking(hits: list[Hit]) -> list[str]:
    """The chunk ids of hits, best first."""
    return [h.chunk.chunk_id for h in hits]


def scifact_questions(count: int) -> list[str]:
    with (SCIFACT / "queries.jsonl").open(encoding="utf-8") as lines:
        return [str(json.loads(line)["text"]) for _, line in zip(range(count), lines, strict=False)]


@ray_test
@pytest.mark.skipif(
    not (SCIFACT / "corpus.jsonl").is_file(),
    reason=f"SciFact not found at {SCIFACT} (the shared evaluation data beside the repository)",
)
@pytest.mark.parametrize("encoder", ["onnx-int8", "onnx"])
def test_ray_engine_matches_local_engine_on_scifact(
    ray_cluster: None, tmp_path: Path, seeds: Path, onnx_cache: Path, encoder: str
) -> None:
    """Real model, the default int8 and the float ONNX encoders (their export shared with the
    e2e tests of the session)."""
    scifact_seeds(seeds, ABSTRACTS)
    base = Settings(_env_file=None, seeds_dir=seeds, encoder=encoder)
    cache = onnx_cache
    embedder = load_embedder(base.model_path, encoder=encoder, cache_dir=cache, workers=0)
    local = base.model_copy(update={"index_dir": tmp_path / "local"})
    distributed = base.model_copy(update={"index_dir": tmp_path / "ray"})
    factory = functools.partial(
        load_embedder, base.model_path, encoder=encoder, cache_dir=cache, threads=1, workers=1
    )

    local_report = Builder(local, embedder).build()
    engine = RayEngine(distributed, embedder, factory=factory)
    spy = Spy(engine)
    ray_report = Builder(distributed, embedder, engine).build()

    assert ray_report.files_indexed == local_report.files_indexed == ABSTRACTS
    assert ray_report.chunks == local_report.chunks == ray_report.chunks_embedded
    assert len(spy.texts) == ray_report.chunks_embedded  # every text went through the actors
    rows = chunk_rows(distributed)
    assert [c.chunk_id for c in rows] == [c.chunk_id for c in chunk_rows(local)]
    assert rows == chunk_rows(local)  # citations: offsets, lines, titles, context
    assert shared_manifest(distributed) == shared_manifest(local)

    # Every chunk's vector as encoded (float32, in each build's embedding cache): the driver's
    # cache holds them after a Ray build, as after a local one. Int8 encodes each text alone,
    # so they are bit-identical; float ONNX pads texts into batches, which differ between the
    # engines, so they agree within float noise.
    texts = [embedding_text(c) for c in rows]
    keys = [text_key(t) for t in texts]
    encoded = [
        EmbeddingCache(s.index_dir / CACHE_FILE).get(embedder.model_id, keys, embedder.dim)
        for s in (distributed, local)
    ]
    assert len(encoded[0]) == len(encoded[1]) == len(set(texts))
    ray_encoded, local_encoded = (np.stack([e[k] for k in keys]) for e in encoded)
    tolerance = 0.0 if encoder == "onnx-int8" else VECTOR_TOLERANCE
    assert float(np.abs(ray_encoded - local_encoded).max()) <= tolerance
    # As stored (float16): where float noise crosses a float16 rounding boundary, one step.
    vectors, local_vectors = all_vectors(distributed, embedder), all_vectors(local, embedder)
    step = np.spacing(np.maximum(np.abs(vectors), np.abs(local_vectors)).astype(np.float16))
    assert np.all(np.abs(vectors - local_vectors) <= (step if tolerance else 0.0))

    searchers = []
    for s in (local, distributed):
        holder = IndexHolder(s.index_dir, embedder)
        holder.refresh()
        searchers.append(Searcher(s, embedder, holder))
    for question in scifact_questions(QUESTIONS):
        for mode in ("hybrid", "dense"):
            local_hits, ray_hits = (s.search(question, top_k=10, mode=mode).hits for s in searchers)
            assert ranking(ray_hits) == ranking(local_hits), (question, mode)
            scores = [h.score for h in ray_hits]
            np.testing.assert_allclose(scores, [h.score for h in local_hits], atol=1e-6, rtol=0)
