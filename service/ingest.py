"""Ingest: walk the seeds folder and parse each supported file into a Document."""

from __future__ import annotations

import errno
import hashlib
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from service.errors import SeedsNotFoundError
from service.models import Document, Skipped
from service.parsers import PARSERS, SUPPORTED
from service.parsers.base import DEFAULT_OPTIONS, Parsed, ParseError, ParseLimits, ParseOptions

if TYPE_CHECKING:
    from service.config import Settings


@dataclass(frozen=True, slots=True)
class SeedFile:
    """A candidate file in the seeds folder, hashed but not yet parsed."""

    source: str
    path: Path
    sha256: str
    size: int


# Control characters in a source break citation URLs, log lines and the build report.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def printable_name(name: str) -> str:
    """A file name as a report can show it: undecodable bytes as \\xNN escapes."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def _walk(root: Path, skipped: list[Skipped]) -> Iterator[tuple[Path, str]]:
    """Yield (path, source) for every non-hidden entry below root, sorted, not following links.
    Folders that cannot be listed are reported in skipped."""

    def unreadable(exc: OSError) -> None:
        where = Path(exc.filename) if exc.filename else root
        inside = where.is_relative_to(root) and where != root
        source = printable_name(where.relative_to(root).as_posix()) if inside else "."
        skipped.append(Skipped(source, f"unreadable folder: {exc.strerror or exc}"))

    for dirpath, dirnames, filenames in os.walk(root, followlinks=False, onerror=unreadable):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        base = Path(dirpath)
        # Symlinked folders are listed in dirnames but never descended into; report them
        # as files so an outside link is visible in the build report.
        for name in list(dirnames):
            path = base / name
            try:
                linked = path.is_symlink()
            except OSError:
                linked = False
            if linked:
                dirnames.remove(name)
                yield path, path.relative_to(root).as_posix()
        for name in sorted(filenames):
            if not name.startswith("."):
                yield base / name, (base / name).relative_to(root).as_posix()


def _bad_name(source: str) -> str | None:
    """Why a source name cannot be indexed, or None."""
    try:
        source.encode("utf-8")
    except UnicodeEncodeError:
        return "file name is not valid UTF-8"
    if _CONTROL.search(source):
        return "file name holds control characters (newline, tab...)"
    return None


def _read_seed(path: Path, root: Path, max_file_bytes: int) -> tuple[bytes | None, str | None]:
    """(bytes, None) of a seed file, or (None, why it is skipped). Opened without following a
    last-component symlink, so a file swapped for a link during the scan is never read."""
    if path.is_symlink():
        target = path.resolve(strict=True)
        if not target.is_relative_to(root):
            return None, "symlink pointing outside the seeds folder"
        if target.is_dir():
            return None, "symlinked folder (not followed)"
        path = target
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            # Reading a FIFO or a device would block the build or never end.
            return None, "not a regular file"
        if info.st_size > max_file_bytes:
            return None, f"larger than {max_file_bytes} bytes"
        data = handle.read(max_file_bytes + 1)
    if len(data) > max_file_bytes:
        return None, f"larger than {max_file_bytes} bytes"
    return data, None


def _why(exc: BaseException) -> str:
    """A one-line reason for a seed that raised while scanned."""
    if isinstance(exc, OSError):
        if exc.errno == errno.ELOOP:
            return "symlink loop (or swapped for a symlink during the scan)"
        if exc.errno == errno.ENAMETOOLONG:
            return "path longer than the system allows"
        return f"unreadable: {exc.strerror or exc}"
    if isinstance(exc, RuntimeError):  # pathlib's "Symlink loop from ..."
        return "symlink loop"
    return f"unreadable: {exc}"


def scan_seeds(seeds_dir: Path, max_file_bytes: int) -> tuple[list[SeedFile], list[Skipped]]:
    """List the indexable files of seeds_dir with their sha256, and the files skipped with why.
    No single file or folder can stop the scan: whatever fails is a skip entry."""
    if seeds_dir.exists() and not seeds_dir.is_dir():
        raise SeedsNotFoundError(
            f"seeds folder {seeds_dir} is a file, not a folder; pass the folder that holds "
            f"the files to index ({SUPPORTED})"
        )
    if not seeds_dir.is_dir():
        raise SeedsNotFoundError(
            f"seeds folder {seeds_dir} does not exist; create it and add files of a supported "
            f"type ({SUPPORTED})"
        )
    root = seeds_dir.resolve()
    files: list[SeedFile] = []
    skipped: list[Skipped] = []
    for path, source in _walk(root, skipped):
        if (bad := _bad_name(source)) is not None:
            skipped.append(Skipped(printable_name(source), bad))
            continue
        try:
            supported = path.suffix.lower() in PARSERS
            if not supported and not path.is_symlink():
                skipped.append(Skipped(source, f"unsupported file type {path.suffix or '(none)'}"))
                continue
            data, why = _read_seed(path, root, max_file_bytes)
        except (OSError, RuntimeError, ValueError) as exc:
            skipped.append(Skipped(source, _why(exc)))
            continue
        if why is None and not supported:
            why = f"unsupported file type {path.suffix or '(none)'}"
        if data is None or why is not None:
            skipped.append(Skipped(source, why or "unreadable"))
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


def _attachment(
    parent: str, name: str, data: bytes, options: ParseOptions, limits: ParseLimits
) -> Document:
    """An attachment parsed as its own document `parent/name`; ParseError when it cannot be."""
    source = f"{parent}/{name}"
    parsed = _parse(data, source, options, limits)
    doc = _document(source, data, hashlib.sha256(data).hexdigest(), parsed)
    if parsed.attachments:
        # One level only: a message forwarded inside a message inside a message is rare, and
        # unbounded nesting would be a way to multiply work.
        extra = Skipped(source, "attachments of an attachment are not indexed")
        doc = replace(doc, omitted=(*doc.omitted, extra))
    return doc


def _parse(data: bytes, source: str, options: ParseOptions, limits: ParseLimits) -> Parsed:
    """One parse within limits (text length, time): ParseError or OSError when it fails, a
    parser's own bug included (one file must not stop a build)."""
    budget = limits.start()
    parser = PARSERS.get(Path(source).suffix.lower())
    if parser is None:
        raise ParseError(f"unsupported file type {Path(source).suffix or '(none)'}")
    try:
        parsed = parser(data, source, replace(options, budget=budget))
        budget.check(len(parsed.text))  # for parsers that do not check as they go
    except (ParseError, OSError):
        raise
    except (Exception, RecursionError) as exc:
        raise ParseError(f"cannot parse ({type(exc).__name__}: {exc})") from exc
    return parsed


