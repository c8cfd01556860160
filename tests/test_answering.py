"""Answer sentences: only prose is ever quoted, never headings, fences or metadata lines."""

from __future__ import annotations

import pytest

from service.answering import SentenceChoice, ask, best_highlights, best_sentences
from service.builds import IndexHolder
from service.indexing import Builder
from service.keyword import KeywordIndex, tokenize
from service.models import Chunk, Hit, Span
from service.question_types import answer_kind, has_kind
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


def test_the_title_line_of_a_plain_text_passage_is_no_sentence() -> None:
    """A .txt document's first line is its title: alone and unpunctuated it is a heading,
    never quoted or scored; a sentence holding the title's words stays, and so does a title
    that is a sentence."""
    text = "Ctenophora\n\nCtenophora live in bays. They glow.\n"
    spans = sentences_of(text, "Ctenophora").spans
    assert [text[s.start : s.end] for s in spans] == ["Ctenophora live in bays.", "They glow."]
    assert len(sentences_of(text).spans) == 3  # without the title, the line reads as prose
    said = "Paris is the capital of France.\nThe Eiffel Tower is in Paris.\n"
    assert len(sentences_of(said, "Paris is the capital of France.").spans) == 2


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


@pytest.mark.parametrize(
    ("question", "kind"),
    [
        ("How many troops did North Korea send?", "number"),
        ("When was the dam built?", "number"),
        ("In what year did the war end?", "number"),
        ("Who wrote the letter?", "name"),
        ("Where were the troops deployed?", "name"),
        ("Why are casualties so high?", None),
    ],
)
def test_answer_kind_of_a_question(question: str, kind: str | None) -> None:
    assert answer_kind(question) == kind


def test_has_kind_needs_a_digit_or_a_name_past_the_first_word() -> None:
    assert has_kind("It was built in 1936.", "number")
    assert not has_kind("It was built long ago.", "number")
    assert has_kind("The letter went to Song Ji-myong.", "name")
    assert not has_kind("Letters went to a friend.", "name")
    assert not has_kind("Anything at all.", None)


DAM = "Dams\n\nThe dam was built by the state. The dam was built in 1936.\n\nA second paragraph."


def _hit(text: str) -> Hit:
    chunk = Chunk("c0", "dam.txt", "Dams", text, 0, len(text), 1, text.count("\n") + 1)
    return Hit(chunk=chunk, score=1.0, dense_score=1.0, keyword_score=1.0)


@pytest.mark.parametrize(
    ("choice", "quoted"),
    [
        (SentenceChoice(), "The dam was built by the state."),
        # Both sentences hold "dam" and "built"; the one holding a year wins the tie.
        (SentenceChoice(kind="number"), "The dam was built in 1936."),
        # The neighbour of the same paragraph joins; the next paragraph never does.
        (
            SentenceChoice(kind="number", neighbour=True),
            "The dam was built by the state. The dam was built in 1936.",
        ),
    ],
)
def test_best_sentence_choice(choice: SentenceChoice, quoted: str) -> None:
    keyword = KeywordIndex.build([DAM, "Unrelated text about cats."])
    terms = tokenize(["When was the dam built?"])[0]
    [best] = best_sentences(terms, [_hit(DAM)], keyword, choice=choice)
    assert best is not None
    [shown] = best_highlights([best])[0]
    assert shown.text == quoted
    assert DAM[shown.char_start : shown.char_end] == quoted
    # The answer quotes the sentence alone.
    assert best.highlight.text == quoted.removeprefix("The dam was built by the state. ")
