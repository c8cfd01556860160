"""Ray engine: a build's parsing, chunking and embedding spread over a Ray cluster (Ray Data).

Seed files are read and chunked in parallel tasks, each given the build's own chunker, so chunk
ids, boundaries and context are exactly the local engine's. Chunk texts are embedded by a pool
of actors that each load the model once. Everything else stays with the driver (the
`groundqa index` process): the plan, embedding-cache lookups, writing, validating, publishing
and pruning the build (service.indexing.Builder), so a Ray build is the same build.

Every node must see the seeds folder (and the model) at the same path as the driver: a shared
volume. Ray is an optional extra: `pip install 'groundqa[ray]'`.
"""

from __future__ import annotations

import functools
import logging
import math
import pickle
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from service import errors
from service.chunking import Chunker
from service.config import Settings, bundled_model_path
from service.embedding import Embedder, Vectors, load_embedder
from service.errors import GroundQAError, ModelLoadError
from service.indexing import chunker_for, parse_limits, reuse
from service.ingest import SeedFile, documents_of, parse_options, parse_seed
from service.models import Chunk, Document, Skipped
from service.parsers.base import ParseError, ParseLimits, ParseOptions

INSTALL_HINT = "pip install 'groundqa[ray]'"
FILES_PER_TASK = 32  # seed files parsed and chunked by one task
# Chunk texts per actor call: small blocks, at most two queued per actor, so an actor that
# loads its model late still gets its share.
TEXTS_PER_BATCH = 64
# Texts per Ray Data run (one commit to the embedding cache each): every run starts its actors,
# which load the model, so runs are far larger than the local engine's slices.
EMBED_SLICE = 16_384

EmbedderFactory = Callable[[], Embedder]
Batch = dict[str, npt.NDArray[Any]]


class RayUnavailableError(GroundQAError):
    """`--engine ray` without Ray installed, or with a cluster that cannot be reached."""


def require_ray() -> Any:
    """The ray module with Ray Data; RayUnavailableError saying how to install it."""
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise RayUnavailableError(
            f"--engine ray needs Ray, which is not installed: run `{INSTALL_HINT}` "
            "(or use --engine local)"
        ) from exc
    return ray


def _load_model(model: str | None, **options: Any) -> Embedder:
    """The encoder on a worker; the bundled model is looked up in the worker's own install."""
    return load_embedder(model or bundled_model_path(), **options)


def settings_factory(settings: Settings) -> EmbedderFactory:
    """How an actor loads the encoder the settings configure: one core each, as Ray gives it
    one CPU; the ONNX export is read from GROUNDQA_CACHE_DIR (exported there when missing)."""
    return functools.partial(
        _load_model,
        settings.model,
        threads=1,
        workers=1,
        batch_size=settings.batch_size,
        encoder=settings.encoder,
        cache_dir=settings.cache_dir.resolve(),
    )


def _parse_and_chunk(
    batch: Batch, chunker: Chunker, options: ParseOptions, limits: ParseLimits
) -> Batch:
    """Ray task: parse a batch of seed files and chunk those marked; pickled outcomes."""
    payloads = []
    rows = zip(
        batch["source"],
        batch["path"],
        batch["sha256"],
        batch["size"],
        batch["rechunk"],
        strict=True,
    )
    for source, path, sha256, size, rechunk in rows:
        seed = SeedFile(str(source), Path(str(path)), str(sha256), int(size))
        try:
            parsed = parse_seed(seed, options, limits)
        except (ParseError, OSError) as exc:
            payloads.append(pickle.dumps(("skipped", str(exc))))
            continue
        docs = documents_of(parsed)  # the file, then its attachments
        chunks = [chunker.chunk(d) for d in docs] if rechunk else None
        payloads.append(pickle.dumps(("parsed", docs, chunks)))
    return {"source": batch["source"], "payload": np.array(payloads, dtype=object)}


# The last line of a worker's traceback, as Ray's errors carry it.
_WORKER_ERROR = re.compile(r"^service\.errors\.(\w+): (.+)$", re.MULTILINE)


def _domain_error(exc: Exception) -> GroundQAError | None:
    """The groundqa error a Ray worker raised (e.g. an actor's ModelLoadError), rebuilt from
    the Ray error carrying it, so the CLI prints its one line; None for any other failure."""
    found = _WORKER_ERROR.findall(str(exc))
    if not found:
        return None
    name, message = found[-1]
    kind = getattr(errors, name, None)
    if not (isinstance(kind, type) and issubclass(kind, GroundQAError)):
        kind = GroundQAError
    return kind(message)


def _batches(dataset: Any) -> Iterator[Batch]:
    """The output blocks of a dataset, running it; worker domain errors come back as such."""
    try:
        yield from dataset.iter_batches(batch_size=None, batch_format="numpy")
    except Exception as exc:  # Ray wraps what workers raise in its own error types
        domain = _domain_error(exc)
        if domain is None:
            raise
        raise domain from exc


