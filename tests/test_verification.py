"""The verifier: facts, negation, agreement, windows and verdicts, as pure functions."""

from __future__ import annotations

import pytest

from service.facts import facts
from service.verification import (
    Claim,
    Evidence,
    PassageText,
    Thresholds,
    claims,
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


PAID = (
    "Russia has already paid North Korea approximately $5.5 billion for weapons and $576 "
    "million for troops."
)
URGED = "A US statement urged North Korea to cease all assistance for Russia's war against Ukraine."
SHELLS = (
    "With North Korea supplying millions of artillery shells — about 60% of Russian forces' "
    "stockpile — the costs seem manageable."
)
# Only the rule under test decides: any share of words and any cosine would do.
LENIENT = Thresholds(0.0, -1.0)


@pytest.mark.parametrize(
    ("text", "source", "reason"),
    [
        # Who paid whom: the same facts, the other direction.
        (
            "North Korea has already paid Russia approximately $5.5 billion.",
            PAID,
            "'north korea' and 'russia' are in each other's roles in the span",
        ),
        ("North Korea has been paid approximately $5.5 billion by Russia.", PAID, ""),
        (
            "Russia has been paid approximately $5.5 billion by North Korea.",
            PAID,
            "'russia' and 'north korea' are in each other's roles in the span",
        ),
        # A converse verb turns the direction round: "B received from A" is "A paid B".
        ("North Korea received approximately $5.5 billion from Russia.", PAID, ""),
        (
            "Russia received approximately $5.5 billion from North Korea.",
            PAID,
            "'russia' and '5500000000' are in each other's roles in the span",
        ),
        # Which amount for what.
        (
            "Russia has paid $576 million for weapons and $5.5 billion for troops.",
            PAID,
            "'576000000' and '5500000000' are in each other's roles in the span",
        ),
        (
            "Russia has paid $5.5 billion for troops.",
            PAID,
            "'5500000000' and '576000000' are in each other's roles in the span",
        ),
        ("Russia has paid $576 million for troops and $5.5 billion for weapons.", PAID, ""),
        # A name in another's role.
        (
            "Ukraine urged North Korea to cease all assistance for Russia's war.",
            URGED,
            "'ukraine' stands where the span has 'us'",
        ),
        ("North Korea was urged by a US statement to cease all assistance.", URGED, ""),
        (
            "A North Korean statement urged the US to cease all assistance.",
            URGED,
            "'north korean' and 'us' are in each other's roles in the span",
        ),
        # Facts parted by an aside between dashes are still one relation; a fronted phrase
        # is not.
        (
            "Russia supplies millions of artillery shells to North Korea.",
            SHELLS,
            "'russia' and 'north korea' are in each other's roles in the span",
        ),
        ("North Korea supplies millions of artillery shells to Russia.", SHELLS, ""),
        (
            "With many deployed to Kursk, North Korea sent 12,000 troops to Russia.",
            "North Korea sent 12,000 troops to Russia, with many deployed to Kursk.",
            "",
        ),
        # Two facts that, put back, make the claim read as the span; a list may reorder.
        (
            "The France in Catholic Church opposed the Huguenots.",
            "The Catholic Church in France opposed the Huguenots.",
            "'france' and 'catholic church' are in each other's roles in the span",
        ),
        ("Italy and France signed the treaty.", "France and Italy signed the treaty.", ""),
        # A symmetric relation reads the same both ways.
        (
            "Russia's alliance with North Korea deepened.",
            "North Korea's alliance with Russia deepened.",
            "",
        ),
        # Words of opposite meaning, and a negating prefix.
        (
            "This cooperation decreases the risk of escalation.",
            "This cooperation increases the risk of escalation.",
            "says 'decreas' where the span says 'increas'",
        ),
        (
            "North Korea is ramping down its weapon production.",
            "North Korea is ramping up its weapon production.",
            "says 'down' where the span says 'up'",
        ),
        (
            "The proposal was rejected by the council.",
            "The proposal was accepted by the council.",
            "says 'reject' where the span says 'accept'",
        ),
        (
            "The recruits were aware of the harsh realities.",
            "The recruits were unaware of the harsh realities.",
            "says 'aware' where the span says 'unaware'",
        ),
        (
            "The costs seem unmanageable.",
            "The costs seem manageable.",
            "says 'unmanageable' where the span says 'manageable'",
        ),
        # An order of magnitude is a quantity.
        (
            "North Korea supplies thousands of artillery shells.",
            SHELLS,
            "not in the cited span: thousands",
        ),
    ],
)
def test_roles_opposites_and_magnitudes(
    embed: FakeEmbedder, text: str, source: str, reason: str
) -> None:
    v = verify_claim(claim(text, 1), [PassageText(1, "s.txt", 0, source)], embed.embed, LENIENT)
    assert (v.supported, v.reason) == (reason == "", reason)
    if v.supported:
        assert v.evidence == Evidence("s.txt", 0, len(source), source)
