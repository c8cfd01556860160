"""Search: embed the question, query the vector and keyword indexes, fuse, map rows to chunks."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from service.access import EVERYTHING, Scope
from service.builds import IndexHolder, LoadedIndex
from service.config import Mode, Settings
from service.embedding import Embedder, MicroBatcher, available_cores
from service.expansion import acronym_terms
from service.keyword import tokenize
from service.models import Chunk, Hit
from service.sentences import sentence_scores, sentence_shares
from service.vectors import pin_threads


@dataclass(frozen=True, slots=True)
class Context:
    """Earlier text of a conversation that a question refers to, and the weight it gets in
    the query (the question itself weighs 1)."""

    text: str
    weight: float


@dataclass(frozen=True, slots=True)
class SearchResult:
    """Ranked hits and the build they came from."""

    hits: list[Hit]
    build_id: str
    index: LoadedIndex
    query_vector: npt.NDArray[np.float32]  # the question's, with its context when given
    terms: tuple[str, ...]  # the question (and its context) as the keyword index tokenises it
    timings: dict[str, float]
    weights: tuple[float, ...] = ()  # of each term: 1 for the question's, less for context's


def weighted_terms(
    question: str, context: Sequence[Context]
) -> tuple[tuple[str, ...], tuple[float, ...]]:
    """The keyword terms of a question and its context, once each, with the largest weight
    any of their texts gives them (the question's terms weigh 1)."""
    if not context:  # a repeated word counts twice, as it always has
        own = tuple(tokenize([question])[0])
        return own, (1.0,) * len(own)
    texts = [question, *(c.text for c in context)]
    weights: dict[str, float] = {}
    for tokens, weight in zip(tokenize(texts), [1.0, *(c.weight for c in context)], strict=True):
        for term in tokens:
            weights[term] = max(weights.get(term, 0.0), weight)
    return tuple(weights), tuple(weights.values())


# An acronym stands for a whole name of (mostly) two words, so it weighs what they weigh.
ACRONYM_WEIGHT = 1.5

Ranking = tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]


def _ranked(rows: npt.NDArray[np.int64], fused: npt.NDArray[np.float64]) -> Ranking:
    """Rows and their fused scores, best first; ties go to the lower row."""
    order = np.lexsort((rows, -fused))
    return rows[order], fused[order]


def _union(
    runs: Sequence[npt.NDArray[np.int64]],
) -> tuple[npt.NDArray[np.int64], list[npt.NDArray[np.int64]]]:
    """The rows of all runs, ascending and once each, and where each run's rows stand in it."""
    union = np.unique(np.concatenate(runs))
    return union, [np.searchsorted(union, rows) for rows in runs]


def _empty() -> Ranking:
    return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)


def rrf(rankings: Sequence[tuple[npt.NDArray[np.int64], float]], k: float) -> Ranking:
    """Weighted reciprocal rank fusion: sum of weight / (k + rank) over the rankings."""
    active = [(rows, weight) for rows, weight in rankings if weight > 0 and len(rows)]
    if not active:
        return _empty()
    union, positions = _union([rows for rows, _ in active])
    fused = np.zeros(len(union), dtype=np.float64)
    for (rows, weight), at in zip(active, positions, strict=True):
        ranks = np.arange(1, len(rows) + 1, dtype=np.float64)
        np.add.at(fused, at, weight / (k + ranks))
    return _ranked(union, fused)


def zscore_fusion(
    runs: Sequence[tuple[npt.NDArray[np.int64], npt.NDArray[np.float32], float]],
) -> Ranking:
    """Weighted sum of z-normalised scores over the union of each retriever's candidates.

    Each run's scores are standardised over its own candidate list; a candidate that a run did
    not return gets that run's lowest standardised score. Unlike rank fusion this keeps how far
    ahead a clear winner is, which measured better on SciFact and SQuAD (see README).
    """
    active = [(rows, scores, weight) for rows, scores, weight in runs if weight > 0 and len(rows)]
    if not active:
        return _empty()
    union, positions = _union([rows for rows, _, _ in active])
    fused = np.zeros(len(union), dtype=np.float64)
    for (_, scores, weight), at in zip(active, positions, strict=True):
        values = scores.astype(np.float64)
        z = (values - values.mean()) / max(float(values.std()), 1e-9)
        column = np.full(len(union), z.min(), dtype=np.float64)
        column[at] = z
        fused += weight * column
    return _ranked(union, fused)


