"""Ingest: walk the seeds folder and parse each supported file into a Document."""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from service.errors import SeedsNotFoundError
from service.models import Document, Skipped
from service.parsers import PARSERS
from service.parsers.base import DEFAULT_OPTIONS, Parsed, ParseError, ParseOptions

if TYPE_CHECKING:
    from service.config import Settings


@dataclass(frozen=True, slots=True)
class SeedFile:
    """A candidate file in the seeds folder, hashed but not yet parsed."""

    source: str
    path: Path
    sha256: str
    size: int


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


def scan_seeds(seeds_dir: Path, max_file_bytes: int) -> tuple[list[SeedFile], list[Skipped]]:
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
            info = path.stat()
            if not stat.S_ISREG(info.st_mode):
                # Reading a FIFO or a device would block the build or never end.
                skipped.append(Skipped(source, "not a regular file"))
                continue
            size = info.st_size
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


def parse_options(settings: Settings) -> ParseOptions:
    """The parsers' limits and OCR settings of a configuration."""
    return ParseOptions(
        max_unzipped_bytes=settings.max_unzipped_bytes,
        max_sheet_rows=settings.max_sheet_rows,
        max_attachment_bytes=settings.max_file_bytes,
        ocr=settings.ocr,
        ocr_languages=settings.ocr_languages,
        ocr_cache_dir=settings.index_dir / "cache" / "ocr",
    )


def _document(source: str, data: bytes, sha256: str, parsed: Parsed) -> Document:
    """The Document of a parse; attachments are added by the caller."""
    if not parsed.text.strip():
        # Only a BOM or Unicode spaces: nothing to chunk or cite.
        raise ParseError("empty file")
    return Document(
        source=source,
        title=parsed.title,
        text=parsed.text,
        sha256=sha256,
        size=len(data),
        sections=parsed.sections,
        pages=parsed.pages,
        slides=parsed.slides,
        rows=parsed.rows,
        omitted=tuple(Skipped(source, reason) for reason in parsed.omitted),
    )


def _attachment(parent: str, name: str, data: bytes, options: ParseOptions) -> Document:
    """An attachment parsed as its own document `parent/name`; ParseError when it cannot be."""
    source = f"{parent}/{name}"
    parser = PARSERS.get(Path(name).suffix.lower())
    if parser is None:
        raise ParseError(f"unsupported file type {Path(name).suffix or '(none)'}")
    parsed = parser(data, source, options)
    doc = _document(source, data, hashlib.sha256(data).hexdigest(), parsed)
    if parsed.attachments:
        # One level only: a message forwarded inside a message inside a message is rare, and
        # unbounded nesting would be a way to multiply work.
        extra = Skipped(source, "attachments of an attachment are not indexed")
        doc = replace(doc, omitted=(*doc.omitted, extra))
    return doc


def parse_seed(seed: SeedFile, options: ParseOptions = DEFAULT_OPTIONS) -> Document:
    """Read and parse one seed file; raises ParseError or OSError when it cannot be indexed.

    Attachments of supported types come back as documents of their own in `attachments`;
    the parts left out (of the file or its attachments) are listed in `omitted`.
    """
    data = seed.path.read_bytes()
    if hashlib.sha256(data).hexdigest() != seed.sha256:
        # Changed between scan and parse: index what the manifest will claim, or nothing.
        raise ParseError("file changed while indexing; run the build again")
    parsed = PARSERS[seed.path.suffix.lower()](data, seed.source, options)
    doc = _document(seed.source, data, seed.sha256, parsed)
    attachments: list[Document] = []
    omitted = list(doc.omitted)
    for attachment in parsed.attachments:
        try:
            attachments.append(_attachment(seed.source, attachment.name, attachment.data, options))
        except ParseError as exc:
            omitted.append(Skipped(f"{seed.source}/{attachment.name}", str(exc)))
    for child in attachments:
        omitted.extend(child.omitted)
    return replace(doc, attachments=tuple(attachments), omitted=tuple(omitted))


def documents_of(doc: Document) -> list[Document]:
    """A parsed seed and its attachments, each a document of its own (without nesting)."""
    return [replace(doc, attachments=()), *(replace(a, omitted=()) for a in doc.attachments)]
