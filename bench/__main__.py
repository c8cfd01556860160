"""Run the benchmark suite and print one table: `python -m bench` (`--quick` for a short run).

Every figure stands beside a baseline measured in the same run, as a ratio (median over the
repetitions, min-max in brackets). Run it on an otherwise idle machine where possible; on a
shared one, read the ratios, not the absolute numbers.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from bench import suite

SECTIONS = ("build", "ask", "http", "ann", "ndcg")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--quick", action="store_true", help="small corpora, short runs, no nDCG (a few minutes)"
    )
    parser.add_argument("--only", help=f"comma-separated sections of {','.join(SECTIONS)}")
    parser.add_argument("--reps", type=int, help="repetitions per figure (default 3, quick 2)")
    parser.add_argument(
        "--encoder",
        default="onnx-int8",
        choices=["torch", "onnx", "onnx-int8"],
        help="backend served in the ask and http sections",
    )
    parser.add_argument(
        "--build-encoders", default="torch,onnx-int8", help="backends whose builds are measured"
    )
    parser.add_argument("--build-docs", type=int, help="SciFact abstracts built (default 300)")
    parser.add_argument(
        "--serve-docs", type=int, help="SciFact abstracts in the served index (default: all 5183)"
    )
    parser.add_argument(
        "--index",
        type=Path,
        help="serve this existing index (with --seeds) instead of building one",
    )
    parser.add_argument("--seeds", type=Path, help="seeds folder of --index")
    parser.add_argument("--questions", type=int, help="questions per ask pass (default 200)")
    parser.add_argument("--seconds", type=float, help="seconds per HTTP load run (default 10)")
    parser.add_argument("--concurrency", default="1,8,32", help="HTTP concurrency levels")
    parser.add_argument(
        "--ann-size", type=int, help="vectors for ANN (default 1000000, quick 100000)"
    )
    parser.add_argument(
        "--ann-kinds", default="ivf", help="index types to measure: ivf,hnsw,flat (hnsw: slow)"
    )
    parser.add_argument("--ann-nprobe", default="8,16,48,128", help="IVF nprobe values to try")
    parser.add_argument("--ann-ef", default="32,64,128,256", help="HNSW efSearch values to try")
    parser.add_argument(
        "--ann-data",
        default="real",
        choices=["real", "clustered", "random"],
        help="real: the served SciFact index's embeddings, then draws of them with noise, "
        "queried with SciFact's questions (clustered when there is no index); clustered: "
        "synthetic mixture; random: iid",
    )
    parser.add_argument("--ndcg-encoders", default="onnx,onnx-int8")
    parser.add_argument(
        "--work", type=Path, help="cache folder kept between runs (default ~/.cache/groundqa/bench)"
    )
    parser.add_argument("--out", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args(argv)

    quick = args.quick
    sections = (
        args.only.split(",") if args.only else [s for s in SECTIONS if not (quick and s == "ndcg")]
    )
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections: {', '.join(sorted(unknown))}")
    reps = args.reps or (2 if quick else 3)
    work = suite.fresh_dir(args.work or Path.home() / ".cache" / "groundqa" / "bench")
    onnx_cache = work / "onnx-cache"
    started = time.perf_counter()
    rows: list[suite.Row] = []
    stages: dict[str, float] = {}

    if "build" in sections:
        rows += suite.timed(
            "build",
            lambda: suite.bench_build(
                work,
                args.build_docs or (100 if quick else 300),
                reps,
                args.build_encoders.split(","),
                onnx_cache,
            ),
        )
    if {"ask", "http"} & set(sections):
        if args.index:
            index, seeds = args.index, args.seeds or args.index.parent / "seeds"
        else:
            docs = args.serve_docs or (300 if quick else 5183)
            seeds = suite.scifact_seeds(work, docs)
            index = seeds.parent / "index"
            suite.log(f"serving index: {docs} SciFact abstracts (built once, then reused)")
            suite.timed(
                "serve index", lambda: suite.build_index(seeds, index, args.encoder, onnx_cache)
            )
        # The server exports its ONNX model next to its index: share the one already made.
        (index / "cache").mkdir(parents=True, exist_ok=True)
        link = index / "cache" / "onnx"
        if not link.exists():
            (onnx_cache / "onnx").mkdir(parents=True, exist_ok=True)
            link.symlink_to((onnx_cache / "onnx").resolve())
        questions = suite.scifact_questions()
        if "ask" in sections:
            ask_rows, stages = suite.timed(
                "ask",
                lambda: suite.bench_ask(
                    index,
                    questions[: args.questions or (100 if quick else 200)],
                    reps,
                    args.encoder,
                    onnx_cache,
                ),
            )
            rows += ask_rows
        if "http" in sections:
            levels = [int(c) for c in args.concurrency.split(",")]
            rows += suite.timed(
                "http",
                lambda: suite.bench_http(
                    index,
                    seeds,
                    questions,
                    reps,
                    args.seconds or (4 if quick else 10),
                    levels,
                    args.encoder,
                    work,
                    repeated=20 if quick else 50,
                ),
            )
    if "ann" in sections:
        real = real_queries = None
        data_kind = args.ann_data
        if data_kind == "real":
            served = args.index or work / f"scifact-{args.serve_docs or 5183}" / "index"
            real = suite.served_vectors(served)
            if real is None:
                suite.log(f"ann: no index at {served}; using clustered synthetic vectors")
                data_kind = "clustered"
            else:
                real_queries = suite.scifact_query_vectors(args.encoder, onnx_cache)
        rows += suite.timed(
            "ann",
            lambda: suite.bench_ann(
                args.ann_size or (100_000 if quick else 1_000_000),
                1000,
                args.ann_kinds.split(","),
                {
                    "ivf": [int(n) for n in args.ann_nprobe.split(",")],
                    "hnsw": [int(e) for e in args.ann_ef.split(",")],
                },
                work,
                data_kind,
                real,
                real_queries,
            ),
        )
    if "ndcg" in sections:
        rows += suite.timed(
            "ndcg",
            lambda: suite.bench_ndcg(args.ndcg_encoders.split(","), work / "eval", onnx_cache),
        )

    print(suite.table(rows))
    if stages:
        print(
            "\nask stages, median ms (cold pass): "
            + ", ".join(f"{k} {v:.2f}" for k, v in sorted(stages.items()))
        )
    print(f"\n{reps} repetition(s); took {time.perf_counter() - started:.0f} s")
    if args.out:
        args.out.write_text(json.dumps([vars(r) for r in rows], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
