"""E-books (.epub): the chapters of the reading order (spine), each read by the HTML parser;
a chapter's headings are its sections, else its title is. DRM-protected books are refused."""

from __future__ import annotations

import posixpath
import zipfile
from urllib.parse import unquote

from defusedxml import ElementTree

from service.models import Section
from service.parsers import html
from service.parsers.base import (
    DEFAULT_OPTIONS,
    Parsed,
    ParseError,
    ParseOptions,
    TextBuilder,
    cut_title,
    file_title,
    open_zip,
)

EXTENSIONS = (".epub",)
_CONTAINER = "META-INF/container.xml"
_ENCRYPTION = "META-INF/encryption.xml"
_HTML_TYPES = frozenset({"application/xhtml+xml", "text/html"})


def _local(tag: str) -> str:
    """An XML tag without its namespace."""
    return tag.rsplit("}", 1)[-1]


def _read(archive: zipfile.ZipFile, name: str) -> bytes:
    """A member's bytes, or ParseError naming it."""
    try:
        return archive.read(name)
    except (KeyError, zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ParseError(f"broken e-book ({name}: {exc})") from exc


def _package(archive: zipfile.ZipFile) -> tuple[str, list[str]]:
    """The book's title and its chapter files in reading order."""
    try:
        container = ElementTree.fromstring(_read(archive, _CONTAINER))
        rootfile = next(e for e in container.iter() if _local(e.tag) == "rootfile")
        opf_path = unquote(rootfile.attrib["full-path"])
        opf = ElementTree.fromstring(_read(archive, opf_path))
    except ParseError:
        raise
    except Exception as exc:  # malformed XML, entity bombs (defusedxml), missing attributes
        raise ParseError(f"broken e-book package ({type(exc).__name__}: {exc})") from exc
    base = posixpath.dirname(opf_path)
    items = {
        e.attrib.get("id", ""): e.attrib
        for e in opf.iter()
        if _local(e.tag) == "item" and "href" in e.attrib
    }
    chapters = []
    for ref in (e for e in opf.iter() if _local(e.tag) == "itemref"):
        item = items.get(ref.attrib.get("idref", ""))
        if item is not None and item.get("media-type", "") in _HTML_TYPES:
            chapters.append(posixpath.normpath(posixpath.join(base, unquote(item["href"]))))
    title = next(
        (" ".join((e.text or "").split()) for e in opf.iter() if _local(e.tag) == "title"), ""
    )
    return title, chapters


def parse(data: bytes, source: str, options: ParseOptions = DEFAULT_OPTIONS) -> Parsed:
    """The spine's chapters in order, with chapter headings (or titles) as sections."""
    archive = open_zip(data, "e-book", options)
    with archive:
        names = set(archive.namelist())
        title, chapters = _package(archive)
        if _ENCRYPTION in names:
            encrypted = _read(archive, _ENCRYPTION).decode("utf-8", errors="replace")
            if any(posixpath.basename(c) in encrypted for c in chapters):
                raise ParseError("DRM-protected e-book (encrypted chapters)")
        out = TextBuilder()
        sections: list[Section] = []
        for chapter in chapters:
            if chapter not in names:
                continue
            try:
                parsed = html.parse(_read(archive, chapter), chapter)
            except ParseError:
                continue  # a cover or an image-only page
            span = out.add(parsed.text)
            if span is None:
                continue
            # Section offsets shift by the chapter's start when the block is the text unchanged.
            same = out.parts[-1] == parsed.text
            inner = [
                Section(span.start + s.start, span.start + s.end, s.path)
                for s in (parsed.sections if same else ())
            ]
            if inner:
                sections.extend(inner)
            elif parsed.title:
                sections.append(Section(span.start, span.end, parsed.title))
    text = out.text()
    if not text.strip():
        raise ParseError("no readable text in the e-book")
    return Parsed(text=text, title=cut_title(title) or file_title(source), sections=tuple(sections))
