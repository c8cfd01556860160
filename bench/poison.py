"""Load with a poisoning client: N normal clients ask, first alone (the baseline), then while
one more client sends poison; the normal clients' errors and latencies of both phases, and the
size of /metrics before and after.

The poison, round-robin, each on a connection of its own: chat messages and questions holding
a lone surrogate (valid JSON "\\ud800"), NaN and Infinity in bodies, random 4,000-letter HTTP
methods on random paths, 50 long glob patterns, and clients that send their headers one byte
at a time (the server must cut them off after GROUNDQA_HEADER_TIMEOUT).

    groundqa serve &   # then
    python -m bench.poison --url http://127.0.0.1:8000 --concurrency 16 --seconds 30
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import string
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from urllib.parse import urlsplit

import httpx

from bench.load import LoadResult, read_questions, run_load

SURROGATE = '"\\ud800"'  # JSON text of a lone surrogate: valid JSON, not Unicode
PATTERNS = 50  # the most `sources` globs a request may carry
PATTERN_CHARS = 256  # the longest glob accepted
METHOD_LETTERS = 4000
SLOW_CLIENTS = 8  # slow-header connections kept open at once


@dataclass(frozen=True, slots=True)
class Poison:
    """One poisonous request."""

    kind: str
    method: str
    path: str
    body: bytes = b""

    def raw(self, host: str) -> bytes:
        """The whole HTTP/1.1 request, closing the connection after the response."""
        head = (
            f"{self.method} {self.path} HTTP/1.1\r\nHost: {host}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(self.body)}\r\n"
            "Connection: close\r\n\r\n"
        )
        return head.encode() + self.body


def _glob(rng: random.Random) -> str:
    return "".join(rng.choice(string.ascii_lowercase + "*?") for _ in range(PATTERN_CHARS))


def _letters(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(string.ascii_uppercase) for _ in range(n))


POISONS: dict[str, Callable[[random.Random], Poison]] = {
    "chat lone surrogate": lambda rng: Poison(
        "chat lone surrogate",
        "POST",
        "/v1/chat/completions",
        b'{"model": "groundqa", "messages": [{"role": "user", "content": '
        + SURROGATE.encode()
        + b"}]}",
    ),
    "ask lone surrogate": lambda rng: Poison(
        "ask lone surrogate", "POST", "/v1/ask", f'{{"question": {SURROGATE}}}'.encode()
    ),
    "ask NaN": lambda rng: Poison(
        "ask NaN", "POST", "/v1/ask", b'{"question": "troops", "top_k": NaN}'
    ),
    "chat Infinity": lambda rng: Poison(
        "chat Infinity",
        "POST",
        "/v1/chat/completions",
        b'{"model": "groundqa", "messages": [{"role": "user", "content": "troops"}], '
        b'"temperature": Infinity}',
    ),
    "random method": lambda rng: Poison(
        "random method",
        _letters(rng, METHOD_LETTERS),
        rng.choice(["/v1/ask", f"/{_letters(rng, 12).lower()}"]),
    ),
    "50 long globs": lambda rng: Poison(
        "50 long globs",
        "POST",
        "/v1/ask",
        json.dumps(
            {"question": "troops", "sources": [_glob(rng) for _ in range(PATTERNS)]}
        ).encode(),
    ),
}


async def _status_of(host: str, port: int, request: bytes, timeout: float) -> str:
    """The response's status code, or what happened instead ('closed', 'timeout')."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, TimeoutError):
        return "connect failed"
    try:
        writer.write(request)
        line = await asyncio.wait_for(reader.readline(), timeout)
        await asyncio.wait_for(reader.read(), timeout)  # the rest, until the server closes
        parts = line.split(b" ", 2)
        return parts[1].decode("ascii", "replace") if len(parts) > 1 else "closed"
    except TimeoutError:
        return "timeout"
    except OSError:
        return "closed"
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


@dataclass
class PoisonTally:
    """What the poisoning client sent and got back, per kind."""

    answers: dict[str, Counter[str]] = field(default_factory=dict)
    slow_opened: int = 0
    slow_cut: int = 0  # slow-header connections the server closed

    def record(self, kind: str, status: str) -> None:
        self.answers.setdefault(kind, Counter())[status] += 1

    @property
    def sent(self) -> int:
        return sum(sum(c.values()) for c in self.answers.values()) + self.slow_opened


async def _poison_requests(
    host: str, port: int, deadline: float, tally: PoisonTally, seed: int, timeout: float
) -> None:
    rng = random.Random(seed)
    kinds = list(POISONS)
    i = 0
    while time.perf_counter() < deadline:
        kind = kinds[i % len(kinds)]
        i += 1
        tally.record(kind, await _status_of(host, port, POISONS[kind](rng).raw(host), timeout))


