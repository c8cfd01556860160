"""HTML: the page's main text as plain text, without navigation, scripts and other chrome."""

from __future__ import annotations

import codecs
import re

from selectolax.lexbor import LexborHTMLParser, LexborNode

from service.parsers.base import (
    DEFAULT_OPTIONS,
    Heading,
    Parsed,
    ParseError,
    ParseOptions,
    cut_title,
    first_line_title,
    sections_from_headings,
)

EXTENSIONS = (".html", ".htm")

# Never text: code, styling, widgets and page chrome.
_DROP_TAGS = frozenset(
    {
        "script",
        "style",
        "noscript",
        "nav",
        "aside",
        "form",
        "template",
        "svg",
        "math",
        "head",
        "title",
        "iframe",
        "object",
        "embed",
        "canvas",
        "select",
        "button",
        "dialog",
    }
)
_DROP_ROLES = frozenset({"navigation", "banner", "contentinfo"})
# Site header and footer; a <header> inside an article holds its heading and is kept.
_CHROME_TAGS = frozenset({"header", "footer"})
_CONTENT_TAGS = frozenset({"article", "main"})
_PARAGRAPHS = frozenset(
    {
        "p",
        "pre",
        "blockquote",
        "ul",
        "ol",
        "dl",
        "table",
        "figure",
        "hr",
        "section",
        "article",
        "main",
        "address",
        "details",
        "fieldset",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
    }
)
_LINES = frozenset(
    {
        "div",
        "li",
        "tr",
        "dt",
        "dd",
        "caption",
        "figcaption",
        "summary",
        "legend",
        "center",
        "body",
    }
)
_HEADINGS = {f"h{n}": n for n in range(1, 7)}
_CELLS = frozenset({"td", "th"})
_WHITESPACE = re.compile(r"\s+")
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?([\w.:-]+)""", re.IGNORECASE)
_PERMALINK = "¶#§🔗 "


def decode_html(data: bytes) -> str:
    """Text of an HTML file: BOM, then UTF-8, then the declared charset, then Windows-1252."""
    if not data.strip():
        raise ParseError("empty file")
    for bom, encoding in (
        (codecs.BOM_UTF8, "utf-8"),
        (codecs.BOM_UTF16_LE, "utf-16-le"),
        (codecs.BOM_UTF16_BE, "utf-16-be"),
    ):
        if data.startswith(bom):
            return data[len(bom) :].decode(encoding, errors="replace")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    declared = _META_CHARSET.search(data[:4096])
    if declared:
        try:
            return data.decode(declared.group(1).decode("ascii"), errors="replace")
        except LookupError:
            pass
    return data.decode("windows-1252", errors="replace")


class _Writer:
    """Plain text built like a browser lays it out: collapsed inline whitespace, line breaks
    between blocks, and a blank line between paragraphs and headings."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.length = 0
        self.breaks = 0  # newlines owed before the next text
        self.space = False  # a space is owed before the next text
        self.separator = ""  # owed between table cells
        self.marker_end = -1  # where a list marker ended: no break right after it

    def block(self, newlines: int) -> None:
        """End the current line (1) or paragraph (2) before any further text."""
        self.breaks = max(self.breaks, newlines)

    def line_break(self) -> None:
        """A <br>: one more newline, up to a blank line."""
        self.breaks = min(self.breaks + 1, 2) if self.length else 0

    def prefix(self) -> str:
        """What is written before the next text."""
        if not self.length or self.marker_end == self.length:
            return ""
        if self.breaks:
            return "\n" * self.breaks
        return self.separator or (" " if self.space else "")

    def _write(self, text: str) -> None:
        lead = self.prefix()
        self.parts.extend((lead, text))
        self.length += len(lead) + len(text)
        self.breaks, self.space, self.separator = 0, False, ""

    def inline(self, raw: str) -> None:
        """A text node: whitespace runs count as one space, none at a line's start."""
        collapsed = _WHITESPACE.sub(" ", raw)
        words = collapsed.strip()
        if not words:
            self.space = self.space or bool(collapsed)
            return
        self.space = self.space or collapsed[0] == " "
        self._write(words)
        self.space = collapsed[-1] == " "

    def verbatim(self, raw: str) -> None:
        """Preformatted text, kept as is."""
        if raw.strip():
            self._write(raw)

    def marker(self, text: str) -> None:
        """A list item's bullet or number, glued to the item's first text."""
        self._write(text)
        self.marker_end = self.length

    def text(self) -> str:
        """Everything written."""
        return "".join(self.parts)


def _is_dropped(node: LexborNode, tag: str, content_depth: int) -> bool:
    """Whether an element and everything inside it is left out."""
    attrs = node.attributes
    if tag in _DROP_TAGS or "hidden" in attrs:
        return True
    if (attrs.get("role") or "").strip().lower() in _DROP_ROLES:
        return True
    if (attrs.get("aria-hidden") or "").strip().lower() == "true":
        return True
    return tag in _CHROME_TAGS and (tag == "footer" or content_depth == 0)


