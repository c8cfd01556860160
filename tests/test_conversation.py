"""Conversations: which turns are follow-ups, what context they are searched with, and that a
question of its own is answered as if asked alone."""

from __future__ import annotations

import pytest

from service.answering import ABSTAIN_TEXT, ask
from service.builds import IndexHolder
from service.conversation import (
    Exchange,
    Turn,
    answer_body,
    ask_conversation,
    assistant_turn,
    context_of,
    exchanges,
    refers_back,
)
from service.indexing import Builder
from service.models import SpanRef
from service.search import Context, Searcher
from tests.conftest import FakeEmbedder, WriteSeed

PARIS = "Paris is the capital of France.\nThe Eiffel Tower in Paris was finished in 1889.\n"
BANANAS = "Bananas are yellow fruit rich in potassium.\nMonkeys like to eat bananas.\n"


@pytest.mark.parametrize(
    ("question", "follow_up"),
    [
        ("Who was it addressed to?", True),
        ("Where are they deployed?", True),
        ("And for troops?", True),
        ("What about South Korea's estimate?", True),
        ("Casualties?", True),
        ("How many troops has North Korea sent to Russia?", False),
        ("What is the capital of France?", False),
    ],
)
def test_refers_back(question: str, follow_up: bool) -> None:
    """A referring word, an elliptical opening or a single term of its own make a follow-up."""
    assert refers_back(question) is follow_up


def test_exchanges_pair_questions_with_their_answers() -> None:
    """Earlier user turns with the assistant turn after each, and the last question apart."""
    ref = SpanRef("a.txt", 0, 5)
    turns = [
        Turn("user", "First?"),
        Turn("assistant", "One. [1]", (ref,)),
        Turn("user", "  "),
        Turn("user", "Second?"),
        Turn("user", "Third?"),
    ]
    earlier, question = exchanges(turns)
    assert earlier == [Exchange("First?", "One. [1]", (ref,)), Exchange("Second?")]
    assert question == "Third?"
    with pytest.raises(ValueError, match="needs a user turn"):
        exchanges([Turn("assistant", "Hello.")])


def test_answer_body_drops_the_sources_and_markers() -> None:
    """What an earlier answer said, without its list of links; nothing for an abstention."""
    content = "Paris is the capital. [1] It has a tower. [2]\n\nSources:\n\n1. [a](u)\n2. [b](v)"
    assert answer_body(content) == "Paris is the capital. It has a tower."
    assert answer_body(f"{ABSTAIN_TEXT}\n\nClosest sources:\n\n1. [a](u)") == ""


def test_context_weighs_recent_turns_most() -> None:
    """Each earlier question and answer, latest first, halved per turn back, three at most."""
    earlier = [Exchange(f"q{i}?", f"a{i}.") for i in range(5)]
    cited = ["", "", "", "", "span four"]
    assert context_of(earlier, cited) == [
        Context("q4?", 0.4),
        Context("span four", 0.05),
        Context("q3?", 0.2),
        Context("a3.", 0.025),
        Context("q2?", 0.1),
        Context("a2.", 0.0125),
    ]


@pytest.fixture
def searcher(builder: Builder, write_seed: WriteSeed, fake_embedder: FakeEmbedder) -> Searcher:
    """A searcher over two small seeds, with the fake embedder."""
    write_seed("paris.txt", PARIS)
    write_seed("bananas.txt", BANANAS)
    builder.build()
    holder = IndexHolder(builder.settings.index_dir, fake_embedder)
    holder.refresh()
    return Searcher(builder.settings, fake_embedder, holder)


def test_a_question_of_its_own_is_answered_as_if_alone(searcher: Searcher) -> None:
    """A new, self-contained question after another topic gets the answer it gets alone."""
    first = ask(searcher, "What is the capital of France?", top_k=2)
    turns = [Turn("user", "What is the capital of France?"), assistant_turn(first)]
    question = "What do monkeys like to eat?"
    alone = ask(searcher, question, top_k=2)
    in_context = ask_conversation(searcher, [*turns, Turn("user", question)], top_k=2)
    assert in_context.answer == alone.answer
    assert in_context.passages == alone.passages


def test_a_follow_up_is_searched_with_what_the_answer_cited(searcher: Searcher) -> None:
    """The assistant turn names the spans it quoted; the follow-up is answered from there."""
    first = ask(searcher, "What is the capital of France?", top_k=2)
    turn = assistant_turn(first)
    assert turn.cited == (SpanRef("paris.txt", 0, 31),)
    follow = ask_conversation(
        searcher,
        [Turn("user", "What is the capital of France?"), turn, Turn("user", "And the tower?")],
        top_k=2,
    )
    assert follow.answer.grounded
    assert follow.passages[0].citation.source == "paris.txt"
    assert "Eiffel Tower" in follow.answer.text
