"""OCR of PDF pages without a text layer: PDFium renders the page, Tesseract reads it, and the
text is cached by a hash of the rendered page so a rebuild never recognises a page twice."""

from __future__ import annotations

import functools
import hashlib
import math
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from service.parsers.base import ParseOptions, clean

DPI = 300
MAX_PIXELS = 40_000_000  # a poster-sized page is rendered smaller rather than filling memory
PAGE_TIMEOUT = 180  # seconds Tesseract may take on one page
# Files indexed (or skipped) without OCR are not re-read until they change: hence --full.
INSTALL_HINT = (
    "install Tesseract (apt-get install tesseract-ocr tesseract-ocr-eng), then run "
    "`groundqa index --full` to OCR them"
)


@dataclass(frozen=True, slots=True)
class OcrResult:
    """Recognised text by 0-based page index, and why other pages have none."""

    texts: dict[int, str]
    omitted: tuple[str, ...]


@functools.cache
def tesseract_version() -> str | None:
    """The installed Tesseract's version, or None when it is not installed."""
    if shutil.which("tesseract") is None:
        return None
    try:
        import pytesseract

        return str(pytesseract.get_tesseract_version())
    except Exception:
        return None


def page_list(pages: Sequence[int]) -> str:
    """1-based page numbers of 0-based indexes, named ("page 2", "pages 1, 3-5")."""
    numbers = sorted(p + 1 for p in pages)
    runs: list[str] = []
    first = prev = numbers[0]
    for n in [*numbers[1:], None]:
        if n is not None and n == prev + 1:
            prev = n
            continue
        runs.append(str(first) if first == prev else f"{first}-{prev}")
        if n is not None:
            first = prev = n
    return ("page " if len(numbers) == 1 else "pages ") + ", ".join(runs)


def _cache_read(folder: Path | None, key: str) -> str | None:
    """Cached text of a page image, if any."""
    if folder is None:
        return None
    try:
        return (folder / f"{key}.txt").read_text(encoding="utf-8")
    except OSError:
        return None


def _cache_write(folder: Path | None, key: str, text: str) -> None:
    """Store a page's text atomically; a cache that cannot be written only costs time."""
    if folder is None:
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".tmp-{key}.{os.getpid()}"
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, folder / f"{key}.txt")
    except OSError:
        pass


def recognise(data: bytes, pages: Sequence[int], options: ParseOptions, source: str) -> OcrResult:
    """OCR of the given 0-based pages of a PDF, or the reason they stay empty."""
    if not pages:
        return OcrResult({}, ())
    listed = page_list(pages)
    if options.ocr == "off":
        return OcrResult({}, (f"{listed}: no text layer, not OCRed (GROUNDQA_OCR=off)",))
    version = tesseract_version()
    if version is None:
        return OcrResult({}, (f"{listed}: no text layer; {INSTALL_HINT}",))
    import pypdfium2 as pdfium
    import pytesseract

    texts: dict[int, str] = {}
    failed: list[int] = []
    try:
        document = pdfium.PdfDocument(data)
    except Exception:
        return OcrResult({}, (f"{listed}: no text layer, and PDFium cannot render them",))
    try:
        for index in tqdm(pages, desc=f"OCR {source}", unit="page", leave=False, disable=None):
            try:
                page = document[index]
                width, height = page.get_size()
                scale = min(DPI / 72, math.sqrt(MAX_PIXELS / max(width * height, 1.0)))
                image = page.render(scale=scale, grayscale=True).to_pil()
                if image.getextrema() == (255, 255):
                    texts[index] = ""  # a blank page: nothing for Tesseract to read
                    continue
                key = hashlib.sha256(
                    f"{image.mode}{image.size}{options.ocr_languages}{version}".encode()
                    + image.tobytes()
                ).hexdigest()
                text = _cache_read(options.ocr_cache_dir, key)
                if text is None:
                    raw = pytesseract.image_to_string(
                        image, lang=options.ocr_languages, timeout=PAGE_TIMEOUT
                    )
                    text = "\n".join(line.rstrip() for line in clean(raw).split("\n")).strip()
                    _cache_write(options.ocr_cache_dir, key, text)
                texts[index] = text
            except Exception:  # a page PDFium cannot render or Tesseract cannot read (timeout)
                failed.append(index)
    finally:
        document.close()
    omitted = (f"{page_list(failed)}: OCR failed",) if failed else ()
    return OcrResult(texts, omitted)
