"""Ingest: walk the seeds folder and parse each supported file into a Document."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from service.errors import SeedsNotFoundError
from service.models import Document, Skipped

TITLE_MAX_CHARS = 200


@dataclass(frozen=True, slots=True)
class Parsed:
    """What a parser extracts from a file's bytes: the citable text and its title."""

    text: str
    title: str


class ParseError(ValueError):
    """A file's content cannot be indexed; the message is the reason shown to users."""


Parser = Callable[[bytes, str], Parsed]


@dataclass(frozen=True, slots=True)
class SeedFile:
    """A candidate file in the seeds folder, hashed but not yet parsed."""

    source: str
    path: Path
    sha256: str
    size: int


def decode_utf8(data: bytes) -> str:
    """Decode bytes as UTF-8 text exactly (no newline translation), or raise ParseError."""
    if not data.strip():
        raise ParseError("empty file")
    if b"\x00" in data:
        raise ParseError("binary file (contains NUL bytes)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ParseError(f"not valid UTF-8 (byte {exc.start})") from exc
    # A BOM is an encoding artefact, not content; dropping it keeps offsets aligned with
    # what editors show.  The document text served is this decoded text.
    return text.removeprefix("\ufeff")


def first_line_title(text: str, fallback: str) -> str:
    """The first non-empty line, cut to TITLE_MAX_CHARS, or the fallback."""
    for line in text.splitlines():
        if line.strip():
            return line.strip()[:TITLE_MAX_CHARS]
    return fallback[:TITLE_MAX_CHARS]


def markdown_title(text: str, fallback: str) -> str:
    """The first `# ` heading, else the first non-empty line."""
    for line in text.splitlines():
        if line.startswith("# ") and line[2:].strip():
            return line[2:].strip()[:TITLE_MAX_CHARS]
    return first_line_title(text, fallback)


def parse_text(data: bytes, source: str) -> Parsed:
    """Plain text: the decoded file is the document."""
    text = decode_utf8(data)
    return Parsed(text=text, title=first_line_title(text, source))


def parse_markdown(data: bytes, source: str) -> Parsed:
    """Markdown: the decoded file is the document; the title is its `# ` heading."""
    text = decode_utf8(data)
    return Parsed(text=text, title=markdown_title(text, source))


PARSERS: dict[str, Parser] = {".txt": parse_text, ".md": parse_markdown}


def _walk(root: Path) -> Iterator[tuple[Path, str]]:
    """Yield (path, source) for every non-hidden entry below root, sorted, not following links."""
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        base = Path(dirpath)
        # Symlinked folders are listed in dirnames but never descended into; report them
        # as files so an outside link is visible in the build report.
        for name in sorted(dirnames):
            if (base / name).is_symlink():
                yield base / name, (base / name).relative_to(root).as_posix()
        for name in sorted(filenames):
            if not name.startswith("."):
                yield base / name, (base / name).relative_to(root).as_posix()


def scan_seeds(
    seeds_dir: Path, max_file_bytes: int
) -> tuple[list[SeedFile], list[Skipped]]:
    """List the indexable files of seeds_dir with their sha256, and the files skipped with why."""
    if not seeds_dir.is_dir():
        raise SeedsNotFoundError(
            f"seeds folder {seeds_dir} does not exist; create it and add .txt or .md files"
        )
    root = seeds_dir.resolve()
    files: list[SeedFile] = []
    skipped: list[Skipped] = []
    for path, source in _walk(root):
        if path.is_symlink():
            target = path.resolve()
            if not target.is_relative_to(root):
                skipped.append(Skipped(source, "symlink pointing outside the seeds folder"))
                continue
            if target.is_dir():
                skipped.append(Skipped(source, "symlinked folder (not followed)"))
                continue
        if path.suffix.lower() not in PARSERS:
            skipped.append(Skipped(source, f"unsupported file type {path.suffix or '(none)'}"))
            continue
        try:
            size = path.stat().st_size
            if size > max_file_bytes:
                skipped.append(Skipped(source, f"larger than {max_file_bytes} bytes"))
                continue
            data = path.read_bytes()
        except OSError as exc:
            skipped.append(Skipped(source, f"unreadable: {exc.strerror or exc}"))
            continue
        digest = hashlib.sha256(data).hexdigest()
        files.append(SeedFile(source=source, path=path, sha256=digest, size=len(data)))
    return files, skipped


def parse_seed(seed: SeedFile) -> Document:
    """Read and parse one seed file; raises ParseError or OSError when it cannot be indexed."""
    data = seed.path.read_bytes()
    if hashlib.sha256(data).hexdigest() != seed.sha256:
        # Changed between scan and parse: index what the manifest will claim, or nothing.
        raise ParseError("file changed while indexing; run the build again")
    parsed = PARSERS[seed.path.suffix.lower()](data, seed.source)
    return Document(
        source=seed.source, title=parsed.title, text=parsed.text, sha256=seed.sha256,
        size=seed.size,
    )
