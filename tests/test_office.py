"""Documents as offices have them: Word, PowerPoint, spreadsheets, CSV, e-books, OpenDocument,
e-mail with attachments and scanned PDFs, made by the libraries that write them; hostile files
are skipped or bounded and reported."""

from __future__ import annotations

import io
import re
import sqlite3
import zipfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service import cli
from service.citations import Citation, Passage, location
from service.config import Settings
from service.indexing import Builder, reuse
from service.ingest import parse_seed, scan_seeds
from service.models import Chunk, Document, Row, Section, Span
from service.parsers import (
    delimited,
    epub,
    mail,
    ocr,
    opendocument,
    pdf,
    powerpoint,
    spreadsheet,
    word,
)
from service.parsers.base import ParseError, ParseOptions
from service.rendering import Source
from service.store import CHUNKS_DB, ChunkStore, build_path, read_pointer
from tests.office_files import (
    POLICY_EXPENSES,
    POLICY_HOTELS,
    SCANNED_PAGES,
    SLIDE_BODIES,
    make_docx,
    make_eml,
    make_encrypted_office,
    make_epub,
    make_million_row_xlsx,
    make_odt,
    make_pptx,
    make_scanned_pdf,
    make_xlsx,
    make_zip_bomb,
)

Client = Callable[[Settings], TestClient]
needs_tesseract = pytest.mark.skipif(
    ocr.tesseract_version() is None,
    reason="Tesseract is not installed (apt-get install tesseract-ocr)",
)


def ask(client: TestClient, question: str, source: str) -> dict[str, Any]:
    """The top passage for a question asked of one source, checked against the document."""
    r = client.post("/v1/ask", json={"question": question, "top_k": 3, "sources": [source]})
    assert r.status_code == 200, r.text
    top: dict[str, Any] = r.json()["passages"][0]
    c = top["citation"]
    text = client.get(f"/v1/documents/{c['source']}").json()["text"]
    assert text[c["char_start"] : c["char_end"]] == top["text"]
    for h in top["highlights"]:
        assert text[h["char_start"] : h["char_end"]] == h["text"]
    return top


def store_of(settings: Settings) -> ChunkStore:
    build_id = read_pointer(settings.index_dir)
    assert build_id is not None
    return ChunkStore(build_path(settings.index_dir, build_id) / CHUNKS_DB)


@pytest.fixture
def office(seeds: Path) -> Path:
    """One file of every office format, a scanned PDF, and hostile files beside them."""
    files = {
        "policy.docx": make_docx(),
        "plan.pptx": make_pptx(),
        "budget.xlsx": make_xlsx(),
        "staff.csv": b"Name,Desk\nAstrid,4B\nBjorn,7C\nCecilie,2A\n",
        "island.epub": make_epub(),
        "garden.odt": make_odt(),
        "mail.eml": make_eml({"minutes.docx": make_docx(), "tool.exe": b"MZ\x90\x00"}),
        "scan.pdf": make_scanned_pdf(),
        "corrupt.docx": b"PK\x03\x04" + bytes(range(256)) * 8,
        "bomb.docx": make_zip_bomb(),
        "locked.xlsx": make_encrypted_office(),
        "pictures.pptx": make_pptx(images_only=True),
    }
    for name, data in files.items():
        (seeds / name).write_bytes(data)
    return seeds


# --- the whole folder ------------------------------------------------------------------------


@needs_tesseract
def test_every_format_is_indexed_and_hostile_files_reported(
    office: Path, builder: Builder, settings: Settings
) -> None:
    report = builder.build()
    assert report.published
    reasons = {s["source"]: s["reason"] for s in report.skipped}
    assert reasons["bomb.docx"] == (
        "Word document would unpack to 250000008 bytes, over GROUNDQA_MAX_UNZIPPED_BYTES "
        "(200000000): a zip bomb?"
    )
    assert reasons["corrupt.docx"].startswith("broken Word document (")
    assert (
        reasons["locked.xlsx"]
        == "password-protected Excel workbook; save a copy without a password"
    )
    assert reasons["pictures.pptx"] == "no text in the presentation (image-only slides?)"
    assert reasons["mail.eml/tool.exe"] == "unsupported file type .exe"
    assert len(reasons) == 5
    assert sorted(store_of(settings).documents) == [
        "budget.xlsx",
        "garden.odt",
        "island.epub",
        "mail.eml",
        "mail.eml/minutes.docx",
        "plan.pptx",
        "policy.docx",
        "scan.pdf",
        "staff.csv",
    ]
    # Attachments are documents, not seed files: an unchanged folder is up to date.
    again = builder.build()
    assert not again.published and again.unchanged == sorted(p.name for p in office.iterdir())


