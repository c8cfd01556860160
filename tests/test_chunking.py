"""Chunking: offsets reproduce the text, chunks fit the model, sentences stay whole."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.chunking import (
    Chunker,
    ChunkerSettings,
    chunk_id,
    embedding_text,
    split_sentences,
)
from service.embedding import HFTokenizer
from service.models import Chunk, Document
from tests.conftest import TEN_PIECE_SENTENCES

MODEL_LIMIT = 256
SPECIAL = 2

FRAGMENTS = st.sampled_from(
    [
        " ",
        "\n",
        "\r\n",
        "\n\n",
        "\r\n\r\n",
        "\t",
        "\u00a0",
        "\u3000",
        ". ",
        "! ",
        "? ",
        "... ",
        "…",
        "e.g. ",
        "Dr. ",
        "U.S. ",
        '"Quoted." ',
        "(aside.) ",
        "# Heading\n",
        "- item\n",
        "1. first\n",
        "| a | b |\n",
        "。",
        "！",
        "中文字符测试",
        "日本語のテキストです",
        "😀",
        "👍🏽",
        "👨‍👩‍👧",
        "e\u0301",
        "\u200b",
        "\ufeff",
        "Ünïcödé wörds ",
        "x" * 300,
        "supercalifragilistic" * 12,
        "1234567890" * 20,
        "https://example.com/a/b?c=d ",
    ]
)
LONG_SENTENCE = st.integers(min_value=40, max_value=400).map(
    lambda n: " ".join(f"w{i % 7}ord" for i in range(n))
)
TEXT = st.lists(
    st.one_of(st.text(max_size=40), FRAGMENTS, LONG_SENTENCE), min_size=1, max_size=25
).map("".join)
TITLE = st.one_of(
    st.just(""),
    st.text(max_size=60),
    st.integers(min_value=1, max_value=80).map(lambda n: " ".join(["heading"] * n)),
)


def make_doc(text: str, title: str = "", source: str = "doc.txt") -> Document:
    """A document over text, hashed like ingest does."""
    data = text.encode("utf-8", "surrogatepass")
    return Document(
        source=source,
        title=title,
        text=text,
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
    )


def chunker_for(tokenizer: HFTokenizer, budget: int, overlap: int = 1) -> Chunker:
    """A chunker for the bundled model's limits with the given budget."""
    return Chunker(tokenizer, ChunkerSettings(MODEL_LIMIT, SPECIAL, budget, overlap))


def tokens(tokenizer: HFTokenizer, text: str) -> int:
    """Word pieces of text as the encoder sees it, special tokens excluded."""
    return len(tokenizer.offsets([text])[0])


def check_invariants(tokenizer: HFTokenizer, chunker: Chunker, doc: Document) -> list[Chunk]:
    """Assert every property a chunking must have; returns the chunks."""
    text = doc.text
    chunks = chunker.chunk(doc)
    covered = bytearray(len(text))
    for chunk in chunks:
        assert text[chunk.char_start : chunk.char_end] == chunk.text
        assert chunk.text and chunk.text == chunk.text.strip()
        assert chunk.source == doc.source and chunk.title == doc.title
        assert chunk.line_start == 1 + text.count("\n", 0, chunk.char_start)
        assert chunk.line_end == 1 + text.count("\n", 0, chunk.char_end - 1)
        used = tokens(tokenizer, embedding_text(chunk))
        assert used <= chunker.settings.text_budget, (used, chunk)
        assert used + SPECIAL <= MODEL_LIMIT
        covered[chunk.char_start : chunk.char_end] = b"\x01" * (chunk.char_end - chunk.char_start)
    missing = [i for i, ch in enumerate(text) if not ch.isspace() and not covered[i]]
    assert missing == []
    assert [c.char_start for c in chunks] == sorted(c.char_start for c in chunks)
    assert len({c.chunk_id for c in chunks}) == len(chunks)
    return chunks


PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(text=TEXT, title=TITLE)
def test_chunks_of_arbitrary_text_within_model_limit(
    tokenizer: HFTokenizer, text: str, title: str
) -> None:
    check_invariants(tokenizer, chunker_for(tokenizer, MODEL_LIMIT), make_doc(text, title))


@PROPERTY
@given(text=TEXT, title=TITLE)
def test_chunks_of_arbitrary_text_within_small_budget(
    tokenizer: HFTokenizer, text: str, title: str
) -> None:
    check_invariants(tokenizer, chunker_for(tokenizer, 32), make_doc(text, title))


@PROPERTY
@given(text=TEXT, title=TITLE)
def test_chunk_ids_stable_and_tied_to_content(
    tokenizer: HFTokenizer, text: str, title: str
) -> None:
    doc = make_doc(text, title)
    first = chunker_for(tokenizer, 32).chunk(doc)
    again = chunker_for(tokenizer, 32).chunk(make_doc(text, title))
    assert [c.chunk_id for c in again] == [c.chunk_id for c in first]
    edited = make_doc(text + " Appended sentence.", title)
    assert not {c.chunk_id for c in first} & {
        c.chunk_id for c in chunker_for(tokenizer, 32).chunk(edited)
    }


def test_chunk_id_is_a_content_hash() -> None:
    """The id is sha256 of (source, file hash, span), so it is stable across processes."""
    expected = hashlib.sha256(b"a.txt\x00" + b"0" * 64 + b"\x000\x0010").hexdigest()[:20]
    assert chunk_id("a.txt", "0" * 64, 0, 10) == expected
    assert chunk_id("a.txt", "0" * 64, 0, 10) == "6431aadc1efc8d7b1d61"
    assert chunk_id("b.txt", "0" * 64, 0, 10) != expected
    assert chunk_id("a.txt", "1" * 64, 0, 10) != expected


