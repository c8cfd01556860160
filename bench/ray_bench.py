"""Past one machine, measured: `python -m bench.ray_bench`.

1. Build throughput of the Ray engine (a local cluster of --cpus CPUs, --actors embedding
   actors) against the local engine, in the same run, on the first --docs SciFact abstracts
   (the real bundled model, ONNX encoder; each build into a fresh index, so nothing comes from
   the embedding cache). On one 2-core machine expect about 1x: Ray only pays off with more
   machines.
2. Memory of --workers processes serving one build's vectors: memory-mapped
   (vectors.VectorIndex.load, as the servers open them) against private copies (mmap off), on
   a synthetic flat index of --vectors x 384 float32. PSS from /proc/<pid>/smaps_rollup, read
   while all workers are alive, so shared pages are split between them.

Run it on an idle machine where possible; on a shared one, read the ratios.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SCIFACT = REPO.parent / "shared" / "eval" / "scifact"
DIM = 384
# A serving worker: load the vectors, search them (a flat search reads every vector), report.
WORKER = """
import sys
from pathlib import Path
import numpy as np
from service.vectors import VectorIndex
index = VectorIndex.load(Path(sys.argv[1]), mmap=sys.argv[2] == "mmap").faiss
queries = np.random.default_rng(0).standard_normal((8, index.d)).astype(np.float32)
index.search(queries, 10)
print("ready", flush=True)
sys.stdin.read()
"""


def smaps_kb(pid: int) -> dict[str, int]:
    """The kB fields of /proc/<pid>/smaps_rollup (Rss, Pss, Shared_Clean, ...)."""
    fields: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, value, *_ = line.split()
        fields[name.rstrip(":")] = int(value)
    return fields


def write_scifact(seeds: Path, docs: int) -> None:
    """The first `docs` SciFact abstracts as seed files, read from shared/ (never copied into
    the repository)."""
    from service.evaluation import write_corpus
    from service.metrics import BeirDataset

    corpus: dict[str, tuple[str, str]] = {}
    with (SCIFACT / "corpus.jsonl").open(encoding="utf-8") as lines:
        for line in lines:
            row = json.loads(line)
            corpus[str(row["_id"])] = (str(row.get("title") or ""), str(row.get("text") or ""))
            if len(corpus) == docs:
                break
    write_corpus(BeirDataset(corpus=corpus, queries={}, qrels={}, answers={}), seeds)


def summary(report: dict[str, Any]) -> dict[str, Any]:
    """The build report's numbers (without its file lists)."""
    keys = ("build_id", "files_indexed", "chunks", "chunks_embedded", "seconds", "timings")
    return {k: report[k] for k in keys}


def bench_build(work: Path, docs: int, cpus: int, actors: int) -> list[dict[str, Any]]:
    """Local and Ray builds of the same seeds; one row each."""
    import ray

    from service.config import Settings
    from service.embedding import load_embedder
    from service.indexing import Builder
    from service.ray_engine import RayEngine, settings_factory

    seeds = work / "seeds"
    write_scifact(seeds, docs)
    shared = Settings(_env_file=None, seeds_dir=seeds, index_dir=work / "model", encoder="onnx")
    started = time.perf_counter()
    embedder = load_embedder(
        shared.model_path, encoder="onnx", cache_dir=shared.index_dir / "cache", workers=cpus
    )
    print(f"model loaded (ONNX export) in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    rows = []
    local = shared.model_copy(update={"index_dir": work / "local"})
    report = Builder(local, embedder).build()
    rows.append({"engine": "local", "report": summary(report.as_dict()), "startup": 0.0})

    started = time.perf_counter()
    ray.init(num_cpus=cpus, include_dashboard=False, logging_level=logging.WARNING)
    startup = time.perf_counter() - started
    try:
        distributed = shared.model_copy(
            update={"index_dir": work / "ray", "ray_cpus": cpus, "ray_actors": actors}
        )
        # The actors read the ONNX export the driver made (a shared volume, on a real cluster).
        engine = RayEngine(distributed, embedder, factory=settings_factory(shared))
        report = Builder(distributed, embedder, engine).build()
        rows.append({"engine": "ray", "report": summary(report.as_dict()), "startup": startup})
    finally:
        ray.shutdown()
    return rows


def bench_memory(work: Path, vectors: int, workers: int) -> dict[str, dict[str, float]]:
    """Summed PSS and RSS (MiB) of `workers` processes serving one index, mapped and copied."""
    import numpy as np

    from service.config import Settings
    from service.vectors import AnnSettings, write_vectors

    folder = work / "build"
    folder.mkdir()
    data = np.random.default_rng(0).standard_normal((vectors, DIM)).astype(np.float32)
    write_vectors(folder, data, AnnSettings.of(Settings(_env_file=None, ann="flat")))
    del data
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    )
    result: dict[str, dict[str, float]] = {}
    for mode in ("mmap", "copy"):
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", WORKER, str(folder), mode],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env=env,
                cwd=work,
            )
            for _ in range(workers)
        ]
        try:
            for proc in procs:
                assert proc.stdout is not None
                if proc.stdout.readline().strip() != b"ready":
                    raise RuntimeError(f"worker {proc.pid} failed (exit {proc.wait()})")
            fields = [smaps_kb(p.pid) for p in procs]
        finally:
            for proc in procs:
                assert proc.stdin is not None
                proc.stdin.close()
                proc.wait()
        result[mode] = {
            "pss_mib": sum(f["Pss"] for f in fields) / 1024,
            "rss_mib": sum(f["Rss"] for f in fields) / 1024,
        }
    result["index"] = {"mib": (folder / "vectors.faiss").stat().st_size / 2**20}
    return result


