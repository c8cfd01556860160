"""Build progress: the builder reports its stages in order (the CLI and rebuild jobs show the
same names), and `groundqa index` on a terminal says what it does from its first line."""

from __future__ import annotations

import fcntl
import io
import os
import re
import shutil
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

from service.config import Settings
from service.embedding import Embedder, model_fingerprint
from service.embedding.onnx_encoder import INT8_FILE, export_folder
from service.indexing import Builder
from service.progress import BUILD_STAGES, StageLines, export_needed, model_label
from tests.conftest import WriteSeed

ROOT = Path(__file__).resolve().parent.parent


class Recorder:
    """A progress callback keeping each new stage."""

    def __init__(self) -> None:
        self.stages: list[str] = []

    def __call__(self, stage: str, fraction: float) -> None:
        assert 0.0 <= fraction <= 1.0
        if not self.stages or self.stages[-1] != stage:
            self.stages.append(stage)


def test_builds_report_every_stage_in_order(builder: Builder, write_seed: WriteSeed) -> None:
    write_seed("notes.txt", "The library opens at nine.\n")
    first, again, dry = Recorder(), Recorder(), Recorder()
    assert builder.build(progress=first).published
    assert first.stages == list(BUILD_STAGES)
    assert not builder.build(progress=again).published  # nothing changed
    assert again.stages == ["scanning", "published"]
    builder.build(progress=dry, dry_run=True)
    assert dry.stages == ["scanning"]


def test_stage_lines_print_each_stage_once() -> None:
    stream = io.StringIO()
    lines = StageLines(stream)
    lines.say("Loading the model")
    for stage, fraction in [("scanning", 0.0), ("chunking", 0.0), ("embedding", 0.1)]:
        lines(stage, fraction)
    lines("embedding", 0.5)  # the bar shows embedding: no line of its own
    lines("writing", 0.8)
    lines("validating", 0.9)
    lines("published", 1.0)  # the summary follows
    assert stream.getvalue() == (
        "Loading the model...\n"
        "Scanning the seeds folder...\n"
        "Parsing and chunking the files...\n"
        "Writing the vectors and the keyword index...\n"
        "Validating the build...\n"
    )
    quiet = StageLines(None)
    quiet.say("nothing")
    quiet("scanning", 0.0)  # no stream: nothing to write to, nothing raised


def test_model_label_says_when_the_model_is_exported(
    tmp_path: Path, real_embedder: Embedder, onnx_cache: Path
) -> None:
    fresh = Settings(_env_file=None, cache_dir=tmp_path / "cache")
    assert export_needed(fresh)
    assert model_label(fresh) == (
        "Exporting all-MiniLM-L6-v2 to ONNX and quantising it to int8: once per model and "
        f"machine, kept in {tmp_path / 'cache' / 'onnx'} (about a minute)"
    )
    cached = Settings(_env_file=None, cache_dir=onnx_cache)  # real_embedder exported there
    assert not export_needed(cached)
    assert model_label(cached) == "Loading all-MiniLM-L6-v2 (onnx-int8)"
    torch = Settings(_env_file=None, cache_dir=tmp_path / "cache", encoder="torch")
    assert (export_needed(torch), model_label(torch)) == (False, "Loading all-MiniLM-L6-v2 (torch)")


def on_terminal(argv: list[str], env: dict[str, str]) -> tuple[int, str, list[str]]:
    """(exit code, stdout, stderr lines) of a command whose stderr is a pseudo-terminal; a
    bar's redraws (carriage returns) count as lines."""
    controller, terminal = os.openpty()
    # A terminal has a size (a fresh pseudo-terminal has none: 0 columns, an empty bar).
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    with subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=terminal, env=env
    ) as proc:
        os.close(terminal)
        chunks = []
        while True:
            try:
                data = os.read(controller, 65536)
            except OSError:  # EIO: the command exited and closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        os.close(controller)
        assert proc.stdout is not None
        out = proc.stdout.read().decode()
        code = proc.wait()
    lines = re.split(r"[\r\n]+", b"".join(chunks).decode(errors="replace"))
    return code, out, [line.strip() for line in lines if line.strip()]


def stage_lines(lines: list[str]) -> list[str]:
    """The progress lines among the terminal's (the bar as 'Embedding', once)."""
    shown: list[str] = []
    for line in lines:
        line = "Embedding" if line.startswith("Embedding:") else line
        is_stage = line.endswith("...") or line == "Embedding"
        if is_stage and (not shown or shown[-1] != line):
            shown.append(line)
    return shown


def test_index_on_a_terminal_shows_every_stage_and_reuses_the_model_export(
    tmp_path: Path, onnx_cache: Path, real_embedder: Embedder, model_path: str
) -> None:
    seeds = tmp_path / "seeds"
    shutil.copytree(ROOT / "seeds", seeds)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GROUNDQA_")}
    # The export the session's real model made: every index folder of the machine shares it.
    env["GROUNDQA_CACHE_DIR"] = str(onnx_cache)
    exported = export_folder(onnx_cache, model_fingerprint(Path(model_path))) / INT8_FILE
    before = exported.stat()
    groundqa = [sys.executable, "-m", "service", "index", "--seeds", str(seeds)]
    expected = [
        "Loading all-MiniLM-L6-v2 (onnx-int8)...",
        "Scanning the seeds folder...",
        "Parsing and chunking the files...",
        "Embedding",
        "Writing the vectors and the keyword index...",
        "Validating the build...",
    ]
    for name in ("first", "second"):
        code, out, lines = on_terminal([*groundqa, "--index", str(tmp_path / name)], env)
        assert code == 0, lines
        assert out.startswith("Published build "), out
        # The first line comes before any heavy work: before the model loads.
        assert lines[0] == expected[0]
        assert stage_lines(lines) == expected, lines
        assert any(re.search(r"text/s\]$", line) for line in lines), lines  # rate and ETA
    after = exported.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)

    # With --json (for machines) the terminal stays quiet.
    code, out, lines = on_terminal([*groundqa, "--index", str(tmp_path / "third"), "--json"], env)
    assert (code, lines) == (0, [])
    assert out.startswith("{")


@pytest.fixture(autouse=True)
def _no_groundqa_env(no_groundqa_env: None) -> None:
    """Settings built here see none of the caller's GROUNDQA_* variables."""
