"""HTTP load generator: N concurrent keep-alive clients POST questions for T seconds.

Bounded in time and count, loopback only by intent; reports requests/s, p50/p95/p99 latency
and errors. A bare asyncio HTTP/1.1 client keeps the generator's own CPU cost low, which
matters when it shares two cores with the server under test.

    python -m bench.load --url http://127.0.0.1:8000 --concurrency 32 --seconds 30
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import statistics
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlsplit

DEFAULT_QUESTIONS = (
    "What is the capital of France?",
    "Which planet is the largest?",
    "How do vaccines train the immune system?",
    "What causes the seasons on Earth?",
)


@dataclass(frozen=True, slots=True)
class LoadResult:
    """What one load run measured."""

    concurrency: int
    seconds: float
    requests: int
    errors: int
    requests_per_second: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    first_error: str | None = None


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation; 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


class _Client:
    """One keep-alive HTTP/1.1 connection."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes, timeout: float) -> tuple[int, bytes]:
        if self.writer is None or self.reader is None:
            self.reader, self.writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port), timeout
            )
        writer = self.writer
        assert writer is not None
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        writer.write(head + body)
        return await asyncio.wait_for(self._response(), timeout)

    async def _response(self) -> tuple[int, bytes]:
        assert self.reader is not None
        header = await self.reader.readuntil(b"\r\n\r\n")
        lines = header.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        fields = {
            k.strip().lower(): v.strip()
            for k, _, v in (line.partition(":") for line in lines[1:] if line)
        }
        if fields.get("transfer-encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).strip(), 16)
                chunk = await self.reader.readexactly(size + 2)
                if size == 0:
                    break
                parts.append(chunk[:-2])
            data = b"".join(parts)
        else:
            data = await self.reader.readexactly(int(fields.get("content-length", "0")))
        if fields.get("connection", "").lower() == "close":
            await self.close()
        return status, data

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()
        self.reader = self.writer = None


async def run_load(
    url: str,
    questions: Sequence[str],
    *,
    concurrency: int,
    seconds: float,
    max_requests: int = 1_000_000,
    warmup: float = 0.0,
    fresh: bool = False,
    top_k: int = 5,
    timeout: float = 30.0,
) -> LoadResult:
    """Run the load; with fresh=True every question gets a unique suffix (a cold question
    cache, as with real traffic that rarely repeats a question word for word)."""
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or 80
    path = parts.path if parts.path not in ("", "/") else "/v1/ask"
    counter = itertools.count()
    source: Iterator[str] = itertools.cycle(questions)
    latencies: list[float] = []
    errors = 0
    first_error: str | None = None
    started = time.perf_counter()
    measure_from = started + warmup
    deadline = measure_from + seconds
    sent = 0

    def body() -> bytes:
        n = next(counter)
        question = next(source)
        if fresh:
            question = f"{question} [q{n}]"
        return json.dumps({"question": question, "top_k": top_k}).encode()

    async def worker() -> None:
        nonlocal errors, first_error, sent
        client = _Client(host, port)
        try:
            while time.perf_counter() < deadline and sent < max_requests:
                sent += 1
                t0 = time.perf_counter()
                try:
                    status, data = await client.post(path, body(), timeout)
                    ok = status == 200
                    error = None if ok else f"HTTP {status}: {data[:200]!r}"
                except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as exc:
                    ok, error = False, f"{type(exc).__name__}: {exc}"
                    await client.close()
                t1 = time.perf_counter()
                if t0 < measure_from:
                    continue
                if ok:
                    latencies.append((t1 - t0) * 1000)
                else:
                    errors += 1
                    first_error = first_error or error
        finally:
            await client.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = max(time.perf_counter() - measure_from, 1e-9)
    return LoadResult(
        concurrency=concurrency,
        seconds=round(elapsed, 3),
        requests=len(latencies) + errors,
        errors=errors,
        requests_per_second=round(len(latencies) / elapsed, 2),
        p50_ms=round(statistics.median(latencies), 3) if latencies else 0.0,
        p95_ms=round(percentile(latencies, 95), 3),
        p99_ms=round(percentile(latencies, 99), 3),
        first_error=first_error,
    )


def read_questions(path: Path | None) -> list[str]:
    """Questions from a BEIR queries.jsonl, a JSON list or a text file (one per line)."""
    if path is None:
        return list(DEFAULT_QUESTIONS)
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        return [json.loads(line)["text"] for line in text.splitlines() if line.strip()]
    if path.suffix == ".json":
        return [str(q) for q in json.loads(text)]
    return [line.strip() for line in text.splitlines() if line.strip()]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.load",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--url", default="http://127.0.0.1:8000/v1/ask")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds not counted")
    parser.add_argument("--max-requests", type=int, default=1_000_000)
    parser.add_argument("--questions", type=Path, help="queries.jsonl, .json list or .txt")
    parser.add_argument("--fresh", action="store_true", help="make every question unique")
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    host = urlsplit(args.url).hostname or ""
    if not (host == "localhost" or host.startswith("127.") or host == "::1"):
        parser.error("load is only sent to loopback addresses")
    if not (1 <= args.concurrency <= 1024 and 0 < args.seconds <= 600):
        parser.error("concurrency must be 1-1024 and seconds 0-600")
    result = asyncio.run(
        run_load(
            args.url,
            read_questions(args.questions),
            concurrency=args.concurrency,
            seconds=args.seconds,
            max_requests=args.max_requests,
            warmup=args.warmup,
            fresh=args.fresh,
            top_k=args.top_k,
        )
    )
    if args.json:
        print(json.dumps(asdict(result)))
    else:
        print(
            f"c={result.concurrency}: {result.requests_per_second:.1f} req/s, "
            f"p50 {result.p50_ms:.2f} ms, p95 {result.p95_ms:.2f} ms, "
            f"p99 {result.p99_ms:.2f} ms, {result.errors} errors of {result.requests}"
        )
        if result.first_error:
            print(f"first error: {result.first_error}", file=sys.stderr)
    return 1 if result.errors else 0


if __name__ == "__main__":
    sys.exit(main())
