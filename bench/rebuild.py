"""Query latency while the server rebuilds: `/v1/ask` p99 idle and during a rebuild that embeds
new documents, with rebuilds at low priority (groundqa's default) beside normal priority (the
baseline: the rebuild shares the serving encoder and every core), in the same run.

    python -m bench.rebuild [--docs 500] [--added 1500] [--concurrency 2] [--seconds 20]

The ratio that matters is p99 during the rebuild over p99 idle, for each priority. Nothing here
asserts a figure.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.suite import (
    SCIFACT,
    Row,
    build_index,
    child_env,
    free_port,
    fresh_dir,
    load,
    log,
    remove,
    scifact_questions,
    scifact_seeds,
    server,
    table,
)

PRIORITIES = ("low", "normal")  # ours, then the baseline
TOKEN = "bench-admin-token"


def _call(url: str, method: str = "GET") -> dict[str, Any]:
    request = urllib.request.Request(
        url, method=method, headers={"Authorization": f"Bearer {TOKEN}"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        result: dict[str, Any] = json.loads(response.read())
        return result


def one_run(
    priority: str,
    base_seeds: Path,
    base_index: Path,
    added: Sequence[Path],
    questions: Path,
    concurrency: int,
    seconds: float,
    work: Path,
) -> dict[str, float]:
    """Idle p99, p99 while a rebuild embeds `added`, and the rebuild's duration."""
    run = work / priority
    remove(run)
    seeds, index = run / "seeds", run / "index"
    shutil.copytree(base_seeds, seeds)
    shutil.copytree(base_index, index)
    port = free_port()
    env = child_env(
        GROUNDQA_REBUILD_PRIORITY=priority,
        GROUNDQA_ADMIN_TOKEN=TOKEN,
        GROUNDQA_CACHE_DIR=str(work / "cache"),
    )
    cmd = ["-m", "service", "serve", "--index", str(index), "--seeds", str(seeds)]
    with server([*cmd, "--port", str(port)], port, env, work / f"{priority}.log") as url:
        root = url.removesuffix("/v1/ask")
        idle = load(url, questions, concurrency, seconds, min(3.0, seconds / 2))
        for path in added:
            shutil.copy(path, seeds / path.name)
        started = time.monotonic()
        job = _call(f"{root}/v1/index/rebuild", "POST")
        during = load(url, questions, concurrency, seconds, 0)
        status = _call(f"{root}/v1/index/rebuild/{job['job_id']}")
        overlapped = status["state"] == "running"  # the whole window saw the rebuild
        while status["state"] == "running":
            time.sleep(0.5)
            status = _call(f"{root}/v1/index/rebuild/{job['job_id']}")
        if status["state"] != "succeeded":
            raise RuntimeError(f"rebuild {status['state']}: {status['error']}")
        return {
            "idle_p99": float(idle["p99_ms"]),
            "during_p99": float(during["p99_ms"]),
            "idle_p50": float(idle["p50_ms"]),
            "during_p50": float(during["p50_ms"]),
            "rebuild_s": time.monotonic() - started,
            "errors": float(idle["errors"] + during["errors"]),
            "overlapped": float(overlapped),
        }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.rebuild",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--docs", type=int, default=500, help="SciFact abstracts served")
    parser.add_argument("--added", type=int, default=1500, help="abstracts the rebuild embeds")
    parser.add_argument("--concurrency", type=int, default=2, help="clients asking at once")
    parser.add_argument("--seconds", type=float, default=20.0, help="per load window")
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--work", type=Path, help="working folder (default: a temp folder)")
    args = parser.parse_args(argv)
    if not (SCIFACT / "corpus.jsonl").is_file():
        parser.error(f"SciFact not found at {SCIFACT}")
    work = fresh_dir(args.work)
    base_seeds = scifact_seeds(work, args.docs)
    every = scifact_seeds(work, args.docs + args.added)
    served = {p.name for p in base_seeds.iterdir()}
    added = sorted(p for p in every.iterdir() if p.name not in served)
    base_index = work / "base-index"
    if not base_index.exists():
        log(f"building the served index of {args.docs} abstracts")
        build_index(base_seeds, base_index, "onnx-int8", work / "cache")
    questions = work / "questions.json"
    questions.write_text(json.dumps(scifact_questions()))

    names = {
        "idle_p99": ("/v1/ask p99, idle", "ms"),
        "during_p99": ("/v1/ask p99, during a rebuild", "ms"),
        "during_ratio": ("p99 during a rebuild / idle p99", "x"),
        "idle_p50": ("/v1/ask p50, idle", "ms"),
        "during_p50": ("/v1/ask p50, during a rebuild", "ms"),
        "rebuild_s": (f"rebuild embedding {len(added)} abstracts", "s"),
    }
    rows = {key: Row("rebuild", metric, unit) for key, (metric, unit) in names.items()}
    errors = overlapped = 0.0
    for rep in range(args.reps):
        for priority in PRIORITIES:
            log(f"rep {rep + 1}/{args.reps}: rebuild priority {priority}")
            result = one_run(
                priority,
                base_seeds,
                base_index,
                added,
                questions,
                args.concurrency,
                args.seconds,
                work,
            )
            result["during_ratio"] = result["during_p99"] / result["idle_p99"]
            errors += result["errors"]
            overlapped += result["overlapped"]
            for key, row in rows.items():
                (row.ours if priority == "low" else row.base).append(result[key])
    note = (
        f"c={args.concurrency}, {args.seconds:g} s windows, {args.docs} abstracts served; "
        f"groundqa = low priority, baseline = normal; errors {errors:g}; "
        f"rebuild running through {overlapped:g}/{2 * args.reps} windows"
    )
    for row in rows.values():
        row.note = note
    print(table(list(rows.values())))
    if args.work is None:
        remove(work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