class _Extractor:
    """Walks the content root once, writing text and noting where headings are."""

    def __init__(self) -> None:
        self.out = _Writer()
        self.headings: list[Heading] = []
        self.lists: list[list[int]] = []  # per open list: [next number], or [] when unordered
        self.content_depth = 0
        self.heading: tuple[int, int, int] | None = None  # open heading: level, start, part

    def run(self, root: LexborNode) -> None:
        # An explicit stack: deeply nested pages must not hit the recursion limit.
        stack: list[tuple[LexborNode, bool]] = [(root, False)]
        while stack:
            node, leaving = stack.pop()
            if leaving:
                self._leave(node, node.tag or "")
                continue
            if node.is_text_node:
                self.out.inline(node.text_content or "")
                continue
            tag = node.tag or ""
            if not node.is_element_node or _is_dropped(node, tag, self.content_depth):
                continue
            if not self._enter(node, tag):
                continue
            stack.append((node, True))
            children: list[LexborNode] = []
            child = node.child
            while child is not None:
                children.append(child)
                child = child.next
            stack.extend((c, False) for c in reversed(children))

    def _enter(self, node: LexborNode, tag: str) -> bool:
        """Open an element; False when its content was handled here."""
        out = self.out
        if tag in _PARAGRAPHS:
            out.block(2)
        elif tag in _LINES:
            out.block(1)
        if tag in _CONTENT_TAGS:
            self.content_depth += 1
        if tag == "br":
            out.line_break()
        elif tag == "pre":
            out.verbatim(node.text(deep=True).strip("\n").rstrip())
            out.block(2)
            return False
        elif tag in ("ul", "ol"):
            self.lists.append([_start(node)] if tag == "ol" else [])
        elif tag == "li":
            counter = self.lists[-1] if self.lists else []
            if counter:
                out.marker(f"{counter[0]}. ")
                counter[0] += 1
            else:
                out.marker("- ")
        elif tag in _CELLS and _has_cell_before(node):
            out.separator = " | "
        elif tag in _HEADINGS and self.heading is None:
            self.heading = (_HEADINGS[tag], out.length + len(out.prefix()), len(out.parts))
        return True

    def _leave(self, node: LexborNode, tag: str) -> None:
        out = self.out
        if tag in _CONTENT_TAGS:
            self.content_depth -= 1
        if tag in ("ul", "ol") and self.lists:
            self.lists.pop()
        if tag in _HEADINGS and self.heading is not None and _HEADINGS[tag] == self.heading[0]:
            level, start, part = self.heading
            self.heading = None
            title = " ".join("".join(out.parts[part:]).split()).rstrip(_PERMALINK)
            if out.length > start and title:
                self.headings.append(Heading(start, out.length, level, title))
        if tag in _PARAGRAPHS:
            out.block(2)
        elif tag in _LINES:
            out.block(1)


def _start(node: LexborNode) -> int:
    """First number of an ordered list."""
    try:
        return int(node.attributes.get("start") or 1)
    except ValueError:
        return 1


def _has_cell_before(node: LexborNode) -> bool:
    """Whether a table cell has an earlier cell in its row."""
    prev = node.prev
    while prev is not None:
        if prev.tag in _CELLS:
            return True
        prev = prev.prev
    return False


def _content_root(tree: LexborHTMLParser) -> LexborNode | None:
    """<main>, else the only <article>, else <body>."""
    main = tree.css_first("main, [role=main]")
    if main is not None:
        return main
    articles = tree.css("article")
    if len(articles) == 1:
        return articles[0]
    return tree.body or tree.root


def _title(tree: LexborHTMLParser, text: str, headings: list[Heading], source: str) -> str:
    """<title>, else the first h1, else the first non-empty line."""
    node = tree.css_first("title")
    title = " ".join(node.text(deep=True).split()) if node is not None else ""
    if not title:
        title = next((h.title for h in headings if h.level == 1), "")
    if not title:
        h1 = tree.css_first("h1")
        title = " ".join(h1.text(deep=True).split()) if h1 is not None else ""
    return cut_title(title) if title else first_line_title(text, source)


def parse(data: bytes, source: str, options: ParseOptions = DEFAULT_OPTIONS) -> Parsed:
    """The main text of an HTML page, with headings as sections and <title> as title."""
    tree = LexborHTMLParser(decode_html(data))
    root = _content_root(tree)
    extractor = _Extractor()
    if root is not None:
        extractor.run(root)
    text = extractor.out.text()
    if not text.strip():
        raise ParseError("no readable text in the HTML page")
    headings = extractor.headings
    return Parsed(
        text=text,
        title=_title(tree, text, headings, source),
        sections=sections_from_headings(text, headings),
    )