@needs_tesseract
def test_questions_are_answered_with_their_location(
    office: Path, builder: Builder, settings: Settings, client_for: Client
) -> None:
    builder.build()
    client = client_for(settings)

    slide = ask(client, "What is the quarterly licence sales target?", "plan.pptx")
    assert SLIDE_BODIES[3] in slide["text"]
    assert slide["citation"]["slide"] == 4
    assert slide["citation"]["section"] == "Sales targets"

    rows = ask(client, "Which project does Ingrid own?", "budget.xlsx")
    assert "Project: Project 12\nAmount: 4006\nOwner: Ingrid" in rows["text"]
    c = rows["citation"]
    assert c["sheet"] == "Budget" and c["section"] == "Budget"
    # Project 12 is on row 14 (the header is row 1); chunks hold runs of five rows from row 2.
    assert (c["row_start"], c["row_end"]) == (12, 16)

    desk = ask(client, "Which desk does Bjorn sit at?", "staff.csv")
    assert "Name: Bjorn\nDesk: 7C" in desk["text"]
    assert desk["citation"]["sheet"] is None and desk["citation"]["row_start"] is not None

    section = ask(client, "How are hotels booked?", "policy.docx")
    assert POLICY_HOTELS in section["text"]
    assert section["citation"]["section"] == "Travel Policy > Expenses > Hotels"

    page = ask(client, "Where does the spare boiler key hang?", "scan.pdf")
    assert "boiler key" in page["text"]
    assert (page["citation"]["page_start"], page["citation"]["page_end"]) == (2, 2)

    chapter = ask(client, "When does the keeper polish the lamp?", "island.epub")
    assert "every Sunday" in chapter["text"]
    assert chapter["citation"]["section"] == "Arrival > The lighthouse"

    garden = ask(client, "When are the roses watered?", "garden.odt")
    assert garden["citation"]["section"] == "Garden > Watering"

    approved = ask(client, "What did the board approve?", "mail.eml")
    assert approved["citation"]["title"].startswith("Budget approval — Kari Nordmann")
    attached = ask(client, "How much are meals reimbursed?", "mail.eml/minutes.docx")
    assert POLICY_EXPENSES in attached["text"]


# --- Word ------------------------------------------------------------------------------------


def test_word_body_in_order_with_heading_sections_and_no_headers() -> None:
    parsed = word.parse(make_docx(), "policy.docx")
    assert parsed.text == (
        "Travel Policy\n\nThis policy applies to every employee.\n\nExpenses\n\n"
        f"{POLICY_EXPENSES}\n\nCity | Rate\nLisbon | 130\n\nHotels\n\n{POLICY_HOTELS}"
    )
    assert parsed.title == "Travel Policy"
    assert [s.path for s in parsed.sections] == [
        "Travel Policy",
        "Travel Policy > Expenses",
        "Travel Policy > Expenses > Hotels",
    ]
    for s in parsed.sections:
        assert parsed.text[s.start :].startswith(s.path.split(" > ")[-1])


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"PK\x03\x04garbage", "broken Word document ("),
        (b"plain text, not a zip", "broken Word document (not a zip container)"),
        (
            make_encrypted_office(),
            "password-protected Word document; save a copy without a password",
        ),
        (
            b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(600),
            "legacy binary Office file, not a Word document; save it in the current format",
        ),
    ],
)
def test_word_files_that_cannot_be_read(data: bytes, reason: str) -> None:
    with pytest.raises(ParseError) as caught:
        word.parse(data, "x.docx")
    assert str(caught.value).startswith(reason)


def test_zip_bomb_is_refused_before_unpacking() -> None:
    bomb = make_zip_bomb(5_000_000)
    with pytest.raises(ParseError, match=r"would unpack to 5000008 bytes, over .*a zip bomb\?"):
        word.parse(bomb, "bomb.docx", ParseOptions(max_unzipped_bytes=1_000_000))


# --- PowerPoint ------------------------------------------------------------------------------


def test_slides_in_order_with_titles_tables_and_notes() -> None:
    parsed = powerpoint.parse(make_pptx(), "plan.pptx")
    assert len(parsed.slides) == 5
    slide2 = parsed.text[parsed.slides[1].start : parsed.slides[1].end]
    assert slide2 == (
        f"Plan 2\n\n{SLIDE_BODIES[1]}\n\nOffice | Staff\nOslo | 12\n\nNotes: Speaker reminder 2."
    )
    assert parsed.sections[3] == Section(
        parsed.slides[3].start, parsed.slides[3].end, "Sales targets"
    )
    assert parsed.title == "Plan 1"


