"""Documents as users have them: Markdown sections, HTML main text, PDF pages, skipped files."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from fpdf import FPDF

from service.chunking import Chunker, ChunkerSettings
from service.config import Settings
from service.embedding import HFTokenizer
from service.indexing import Builder, BuildReport
from service.models import Chunk, Document, Section, Span
from service.parsers import html, markdown, ocr, pdf
from service.parsers.base import ParseError
from service.parsers.text import parse as parse_text
from service.store import CHUNKS_DB, ChunkStore, build_path, read_pointer
from tests.conftest import WriteSeed

Client = Callable[[Settings], TestClient]

GUIDE_MD = """\
# Groundqa Guide

Groundqa answers questions from your own documents.

## Install

### Docker

Pull the image and run the compose file to start the whole stack.

```sh
# comment inside a code block, not a heading
docker compose up
```

### Pip

Install the wheel with pip inside a fresh virtualenv.

## Usage

Ask questions on the command line with the ask subcommand.
"""

NOISY_HTML = """\
<!doctype html>
<html><head><title>Lighthouse Keeping Manual</title>
<style>.zzstylezz { color: red }</style>
<script>var tracking = "zzscriptzz";</script></head>
<body>
<header class="site"><a href="/">Homepage zzbannerzz</a></header>
<nav><ul><li><a href="/a">Navlink zznavzz</a></li></ul></nav>
<div role="navigation"><a href="/b">Sidebar zzrolenavzz</a></div>
<main>
  <h1>Lighthouse Keeping</h1>
  <p>The lamp must be lit at dusk
     every evening.</p>
  <h2>Maintenance<a href="#m" aria-hidden="true">zzanchorzz</a></h2>
  <p>Clean the <b>Fresnel lens</b> every Sunday with a soft cloth.</p>
  <div hidden>zzhiddenzz</div>
  <noscript>zznoscriptzz</noscript>
  <form><input name="q"><button>zzbuttonzz</button></form>
