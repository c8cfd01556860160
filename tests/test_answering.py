"""Answer sentences: only prose is ever quoted, never headings, fences or metadata lines."""

from __future__ import annotations

import pytest

from service.answering import ask
from service.builds import IndexHolder
from service.indexing import Builder
from service.models import Span
from service.search import Searcher
from service.sentences import prose, sentences_of
from tests.conftest import FakeEmbedder, WriteSeed


@pytest.mark.parametrize(
    ("text", "quoted"),
    [
        ("## How to build and test", None),
        ("# Install\nRun make install first.", "Run make install first."),
        ("Format: https://example.com/spec Upstream-Name: groundqa\nIt is MIT.", "It is MIT."),
        ("Note: this line is prose.", "Note: this line is prose."),
        ("```sh\nmake test\n```", None),
        ("---", None),
        ("-", None),
        ("  Indented prose\n  goes on.", "Indented prose\n  goes on."),
        ("A sentence.\n## Next heading", "A sentence."),
    ],
)
def test_prose_keeps_only_what_reads_as_a_sentence(text: str, quoted: str | None) -> None:
    """The quotable part of a sentence span, or None."""
    span = prose(text, Span(0, len(text)))
    assert (text[span.start : span.end] if span else None) == quoted


def test_sentences_of_a_markdown_passage_skip_its_headings() -> None:
    """Every sentence span is prose and lies inside the text."""
    text = "# Guide\n\n## Build\n\nRun make test to build. It takes a minute.\n"
    spans = sentences_of(text).spans
    assert [text[s.start : s.end] for s in spans] == [
        "Run make test to build.",
        "It takes a minute.",
    ]


def test_answer_under_a_heading_quotes_the_sentence(
    builder: Builder, write_seed: WriteSeed, fake_embedder: FakeEmbedder
) -> None:
    """A Markdown seed whose answer sits under a matching heading is answered with the
    sentence, and the highlight reproduces the document text."""
    text = "# Project\n\n## How to build and test\n\nRun make test to build and test the project.\n"
    write_seed("guide.md", text)
    builder.build()
    holder = IndexHolder(builder.settings.index_dir, fake_embedder)
    holder.refresh()
    result = ask(
        Searcher(builder.settings, fake_embedder, holder), "How to build and test?", top_k=1
    )
    assert result.answer.text == "Run make test to build and test the project. [1]"
    (mark,) = result.passages[0].highlights
    assert text[mark.char_start : mark.char_end] == mark.text
