"""Rendering for chat clients: the Sources are a CommonMark list of links, markers point at
them, and link texts are escaped."""

from __future__ import annotations

from markdown_it import MarkdownIt

from service.answering import Answer, AskResult, Quote
from service.citations import Citation, Highlight, Passage
from service.rendering import escape, render, truncate

TEXT = "Alpha one.\nBeta two. Gamma three.\n"


def passage(rank: int, start: int, end: int) -> Passage:
    """A passage of TEXT in a.txt (lines 1-2) with the given span."""
    citation = Citation("a.txt", "A", 0, len(TEXT) - 1, 1, 2, f"c{rank}", "/v1/documents/a.txt")
    return Passage(rank, 1.0, TEXT[:-1], citation, (Highlight(start, end, TEXT[start:end]),))


def result(answer: Answer, passages: list[Passage]) -> AskResult:
    """An ask result around an answer."""
    return AskResult("q?", passages, answer, "b1", "m", 1.0, {})


def test_grounded_answer_renders_a_list_of_deep_links() -> None:
    """Markers are renumbered to the list, one entry per quoted sentence, each linking its span."""
    p1, p3 = passage(1, 11, 20), passage(3, 21, 33)
    answer = Answer(
        "Beta two. [3] Gamma three. [1]",
        True,
        (1, 3),
        (Quote(3, p3.highlights[0]), Quote(1, p1.highlights[0])),
    )
    rendered = render(result(answer, [p1, p3]), "http://h:1/")
    assert rendered.content == (
        "Beta two. [1] Gamma three. [2]\n\nSources:\n\n"
        "1. [a.txt, line 2](http://h:1/?doc=a.txt&start=21&end=33)\n"
        "2. [a.txt, line 2](http://h:1/?doc=a.txt&start=11&end=20)"
    )
    assert [rendered.content[m.start : m.end] for m in rendered.markers] == ["[1]", "[2]"]
    tokens = MarkdownIt("commonmark").parse(rendered.content)
    links = [
        c.attrGet("href") for t in tokens if t.type == "inline" for c in t.children or []
        if c.type == "link_open"
    ]  # fmt: skip
    assert [t.type for t in tokens].count("list_item_open") == 2
    assert links == [s.url for s in rendered.sources]
    cut = truncate(rendered, 14)
    assert cut.content == "Beta two. [1] " and len(cut.markers) == 1


def test_link_texts_are_escaped() -> None:
    """Brackets, stars and word-edge underscores are escaped; an inner underscore is not."""
    assert escape("a_b [x]*_y_.md") == "a_b \\[x\\]\\*\\_y\\_.md"
