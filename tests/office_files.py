"""Real office files for the tests, made by the libraries that write them (python-docx,
python-pptx, openpyxl, Pillow) or, for EPUB and ODT, zipped from their specified parts."""

from __future__ import annotations

import io
import zipfile
from email.message import EmailMessage

import openpyxl
from docx import Document as WordDocument
from PIL import Image, ImageDraw, ImageFont
from pptx import Presentation
from pptx.util import Inches

POLICY_EXPENSES = "Meals on business trips are reimbursed up to 45 euros per day."
POLICY_HOTELS = "Hotels are booked through the Skyline portal at least two weeks ahead."


def make_docx() -> bytes:
    """A travel policy: a title, two headed sections, a table and a page header."""
    doc = WordDocument()
    doc.core_properties.title = "Travel Policy"
    doc.add_heading("Travel Policy", 0)
    doc.add_paragraph("This policy applies to every employee.")
    doc.add_heading("Expenses", 1)
    doc.add_paragraph(POLICY_EXPENSES)
    table = doc.add_table(rows=2, cols=2)
    for (r, c), text in {(0, 0): "City", (0, 1): "Rate", (1, 0): "Lisbon", (1, 1): "130"}.items():
        table.cell(r, c).text = text
    doc.add_heading("Hotels", 2)
    doc.add_paragraph(POLICY_HOTELS)
    doc.sections[0].header.paragraphs[0].text = "Internal header zzheaderzz"
    doc.sections[0].footer.paragraphs[0].text = "Footer zzfooterzz"
    out = io.BytesIO()
    doc.save(out)
    return out.getvalue()


SLIDE_BODIES = [
    "Revenue grew in every region this year.",
    "The Oslo office opened in March.",
    "Hiring focused on support engineers.",
    "The quarterly target is 4.2 million kroner in licence sales.",
    "Questions and next steps.",
]


def make_pptx(*, images_only: bool = False) -> bytes:
    """Five titled slides with notes (slide 2 has a table), or one slide with a picture."""
    deck = Presentation()
    if images_only:
        slide = deck.slides.add_slide(deck.slide_layouts[6])
        picture = io.BytesIO()
        Image.new("RGB", (40, 30), (200, 30, 30)).save(picture, "PNG")
        picture.seek(0)
        slide.shapes.add_picture(picture, Inches(1), Inches(1))
    else:
        for number, body in enumerate(SLIDE_BODIES, start=1):
            slide = deck.slides.add_slide(deck.slide_layouts[1])
            slide.shapes.title.text = f"Plan {number}" if number != 4 else "Sales targets"
            slide.placeholders[1].text = body
            slide.notes_slide.notes_text_frame.text = f"Speaker reminder {number}."
            if number == 2:
                rows = slide.shapes.add_table(2, 2, Inches(1), Inches(4), Inches(4), Inches(1))
                for (r, c), text in {(0, 0): "Office", (0, 1): "Staff", (1, 0): "Oslo"}.items():
                    rows.table.cell(r, c).text = text
                rows.table.cell(1, 1).text = "12"
    out = io.BytesIO()
    deck.save(out)
    return out.getvalue()


def make_xlsx(rows: int = 30) -> bytes:
    """A Budget sheet (header and `rows` rows) and a Staff sheet."""
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.title = "Budget"
    sheet.append(["Project", "Amount", "Owner"])
    for i in range(rows):
        sheet.append([f"Project {i}", 1000 + i * 250.5, "Ingrid" if i == 12 else None])
    staff = book.create_sheet("Staff")
    staff.append(["Name", "Role"])
    staff.append(["Ola", "Controller"])
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def make_million_row_xlsx(rows: int = 1_000_000) -> bytes:
    """A workbook whose Budget sheet has `rows` rows, written as Excel writes a sheet (with its
    <dimension>) into a workbook made by openpyxl; a few MB on disk."""
    template = zipfile.ZipFile(io.BytesIO(make_xlsx(rows=1)))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        for info in template.infolist():
            if info.filename != "xl/worksheets/sheet1.xml":
                z.writestr(info, template.read(info))
                continue
            with z.open(info.filename, "w") as part:
                part.write(
                    b'<?xml version="1.0"?><worksheet xmlns="http://schemas.openxmlformats.org/'
                    b'spreadsheetml/2006/main"><dimension ref="A1:A%d"/><sheetData>'
                    b'<row r="1"><c r="A1" t="inlineStr"><is><t>Reading</t></is></c></row>' % rows
                )
                for start in range(2, rows + 1, 10_000):
                    part.write(
                        b"".join(
                            b'<row r="%d"><c r="A%d"><v>7</v></c></row>' % (r, r)
                            for r in range(start, min(start + 10_000, rows + 1))
                        )
                    )
                part.write(b"</sheetData></worksheet>")
    return out.getvalue()