def parse_seed(
    seed: SeedFile, options: ParseOptions = DEFAULT_OPTIONS, limits: ParseLimits | None = None
) -> Document:
    """Read and parse one seed file within limits; raises ParseError or OSError when it
    cannot be indexed.

    Attachments of supported types come back as documents of their own in `attachments`;
    the parts left out (of the file or its attachments) are listed in `omitted`.
    """
    limits = limits or ParseLimits()
    data = seed.path.read_bytes()
    if hashlib.sha256(data).hexdigest() != seed.sha256:
        # Changed between scan and parse: index what the manifest will claim, or nothing.
        raise ParseError("file changed while indexing; run the build again")
    parsed = _parse(data, seed.source, options, limits)
    doc = _document(seed.source, data, seed.sha256, parsed)
    attachments: list[Document] = []
    omitted = list(doc.omitted)
    for attachment in parsed.attachments:
        try:
            attachments.append(
                _attachment(seed.source, attachment.name, attachment.data, options, limits)
            )
        except ParseError as exc:
            omitted.append(Skipped(f"{seed.source}/{attachment.name}", str(exc)))
    for child in attachments:
        omitted.extend(child.omitted)
    return replace(doc, attachments=tuple(attachments), omitted=tuple(omitted))


def documents_of(doc: Document) -> list[Document]:
    """A parsed seed and its attachments, each a document of its own (without nesting)."""
    return [replace(doc, attachments=()), *(replace(a, omitted=()) for a in doc.attachments)]