# --- examples --------------------------------------------------------------------------------

# Ten word pieces each (checked below), so three fit a 32-token budget and four do not.
SENTENCES = TEN_PIECE_SENTENCES


def texts_of(chunks: list[Chunk]) -> list[str]:
    return [c.text for c in chunks]


def test_example_sentences_have_ten_tokens(tokenizer: HFTokenizer) -> None:
    assert [tokens(tokenizer, s) for s in SENTENCES] == [10] * len(SENTENCES)


def test_whole_sentences_with_one_sentence_overlap(tokenizer: HFTokenizer) -> None:
    doc = make_doc(" ".join(SENTENCES))
    chunks = check_invariants(tokenizer, chunker_for(tokenizer, 32), doc)
    s = SENTENCES
    assert texts_of(chunks) == [
        " ".join(s[0:3]),
        " ".join(s[2:5]),
        " ".join(s[4:6]),
    ]
    assert [(c.line_start, c.line_end) for c in chunks] == [(1, 1)] * 3


def test_no_overlap(tokenizer: HFTokenizer) -> None:
    doc = make_doc("\n".join(SENTENCES))
    chunks = check_invariants(tokenizer, chunker_for(tokenizer, 32, overlap=0), doc)
    s = SENTENCES
    assert texts_of(chunks) == ["\n".join(s[0:3]), "\n".join(s[3:6])]
    assert [(c.line_start, c.line_end) for c in chunks] == [(1, 3), (4, 6)]


def test_title_context_counts_against_the_budget(tokenizer: HFTokenizer) -> None:
    """A three-token title leaves 29 tokens: only two ten-token sentences per chunk."""
    doc = make_doc(" ".join(SENTENCES[:4]), title="My colour list")
    assert tokens(tokenizer, "My colour list") == 3
    chunks = check_invariants(tokenizer, chunker_for(tokenizer, 32), doc)
    s = SENTENCES
    assert texts_of(chunks) == [" ".join(s[0:2]), " ".join(s[1:3]), " ".join(s[2:4])]
    assert {c.context for c in chunks} == {"My colour list"}
    assert embedding_text(chunks[0]) == "My colour list\n" + " ".join(s[0:2])


def test_long_sentence_is_cut_at_word_starts(tokenizer: HFTokenizer) -> None:
    words = [f"token{i}" for i in range(60)]
    doc = make_doc(" ".join(words) + ".")
    chunks = check_invariants(tokenizer, chunker_for(tokenizer, 32, overlap=0), doc)
    assert len(chunks) > 1
    for chunk in chunks:
        assert chunk.char_start == 0 or doc.text[chunk.char_start - 1] == " "
        assert chunk.text.split(" ")[0] in words


def sentence_texts(text: str) -> list[str]:
    return [text[s.start : s.end] for s in split_sentences(text)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Dr. Smith arrived. He left.", ["Dr. Smith arrived.", "He left."]),
        ("Fruit, e.g. Apples or pears. Then more.", ["Fruit, e.g. Apples or pears.", "Then more."]),
        ("Use i.e. this one. Done.", ["Use i.e. this one.", "Done."]),
        ("He paused... and then left. Next one.", ["He paused... and then left.", "Next one."]),
        ("Wait... Then go.", ["Wait...", "Then go."]),
        ("J. R. R. Tolkien wrote it. Yes!", ["J. R. R. Tolkien wrote it.", "Yes!"]),
        ("Is it? Yes. No!", ["Is it?", "Yes.", "No!"]),
        ('He said "Stop." Then ran.', ['He said "Stop."', "Then ran."]),
        ("第一句。第二句！", ["第一句。", "第二句！"]),
        ("Line one\r\nstill one. Two.\r\n\r\nThree", ["Line one\r\nstill one.", "Two.", "Three"]),
        ("# Title\nBody text here", ["# Title", "Body text here"]),
        ("Version 1.5 is out. Ok.", ["Version 1.5 is out.", "Ok."]),
    ],
)
def test_sentence_boundaries(text: str, expected: list[str]) -> None:
    assert sentence_texts(text) == expected


def test_long_title_is_not_context_when_it_would_crowd_out_the_text(
    tokenizer: HFTokenizer,
) -> None:
    """A 20-token title beside a 32-token budget would leave 12 tokens: it is left out."""
    title = " ".join(["heading"] * 20)
    doc = make_doc(" ".join(SENTENCES), title=title)
    chunks = check_invariants(tokenizer, chunker_for(tokenizer, 32), doc)
    assert {c.context for c in chunks} == {""}
    assert len(chunks) == 3


# Cut between word pieces, the second piece of this word tokenises to 33 tokens on its own.
RETOKENISES_LONGER = (
    "l3ipkzdtfflgwaladacca2emallsdbialpsercvcaceobbagmjfr8cdjai4gnicwkbpf4kbdegoajle5edcmafsahea"
    "ihnmdmdi中kgn3dgfbldhgbclfw7on6gyfx1aqcdx"
)


@pytest.mark.parametrize(
    "word", ["x" * 99, "supercalifragilistic" * 5, "ab1" * 33, RETOKENISES_LONGER]
)
def test_overlong_word_after_other_text_is_cut_within_budget(
    tokenizer: HFTokenizer, word: str
) -> None:
    """A word longer than the budget is cut between word pieces; each piece is re-counted."""
    assert tokens(tokenizer, word) > 32
    doc = make_doc(f"Intro words. {word} end.")
    chunks = check_invariants(tokenizer, chunker_for(tokenizer, 32, overlap=0), doc)
    assert "".join(c.text for c in chunks).replace(" ", "") == doc.text.replace(" ", "")