async def _slow_headers(host: str, port: int, deadline: float, tally: PoisonTally) -> None:
    """One connection after another whose headers trickle in a byte every 0.2 s."""
    while time.perf_counter() < deadline:
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError:
            return
        tally.slow_opened += 1
        try:
            writer.write(f"GET /v1/ask HTTP/1.1\r\nHost: {host}\r\n".encode())
            while time.perf_counter() < deadline:
                writer.write(b"X")
                with contextlib.suppress(TimeoutError):
                    if await asyncio.wait_for(reader.read(1), 0.2) == b"":
                        tally.slow_cut += 1
                        break
        except OSError:
            tally.slow_cut += 1
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


@dataclass(frozen=True, slots=True)
class MetricsSize:
    """How big /metrics is: bytes and series (sample lines)."""

    bytes: int
    series: int
    http_label_sets: tuple[str, ...]


def metrics_size(url: str) -> MetricsSize:
    """Scrape /metrics once."""
    text = httpx.get(f"{url}/metrics", timeout=30).text
    samples = [line for line in text.splitlines() if line and not line.startswith("#")]
    labels = sorted(
        {
            line[line.index("{") : line.index("}") + 1]
            for line in samples
            if line.startswith("groundqa_http_requests_total{")
        }
    )
    return MetricsSize(len(text.encode()), len(samples), tuple(labels))


@dataclass(frozen=True, slots=True)
class PoisonRun:
    """Both phases of a run."""

    baseline: LoadResult | None
    poisoned: LoadResult
    poison: PoisonTally
    metrics_before: MetricsSize
    metrics_after: MetricsSize


async def _poisoned_phase(
    url: str,
    questions: Sequence[str],
    concurrency: int,
    seconds: float,
    seed: int,
    timeout: float,
) -> tuple[LoadResult, PoisonTally]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    tally = PoisonTally()
    deadline = time.perf_counter() + seconds
    load = run_load(
        f"{url}/v1/ask", questions, concurrency=concurrency, seconds=seconds, fresh=True
    )
    poisons = [_poison_requests(host, port, deadline, tally, seed, timeout)]
    poisons += [_slow_headers(host, port, deadline, tally) for _ in range(SLOW_CLIENTS)]
    tasks = [asyncio.ensure_future(p) for p in poisons]
    result = await load
    await asyncio.gather(*tasks)
    return result, tally


def run_poison(
    url: str,
    questions: Sequence[str],
    *,
    concurrency: int = 16,
    seconds: float = 10.0,
    baseline: bool = True,
    seed: int = 0,
    timeout: float = 30.0,
) -> PoisonRun:
    """The baseline phase (unless baseline=False), then the poisoned one, each `seconds`."""
    before = metrics_size(url)
    quiet = None
    if baseline:
        quiet = asyncio.run(
            run_load(
                f"{url}/v1/ask", questions, concurrency=concurrency, seconds=seconds, fresh=True
            )
        )
    loaded, tally = asyncio.run(
        _poisoned_phase(url, questions, concurrency, seconds, seed, timeout)
    )
    return PoisonRun(quiet, loaded, tally, before, metrics_size(url))


def _line(name: str, r: LoadResult) -> str:
    return (
        f"{name}: {r.requests} requests, {r.errors} errors, {r.requests_per_second:.1f} req/s, "
        f"p50 {r.p50_ms:.1f} ms, p99 {r.p99_ms:.1f} ms"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.poison",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=30.0, help="per phase")
    parser.add_argument("--questions", help="queries.jsonl, .json list or .txt")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    host = urlsplit(args.url).hostname or ""
    if not (host == "localhost" or host.startswith("127.") or host == "::1"):
        parser.error("poison is only sent to loopback addresses")
    if not (1 <= args.concurrency <= 256 and 0 < args.seconds <= 600):
        parser.error("concurrency must be 1-256 and seconds 0-600")
    from pathlib import Path

    questions = read_questions(Path(args.questions) if args.questions else None)
    run = run_poison(
        args.url.rstrip("/"), questions, concurrency=args.concurrency, seconds=args.seconds
    )
    if args.json:
        print(json.dumps(asdict(run), default=list))
    else:
        assert run.baseline is not None
        print(_line(f"{args.concurrency} clients alone", run.baseline))
        print(_line(f"{args.concurrency} clients + poison", run.poisoned))
        if run.baseline.p99_ms:
            ratio = run.poisoned.p99_ms / run.baseline.p99_ms
            print(f"p99 with poison / without: {ratio:.2f}x")
        answers = {k: dict(v) for k, v in run.poison.answers.items()}
        print(f"poison: {run.poison.sent} sent; answers {answers}")
        print(
            f"slow-header connections: {run.poison.slow_opened} opened, {run.poison.slow_cut} cut"
        )
        b, a = run.metrics_before, run.metrics_after
        print(
            f"/metrics: {b.bytes} bytes, {b.series} series before; {a.bytes} bytes, "
            f"{a.series} series after ({len(a.http_label_sets)} request label sets)"
        )
        if run.poisoned.first_error:
            print(f"first error: {run.poisoned.first_error}", file=sys.stderr)
    return 1 if run.poisoned.errors or (run.baseline and run.baseline.errors) else 0


if __name__ == "__main__":
    sys.exit(main())