def test_image_only_presentation_is_a_parse_error() -> None:
    with pytest.raises(ParseError, match=r"^no text in the presentation \(image-only slides\?\)$"):
        powerpoint.parse(make_pptx(images_only=True), "pictures.pptx")


# --- spreadsheets ----------------------------------------------------------------------------


def test_sheet_rows_as_header_value_lines_with_row_numbers() -> None:
    parsed = spreadsheet.parse(make_xlsx(rows=2), "budget.xlsx")
    assert parsed.text == (
        "Project: Project 0\nAmount: 1000\n\nProject: Project 1\nAmount: 1250.5\n\n"
        "Name: Ola\nRole: Controller"
    )
    assert parsed.rows == (
        Row(0, 31, "Budget", 2),
        Row(33, 66, "Budget", 3),
        Row(68, 94, "Staff", 2),
    )
    assert [s.path for s in parsed.sections] == ["Budget", "Staff"]
    assert parsed.title == "budget.xlsx"


def test_sheet_over_the_row_limit_is_bounded_and_reported(
    seeds: Path, settings: Settings, fake_embedder: Any
) -> None:
    (seeds / "big.xlsx").write_bytes(make_xlsx(rows=500))
    (seeds / "big.csv").write_bytes(
        b"n,square\n" + b"".join(b"%d,%d\n" % (i, i * i) for i in range(500))
    )
    report = Builder(settings.model_copy(update={"max_sheet_rows": 100}), fake_embedder).build()
    assert report.published and report.files_indexed == 2
    assert sorted((s["source"], s["reason"]) for s in report.skipped) == [
        ("big.csv", "rows after 100 not indexed (GROUNDQA_MAX_SHEET_ROWS)"),
        ("big.xlsx", "sheet Budget: rows after 100 of 501 not indexed (GROUNDQA_MAX_SHEET_ROWS)"),
    ]
    chunks = list(store_of(settings).iter_chunks("big.xlsx"))
    assert max(c.row_end or 0 for c in chunks if c.sheet == "Budget") == 100


def test_million_row_sheet_is_read_up_to_the_limit() -> None:
    parsed = spreadsheet.parse(make_million_row_xlsx(), "readings.xlsx")
    assert parsed.omitted == (
        "sheet Budget: rows after 10000 of 1000000 not indexed (GROUNDQA_MAX_SHEET_ROWS)",
    )
    budget = [r for r in parsed.rows if r.sheet == "Budget"]
    assert (len(budget), budget[0].number, budget[-1].number) == (9999, 2, 10000)


def test_sheet_chunks_are_runs_of_five_rows(
    seeds: Path, builder: Builder, settings: Settings
) -> None:
    (seeds / "budget.xlsx").write_bytes(make_xlsx(rows=12))
    builder.build()
    chunks = list(store_of(settings).iter_chunks("budget.xlsx"))
    assert [(c.sheet, c.row_start, c.row_end) for c in chunks] == [
        ("Budget", 2, 6),
        ("Budget", 7, 11),
        ("Budget", 12, 13),
        ("Staff", 2, 2),
    ]
    assert chunks[1].text.startswith("Project: Project 5\n") and chunks[1].section == "Budget"


def test_macro_enabled_workbook_is_read_without_its_macros() -> None:
    data = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(make_xlsx(rows=1))) as src, zipfile.ZipFile(data, "w") as dst:
        for info in src.infolist():
            dst.writestr(info, src.read(info))
        dst.writestr("xl/vbaProject.bin", b"Attribute VB_Name = zzmacrozz")
    parsed = spreadsheet.parse(data.getvalue(), "budget.xlsm")
    assert "zzmacrozz" not in parsed.text and parsed.text.startswith("Project: Project 0\n")


def test_csv_dialect_and_row_numbers() -> None:
    parsed = delimited.parse(b"\xef\xbb\xbfcity;people\nBergen;285000\n\nTromso;77000\n", "c.csv")
    assert parsed.text == "city: Bergen\npeople: 285000\n\ncity: Tromso\npeople: 77000"
    assert [r.number for r in parsed.rows] == [2, 4]


# --- e-books, OpenDocument, e-mail -----------------------------------------------------------


