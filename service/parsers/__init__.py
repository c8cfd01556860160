"""Parsers by file extension: a format is one module with `EXTENSIONS` and
`parse(data: bytes, source: str, budget: Budget | None = None) -> Parsed`, listed in FORMATS."""

from __future__ import annotations

from types import ModuleType

from service.parsers import html, markdown, pdf, text
from service.parsers.base import Parser

FORMATS: tuple[ModuleType, ...] = (text, markdown, html, pdf)


def registry(formats: tuple[ModuleType, ...] = FORMATS) -> dict[str, Parser]:
    """Parser of each lower-case extension (".md") of the given format modules."""
    parsers: dict[str, Parser] = {}
    for module in formats:
        for extension in module.EXTENSIONS:
            parsers[extension] = module.parse
    return parsers


PARSERS: dict[str, Parser] = registry()
