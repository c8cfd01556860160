"""PDF: the text of every page, pages separated by a blank line, each page's range kept."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

from service.models import Span
from service.parsers import ocr
from service.parsers.base import (
    DEFAULT_OPTIONS,
    Budget,
    Parsed,
    ParseError,
    ParseOptions,
    cut_title,
    first_line_title,
)

if TYPE_CHECKING:
    from pypdf import PdfReader

EXTENSIONS = (".pdf",)
PAGE_SEPARATOR = "\n\n"


def _open(data: bytes) -> PdfReader:
    """A reader over data, decrypted when no password is needed; ParseError otherwise."""
    from pypdf import PdfReader

    if not data.lstrip().startswith(b"%PDF-"):
        raise ParseError("not a PDF file (no %PDF- header)")
    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        encrypted = reader.is_encrypted
    except Exception as exc:  # pypdf raises many types on damaged files; none may stop a build
        raise ParseError(f"broken PDF ({type(exc).__name__}: {exc})") from exc
    if encrypted:
        try:
            decrypted = bool(reader.decrypt(""))  # only an owner password: readable as is
        except Exception as exc:
            raise ParseError(f"encrypted PDF that cannot be decrypted ({exc})") from exc
        if not decrypted:
            raise ParseError("encrypted PDF (needs a password)")
    return reader


def _page_texts(reader: PdfReader, budget: Budget) -> list[str]:
    """Extracted text of each page; a page whose text cannot be extracted counts as empty.
    The budget is checked after every page: a small file can hold a huge page stream."""
    try:
        pages = list(reader.pages)
    except Exception as exc:
        raise ParseError(f"broken PDF ({type(exc).__name__}: {exc})") from exc
    if not pages:
        raise ParseError("broken PDF (no pages)")
    texts: list[str] = []
    total = seen = 0
    budget.check(total)

    def visit(text: str, *_: object) -> None:
        # Called for every piece of text while a page is extracted: a page stream that
        # expands to millions of characters stops at the cap, not after minutes of work.
        nonlocal seen
        seen += len(text)
        budget.check(seen)

    for page in pages:
        seen = total
        try:
            raw = page.extract_text(visitor_text=visit)
        except ParseError:
            raise
        except Exception:
            raw = ""
        texts.append(raw.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "").strip())
        total += len(texts[-1])
        budget.check(total)
        total += len(PAGE_SEPARATOR)
    return texts


def _metadata_title(reader: PdfReader) -> str:
    """The document information title, or "" when absent or unreadable."""
    try:
        title = reader.metadata.title if reader.metadata else None
    except Exception:
        return ""
    return " ".join(str(title).split()) if title else ""


def parse(data: bytes, source: str, options: ParseOptions = DEFAULT_OPTIONS) -> Parsed:
    """Every page's text in order, pages without a text layer OCRed when Tesseract is there,
    with page ranges; skipped when no page has text."""
    budget = options.budget or Budget()
    reader = _open(data)
    texts = _page_texts(reader, budget)
    recognised = ocr.recognise(data, [i for i, t in enumerate(texts) if not t], options, source)
    for index, page_text in recognised.texts.items():
        texts[index] = page_text
    if not any(texts):
        reason = "; ".join(recognised.omitted) or "no text found by OCR"
        raise ParseError(f"no extractable text (scanned or image-only PDF?): {reason}")
    pages: list[Span] = []
    pos = 0
    for i, page_text in enumerate(texts):
        if i:
            pos += len(PAGE_SEPARATOR)
        pages.append(Span(pos, pos + len(page_text)))
        pos += len(page_text)
    text = PAGE_SEPARATOR.join(texts)
    title = cut_title(_metadata_title(reader)) or first_line_title(text, source)
    return Parsed(text=text, title=title, pages=tuple(pages), omitted=recognised.omitted)
