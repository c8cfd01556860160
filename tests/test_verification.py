"""The verifier: facts, negation, agreement, windows and verdicts, as pure functions."""

from __future__ import annotations

import pytest

from service.verification import (
    Claim,
    Evidence,
    PassageText,
    Thresholds,
    claims,
    facts,
    negation_agrees,
    verify_claim,
    verify_claims,
    windows,
)
from tests.conftest import FakeEmbedder

DOC = (
    "Intro line.\n"
    "North Korea has sent about 12,000 troops to fight for Russia. Many were deployed to the "
    "Kursk region in October 2024. They did not receive drone training."
)
PASSAGE = PassageText(1, "report.txt", 12, DOC[12:])
OTHER = PassageText(2, "cats.md", 0, "Cats are small carnivorous mammals kept as pets.")


@pytest.fixture
def embed(fake_embedder: FakeEmbedder) -> FakeEmbedder:
    return fake_embedder


@pytest.mark.parametrize(
    ("text", "numbers"),
    [
        ("about 12,000 troops", {"12000"}),
        ("twelve thousand troops", {"12000"}),
        ("$5.5 billion", {"5500000000"}),
        ("the 50th Super Bowl in 2016", {"50", "2016"}),
        ("scored 24–10", {"24", "10"}),
        ("the one who came third", {"3"}),
    ],
)
def test_numbers_are_normalised(text: str, numbers: set[str]) -> None:
    assert facts(text).numbers == numbers


def test_names_skip_stop_words_and_openers() -> None:
    assert facts("However, The Wall Street Journal said Kim's army grew.").names == {
        "wall",
        "street",
        "journal",
        "kim",
    }


@pytest.mark.parametrize(
    ("claim", "window", "agrees"),
    [
        ("X was renamed.", "X was renamed in 1976.", True),
        ("X was not renamed.", "X was renamed in 1976.", False),
        ("X was renamed.", "X was not renamed.", False),
        ("X wasn't renamed.", "X was not renamed.", True),
        ("A grew.", "A grew, but B did not fall.", True),
        ("No plans were not announced.", "No plans were announced.", False),
    ],
)
def test_negation_added_or_lost(claim: str, window: str, agrees: bool) -> None:
    assert negation_agrees(claim, window) is agrees


def test_claims_carry_their_markers_wherever_they_stand() -> None:
    text = "Troops went [1]. They fought. [2] Drones [3] were absent.\n- A list item [1]"
    assert [(c.text, c.cited) for c in claims(text)] == [
        ("Troops went.", (1,)),
        ("They fought.", (2,)),
        ("Drones were absent.", (3,)),
        ("- A list item", (1,)),
    ]
    for c in claims(text):
        assert c.text.rstrip(".")[:5] in text[c.start : c.end]


def test_windows_are_sentences_and_adjacent_pairs_in_document_offsets() -> None:
    spans = windows(PASSAGE)
    assert len(spans) == 5  # 3 sentences, 2 pairs
    for w in spans:
        assert DOC[w.char_start : w.char_end] == w.text


def claim(text: str, *cited: int) -> Claim:
    return Claim(text, cited, 0, len(text))


def test_supported_sentence_carries_its_exact_span(embed: FakeEmbedder) -> None:
    v = verify_claim(
        claim("North Korea has sent about 12,000 troops to fight for Russia.", 1),
        [PASSAGE, OTHER],
        embed.embed,
    )
    assert v.supported and v.reason == ""
    assert v.evidence == Evidence(
        "report.txt", 12, 73, "North Korea has sent about 12,000 troops to fight for Russia."
    )
    assert DOC[v.evidence.char_start : v.evidence.char_end] == v.evidence.text


def test_a_claim_spanning_two_sentences_is_supported_by_the_pair(embed: FakeEmbedder) -> None:
    text = "About 12,000 North Korean troops were sent to the Kursk region in October 2024."
    v = verify_claim(claim(text, 1), [PASSAGE], embed.embed, Thresholds(0.5, 0.3))
    assert v.supported and v.evidence is not None
    assert v.evidence.text.startswith("North Korea") and v.evidence.text.endswith("2024.")


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("North Korea has sent about 13,000 troops to fight for Russia.", "13000"),
        ("North Korea has sent about 12,000 troops to fight for Ukraine.", "ukraine"),
        ("Many were deployed to the Kursk region in November 2024.", "november"),
        ("Many were deployed to the Kursk region in October 2023.", "2023"),
        ("They did receive drone training.", "negation"),
        ("Many were not deployed to the Kursk region in October 2024.", "negation"),
    ],
)
def test_corruptions_are_rejected_with_a_reason(
    embed: FakeEmbedder, text: str, reason: str
) -> None:
    v = verify_claim(claim(text, 1), [PASSAGE], embed.embed)
    assert not v.supported and v.evidence is None
    assert reason in v.reason


def test_the_right_claim_citing_the_wrong_passage_is_rejected(embed: FakeEmbedder) -> None:
    v = verify_claim(
        claim("North Korea has sent about 12,000 troops to fight for Russia.", 2),
        [PASSAGE, OTHER],
        embed.embed,
    )
    assert not v.supported


def test_citations_must_exist_and_be_given(embed: FakeEmbedder) -> None:
    text = "North Korea has sent about 12,000 troops to fight for Russia."
    unknown = verify_claim(claim(text, 7), [PASSAGE], embed.embed)
    assert (unknown.supported, unknown.reason) == (False, "cites [7], which is not a given passage")
    none = verify_claim(claim(text), [PASSAGE], embed.embed)
    assert (none.supported, none.reason) == (False, "cites no passage")
    lenient = verify_claims(text, [PASSAGE], embed.embed, require_citation=False)
    assert [v.supported for v in lenient] == [True]