def make_epub() -> bytes:
    """An EPUB 3 with two chapters, the second with two headings."""
    chapters = {
        "ch1.xhtml": "<html><head><title>Departure</title></head><body>"
        "<p>The ferry to the islands leaves at dawn.</p></body></html>",
        "ch2.xhtml": "<html><head><title>Arrival</title></head><body><h1>Arrival</h1>"
        "<p>The harbour was quiet.</p><h2>The lighthouse</h2>"
        "<p>The lighthouse keeper polishes the brass lamp every Sunday.</p></body></html>",
    }
    opf = (
        '<?xml version="1.0"?><package xmlns="http://www.idpf.org/2007/opf" version="3.0">'
        '<metadata xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:title>Island Days</dc:title>'
        "</metadata><manifest>"
        '<item id="c1" href="ch1.xhtml" media-type="application/xhtml+xml"/>'
        '<item id="c2" href="ch2.xhtml" media-type="application/xhtml+xml"/>'
        '</manifest><spine><itemref idref="c1"/><itemref idref="c2"/></spine></package>'
    )
    container = (
        '<?xml version="1.0"?><container xmlns="urn:oasis:names:tc:opendocument:xmlns:container"'
        ' version="1.0"><rootfiles><rootfile full-path="OEBPS/content.opf"'
        ' media-type="application/oebps-package+xml"/></rootfiles></container>'
    )
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("mimetype", "application/epub+zip", compress_type=zipfile.ZIP_STORED)
        z.writestr("META-INF/container.xml", container)
        z.writestr("OEBPS/content.opf", opf)
        for name, body in chapters.items():
            z.writestr(f"OEBPS/{name}", body)
    return out.getvalue()


def make_odt() -> bytes:
    """An OpenDocument text with a heading, a sub-heading, spaces and a table."""
    content = (
        '<?xml version="1.0"?><office:document-content'
        ' xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0"'
        ' xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0"'
        ' xmlns:table="urn:oasis:names:tc:opendocument:xmlns:table:1.0">'
        "<office:body><office:text>"
        '<text:h text:outline-level="1">Garden</text:h>'
        '<text:p>Tomatoes need<text:s text:c="2"/>sun.<text:note><text:note-body>'
        "<text:p>zznotezz</text:p></text:note-body></text:note></text:p>"
        '<text:h text:outline-level="2">Watering</text:h>'
        "<text:list><text:list-item><text:p>Water the roses every evening.</text:p>"
        "</text:list-item></text:list>"
        "<table:table><table:table-row><table:table-cell><text:p>Plant</text:p></table:table-cell>"
        "<table:table-cell><text:p>Litres</text:p></table:table-cell></table:table-row>"
        "</table:table></office:text></office:body></office:document-content>"
    )
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("mimetype", "application/vnd.oasis.opendocument.text")
        z.writestr("content.xml", content)
    return out.getvalue()


def make_eml(attachments: dict[str, bytes], *, html_body: str | None = None) -> bytes:
    """A message with a plain (or HTML) body and the given attachments."""
    message = EmailMessage()
    message["Subject"] = "Budget approval"
    message["From"] = "Kari Nordmann <kari@example.com>"
    message["Date"] = "Tue, 01 Dec 2026 09:30:00 +0000"
    if html_body is None:
        message.set_content("The board approved the budget for the new canteen on Monday.\n")
    else:
        message.set_content(html_body, subtype="html")
    for name, data in attachments.items():
        message.add_attachment(data, maintype="application", subtype="octet-stream", filename=name)
    return bytes(message)


SCANNED_PAGES = [
    "Safety instructions for the workshop.",
    "The spare boiler key hangs behind the blue door.",
]


def make_scanned_pdf(pages: list[str] = SCANNED_PAGES) -> bytes:
    """A PDF of page images with text drawn on them: no text layer at all."""
    font = ImageFont.load_default(size=44)
    images = []
    for text in pages:
        image = Image.new("L", (1240, 1754), 255)
        ImageDraw.Draw(image).text((100, 200), text, font=font, fill=0)
        images.append(image)
    out = io.BytesIO()
    images[0].save(out, "PDF", resolution=150, save_all=True, append_images=images[1:])
    return out.getvalue()


def make_zip_bomb(unpacked: int = 250_000_000) -> bytes:
    """A .docx-shaped zip whose document part unpacks to `unpacked` bytes of zeros (a few
    hundred KB on disk)."""
    out = io.BytesIO()
    block = bytes(1_000_000)
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        z.writestr("[Content_Types].xml", "<Types/>")
        with z.open("word/document.xml", "w") as part:
            for _ in range(unpacked // len(block)):
                part.write(block)
    return out.getvalue()


def make_encrypted_office() -> bytes:
    """The shape of a password-protected Office file: an OLE compound file holding the
    EncryptionInfo and EncryptedPackage streams."""
    magic = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
    return magic + bytes(504) + "EncryptionInfo".encode("utf-16-le") + bytes(1024)
