"""Generation's pure stages: the marker filter, sentence assembly with verdicts, fallbacks."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import pytest

from service.config import VerifyPolicy
from service.errors import UpstreamError
from service.generation import (
    FLAG,
    Fallback,
    MarkerFilter,
    SentenceVerdict,
    Summary,
    TextPiece,
    collect,
    generate,
)
from service.verification import PassageText
from tests.conftest import FakeEmbedder

pytestmark = pytest.mark.anyio

DOC = "North Korea sent 12,000 troops to Russia. They were deployed in the Kursk region."
PASSAGES = [PassageText(1, "troops.txt", 0, DOC), PassageText(2, "cats.md", 0, "Cats purr.")]
GOOD = "North Korea sent 12,000 troops to Russia [1]."
CHANGED = "North Korea sent 15,000 troops to Russia [1]."


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def pieces(text: str, size: int = 3) -> list[str]:
    """text cut into tokens of size characters, as a stream might."""
    return [text[i : i + size] for i in range(0, len(text), size)]


async def tokens(parts: Sequence[str], fail: UpstreamError | None = None) -> AsyncIterator[str]:
    for part in parts:
        yield part
    if fail is not None:
        raise fail


@pytest.mark.parametrize("size", [1, 2, 5, 1000])
def test_marker_filter_passes_given_passages_only(size: int) -> None:
    f = MarkerFilter(2)
    text = "A [1]. B [3]. C [1, 2]. D [note] [2"
    out = "".join(f.feed(p) for p in pieces(text, size)) + f.flush()
    assert out == "A [1]. B . C [1][2]. D [note] "


async def run(
    parts: Sequence[str],
    embed: FakeEmbedder,
    policy: VerifyPolicy = "flag",
    fail: UpstreamError | None = None,
) -> list[object]:
    return [
        e
        async for e in generate(
            tokens(parts, fail), PASSAGES, embed.embed, policy=policy, timeout=30
        )
    ]


async def test_each_sentence_is_followed_by_its_verdict(fake_embedder: FakeEmbedder) -> None:
    events = await run(pieces(f"{GOOD} {CHANGED}"), fake_embedder)
    content = ""
    verdicts: list[SentenceVerdict] = []
    for e in events:
        if isinstance(e, TextPiece):
            content += e.text
        elif isinstance(e, SentenceVerdict):
            verdicts.append(e)
            # The verdict comes once its sentence is in the content, before the next one.
            assert content[e.start : e.end].startswith(e.verdict.claim.text[:10])
            assert len(content) <= e.end + len(FLAG)
    assert content == f"{GOOD} {CHANGED}{FLAG}"
    first, second = verdicts
    assert first.verdict.supported and first.verdict.evidence is not None
    ev = first.verdict.evidence
    assert (
        DOC[ev.char_start : ev.char_end] == ev.text == "North Korea sent 12,000 troops to Russia."
    )
    assert not second.verdict.supported and "15000" in second.verdict.reason
    assert events[-1] == Summary(2, 1, 1, 0, None)


async def test_drop_policy_never_shows_an_unsupported_sentence(
    fake_embedder: FakeEmbedder,
) -> None:
    generated = await collect(
        generate(
            tokens(pieces(f"{CHANGED} {GOOD}")),
            PASSAGES,
            fake_embedder.embed,
            policy="drop",
            timeout=30,
        )
    )
    assert generated.content == GOOD
    dropped, kept = generated.sentences
    assert dropped.dropped and dropped.start == dropped.end == 0
    assert generated.content[kept.start : kept.end] == GOOD
    assert generated.summary == Summary(2, 1, 0, 1, None)


async def test_out_of_range_markers_never_pass_and_do_not_support(
    fake_embedder: FakeEmbedder,
) -> None:
    events = await run(pieces("North Korea sent 12,000 troops to Russia [9]."), fake_embedder)
    content = "".join(e.text for e in events if isinstance(e, TextPiece))
    assert "[9]" not in content
    (verdict,) = [e for e in events if isinstance(e, SentenceVerdict)]
    assert verdict.verdict.reason == "cites no passage"


@pytest.mark.parametrize(
    ("parts", "fail", "reason"),
    [
        ([], None, "it returned no answer"),
        (["I'm sorry, I cannot help with that."], None, "it declined to answer"),
        (
            [GOOD[:20]],
            UpstreamError("the LLM stream stopped early"),
            "the LLM stream stopped early",
        ),
    ],
)
async def test_failures_end_in_a_fallback_and_a_summary(
    fake_embedder: FakeEmbedder, parts: list[str], fail: UpstreamError | None, reason: str
) -> None:
    events = await run(parts, fake_embedder, fail=fail)
    fallback, last = events[-2:]
    assert isinstance(fallback, Fallback) and fallback.reason == reason
    assert isinstance(last, Summary) and last.fallback == fallback.note


async def test_a_stream_slower_than_the_timeout_falls_back(fake_embedder: FakeEmbedder) -> None:
    import anyio

    never = anyio.Event()

    async def stalled() -> AsyncIterator[str]:
        yield GOOD
        await never.wait()
        yield "unreachable"

    events = [
        e
        async for e in generate(
            stalled(), PASSAGES, fake_embedder.embed, policy="flag", timeout=0.2
        )
    ]
    fallback = events[-2]
    assert isinstance(fallback, Fallback) and "within 0.2 s" in fallback.reason


LISTED = (
    "1. The troops went to Russia;\n2. They fought [1];\n- an item [1]\n## A heading\n"
    "More text [1].\n\nA new paragraph. [1] The end"
)


@pytest.mark.parametrize("size", range(1, 8))
async def test_each_flag_follows_its_sentence_whatever_the_token_size(
    fake_embedder: FakeEmbedder, size: int
) -> None:
    """Sentences ended by a new line (a list item, a heading) are known only a few characters
    later; nothing past a possible end is shown before the verdict, so every flag follows its
    sentence directly."""
    events = await run(pieces(LISTED, size), fake_embedder)
    content = "".join(e.text for e in events if isinstance(e, TextPiece))
    verdicts = [e for e in events if isinstance(e, SentenceVerdict)]
    assert len(verdicts) == 9  # "1." and "2." stand alone, as split_sentences reads them
    for v in verdicts:
        assert not v.verdict.supported
        assert content[v.start : v.end].startswith(v.verdict.claim.text[:4])
        assert content[v.end :].startswith(FLAG)
