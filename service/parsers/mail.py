"""E-mail (.eml): a title line of subject, sender and date, then the plain-text body (or the
HTML body as the HTML parser reads it); attachments are handed back to be indexed on their own."""

from __future__ import annotations

import posixpath
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser

from service.parsers import html
from service.parsers.base import (
    DEFAULT_OPTIONS,
    Attachment,
    Parsed,
    ParseError,
    ParseOptions,
    TextBuilder,
    clean,
    cut_title,
    file_title,
)

EXTENSIONS = (".eml",)


def title_line(message: EmailMessage) -> str:
    """`Subject — From, Date` of a message, leaving out what it lacks."""
    subject = " ".join(str(message.get("subject", "")).split())
    sender = " ".join(str(message.get("from", "")).split())
    date = " ".join(str(message.get("date", "")).split())
    tail = ", ".join(part for part in (sender, date) if part)
    return " — ".join(part for part in (subject, tail) if part)


def _body(message: EmailMessage) -> str:
    """The plain-text body, else the HTML body's text, else ""."""
    part = message.get_body(preferencelist=("plain", "html"))
    if part is None:
        return ""
    try:
        content = part.get_content()
    except (LookupError, ValueError, AssertionError):  # unknown charset, broken encoding
        payload = part.get_payload(decode=True)
        content = payload.decode("utf-8", errors="replace") if isinstance(payload, bytes) else ""
    if not isinstance(content, str):
        return ""
    if part.get_content_subtype() == "html":
        try:
            return html.parse(content.encode("utf-8"), "body.html").text
        except ParseError:
            return ""
    return content


def _attachments(
    message: EmailMessage, options: ParseOptions
) -> tuple[list[Attachment], list[str]]:
    """The message's attached files with unique, path-free names, and those left out."""
    found: list[Attachment] = []
    omitted: list[str] = []
    names: set[str] = set()
    for part in message.iter_attachments():
        raw = part.get_filename() or ""
        # Only the last path component: a name like "../../x.pdf" must not leave the message.
        name = posixpath.basename(raw.replace("\\", "/")).strip() or "attachment"
        data = part.get_payload(decode=True)
        if not isinstance(data, bytes):
            omitted.append(f"attachment {name}: not a file (nested message?), not indexed")
            continue
        if len(data) > options.max_attachment_bytes:
            omitted.append(f"attachment {name}: larger than {options.max_attachment_bytes} bytes")
            continue
        stem, dot, extension = name.rpartition(".")
        unique, n = name, 1
        while unique in names:
            n += 1
            unique = f"{stem}-{n}.{extension}" if dot else f"{name}-{n}"
        names.add(unique)
        found.append(Attachment(unique, data))
    return found, omitted


def parse(data: bytes, source: str, options: ParseOptions = DEFAULT_OPTIONS) -> Parsed:
    """Title line and body as text; attached files returned as attachments."""
    if not data.strip():
        raise ParseError("empty file")
    try:
        message = BytesParser(policy=policy.default).parsebytes(data)
        if not isinstance(message, EmailMessage):
            raise ParseError("not an e-mail message")
        title = title_line(message)
        body = _body(message)
        attachments, omitted = _attachments(message, options)
    except ParseError:
        raise
    except Exception as exc:  # malformed headers and MIME trees raise many types
        raise ParseError(f"broken e-mail ({type(exc).__name__}: {exc})") from exc
    out = TextBuilder()
    out.add(title)
    out.add(clean(body))
    text = out.text()
    if not text.strip():
        raise ParseError("e-mail without subject or body")
    return Parsed(
        text=text,
        title=cut_title(title) or file_title(source),
        attachments=tuple(attachments),
        omitted=tuple(omitted),
    )
