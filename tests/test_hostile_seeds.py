"""Every bad seed is a skipped seed: loops, undecodable names, long paths, races, unreadable
folders and parser bombs become skip entries with a reason, and the build goes on."""

from __future__ import annotations

import os
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.config import Settings
from service.indexing import Builder
from service.ingest import parse_seed, scan_seeds
from service.models import Skipped
from service.parsers import pdf
from service.parsers.base import (
    DEFAULT_OPTIONS,
    Budget,
    Parsed,
    ParseError,
    ParseLimits,
    ParseOptions,
)
from tests.conftest import FakeEmbedder

MAX = 20_000_000
ClientFor = Callable[[Settings], TestClient]


def pdf_bomb(lines: int, width: int = 100) -> bytes:
    """A tiny PDF whose one page stream expands to lines x width characters of text."""
    line = b"BT /F1 12 Tf 72 720 Td (" + b"A" * width + b") Tj ET\n"
    stream = zlib.compress(line * lines, 9)
    page = (
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>"
    )
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        page,
        b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)


def scan(seeds: Path) -> tuple[list[str], list[Skipped]]:
    files, skipped = scan_seeds(seeds, MAX)
    return sorted(f.source for f in files), sorted(skipped, key=lambda s: s.source)


def test_symlink_loop_is_skipped(seeds: Path) -> None:
    (seeds / "good.txt").write_text("fine")
    (seeds / "loop.txt").symlink_to(seeds / "loop.txt")
    (seeds / "a.md").symlink_to(seeds / "b.md")
    (seeds / "b.md").symlink_to(seeds / "a.md")
    files, skipped = scan(seeds)
    assert files == ["good.txt"]
    loop = "symlink loop"
    assert skipped == [Skipped("a.md", loop), Skipped("b.md", loop), Skipped("loop.txt", loop)]


def test_undecodable_and_control_character_names_are_skipped(seeds: Path) -> None:
    (seeds / "good.txt").write_text("fine")
    with open(os.path.join(os.fsencode(seeds), b"caf\xe9.txt"), "wb") as handle:
        handle.write(b"latin-1 name")
    (seeds / "two\nlines.txt").write_text("newline in the name")
    files, skipped = scan(seeds)
    assert files == ["good.txt"]
    assert skipped == [
        Skipped("caf\\xe9.txt", "file name is not valid UTF-8"),
        Skipped("two\nlines.txt", "file name holds control characters (newline, tab...)"),
    ]


def test_path_longer_than_the_system_allows_is_skipped(seeds: Path) -> None:
    (seeds / "good.txt").write_text("fine")
    folder = seeds
    name = "d" * 200
    # Build a path longer than PATH_MAX by descending with relative paths.
    depth = 0
    cwd = os.getcwd()
    try:
        os.chdir(seeds)
        while depth * 201 < 4200:
            os.mkdir(name)
            os.chdir(name)
            depth += 1
        with open("deep.txt", "w") as handle:
            handle.write("too deep")
    finally:
        os.chdir(cwd)
    del folder
    files, skipped = scan(seeds)
    assert files == ["good.txt"]
    assert len(skipped) == 1
    assert skipped[0].reason in {
        "path longer than the system allows",
        "unreadable folder: File name too long",
    }