def table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.ray_bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--docs", type=int, default=500, help="SciFact abstracts built")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray cluster")
    parser.add_argument("--actors", type=int, default=2, help="embedding actors")
    parser.add_argument("--vectors", type=int, default=200_000, help="synthetic flat index size")
    parser.add_argument("--workers", type=int, default=4, help="serving processes")
    parser.add_argument("--only", choices=["build", "memory"], help="one half of the bench")
    parser.add_argument("--json", action="store_true", help="also print the numbers as JSON")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="gqa-ray-bench-") as tmp:
        work = Path(tmp)
        if args.only != "memory":
            if not (SCIFACT / "corpus.jsonl").is_file():
                parser.error(f"SciFact not found at {SCIFACT}")
            (work / "b").mkdir()
            out["build"] = bench_build(work / "b", args.docs, args.cpus, args.actors)
        if args.only != "build":
            (work / "m").mkdir()
            out["memory"] = bench_memory(work / "m", args.vectors, args.workers)

    if "build" in out:
        local, ray_row = (r["report"] for r in out["build"])
        rows = [
            ["engine", "files", "chunks", "chunk s", "embed s", "build s", "chunks/s", "vs local"]
        ]
        base = local["chunks"] / local["seconds"]
        for row in out["build"]:
            r = row["report"]
            rate = r["chunks"] / r["seconds"]
            rows.append(
                [
                    row["engine"],
                    str(r["files_indexed"]),
                    str(r["chunks"]),
                    f"{r['timings']['chunk']:.1f}",
                    f"{r['timings']['embed']:.1f}",
                    f"{r['seconds']:.1f}",
                    f"{rate:.1f}",
                    f"{rate / base:.2f}x",
                ]
            )
        print(
            f"Build throughput, {args.docs} SciFact abstracts, Ray: local cluster of "
            f"{args.cpus} CPUs, {args.actors} actors (cluster start "
            f"{out['build'][1]['startup']:.1f} s, not counted)"
        )
        print(table(rows))
        assert ray_row["chunks"] == local["chunks"]
        print()
    if "memory" in out:
        mem = out["memory"]
        rows = [["serving", "workers", "PSS MiB", "RSS MiB", "PSS vs copies"]]
        for mode, label in (("copy", "private copies"), ("mmap", "memory-mapped")):
            m = mem[mode]
            rows.append(
                [
                    label,
                    str(args.workers),
                    f"{m['pss_mib']:.0f}",
                    f"{m['rss_mib']:.0f}",
                    f"{m['pss_mib'] / mem['copy']['pss_mib']:.2f}x",
                ]
            )
        print(
            f"Memory of {args.workers} processes serving one flat index of {args.vectors} x "
            f"{DIM} float32 ({mem['index']['mib']:.0f} MiB), summed over the processes"
        )
        print(table(rows))
    if args.json:
        print(json.dumps(out, sort_keys=True, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