def test_epub_chapters_in_spine_order_as_sections() -> None:
    parsed = epub.parse(make_epub(), "island.epub")
    assert parsed.title == "Island Days"
    assert [s.path for s in parsed.sections] == ["Departure", "Arrival", "Arrival > The lighthouse"]
    assert parsed.text.startswith("The ferry to the islands leaves at dawn.\n\nArrival\n\n")


def test_odt_headings_lists_tables_without_notes() -> None:
    parsed = opendocument.parse(make_odt(), "garden.odt")
    assert parsed.text == (
        "Garden\n\nTomatoes need  sun.\n\nWatering\n\nWater the roses every evening.\n\n"
        "Plant | Litres"
    )
    assert [s.path for s in parsed.sections] == ["Garden", "Garden > Watering"]


def test_eml_title_line_body_and_attachments() -> None:
    parsed = mail.parse(make_eml({"../../etc/a.pdf": b"%PDF-1.4", "a.pdf": b"%PDF-1.7"}), "m.eml")
    title = "Budget approval — Kari Nordmann <kari@example.com>, Tue, 01 Dec 2026 09:30:00 +0000"
    assert parsed.title == title
    assert parsed.text == f"{title}\n\nThe board approved the budget for the new canteen on Monday."
    assert [(a.name, a.data) for a in parsed.attachments] == [
        ("a.pdf", b"%PDF-1.4"),
        ("a-2.pdf", b"%PDF-1.7"),
    ]


def test_eml_attachments_that_cannot_be_read_are_reported(seeds: Path) -> None:
    (seeds / "mail.eml").write_bytes(
        make_eml({"broken.pdf": b"%PDF-1.7 garbage", "notes.txt": b"Bring the ladder.\n"})
    )
    files, _ = scan_seeds(seeds, 1_000_000)
    doc = parse_seed(files[0])
    assert [(a.source, a.text) for a in doc.attachments] == [
        ("mail.eml/notes.txt", "Bring the ladder.\n")
    ]
    assert [(s.source, s.reason.split(" (")[0]) for s in doc.omitted] == [
        ("mail.eml/broken.pdf", "broken PDF")
    ]


def test_eml_html_body_goes_through_the_html_parser() -> None:
    parsed = mail.parse(
        make_eml({}, html_body="<p>Lunch <b>moved</b></p><script>zz()</script>"), "m.eml"
    )
    assert parsed.text.endswith("\n\nLunch moved")


# --- scanned PDFs ----------------------------------------------------------------------------


@needs_tesseract
def test_scanned_pdf_is_ocred_once_and_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    options = ParseOptions(ocr_cache_dir=tmp_path / "ocr")
    parsed = pdf.parse(make_scanned_pdf(), "scan.pdf", options)
    assert parsed.text.split("\n\n") == SCANNED_PAGES
    assert parsed.pages == (
        Span(0, len(SCANNED_PAGES[0])),
        Span(len(SCANNED_PAGES[0]) + 2, len(parsed.text)),
    )
    assert len(list((tmp_path / "ocr").iterdir())) == 2

    def no_second_ocr(*args: object, **kwargs: object) -> str:
        raise AssertionError("a cached page was recognised again")

    monkeypatch.setattr("pytesseract.image_to_string", no_second_ocr)
    assert pdf.parse(make_scanned_pdf(), "scan.pdf", options).text == parsed.text


def test_without_tesseract_scanned_pages_are_skipped_with_a_hint(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ocr, "tesseract_version", lambda: None)
    with pytest.raises(ParseError) as caught:
        pdf.parse(make_scanned_pdf(), "scan.pdf")
    assert str(caught.value) == (
        "no extractable text (scanned or image-only PDF?): pages 1-2: no text layer; "
        "install Tesseract (apt-get install tesseract-ocr tesseract-ocr-eng), then run "
        "`groundqa index --full` to OCR them"
    )


def test_ocr_off_leaves_scanned_pages_out() -> None:
    with pytest.raises(
        ParseError, match=r"pages 1-2: no text layer, not OCRed \(GROUNDQA_OCR=off\)$"
    ):
        pdf.parse(make_scanned_pdf(), "scan.pdf", ParseOptions(ocr="off"))


# --- building on -----------------------------------------------------------------------------


def test_previous_chunks_are_reused_only_while_they_slice_the_text() -> None:
    doc = Document("a.pdf", "A", "Page one.\n\nPage two.", "sha", 20)
    chunk = Chunk("id", "a.pdf", "A", "Page two.", 11, 20, 3, 3)
    assert reuse([chunk], doc) == [chunk]
    # The same bytes read differently (an OCR engine installed since): chunked again.
    assert reuse([chunk], replace(doc, text="Page one.\n\nPage 2.")) is None
    assert reuse(None, doc) is None


