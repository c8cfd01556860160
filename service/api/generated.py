"""Generated answers at the API's edges: the configured LLM composes from an ask's passages,
and the verdicts become response fields (shared by /v1/ask, MCP `ask` and chat)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence

from service.answering import AskResult
from service.api.schemas import (
    AnswerOut,
    AskResponse,
    EvidenceOut,
    GeneratedSentenceOut,
    GenerationOut,
    SentenceOut,
)
from service.api.state import AppState
from service.errors import GenerationUnavailableError
from service.generation import Event, Generated, SentenceVerdict, collect, compose
from service.llm import LLMConfig
from service.search import Searcher
from service.verification import Verdict


def llm_config(state: AppState) -> LLMConfig | None:
    """The configured LLM, or None (answers stay extractive)."""
    return LLMConfig.from_settings(state.settings)


def require_llm(state: AppState) -> LLMConfig:
    """The configured LLM, or GenerationUnavailableError saying how to configure one."""
    config = llm_config(state)
    if config is None:
        raise GenerationUnavailableError(
            "answer_mode 'generated' needs an LLM: set GROUNDQA_LLM_BASE_URL (and "
            "GROUNDQA_LLM_MODEL) to an OpenAI-compatible server, or ask with answer_mode "
            "'extractive'"
        )
    return config


def events(
    state: AppState,
    searcher: Searcher,
    result: AskResult,
    *,
    earlier: Sequence[tuple[str, str]] = (),
    max_tokens: int | None = None,
    stop: Sequence[str] = (),
    sampling: Mapping[str, float | int] | None = None,
) -> AsyncIterator[Event]:
    """The events of the LLM's answer from result's passages, verified as they come."""
    return compose(
        require_llm(state),
        result.question,
        result.passages,
        result.answer.grounded,
        searcher.embed_texts,
        policy=state.settings.verify,
        earlier=earlier,
        max_tokens=max_tokens,
        stop=stop,
        sampling=sampling,
    )


async def generate_answer(state: AppState, searcher: Searcher, result: AskResult) -> Generated:
    """The LLM's whole answer from result's passages, verified."""
    return await collect(events(state, searcher, result))


def evidence_out(verdict: Verdict) -> EvidenceOut | None:
    """The supporting span of a verdict, if any."""
    e = verdict.evidence
    return (
        EvidenceOut(source=e.source, char_start=e.char_start, char_end=e.char_end, text=e.text)
        if e
        else None
    )


def sentence_out(verdict: Verdict) -> SentenceOut:
    """A verdict as the verify API returns it."""
    return SentenceOut(
        text=verdict.claim.text,
        supported=verdict.supported,
        evidence=evidence_out(verdict),
        citations=list(verdict.claim.cited),
        reason=verdict.reason or None,
    )


def generated_sentence(item: SentenceVerdict) -> GeneratedSentenceOut:
    """A generated sentence's verdict with its place in the answer."""
    base = sentence_out(item.verdict)
    return GeneratedSentenceOut(
        **base.model_dump(), start=item.start, end=item.end, dropped=item.dropped
    )


def generation_out(state: AppState, generated: Generated) -> GenerationOut:
    """The `generation` field of an ask answered by the LLM."""
    s = generated.summary
    return GenerationOut(
        model=state.settings.llm_model,
        verify=state.settings.verify,
        text=generated.content,
        sentences=[generated_sentence(v) for v in generated.sentences],
        supported=s.supported,
        flagged=s.flagged,
        dropped=s.dropped,
        fallback=s.fallback,
    )


def with_generation(body: AskResponse, state: AppState, generated: Generated) -> AskResponse:
    """An ask's body answered by the LLM; on a fallback the extractive answer stays, and
    `generation.fallback` says why."""
    out = generation_out(state, generated)
    answer = body.answer
    if out.fallback is None:
        answer = AnswerOut(
            text=generated.content,
            grounded=out.supported > 0 and out.flagged == 0,
            citations=list(generated.cited),
        )
    return body.model_copy(update={"answer": answer, "generation": out})
