"""Ingest: exact decoding, titles, and every file left out with the reason a user can act on."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from service.chunking import context_title
from service.errors import SeedsNotFoundError
from service.ingest import SeedFile, parse_seed, scan_seeds
from service.models import Document, Skipped
from service.parsers import FORMATS, PARSERS, SUPPORTED
from service.parsers.base import TITLE_MAX_CHARS, ParseError

MAX = 20_000_000


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def scan(seeds: Path, max_file_bytes: int = MAX) -> tuple[dict[str, SeedFile], list[Skipped]]:
    files, skipped = scan_seeds(seeds, max_file_bytes)
    return {f.source: f for f in files}, sorted(skipped, key=lambda s: s.source)


def parse_one(seeds: Path, name: str, data: bytes) -> Document:
    write(seeds / name, data)
    files, _ = scan(seeds)
    return parse_seed(files[name])


# --- decoding and titles ---------------------------------------------------------------------


def test_text_decoded_exactly_with_crlf(seeds: Path) -> None:
    data = "Première ligne\r\nSecond line\r\n\r\nLast, no newline".encode()
    doc = parse_one(seeds, "a.txt", data)
    assert doc == Document(
        source="a.txt",
        title="Première ligne",
        text="Première ligne\r\nSecond line\r\n\r\nLast, no newline",
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
    )


def test_bom_dropped_and_hash_of_the_file_bytes(seeds: Path) -> None:
    data = b"\xef\xbb\xbfHello\nworld\n"
    doc = parse_one(seeds, "bom.txt", data)
    assert (doc.text, doc.title, doc.size) == ("Hello\nworld\n", "Hello", len(data))
    assert doc.sha256 == hashlib.sha256(data).hexdigest()


def test_markdown_decoded_exactly(seeds: Path) -> None:
    text = "Intro line\r\n\r\n# The Heading\r\n\r\nBody \u2014 text.\r\n"
    doc = parse_one(seeds, "notes.md", text.encode())
    assert doc.text == text
    assert doc.title == "The Heading"


@pytest.mark.parametrize(
    ("name", "text", "title"),
    [
        ("a.txt", "\n\n   \n  First real line  \nSecond\n", "First real line"),
        ("a.txt", "# Not a heading in text\nbody", "# Not a heading in text"),
        ("a.md", "preamble\n## Sub heading\n# Main heading\nbody", "Main heading"),
        ("a.md", "#NoSpace\nbody", "#NoSpace"),
        ("a.md", "\n  text before\nmore", "text before"),
        # A long first line of plain text is a paragraph: the file name is the title.
        ("a.txt", "x" * 250 + "\nmore", "a.txt"),
        ("notes/a.txt", "word " * 50 + "\nmore", "a.txt"),
        ("a.txt", "  Short   title  \n" + "word " * 50, "Short title"),
        # Elsewhere a long title is cut after its last whole word, never inside one.
        ("a.md", "# " + "h" * 250 + "\nbody", "h" * 199 + "\u2026"),
        ("a.md", "   \n" + "y" * 201, "y" * 199 + "\u2026"),
        ("a.md", "# " + "abcdefghi " * 30 + "\nbody", ("abcdefghi " * 20).strip() + "\u2026"),
        ("a.md", "# " + "abcdefghij " * 30 + "\nbody", ("abcdefghij " * 18).strip() + "\u2026"),
        # Markdown titles are plain text: badges go, links keep their text, no markup.
        (
            "a.md",
            "# groundqa [![CI](https://x/badge.svg)](https://x/ci) ![logo](logo.png)\n",
            "groundqa",
        ),
        ("a.md", "# The **bold** and _quiet_ `code` [guide](g.md) ~~old~~\n",
         "The bold and quiet code guide old"),
        ("a.md", "# See <https://example.org> and <b>this</b>\n",
         "See https://example.org and this"),
        ("a.md", "# snake_case_name stays\n", "snake_case_name stays"),
        # Without a level-1 heading: the first line with text once plain (not a badge line).
        ("a.md", "[![CI](https://x/b.svg)](https://x)\n\n## How to *build*\n", "How to build"),
        ("a.md", "---\ntitle: front\n---\nFirst [line](x.md)\n", "First line"),
    ],
)  # fmt: skip
def test_titles(seeds: Path, name: str, text: str, title: str) -> None:
    assert parse_one(seeds, name, text.encode()).title == title


def test_nested_folders_give_forward_slash_sources(seeds: Path) -> None:
    write(seeds / "top.txt", b"top")
    write(seeds / "a" / "b" / "deep.md", b"# Deep")
    write(seeds / "a" / "mid.TXT", b"mid")
    files, skipped = scan(seeds)
    assert sorted(files) == ["a/b/deep.md", "a/mid.TXT", "top.txt"]
    assert skipped == []
    assert parse_seed(files["a/b/deep.md"]).source == "a/b/deep.md"
    assert files["a/mid.TXT"].sha256 == hashlib.sha256(b"mid").hexdigest()
    assert files["a/mid.TXT"].size == 3


def test_hidden_files_and_folders_are_ignored(seeds: Path) -> None:
    write(seeds / ".hidden.txt", b"secret")
    write(seeds / ".git" / "config.txt", b"secret")
    write(seeds / "sub" / ".cache" / "x.md", b"secret")
    write(seeds / "visible.txt", b"shown")
    files, skipped = scan(seeds)
    assert sorted(files) == ["visible.txt"]
    assert skipped == []


# --- skipped files ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty file"),
        (b"  \r\n\t\n ", "empty file"),
        (b"\xef\xbb\xbf", "empty file"),
        ("\u00a0\u3000\n".encode(), "empty file"),
        (b"text\x00more", "binary file (contains NUL bytes)"),
        (b"\x89PNG\r\n\x1a\n\x00\x00", "binary file (contains NUL bytes)"),
        (b"caf\xe9 au lait", "not valid UTF-8 (byte 3)"),
        (b"ok \xff\xfe", "not valid UTF-8 (byte 3)"),
    ],
)
def test_unparseable_content_raises_with_reason(seeds: Path, data: bytes, reason: str) -> None:
    with pytest.raises(ParseError) as info:
        parse_one(seeds, "bad.txt", data)
    assert str(info.value) == reason


def test_size_limit(seeds: Path) -> None:
    write(seeds / "exact.txt", b"x" * 10)
    write(seeds / "over.txt", b"x" * 11)
    files, skipped = scan(seeds, max_file_bytes=10)
    assert sorted(files) == ["exact.txt"]
    assert skipped == [Skipped("over.txt", "larger than 10 bytes")]


def test_unsupported_extensions(seeds: Path) -> None:
    write(seeds / "photo.png", b"png")
    write(seeds / "README", b"readme")
    write(seeds / "archive.tar.gz", b"gz")
    files, skipped = scan(seeds)
    assert files == {}
    assert skipped == [
        Skipped("README", "unsupported file type (none)"),
        Skipped("archive.tar.gz", "unsupported file type .gz"),
        Skipped("photo.png", "unsupported file type .png"),
    ]


def test_symlinks_pointing_outside_are_skipped(seeds: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    write(outside / "secret.txt", b"secret")
    write(seeds / "inside.txt", b"inside")
    (seeds / "file_link.txt").symlink_to(outside / "secret.txt")
    (seeds / "folder_link").symlink_to(outside, target_is_directory=True)
    (seeds / "relative_link.txt").symlink_to(Path("..") / "outside" / "secret.txt")
    files, skipped = scan(seeds)
    assert sorted(files) == ["inside.txt"]
    assert skipped == [
        Skipped("file_link.txt", "symlink pointing outside the seeds folder"),
        Skipped("folder_link", "symlink pointing outside the seeds folder"),
        Skipped("relative_link.txt", "symlink pointing outside the seeds folder"),
    ]


def test_symlinks_inside_the_seeds_folder(seeds: Path) -> None:
    write(seeds / "real" / "doc.txt", b"doc")
    (seeds / "alias.txt").symlink_to(seeds / "real" / "doc.txt")
    (seeds / "real_again").symlink_to(seeds / "real", target_is_directory=True)
    files, skipped = scan(seeds)
    assert sorted(files) == ["alias.txt", "real/doc.txt"]
    assert skipped == [Skipped("real_again", "symlinked folder (not followed)")]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file_is_skipped(seeds: Path) -> None:
    path = write(seeds / "locked.txt", b"locked")
    path.chmod(0)
    try:
        files, skipped = scan(seeds)
    finally:
        path.chmod(0o644)
    assert files == {}
    assert skipped == [Skipped("locked.txt", "unreadable: Permission denied")]


def test_missing_seeds_folder(tmp_path: Path) -> None:
    with pytest.raises(SeedsNotFoundError) as info:
        scan_seeds(tmp_path / "nope", MAX)
    assert str(info.value) == (
        f"seeds folder {tmp_path / 'nope'} does not exist; create it and add files of a "
        f"supported type ({', '.join(PARSERS)})"
    )


def test_seeds_folder_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("Notes.")
    with pytest.raises(SeedsNotFoundError) as info:
        scan_seeds(tmp_path / "notes.txt", MAX)
    assert str(info.value) == (
        f"seeds folder {tmp_path / 'notes.txt'} is a file, not a folder; pass the folder that "
        f"holds the files to index ({', '.join(PARSERS)})"
    )


def test_messages_list_every_supported_file_type() -> None:
    assert SUPPORTED.split(", ") == [e for m in FORMATS for e in m.EXTENSIONS]
    assert SUPPORTED.startswith(".txt, .md, .markdown, .html, .htm, .pdf, .docx")


def test_file_changed_between_scan_and_parse(seeds: Path) -> None:
    path = write(seeds / "a.txt", b"before")
    files, _ = scan(seeds)
    path.write_bytes(b"after")
    with pytest.raises(ParseError) as info:
        parse_seed(files["a.txt"])
    assert str(info.value) == "file changed while indexing; run the build again"


def test_a_file_name_title_keeps_the_first_line_as_embedded_context(seeds: Path) -> None:
    line = "North Korea " + "sent troops to Russia " * 12
    doc = parse_one(seeds, "notes/000_61.txt", (line + "\nMore.\n").encode())
    assert doc.title == "000_61.txt"  # a paragraph is no title
    assert context_title(doc) == line.strip()[:TITLE_MAX_CHARS]
    short = parse_one(seeds, "short.txt", b"Short title\nBody.\n")
    assert context_title(short) == short.title == "Short title"