class _EmbedActor:
    """Ray Data actor: loads the encoder once, then embeds batches of texts."""

    def __init__(self, factory: EmbedderFactory, model_id: str, dim: int) -> None:
        self.embedder = factory()
        if (self.embedder.model_id, self.embedder.dim) != (model_id, dim):
            raise ModelLoadError(
                f"a Ray worker loaded model {self.embedder.model_id} (dimension "
                f"{self.embedder.dim}) but the build uses {model_id} (dimension {dim}); "
                "give every node the same model and encoder"
            )

    def __call__(self, batch: Batch) -> Batch:
        vectors = self.embedder.embed([str(t) for t in batch["text"]])
        return {"i": batch["i"], "vector": vectors}


class RayEngine:
    """Engine (service.indexing) that parses and chunks in Ray tasks and embeds in a pool of
    Ray actors. Without an address it starts a local cluster of `ray_cpus` CPUs, on first use."""

    slice_size = EMBED_SLICE

    def __init__(
        self,
        settings: Settings,
        embedder: Embedder,
        *,
        address: str | None = None,
        actors: int | None = None,
        factory: EmbedderFactory | None = None,
    ) -> None:
        require_ray()
        self.settings = settings
        self.embedder = embedder
        self.chunker = chunker_for(settings, embedder)
        self.address = address or settings.ray_address
        self.actors = actors or settings.ray_actors
        self.factory = factory or settings_factory(settings)
        self._started = False

    def _ray(self) -> Any:
        """The ray module, connected to the cluster (started locally without an address)."""
        ray = require_ray()
        if not ray.is_initialized():
            try:
                if self.address:
                    ray.init(address=self.address, logging_level=logging.WARNING)
                else:
                    ray.init(
                        num_cpus=self.settings.ray_cpus,
                        include_dashboard=False,
                        logging_level=logging.WARNING,
                    )
            except (ConnectionError, RuntimeError, ValueError) as exc:
                where = f"at {self.address}" if self.address else "locally"
                raise RayUnavailableError(
                    f"cannot start or reach the Ray cluster {where}: {exc}; check --ray-address"
                ) from exc
            self._started = True
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # the builder shows its own progress
        if hasattr(context, "print_on_execution_start"):
            context.print_on_execution_start = False
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)
        return ray

    def chunk(
        self, seeds: Sequence[SeedFile], reusable: dict[str, list[Chunk]]
    ) -> tuple[list[Document], dict[str, list[Chunk]], list[Skipped]]:
        """Parse every seed and chunk those without reusable chunks, in parallel tasks."""
        if not seeds:
            return [], {}, []
        ray = self._ray()
        rows = [
            {
                "source": s.source,
                "path": str(s.path),
                "sha256": s.sha256,
                "size": s.size,
                "rechunk": not reusable.get(s.source),
            }
            for s in seeds
        ]
        dataset = ray.data.from_items(
            rows, override_num_blocks=math.ceil(len(rows) / FILES_PER_TASK)
        ).map_batches(
            _parse_and_chunk,
            fn_kwargs={
                "chunker": self.chunker,
                "options": parse_options(self.settings),
                "limits": parse_limits(self.settings),
            },
            batch_size=FILES_PER_TASK,
            batch_format="numpy",
            num_cpus=1,
        )
        outcomes: dict[str, tuple[Any, ...]] = {}
        for batch in _batches(dataset):
            for source, payload in zip(batch["source"], batch["payload"], strict=True):
                outcomes[str(source)] = pickle.loads(payload)
        documents: list[Document] = []
        chunks_by_source: dict[str, list[Chunk]] = {}
        skipped: list[Skipped] = []
        for seed in seeds:  # in seed order, whatever order the tasks finished in
            outcome = outcomes[seed.source]
            if outcome[0] == "skipped":
                skipped.append(Skipped(seed.source, outcome[1]))
                continue
            _, docs, chunks = outcome
            for i, doc in enumerate(docs):
                documents.append(doc)
                chunks_by_source[doc.source] = (
                    chunks[i]
                    if chunks is not None
                    else reuse(reusable.get(doc.source), doc) or self.chunker.chunk(doc)
                )
        return documents, chunks_by_source, skipped

    def embed(self, texts: Sequence[str]) -> Vectors:
        """Vectors of texts, in order, from the actor pool."""
        dim = self.embedder.dim
        if not texts:
            return np.zeros((0, dim), dtype=np.float32)
        ray = self._ray()
        batches = math.ceil(len(texts) / TEXTS_PER_BATCH)
        dataset = ray.data.from_items(
            [{"i": i, "text": t} for i, t in enumerate(texts)], override_num_blocks=batches
        ).map_batches(
            _EmbedActor,
            fn_constructor_kwargs={
                "factory": self.factory,
                "model_id": self.embedder.model_id,
                "dim": dim,
            },
            compute=ray.data.ActorPoolStrategy(
                size=max(1, min(self.actors, batches)), max_tasks_in_flight_per_actor=2
            ),
            batch_size=TEXTS_PER_BATCH,
            batch_format="numpy",
            num_cpus=1,
        )
        out = np.empty((len(texts), dim), dtype=np.float32)
        done = np.zeros(len(texts), dtype=bool)
        for batch in _batches(dataset):
            out[batch["i"]] = batch["vector"]
            done[batch["i"]] = True
        if not done.all():
            raise GroundQAError(
                f"the Ray engine returned {int(done.sum())} of {len(texts)} vectors"
            )
        return out

    def close(self) -> None:
        """Disconnect from the cluster this engine joined; a local one it started stops."""
        if self._started:
            require_ray().shutdown()
            self._started = False
