"""Operators see failures: the build follower survives anything and /readyz says when it
cannot follow; a corrupt CURRENT is ignored and repaired; builds prune orphans; CLI failures
are one line and exit 2."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.api.state import AppState
from service.builds import IndexHolder
from service.cli import main
from service.config import Settings
from service.errors import IndexWriteError, PointerCorruptError
from service.indexing import Builder
from service.rebuild import FollowHealth, follow_published
from service.store import BUILDS, POINTER, build_path, read_pointer
from tests.conftest import FakeEmbedder, WriteSeed

ClientFor = Callable[[Settings], TestClient]


def wait_until(check: Callable[[], bool], seconds: float = 20.0) -> bool:
    """Whether check() became true within seconds (re-checked on a short beat)."""
    beat = threading.Event()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        beat.wait(0.02)
    return check()


@pytest.mark.parametrize(
    "content",
    [b"\xff\xfe\x00garbage", b"../../etc", b"/tmp/elsewhere", b"a/b", b"..", b".tmp-x", b"\n\x01"],
)
def test_current_must_name_a_build_inside_the_index(tmp_path: Path, content: bytes) -> None:
    (tmp_path / POINTER).write_bytes(content)
    with pytest.raises(PointerCorruptError, match="does not name a build in"):
        read_pointer(tmp_path)


def test_corrupt_current_is_repaired_by_the_next_build(built: Settings, builder: Builder) -> None:
    first = read_pointer(built.index_dir)
    (built.index_dir / POINTER).write_bytes(b"\xff\xfe not a build\n")
    report = builder.build()
    assert report.published
    assert read_pointer(built.index_dir) == report.build_id != first


def test_follower_survives_a_corrupt_pointer_and_picks_up_the_next_build(
    built: Settings, builder: Builder, client_for: ClientFor, write_seed: WriteSeed
) -> None:
    fast = built.model_copy(update={"reload_interval": 0.02})
    client = client_for(fast)
    state: AppState = client.app.state.groundqa  # type: ignore[attr-defined]
    failed = threading.Event()
    state.follow.on_failure.append(lambda _: failed.set())
    served = client.get("/readyz").json()["build_id"]

    (built.index_dir / POINTER).write_bytes(b"\xff\xfe garbage")
    assert failed.wait(20)
    r = client.get("/readyz")
    assert r.status_code == 503
    assert r.json()["detail"].startswith(
        f"cannot follow published builds (still serving build {served}): "
    )
    assert "does not name a build" in r.json()["detail"]
    ask = client.get("/v1/ask", params={"q": "troops"})
    assert ask.status_code == 200 and ask.json()["index"]["build_id"] == served
    assert "groundqa_follow_errors_total" in client.get("/metrics").text

    write_seed("new.txt", "Penguins live in Antarctica.\n")
    new = builder.build().build_id
    assert wait_until(lambda: client.get("/readyz").status_code == 200)
    assert client.get("/readyz").json() == {"status": "ready", "build_id": new}


def test_follower_survives_unexpected_errors(built: Settings, fake_embedder: FakeEmbedder) -> None:
    holder = IndexHolder(built.index_dir, fake_embedder)
    calls: list[int] = []
    stop = threading.Event()

    def flaky() -> bool:
        calls.append(1)
        if len(calls) <= 2:
            raise RuntimeError("disk hiccup")
        stop.set()
        return False

    holder.refresh = flaky  # type: ignore[method-assign]
    health = FollowHealth()
    thread = threading.Thread(target=follow_published, args=(holder, 0.001, stop, health))
    thread.start()
    thread.join(timeout=20)
    assert not thread.is_alive()
    assert (len(calls), health.failures, health.error) == (3, 2, None)


def test_any_build_prunes_orphan_build_folders(built: Settings, builder: Builder) -> None:
    published = read_pointer(built.index_dir)
    assert published is not None
    # A build killed after renaming its folder into place, before publishing: newer, orphaned.
    orphan = built.index_dir / BUILDS / "29991231T235959999999Z-dead00"
    orphan.mkdir()
    (orphan / "manifest.json").write_text("{}")
    report = builder.build()  # nothing changed: a no-op build
    assert not report.published
    assert not orphan.exists()
    assert build_path(built.index_dir, published).is_dir()


def test_unwritable_index_is_one_error(
    built: Settings, builder: Builder, monkeypatch: pytest.MonkeyPatch, write_seed: WriteSeed
) -> None:
    write_seed("more.txt", "More text to index.\n")

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device", str(built.index_dir / "x"))

    monkeypatch.setattr("service.indexing.write_chunk_store", full)
    with pytest.raises(IndexWriteError, match=r"\(No space left on device: .*x\); free disk"):
        builder.build()


def test_cli_os_errors_are_one_line_exit_2(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def broken(args: object) -> int:
        raise PermissionError(13, "Permission denied", str(tmp_path / "index"))

    import service.cli as cli

    parser = cli.build_parser()
    monkeypatch.setattr(cli, "build_parser", lambda settings=None: _with_func(parser, broken))
    assert main(["index"]) == 2
    err = capsys.readouterr().err
    assert err == f"error: Permission denied: {tmp_path / 'index'}\n"


def _with_func(parser: object, func: Callable[[object], int]) -> object:
    class Wrapped:
        def parse_args(self, argv: object) -> object:
            args = parser.parse_args(argv)  # type: ignore[attr-defined]
            args.func = func
            return args

    return Wrapped()


def test_model_exports_go_to_the_cache_dir_not_the_index(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from service.embedding import load

    seen: dict[str, object] = {}

    def fake_load(model: str, **kwargs: object) -> object:
        seen.update(kwargs)
        return object()

    monkeypatch.setattr(load, "load_embedder", fake_load)
    load.embedder_for(settings.model_copy(update={"cache_dir": tmp_path / "models"}))
    assert seen["cache_dir"] == tmp_path / "models"


def test_an_empty_read_only_index_folder_serves_503(
    settings: Settings, client_for: ClientFor
) -> None:
    settings.index_dir.mkdir()
    settings.index_dir.chmod(0o555)
    try:
        client = client_for(settings)
        r = client.get("/v1/ask", params={"q": "anything"})
        assert r.status_code == 503
        assert "groundqa index" in r.json()["detail"]
        assert client.get("/readyz").status_code == 503
    finally:
        settings.index_dir.chmod(0o755)


# --- GET /v1/index and the Host check --------------------------------------------------------


def test_index_staleness_is_one_cached_scan_for_many_callers(
    built: Settings, fake_embedder: FakeEmbedder, write_seed: WriteSeed
) -> None:
    from service.rebuild import StaleCheck

    now = [100.0]
    check = StaleCheck(built, fake_embedder.model_id, interval=5.0, clock=lambda: now[0])
    build_id = read_pointer(built.index_dir)
    assert build_id is not None
    results: list[bool] = []
    threads = [
        threading.Thread(target=lambda: results.append(check.stale(build_id))) for _ in range(31)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    assert (results, check.scans) == ([False] * 31, 1)
    write_seed("later.txt", "Written after the build.\n")
    assert check.stale(build_id) is False  # cached for the interval
    now[0] += 5.0
    assert check.stale(build_id) is True
    assert check.scans == 2
    check.invalidate()
    assert check.stale(build_id) is True and check.scans == 3


def test_index_route_reuses_its_scan(built: Settings, client_for: ClientFor) -> None:
    client = client_for(built)
    state: AppState = client.app.state.groundqa  # type: ignore[attr-defined]
    assert state.stale_check is not None
    for _ in range(5):
        assert client.get("/v1/index").json()["stale"] is False
    assert state.stale_check.scans == 1


@pytest.mark.parametrize(
    ("host", "allowed", "status"),
    [
        ("localhost:8000", [], 200),
        ("127.0.0.1", [], 200),
        ("[::1]:8000", [], 200),
        ("app.localhost", [], 200),
        ("evil.example.com", [], 403),
        ("127.0.0.1.evil.example.com:8000", [], 403),
        ("groundqa:8000", ["groundqa"], 200),
        ("anything.example", ["*"], 200),
    ],
)
def test_without_keys_only_loopback_or_allowed_hosts_are_served(
    built: Settings, client_for: ClientFor, host: str, allowed: list[str], status: int
) -> None:
    client = client_for(built.model_copy(update={"allowed_hosts": allowed}))
    r = client.get("/v1/documents", headers={"Host": host})
    assert r.status_code == status, r.text
    if status == 403:
        assert r.json()["detail"].startswith(f"host {host!r} is not allowed")


def test_with_keys_any_host_is_served(built: Settings, client_for: ClientFor) -> None:
    client = client_for(built.model_copy(update={"api_keys": ["k1"]}))
    r = client.get(
        "/v1/documents", headers={"Host": "qa.example.com", "Authorization": "Bearer k1"}
    )
    assert r.status_code == 200
