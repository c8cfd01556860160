"""Request and response bodies of the HTTP API."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from service.config import Mode

QUESTION_MAX = 2000
TOP_K_MAX = 50
# An anonymous client's globs are compiled per request: bounded in number and length.
GLOBS_MAX = 50
GLOB_MAX_CHARS = 256
Glob = Annotated[str, Field(min_length=1, max_length=GLOB_MAX_CHARS)]
VERIFY_TEXT_MAX = 20_000
AnswerMode = Literal["extractive", "generated"]


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
    sources: list[Glob] | None = Field(
        None, max_length=GLOBS_MAX, description="Glob patterns over `source` to search within."
    )
    answer_mode: AnswerMode = Field(
        "extractive",
        description="extractive (quoted sentences) or generated (composed by the configured "
        "LLM from the passages, every sentence verified; needs GROUNDQA_LLM_BASE_URL).",
    )
    collections: list[str] | None = Field(
        None,
        max_length=50,
        description="Collections to search within (narrows the key's scope, never widens it).",
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
    sources: list[Glob] | None = Field(None, max_length=GLOBS_MAX)
    collections: list[str] | None = Field(None, max_length=50)

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
    collection: str = Field("default", description="The collection (top-level seeds folder).")
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


class EvidenceOut(BaseModel):
    """The span supporting a sentence: document `text[char_start:char_end]` is `text`."""

    source: str
    char_start: int
    char_end: int
    text: str


class SentenceOut(BaseModel):
    """A sentence's verdict: supported by `evidence`, or not, and why not."""

    text: str
    supported: bool
    evidence: EvidenceOut | None
    citations: list[int] = Field(description="The [n] markers the sentence carries.")
    reason: str | None = Field(None, description="Why it is not supported.")


class GeneratedSentenceOut(SentenceOut):
    """A generated sentence's verdict and where it stands in the answer text."""

    start: int = Field(
        description="answer.text[start:end] is the sentence (start == end: dropped)."
    )
    end: int
    dropped: bool


class GenerationOut(BaseModel):
    """How a generated answer was verified (present only with answer_mode=generated)."""

    model: str
    verify: Literal["flag", "drop"]
    text: str = Field(description="What the LLM's answer became after verification.")
    sentences: list[GeneratedSentenceOut]
    supported: int
    flagged: int
    dropped: int
    fallback: str | None = Field(
        None, description="Set when the LLM failed: the answer is then the extractive one."
    )


class AskResponse(BaseModel):
    """Ranked passages answering a question, each with a verifiable citation."""

    question: str
    answer: AnswerOut
    passages: list[PassageOut]
    index: IndexRef
    took_ms: float
    # Left out of extractive bodies, which stay exactly what they were before generation.
    generation: GenerationOut | None = Field(None, exclude_if=lambda v: v is None)


class SpanIn(BaseModel):
    """A span of an indexed document that a text claims to cite ([n] is the n-th span)."""

    model_config = ConfigDict(extra="forbid")

    source: str = Field(min_length=1)
    char_start: int | None = Field(None, ge=0, description="Default: the document's start.")
    char_end: int | None = Field(None, ge=0, description="Default: the document's end.")


class VerifyRequest(BaseModel):
    """Text to verify, and optionally what it cites: spans (its [n] markers name them) or
    source globs to search within."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"text": "North Korea has sent about 12,000 troops to fight for Russia."}]
        },
    )

    text: str = Field(min_length=1, max_length=VERIFY_TEXT_MAX)
    sources: list[str] | None = Field(
        None, max_length=50, description="Glob patterns over `source`: search only these."
    )
    passages: list[SpanIn] | None = Field(
        None, max_length=50, description="The spans the text cites; [n] names the n-th."
    )


class VerifyResponse(BaseModel):
    """Per sentence of the text: supported or not, with the best supporting span."""

    sentences: list[SentenceOut]
    supported: int
    total: int
    index: IndexRef


class DocumentSummary(BaseModel):
    """An indexed source."""

    source: str
    title: str
    sha256: str
    chunks: int
    collection: str = "default"


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
    collection: str = "default"


class CollectionOut(BaseModel):
    """A collection the key may see."""

    name: str
    documents: int


class CollectionList(BaseModel):
    """The collections the key may see in the served build."""

    build_id: str
    collections: list[CollectionOut]


class IndexInfo(BaseModel):
    """The published build."""

    build_id: str
    model: str
    created_at: str
    documents: int
    chunks: int
    stale: bool
    skipped: list[dict[str, str]]
    rebuild_reason: str | None = None  # why the next build would re-embed everything


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
