"""Parsers by file extension: a format is one module with `EXTENSIONS` and
`parse(data: bytes, source: str, options: ParseOptions) -> Parsed`, listed in FORMATS."""

from __future__ import annotations

from types import ModuleType

from service.parsers import (
    delimited,
    epub,
    html,
    mail,
    markdown,
    opendocument,
    pdf,
    powerpoint,
    spreadsheet,
    text,
    word,
)
from service.parsers.base import Parser

FORMATS: tuple[ModuleType, ...] = (
    text,
    markdown,
    html,
    pdf,
    word,
    powerpoint,
    spreadsheet,
    delimited,
    epub,
    opendocument,
    mail,
)


def registry(formats: tuple[ModuleType, ...] = FORMATS) -> dict[str, Parser]:
    """Parser of each lower-case extension (".md") of the given format modules."""
    parsers: dict[str, Parser] = {}
    for module in formats:
        for extension in module.EXTENSIONS:
            parsers[extension] = module.parse
    return parsers


PARSERS: dict[str, Parser] = registry()
# The supported file types as messages list them: ".txt, .md, .markdown, ...".
SUPPORTED = ", ".join(PARSERS)