def test_builds_written_before_slides_and_rows_still_read(
    seeds: Path, builder: Builder, settings: Settings
) -> None:
    (seeds / "notes.txt").write_text("The cafe serves green tea.\n")
    builder.build()
    build_id = read_pointer(settings.index_dir)
    assert build_id is not None
    path = build_path(settings.index_dir, build_id) / CHUNKS_DB
    with sqlite3.connect(path) as con:
        for column in ("slide", "sheet", "row_start", "row_end"):
            con.execute(f"ALTER TABLE chunks DROP COLUMN {column}")
    (chunk,) = ChunkStore(path).iter_chunks("notes.txt")
    assert (chunk.text, chunk.slide, chunk.sheet, chunk.row_start) == (
        "The cafe serves green tea.",
        None,
        "",
        None,
    )


def test_cli_ask_names_the_slide(
    seeds: Path,
    builder: Builder,
    settings: Settings,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    fake_embedder: Any,
    no_groundqa_env: None,
) -> None:
    (seeds / "plan.pptx").write_bytes(make_pptx())
    builder.build()
    monkeypatch.setattr("service.embedding.embedder_for", lambda *a, **k: fake_embedder)
    code = cli.main(
        [
            "ask",
            "quarterly licence sales target kroner",
            "--top-k",
            "1",
            "--index",
            str(settings.index_dir),
            "--seeds",
            str(settings.seeds_dir),
        ]
    )
    out, err = capsys.readouterr()
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert re.fullmatch(
        r"\[1\] plan\.pptx, slide 4, lines \d+-\d+ \(score -?\d+\.\d{4}\)", lines[2]
    )


# --- how locations read ----------------------------------------------------------------------


def citation(**location_fields: Any) -> Citation:
    return Citation(
        "deck.pptx", "Deck", 0, 10, 3, 4, "id", "/v1/documents/deck.pptx#L3-L4", **location_fields
    )


@pytest.mark.parametrize(
    ("fields", "label"),
    [
        ({"slide": 4}, "slide 4"),
        ({"sheet": "Budget", "row_start": 10, "row_end": 14}, "Budget, rows 10-14"),
        ({"sheet": "Budget", "row_start": 10, "row_end": 10}, "Budget, row 10"),
        ({"row_start": 2, "row_end": 5}, "rows 2-5"),
        ({"page_start": 3, "page_end": 3}, "page 3"),
        ({}, "lines 3-4"),
    ],
)
def test_location_labels(fields: dict[str, Any], label: str) -> None:
    c = citation(**fields)
    assert location(c) == label
    source = Source(1, Passage(1, 1.0, "0123456789", c), 0, 10, "http://x/")
    # Lines are counted within the cited span (one line here); the other places are the passage's.
    expected = "deck.pptx, line 3" if not fields else f"deck.pptx, {label}"
    assert source.label == expected


def test_mcp_source_line_names_the_slide() -> None:
    from service.api.mcp import source_line
    from service.api.schemas import CitationOut, PassageOut

    cited = CitationOut(
        source="plan.pptx",
        title="Plan 1",
        char_start=0,
        char_end=5,
        line_start=7,
        line_end=9,
        chunk_id="c",
        url="/v1/documents/plan.pptx#L7-L9",
        slide=4,
    )
    passage = PassageOut(rank=1, score=1.0, text="Sales", highlights=[], citation=cited)
    assert source_line(passage) == "[1] plan.pptx, slide 4, lines 7-9"


def test_external_links_are_never_fetched(monkeypatch: pytest.MonkeyPatch) -> None:
    from docx import Document as WordDocument
    from docx.opc.constants import RELATIONSHIP_TYPE

    doc = WordDocument()
    doc.add_paragraph("See the linked chart.")
    doc.part.relate_to("http://192.0.2.1/chart.png", RELATIONSHIP_TYPE.IMAGE, is_external=True)
    doc.part.relate_to("http://192.0.2.1/", RELATIONSHIP_TYPE.HYPERLINK, is_external=True)
    data = io.BytesIO()
    doc.save(data)

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("a parser opened a connection")

    monkeypatch.setattr("socket.socket.connect", no_network)
    monkeypatch.setattr("socket.create_connection", no_network)
    assert word.parse(data.getvalue(), "linked.docx").text == "See the linked chart."