</main>
<aside>zzasidezz</aside>
<footer>Copyright zzfooterzz</footer>
<script>console.log("zzscript2zz")</script>
</body></html>
"""

HANDBOOK_PAGES = [
    "The company was founded in Lisbon in 1998.",
    "The office cafeteria serves lentil soup on Tuesdays.",
    "The warehouse forklift is painted bright orange.",
    "",  # a page with a drawing and no text
    "Parking permits are renewed every January.",
]


def make_pdf(pages: list[str], *, title: str | None = None, password: str | None = None) -> bytes:
    """A PDF with one page per entry: its text, or a filled rectangle when empty."""
    doc = FPDF()
    doc.set_font("helvetica", size=12)
    if title:
        doc.set_title(title)
    if password:
        doc.set_encryption(owner_password="owner", user_password=password)
    for text in pages:
        doc.add_page()
        if text:
            doc.multi_cell(0, 10, text)
        else:
            doc.rect(20, 20, 80, 60, style="F")
    return bytes(doc.output())


def write_bytes(seeds: Path, name: str, data: bytes) -> None:
    """Put a binary seed file in place."""
    (seeds / name).write_bytes(data)


@pytest.fixture
def corpus(seeds: Path, write_seed: WriteSeed) -> Path:
    """A Markdown guide, a noisy HTML page, a paginated PDF and three PDFs that cannot be read."""
    write_seed("guide.md", GUIDE_MD)
    write_seed("lighthouse.html", NOISY_HTML)
    write_bytes(seeds, "handbook.pdf", make_pdf(HANDBOOK_PAGES, title="Employee Handbook"))
    write_bytes(seeds, "broken.pdf", b"%PDF-1.7\n" + random.Random(7).randbytes(4096))
    write_bytes(seeds, "locked.pdf", make_pdf(["Top secret launch codes."], password="hunter2"))
    write_bytes(seeds, "scanned.pdf", make_pdf(["", ""]))
    return seeds


def build(builder: Builder) -> BuildReport:
    report = builder.build()
    assert report.published
    return report


def store_of(settings: Settings) -> ChunkStore:
    build_id = read_pointer(settings.index_dir)
    assert build_id is not None
    return ChunkStore(build_path(settings.index_dir, build_id) / CHUNKS_DB)


def chunks_of(settings: Settings, source: str) -> list[Chunk]:
    return list(store_of(settings).iter_chunks(source))


def ask(client: TestClient, question: str, **extra: Any) -> dict[str, Any]:
    r = client.post("/v1/ask", json={"question": question, "top_k": 3, **extra})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


# --- the build report ------------------------------------------------------------------------


def test_unreadable_pdfs_are_skipped_and_reported(corpus: Path, builder: Builder) -> None:
    report = build(builder)
    reasons = {s["source"]: s["reason"] for s in report.skipped}
    assert sorted(reasons) == ["broken.pdf", "locked.pdf", "scanned.pdf"]
    assert reasons["broken.pdf"].startswith("broken PDF (")
    assert reasons["locked.pdf"] == "encrypted PDF (needs a password)"
    # Its two pages hold a drawing and no text: Tesseract finds none (or is not installed).
    why = (
        "no text found by OCR"
        if ocr.tesseract_version()
        else f"pages 1-2: no text layer; {ocr.INSTALL_HINT}"
    )
    assert reasons["scanned.pdf"] == f"no extractable text (scanned or image-only PDF?): {why}"
    assert report.files_indexed == 3


def test_skipped_pdfs_listed_by_the_index_api(
    corpus: Path, builder: Builder, settings: Settings, client_for: Client
) -> None:
    build(builder)
    info = client_for(settings).get("/v1/index").json()
    skipped = sorted(s["source"] for s in info["skipped"])
    assert skipped == ["broken.pdf", "locked.pdf", "scanned.pdf"]
    assert info["documents"] == 3


# --- offsets ---------------------------------------------------------------------------------


def test_offsets_reproduce_every_chunk_of_every_format(
    corpus: Path, builder: Builder, settings: Settings, client_for: Client
) -> None:
    build(builder)
    client = client_for(settings)
    store = store_of(settings)
    assert sorted(store.documents) == ["guide.md", "handbook.pdf", "lighthouse.html"]
    for source in store.documents:
        text = client.get(f"/v1/documents/{source}").json()["text"]
        chunks = list(store.iter_chunks(source))
        assert chunks
        for c in chunks:
            assert text[c.char_start : c.char_end] == c.text


def test_passage_citations_reproduce_text(
    corpus: Path, builder: Builder, settings: Settings, client_for: Client
) -> None:
    build(builder)
    client = client_for(settings)
    for question in (
        "Which colour is the forklift?",
        "How do I install with Docker?",
        "How often is the Fresnel lens cleaned?",
    ):
        for p in ask(client, question)["passages"]:
            c = p["citation"]
            text = client.get(f"/v1/documents/{c['source']}").json()["text"]
            assert text[c["char_start"] : c["char_end"]] == p["text"]
            for h in p["highlights"]:
                assert text[h["char_start"] : h["char_end"]] == h["text"]


# --- PDF -------------------------------------------------------------------------------------


def test_pdf_answer_cites_its_page(
    corpus: Path, builder: Builder, settings: Settings, client_for: Client
) -> None:
    build(builder)
    body = ask(client_for(settings), "What colour is the warehouse forklift painted?")
    top = body["passages"][0]
    assert top["text"] == "The warehouse forklift is painted bright orange."
    assert top["citation"] == {
        "source": "handbook.pdf",
        "title": "Employee Handbook",
        "char_start": top["citation"]["char_start"],
        "char_end": top["citation"]["char_end"],
        "line_start": 5,
        "line_end": 5,
        "chunk_id": top["citation"]["chunk_id"],
        "url": "/v1/documents/handbook.pdf#page=3",
        "section": None,
        "page_start": 3,
        "page_end": 3,
        "collection": "default",
        "slide": None,
        "sheet": None,
        "row_start": None,
        "row_end": None,
    }


def test_pdf_chunks_keep_to_their_pages(corpus: Path, builder: Builder, settings: Settings) -> None:
    build(builder)
    chunks = chunks_of(settings, "handbook.pdf")
    assert [(c.text, c.page_start, c.page_end) for c in chunks] == [
        (HANDBOOK_PAGES[0], 1, 1),
        (HANDBOOK_PAGES[1], 2, 2),
        (HANDBOOK_PAGES[2], 3, 3),
        (HANDBOOK_PAGES[4], 5, 5),
    ]
    assert {c.context for c in chunks} == {"Employee Handbook"}


def test_pdf_text_and_pages() -> None:
    parsed = pdf.parse(make_pdf(["First page.", "", "Third page."]), "a.pdf")
    assert parsed.text == "First page.\n\n\n\nThird page."
    assert parsed.pages == (Span(0, 11), Span(13, 13), Span(15, 26))
    assert parsed.title == "First page."  # no metadata title: the first line


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"%PDF-1.4\n", "broken PDF ("),
        (b"<html>not a pdf</html>", "not a PDF file (no %PDF- header)"),
        (make_pdf(["x"], password="pw"), "encrypted PDF (needs a password)"),
        (make_pdf([""]), "no extractable text (scanned or image-only PDF?)"),
    ],
)
def test_pdf_parse_errors(data: bytes, reason: str) -> None:
    with pytest.raises(ParseError) as info:
        pdf.parse(data, "x.pdf")
    assert str(info.value).startswith(reason)


def test_pdf_with_only_an_owner_password_is_read() -> None:
    doc = FPDF()
    doc.set_font("helvetica", size=12)
    doc.set_encryption(owner_password="owner")
    doc.add_page()
    doc.multi_cell(0, 10, "Printing is restricted, reading is not.")
    parsed = pdf.parse(bytes(doc.output()), "x.pdf")
    assert parsed.text == "Printing is restricted, reading is not."


# --- Markdown --------------------------------------------------------------------------------


def test_markdown_sections_ignore_code_comments() -> None:
    parsed = markdown.parse(GUIDE_MD.encode(), "guide.md")
    assert parsed.text == GUIDE_MD
    assert parsed.title == "Groundqa Guide"
    assert [s.path for s in parsed.sections] == [
        "Groundqa Guide",
        "Groundqa Guide > Install > Docker",
        "Groundqa Guide > Install > Pip",
        "Groundqa Guide > Usage",
    ]
    docker = parsed.sections[1]
    # "## Install" has only a subheading under it: it opens the Docker section.
    assert GUIDE_MD[docker.start : docker.end].startswith("## Install\n\n### Docker\n")
    assert "docker compose up" in GUIDE_MD[docker.start : docker.end]


@pytest.mark.parametrize(
    ("text", "paths"),
    [
        ("intro\n# A\nx\n## B ##\ny\n# C\nz\n", ["A", "A > B", "C"]),
        ("# A\n~~~\n# not\n~~~\n## B\ny\n", ["A", "A > B"]),
        ("# A\n````\n```\n# still code\n````\ntext\n", ["A"]),
        ("---\ntitle: x\n# yaml comment\n---\n# Real\nbody\n", ["Real"]),
        (
            "#nospace\n    # indented code\n# **Bold** `api_key` [link](http://x)\nbody\n",
            ["Bold api_key link"],
        ),
        ("## B\nx\n# A\ny\n", ["B", "A"]),
    ],
)
def test_markdown_heading_paths(text: str, paths: list[str]) -> None:
    assert [s.path for s in markdown.parse(text.encode(), "x.md").sections] == paths


def test_markdown_chunks_carry_sections_and_do_not_straddle_them(
    corpus: Path, builder: Builder, settings: Settings
) -> None:
    build(builder)
    chunks = chunks_of(settings, "guide.md")
    assert [(c.section, c.context) for c in chunks] == [
        ("Groundqa Guide", "Groundqa Guide"),
        ("Groundqa Guide > Install > Docker", "Groundqa Guide > Install > Docker"),
        ("Groundqa Guide > Install > Pip", "Groundqa Guide > Install > Pip"),
        ("Groundqa Guide > Usage", "Groundqa Guide > Usage"),
    ]
    assert chunks[1].text.startswith("## Install\n\n### Docker\n\nPull the image")
    assert chunks[1].text.endswith("docker compose up\n```")
    assert all(c.page_start is None and c.page_end is None for c in chunks)


def test_markdown_answer_carries_its_section_path(
    corpus: Path, builder: Builder, settings: Settings, client_for: Client
) -> None:
    build(builder)
    body = ask(
        client_for(settings), "How do I start the stack with docker compose?", sources=["guide.md"]
    )
    citation = body["passages"][0]["citation"]
    assert citation["section"] == "Groundqa Guide > Install > Docker"
    assert citation["page_start"] is None
    assert citation["url"].startswith("/v1/documents/guide.md#L")


def test_section_context_counts_against_the_model_limit(tokenizer: HFTokenizer) -> None:
    body = " ".join(f"Sentence number {i} talks about topic {i}." for i in range(60))
    text = f"# {'Very ' * 20}Long Title\n\n## Sub\n\n{body}\n"
    parsed = markdown.parse(text.encode(), "x.md")
    doc = Document("x.md", parsed.title, text, "0" * 64, len(text), sections=parsed.sections)
    chunker = Chunker(
        tokenizer, ChunkerSettings(max_tokens=64, special_tokens=2, budget=256, overlap=1)
    )
    chunks = chunker.chunk(doc)
    assert len(chunks) > 3
    for c in chunks:
        assert text[c.char_start : c.char_end] == c.text
        assert chunker.count(c.context) + chunker.count(c.text) <= 62


def test_chunks_are_cut_at_section_boundaries_even_mid_sentence(tokenizer: HFTokenizer) -> None:
    text = "one two three four five six"
    doc = Document(
        "x.txt",
        "",
        text,
        "0" * 64,
        len(text),
        sections=(Section(0, 13, "A"), Section(13, len(text), "B")),
    )
    chunker = Chunker(tokenizer, ChunkerSettings(256, 2, 256, 1))
    assert [(c.text, c.section) for c in chunker.chunk(doc)] == [
        ("one two three", "A"),
        ("four five six", "B"),
    ]


# --- HTML ------------------------------------------------------------------------------------


def test_html_main_text_without_noise() -> None:
    parsed = html.parse(NOISY_HTML.encode(), "lighthouse.html")
    assert parsed.title == "Lighthouse Keeping Manual"
    assert parsed.text == (
        "Lighthouse Keeping\n\nThe lamp must be lit at dusk every evening.\n\n"
        "Maintenance\n\nClean the Fresnel lens every Sunday with a soft cloth."
    )
    assert [s.path for s in parsed.sections] == [
        "Lighthouse Keeping",
        "Lighthouse Keeping > Maintenance",
    ]


def test_html_noise_never_reaches_a_chunk(
    corpus: Path, builder: Builder, settings: Settings, client_for: Client
) -> None:
    build(builder)
    chunks = chunks_of(settings, "lighthouse.html")
    assert chunks
    for c in chunks:
        assert "zz" not in c.text and "zz" not in c.context
    text = client_for(settings).get("/v1/documents/lighthouse.html").json()["text"]
    assert "zz" not in text


def test_html_answer_carries_its_section(
    corpus: Path, builder: Builder, settings: Settings, client_for: Client
) -> None:
    build(builder)
    body = ask(client_for(settings), "How often is the Fresnel lens cleaned?", sources=["*.html"])
    top = body["passages"][0]
    assert top["text"] == "Maintenance\n\nClean the Fresnel lens every Sunday with a soft cloth."
    assert top["citation"]["section"] == "Lighthouse Keeping > Maintenance"
    assert top["citation"]["title"] == "Lighthouse Keeping Manual"


@pytest.mark.parametrize(
    ("page", "text", "title"),
    [
        ("<body><h1>Only Heading</h1><p>Body.</p></body>", "Only Heading\n\nBody.", "Only Heading"),
        (
            "<body><article><header><h1>Kept</h1></header><p>A.</p><footer>f</footer></article>"
            "<article><p>B.</p></article></body>",
            "Kept\n\nA.\n\nB.",
            "Kept",
        ),
        (
            "<body><ul><li>one</li><li>two</li></ul><ol start=3><li>x</li></ol>"
            "<table><tr><th>k</th><th>v</th></tr><tr><td>1</td><td>2</td></tr></table></body>",
            "- one\n- two\n\n3. x\n\nk | v\n1 | 2",
            "- one",
        ),
        ("<p>a<br>b</p><pre>  keep\n    this</pre>", "a\nb\n\n  keep\n    this", "a"),
        ("<div>x<span> y </span>z</div><div>w</div>", "x y z\nw", "x y z"),
    ],
)
def test_html_layout(page: str, text: str, title: str) -> None:
    parsed = html.parse(page.encode(), "x.html")
    assert (parsed.text, parsed.title) == (text, title)


def test_html_declared_charset() -> None:
    page = '<meta charset="iso-8859-1"><p>caf\xe9</p>'.encode("latin-1")
    assert html.parse(page, "x.html").text == "café"


def test_html_without_text_is_a_parse_error() -> None:
    with pytest.raises(ParseError, match="no readable text in the HTML page"):
        html.parse(b"<html><body><nav>menu</nav><script>x()</script></body></html>", "x.html")


# --- registry and stores ---------------------------------------------------------------------


def test_plain_text_stays_byte_exact() -> None:
    data = "\ufeffLine one.\r\nLine two.\r\n\r\n# not a section\n".encode()
    parsed = parse_text(data, "x.txt")
    assert parsed.text == data.decode("utf-8-sig")
    assert (parsed.sections, parsed.pages) == ((), ())
