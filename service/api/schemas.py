"""Request and response bodies of the HTTP API."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from service.config import Mode

QUESTION_MAX = 2000
TOP_K_MAX = 50


class AskRequest(BaseModel):
    """A question and how many passages to return."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"question": "How many troops has North Korea sent?", "top_k": 3}]
        },
    )

    question: str = Field(min_length=1, max_length=QUESTION_MAX)
    top_k: int = Field(5, ge=1, le=TOP_K_MAX)
    mode: Mode | None = Field(None, description="hybrid, dense or keyword; default: server's.")
    sources: list[str] | None = Field(
        None, max_length=50, description="Glob patterns over `source` to search within."
    )

    @field_validator("question")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("question must not be blank")
        return value


class AskQuery(BaseModel):
    """Query parameters of GET /v1/ask."""

    model_config = ConfigDict(extra="forbid")

    q: str = Field(min_length=1, max_length=QUESTION_MAX, description="The question.")
    top_k: int = Field(5, ge=1, le=TOP_K_MAX)
    mode: Mode | None = None
    sources: list[str] | None = Field(None, max_length=50)

    @field_validator("q")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("q must not be blank")
        return value


class CitationOut(BaseModel):
    """Where a passage comes from; slice the document text at [char_start:char_end] to check."""

    source: str
    title: str
    char_start: int
    char_end: int
    line_start: int
    line_end: int
    chunk_id: str
    url: str
    section: str | None = Field(None, description="Heading path, e.g. 'Install > Docker'.")
    page_start: int | None = Field(None, description="First page (1-based) of a PDF passage.")
    page_end: int | None = Field(None, description="Last page (1-based) of a PDF passage.")
    slide: int | None = Field(None, description="Slide (1-based) of a presentation passage.")
    sheet: str | None = Field(None, description="Sheet of a spreadsheet passage, e.g. 'Budget'.")
    row_start: int | None = Field(
        None, description="First spreadsheet row of the passage, as the spreadsheet numbers it."
    )
    row_end: int | None = Field(None, description="Last spreadsheet row of the passage.")


class HighlightOut(BaseModel):
    """A sentence of the passage that answers the question, in document offsets."""

    char_start: int
    char_end: int
    text: str


class PassageOut(BaseModel):
    """A ranked passage with its citation."""

    rank: int
    score: float
    text: str
    highlights: list[HighlightOut]
    citation: CitationOut


class AnswerOut(BaseModel):
    """Extractive answer quoting passages verbatim with [n] rank markers."""

    text: str
    grounded: bool
    citations: list[int]


class IndexRef(BaseModel):
    """The build a response was answered from."""

    build_id: str
    model: str


class AskResponse(BaseModel):
    """Ranked passages answering a question, each with a verifiable citation."""

    question: str
    answer: AnswerOut
    passages: list[PassageOut]
    index: IndexRef
    took_ms: float


class DocumentSummary(BaseModel):
    """An indexed source."""

    source: str
    title: str
    sha256: str
    chunks: int


class DocumentList(BaseModel):
    """Indexed sources of the served build."""

    build_id: str
    documents: list[DocumentSummary]


class DocumentOut(BaseModel):
    """An indexed source's full text: citation offsets index into `text`."""

    source: str
    title: str
    sha256: str
    text: str


class IndexInfo(BaseModel):
    """The published build."""

    build_id: str
    model: str
    created_at: str
    documents: int
    chunks: int
    stale: bool
    skipped: list[dict[str, str]]
    rebuild_reason: str | None = None


class JobOut(BaseModel):
    """A background rebuild."""

    job_id: str
    state: str
    stage: str
    progress: float
    started_at: str
    finished_at: str | None
    result: dict[str, Any] | None
    error: str | None


class ErrorOut(BaseModel):
    """An error the user can act on."""

    detail: str


class Ready(BaseModel):
    """Readiness with the served build."""

    status: str
    build_id: str | None = None