def _top(scores: npt.NDArray[np.float32], n: int) -> npt.NDArray[np.int64]:
    """Positions of the n highest positive scores, best first (ties: lower position first)."""
    n = min(n, int(np.count_nonzero(scores > 0)))
    if n <= 0:
        return np.zeros(0, dtype=np.int64)
    part = np.argpartition(-scores, n - 1)[:n]
    return part[np.lexsort((part, -scores[part]))].astype(np.int64)


@dataclass(frozen=True, slots=True)
class _KeywordRun:
    """BM25's best rows with their scores, every matching row, and prefetched chunks."""

    rows: npt.NDArray[np.int64]
    scores: npt.NDArray[np.float32]
    matched: npt.NDArray[np.int64]  # ascending
    matched_scores: npt.NDArray[np.float32]
    chunks: dict[int, Chunk]

    def score(self, row: int) -> float:
        """BM25 score of any row (0 when it contains no question term)."""
        i = int(np.searchsorted(self.matched, row))
        found = i < len(self.matched) and self.matched[i] == row
        return float(self.matched_scores[i]) if found else 0.0


Prefetch = Callable[[Sequence[Chunk]], object]


class Searcher:
    """Answers questions against whatever build the holder serves."""

    def __init__(self, settings: Settings, embedder: Embedder, holder: IndexHolder) -> None:
        self.settings = settings
        self.embedder = embedder
        self.holder = holder
        self._cache: OrderedDict[str, npt.NDArray[np.float32]] = OrderedDict()
        self._cache_lock = threading.Lock()
        self._cache_size = 1024
        self._batcher: MicroBatcher | None = None
        if settings.micro_batch > 0:
            self._batcher = MicroBatcher(
                embedder.embed,
                max_texts=settings.micro_batch,
                workers=settings.encoder_workers or available_cores(),
            )
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    def _keyword_pool(self) -> ThreadPoolExecutor:
        """Threads that run keyword retrieval while the caller's thread encodes the question."""
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    max(2, self.settings.ask_concurrency), thread_name_prefix="groundqa-keyword"
                )
            return self._pool

    def close(self) -> None:
        """Stop the keyword threads (a later search starts them again)."""
        with self._pool_lock:
            if self._pool is not None:
                self._pool.shutdown(wait=False)
                self._pool = None

    def _encode(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """Vectors of texts, encoded together with those of concurrent requests."""
        if self._batcher is None or len(texts) > self._batcher.max_texts:
            return self.embedder.embed(texts)
        return self._batcher.embed(texts)

    def embed_texts(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """Vectors of texts (e.g. a passage's sentences), batched with concurrent requests."""
        return self._encode(texts)

    def _cached_vector(self, question: str) -> npt.NDArray[np.float32] | None:
        with self._cache_lock:
            vector = self._cache.get(question)
            if vector is not None:
                self._cache.move_to_end(question)
            return vector

    def embed_question(self, question: str) -> npt.NDArray[np.float32]:
        """The question's vector, from a small LRU cache when asked before."""
        vector = self._cached_vector(question)
        return vector if vector is not None else self._encode_question(question)

    def _encode_question(self, question: str) -> npt.NDArray[np.float32]:
        """Encode a question and remember its vector."""
        vector = np.asarray(self._encode([question])[0], dtype=np.float32)
        with self._cache_lock:
            self._cache[question] = vector
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return vector

    @staticmethod
    def _keyword(
        index: LoadedIndex,
        terms: Sequence[str],
        weights: Sequence[float] | None,
        depth: int,
        allowed: npt.NDArray[np.int64] | None,
        prefetch: Prefetch | None,
        top_k: int,
    ) -> _KeywordRun:
        """BM25 retrieval, then the chunks of its first 2 * top_k rows handed to prefetch: most
        fused hits are among them, so their per-passage work is done before it is needed."""
        matched, matched_scores = index.keyword.matches(terms, weights)
        if allowed is not None:
            keep = np.isin(matched, allowed)
            matched, matched_scores = matched[keep], matched_scores[keep]
        best = _top(matched_scores, depth)
        rows = matched[best]
        chunks: dict[int, Chunk] = {}
        if prefetch is not None and len(rows):
            chunks = index.chunks.chunks(rows[: 2 * top_k].tolist())
            prefetch(list(chunks.values()))
        return _KeywordRun(rows, matched_scores[best], matched, matched_scores, chunks)

    def search(
        self,
        question: str,
        *,
        top_k: int,
        mode: Mode | None = None,
        sources: Sequence[str] | None = None,
        scope: Scope = EVERYTHING,
        prefetch: Prefetch | None = None,
        context: Sequence[Context] = (),
    ) -> SearchResult:
        """The top_k chunks for question, best first, from one consistent build, among the
        documents the scope may see (both retrievers search only those rows).

        `prefetch` is called, on another thread, with chunks likely to be among the hits.
        `context` adds earlier text of a conversation to both retrievers, with its weight.
        """
        index = self.holder.current
        pin_threads(self.settings.search_threads)
        mode = mode or self.settings.mode
        timings: dict[str, float] = {}
        started = time.perf_counter()
        terms, weights = weighted_terms(question, context)
        extra = acronym_terms(question, index.keyword.is_acronym) if self.settings.acronyms else ()
        if extra:
            terms, weights = terms + extra, weights + (ACRONYM_WEIGHT,) * len(extra)
        allowed = index.chunks.rows_matching(sources, scope)
        depth = max(top_k, self.settings.candidates)
        weighted = weights if context or extra else None
        keyword_args = (index, terms, weighted, depth, allowed, prefetch, top_k)
        # Encoding a new question is most of an ask and runs outside the GIL; keyword
        # retrieval runs on another core meanwhile. A cached vector needs no second thread.
        cached = self._cached_vector(question)
        if cached is not None and context:
            cached = self._with_context(cached, context)
        job: Future[_KeywordRun] | None = None
        keyword: _KeywordRun | None = None
        if mode != "dense":
            if cached is None:
                job = self._keyword_pool().submit(self._keyword, *keyword_args)
            else:
                keyword = self._keyword(*keyword_args)

        t0 = time.perf_counter()
        query = cached if cached is not None else self._encode_question(question)
        if cached is None and context:
            query = self._with_context(query, context)
        timings["embed_ms"] = (time.perf_counter() - t0) * 1000

        dense_rows = np.zeros(0, dtype=np.int64)
        dense_top = np.zeros(0, dtype=np.float32)
        if mode != "keyword":
            dense_rows, dense_top = index.vectors.nearest(query, depth, allowed)
        if job is not None:
            keyword = job.result()

        ranked: npt.NDArray[np.int64]
        fused: npt.NDArray[np.float64]
        if keyword is None:  # dense
            ranked, fused = dense_rows[:top_k], dense_top[:top_k].astype(np.float64)
        elif mode == "keyword":
            ranked = keyword.rows[:top_k]
            fused = np.zeros(len(ranked), dtype=np.float64)
        elif self.settings.fusion == "rrf":
            ranked, fused = rrf(
                [
                    (dense_rows, self.settings.dense_weight),
                    (keyword.rows, self.settings.keyword_weight),
                ],
                self.settings.rrf_k,
            )
        else:
            ranked, fused = zscore_fusion(
                [
                    (dense_rows, dense_top, self.settings.dense_weight),
                    (keyword.rows, keyword.scores, self.settings.keyword_weight),
                ]
            )
        chunks = dict(keyword.chunks) if keyword is not None else {}
        cosines: dict[int, npt.NDArray[np.float32]] = {}
        if mode == "hybrid" and self.settings.sentence_weight > 0 and len(ranked):
            ranked, fused = self._by_sentences(
                index, query, ranked, fused, terms, weights, chunks, cosines
            )
        rows = ranked[:top_k].tolist()
        if index.sentences is not None and self.settings.sentence_meaning > 0:
            need = [r for r in rows if r not in cosines]
            cosines.update(zip(need, index.sentences.cosines(query, need), strict=True))
        dense_scores = self._dense_scores(index, query, rows, dense_rows, dense_top)
        missing = [r for r in rows if r not in chunks]
        if missing:
            chunks.update(index.chunks.chunks(missing))
        hits = []
        for row, dense, fused_score in zip(rows, dense_scores, fused[:top_k].tolist(), strict=True):
            kw = keyword.score(row) if keyword is not None else None
            score = {"dense": dense, "keyword": kw or 0.0}.get(mode, fused_score)
            found = cosines.get(row)
            hits.append(
                Hit(
                    chunk=chunks[row],
                    score=float(score),
                    dense_score=dense,
                    keyword_score=kw,
                    sentence_cosines=None if found is None else tuple(found.tolist()),
                )
            )
        # Wall time of the ask minus the encoder's: what search adds to the critical path.
        timings["search_ms"] = (time.perf_counter() - started) * 1000 - timings["embed_ms"]
        return SearchResult(
            hits=hits,
            build_id=index.build_id,
            index=index,
            query_vector=query,
            terms=terms,
            timings=timings,
            weights=weights,
        )

    def _by_sentences(
        self,
        index: LoadedIndex,
        query: npt.NDArray[np.float32],
        ranked: npt.NDArray[np.int64],
        fused: npt.NDArray[np.float64],
        terms: Sequence[str],
        weights: Sequence[float],
        chunks: dict[int, Chunk],
        cosines: dict[int, npt.NDArray[np.float32]],
    ) -> Ranking:
        """The fused ranking with each of its first sentence_rerank passages raised by
        sentence_weight times the score of its best sentence: the share of the question's IDF
        mass it holds, plus sentence_meaning times its cosine with the question when the build
        has sentence vectors. An answer states what the question asks in one sentence, where a
        passage that merely mentions its words spreads them out. Fills `cosines` (row -> the
        question's cosine with each sentence) when the build has sentence vectors, else
        `chunks` with the passages it splits."""
        head = ranked[: self.settings.sentence_rerank].tolist()
        idf = index.keyword.idf(sorted(set(terms)))
        scale = dict(zip(terms, weights, strict=True))
        term_weights = {t: w * scale.get(t, 1.0) for t, w in idf.items()}
        sentences = index.sentences
        shares: list[Sequence[float]]
        if sentences is None:  # a build without sentence vectors: split the passages
            missing = [r for r in head if r not in chunks]
            if missing:
                chunks.update(index.chunks.chunks(missing))
            shares = [sentence_shares(chunks[r].text, term_weights, chunks[r].title) for r in head]
        else:  # the build stored each sentence's terms: no passage is split per request
            total = sum(term_weights.values())
            by_id = {i: w for t, w in term_weights.items() for i in index.keyword.term_ids([t])}
            shares = [(m / total if total else m).tolist() for m in sentences.masses(head, by_id)]
            if self.settings.sentence_meaning > 0:
                cosines.update(zip(head, sentences.cosines(query, head), strict=True))
        bonus = np.zeros(len(ranked), dtype=np.float64)
        for i, row in enumerate(head):
            bonus[i] = max(
                sentence_scores(shares[i], cosines.get(row), self.settings.sentence_meaning),
                default=0.0,
            )
        return _ranked(ranked, fused + self.settings.sentence_weight * bonus)

    def _with_context(
        self, question: npt.NDArray[np.float32], context: Sequence[Context]
    ) -> npt.NDArray[np.float32]:
        """The unit vector of the question plus its context's vectors, each by its weight."""
        total = question.astype(np.float64)
        for item in context:
            total = total + item.weight * self.embed_question(item.text)
        norm = float(np.linalg.norm(total))
        return (total / norm if norm else total).astype(np.float32)

    @staticmethod
    def _dense_scores(
        index: LoadedIndex,
        query: npt.NDArray[np.float32],
        rows: list[int],
        known_rows: npt.NDArray[np.int64],
        known: npt.NDArray[np.float32],
    ) -> list[float]:
        """Cosine of the question with each row's vector (from the dense run where it has it)."""
        scores = dict(zip(known_rows.tolist(), known.tolist(), strict=True))
        missing = [r for r in rows if r not in scores]
        if missing:
            found = index.vectors.cosines(query, np.asarray(missing, dtype=np.int64))
            scores.update(zip(missing, found.tolist(), strict=True))
        return [float(scores[r]) for r in rows]