def test_file_swapped_for_a_symlink_during_the_scan_is_not_read(
    seeds: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    outside = tmp_path / "secret.txt"
    outside.write_text("secret")
    (seeds / "note.txt").symlink_to(outside)
    real_is_symlink = Path.is_symlink
    # The scan saw a regular file; by the time it opens it, it is a link to outside.
    monkeypatch.setattr(
        Path, "is_symlink", lambda p: False if p.name == "note.txt" else real_is_symlink(p)
    )
    files, skipped = scan(seeds)
    assert files == []
    assert skipped == [
        Skipped("note.txt", "symlink loop (or swapped for a symlink during the scan)")
    ]


def test_unreadable_folder_is_reported(seeds: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (seeds / "good.txt").write_text("fine")
    (seeds / "locked").mkdir()
    (seeds / "locked" / "hidden.txt").write_text("cannot list")
    real_scandir = os.scandir

    def scandir(path: object) -> object:
        if os.fspath(path).endswith("locked"):  # type: ignore[call-overload]
            raise PermissionError(13, "Permission denied", os.fspath(path))  # type: ignore[call-overload]
        return real_scandir(path)  # type: ignore[call-overload]

    monkeypatch.setattr(os, "scandir", scandir)
    files, skipped = scan(seeds)
    assert files == ["good.txt"]
    assert skipped == [Skipped("locked", "unreadable folder: Permission denied")]


# --- parser limits ---------------------------------------------------------------------------


def test_pdf_bomb_stops_at_the_text_cap() -> None:
    data = pdf_bomb(2000)  # 200,000 characters from ~2 KB
    assert len(data) < 4000
    with pytest.raises(ParseError, match=r"^extracted text longer than 10000 characters$"):
        pdf.parse(data, "bomb.pdf", ParseOptions(budget=Budget(ParseLimits(max_chars=10_000))))
    assert (
        len(
            pdf.parse(
                data, "bomb.pdf", ParseOptions(budget=Budget(ParseLimits(max_chars=300_000)))
            ).text
        )
        == 200_000
    )


def test_parse_time_budget_skips_a_slow_file() -> None:
    spent = Budget(ParseLimits(seconds=1.0), started=0.0)  # a clock started long ago
    with pytest.raises(ParseError, match=r"^parsing took longer than 1 s$"):
        pdf.parse(pdf_bomb(10), "slow.pdf", ParseOptions(budget=spent))


def test_text_cap_applies_to_every_format(seeds: Path) -> None:
    for name in ("a.txt", "b.md", "c.html"):
        (seeds / name).write_text("<p>" + "word " * 400 + "</p>")
    files, _ = scan_seeds(seeds, MAX)
    for seed in files:
        with pytest.raises(ParseError, match=r"^extracted text longer than 100 characters$"):
            parse_seed(seed, limits=ParseLimits(max_chars=100))


def test_a_parser_crash_is_a_skip(seeds: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from service import parsers

    def broken(data: bytes, source: str, options: ParseOptions = DEFAULT_OPTIONS) -> Parsed:
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setitem(parsers.PARSERS, ".txt", broken)
    (seeds / "a.txt").write_text("hello")
    files, _ = scan_seeds(seeds, MAX)
    with pytest.raises(ParseError, match=r"^cannot parse \(RecursionError: maximum recursion"):
        parse_seed(files[0])


# --- the acceptance case: a hostile folder builds and serves the rest -----------------------


@pytest.fixture
def hostile(seeds: Path) -> Iterator[Path]:
    (seeds / "troops.txt").write_text("North Korea sent ten thousand troops to Russia.\n")
    (seeds / "loop.txt").symlink_to(seeds / "loop.txt")
    with open(os.path.join(os.fsencode(seeds), b"r\xe9sum\xe9.txt"), "wb") as handle:
        handle.write(b"latin-1 named file")
    (seeds / "bomb.pdf").write_bytes(pdf_bomb(3000))
    yield seeds


def test_hostile_seeds_build_skip_and_serve_the_rest(
    hostile: Path, settings: Settings, fake_embedder: FakeEmbedder, client_for: ClientFor
) -> None:
    limited = settings.model_copy(update={"max_text_chars": 100_000})
    report = Builder(limited, fake_embedder).build()
    skipped = sorted((s["source"], s["reason"]) for s in report.skipped)
    assert skipped == [
        ("bomb.pdf", "extracted text longer than 100000 characters"),
        ("loop.txt", "symlink loop"),
        ("r\\xe9sum\\xe9.txt", "file name is not valid UTF-8"),
    ]
    client = client_for(limited)
    info = client.get("/v1/index").json()
    assert sorted(s["source"] for s in info["skipped"]) == [s for s, _ in skipped]
    r = client.get("/v1/ask", params={"q": "troops sent to Russia"})
    assert r.status_code == 200
    assert r.json()["passages"][0]["citation"]["source"] == "troops.txt"
