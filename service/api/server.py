"""uvicorn, with a graceful shutdown that also serves the requests already queued to it."""

from __future__ import annotations

import asyncio
import selectors
import socket
import time
from collections.abc import Iterable
from typing import Any

import uvicorn

KEEP_ALIVE_SECONDS = 5
GRACE_SECONDS = 30
# How long a SIGTERM waits for queued connections to be taken in. Connections keep arriving
# while a load balancer still routes here, so the wait must be bounded; it is short next to
# the grace period, which still bounds the requests themselves.
DRAIN_SECONDS = 2.0


def _any_readable(sockets: Iterable[Any]) -> bool:
    """Whether any of sockets has something to read (a queued connection or request bytes)."""
    fds = {s.fileno() for s in sockets if s.fileno() >= 0}
    if not fds:
        return False
    # Not select.select: it refuses descriptors past 1024, which a busy server (connections,
    # memory-mapped build files) reaches.
    with selectors.DefaultSelector() as selector:
        for fd in fds:
            selector.register(fd, selectors.EVENT_READ)
        return bool(selector.select(timeout=0))


def _unread(connections: Iterable[Any]) -> list[Any]:
    """Accepted connections between requests whose next request is waiting unread."""
    idle = []
    for connection in connections:
        cycle = getattr(connection, "cycle", None)
        if cycle is not None and not cycle.response_complete:
            continue  # mid-request: uvicorn's shutdown lets it finish
        transport = getattr(connection, "transport", None)
        sock = transport.get_extra_info("socket") if transport is not None else None
        if sock is not None:
            idle.append(sock)
    return idle


class DrainingServer(uvicorn.Server):
    """A uvicorn server whose shutdown first takes in what clients had already sent.

    uvicorn closes its listening sockets at once: connections the kernel completed but uvicorn
    had not yet accepted are reset, and an accepted connection whose request bytes were not
    yet read is closed unanswered. Both are requests a client sent before the signal, so they
    are served like any other in-flight request.
    """

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """Wait (at most DRAIN_SECONDS) until no queued connection or unread request is left."""
        deadline = time.monotonic() + DRAIN_SECONDS
        listening = [s for server in self.servers for s in server.sockets]
        while time.monotonic() < deadline:
            if not _any_readable([*listening, *_unread(self.server_state.connections)]):
                break
            # One turn of the event loop accepts the queue and reads the waiting bytes.
            await asyncio.sleep(0.005)
        await super().shutdown(sockets)


class _HeaderDeadline:
    """Mixin over a uvicorn HTTP protocol: a request's headers must arrive within
    `header_timeout` seconds of its first byte (of the connection, for the first request), or
    the connection is closed. uvicorn bounds idle keep-alive time, not a slow sender's."""

    header_timeout: float = 10.0
    _header_timer: asyncio.TimerHandle | None = None
    _awaited_after: object = None

    def connection_made(self, transport: asyncio.Transport) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        self._arm()

    def data_received(self, data: bytes) -> None:
        cycle = getattr(self, "cycle", None)
        if self._header_timer is None and (cycle is None or cycle.response_complete):
            self._arm()
        super().data_received(data)  # type: ignore[misc]
        self._disarm_when_started()

    def on_response_complete(self) -> None:
        super().on_response_complete()  # type: ignore[misc]
        self._disarm_when_started()  # a pipelined request may have started just now

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel()
        super().connection_lost(exc)  # type: ignore[misc]

    def _arm(self) -> None:
        self._cancel()
        self._awaited_after = getattr(self, "cycle", None)
        loop = asyncio.get_running_loop()
        self._header_timer = loop.call_later(self.header_timeout, self._expire)

    def _cancel(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _disarm_when_started(self) -> None:
        if (
            self._header_timer is not None
            and getattr(self, "cycle", None) is not self._awaited_after
        ):
            self._cancel()  # a new request cycle exists: its headers are in

    def _expire(self) -> None:
        self._header_timer = None
        if getattr(self, "cycle", None) is self._awaited_after:
            transport = getattr(self, "transport", None)
            if transport is not None:
                transport.close()


def header_deadline_protocol(header_timeout: float) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol (httptools when installed, else h11) with a header deadline."""
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    return type(
        "HeaderDeadlineProtocol",
        (_HeaderDeadline, AutoHTTPProtocol),
        {"header_timeout": header_timeout},
    )


def serve(app: Any, host: str, port: int, *, header_timeout: float = 10.0) -> None:
    """Serve app until SIGINT/SIGTERM, then finish what was sent before the signal."""
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        http=header_deadline_protocol(header_timeout),
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
        timeout_graceful_shutdown=GRACE_SECONDS,
    )
    DrainingServer(config).run()
