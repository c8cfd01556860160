"""uvicorn, with a graceful shutdown that also serves the requests already queued to it."""

from __future__ import annotations

import asyncio
import select
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
    fds = [s.fileno() for s in sockets if s.fileno() >= 0]
    return bool(fds) and bool(select.select(fds, [], [], 0)[0])


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


def serve(app: Any, host: str, port: int) -> None:
    """Serve app until SIGINT/SIGTERM, then finish what was sent before the signal."""
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
        timeout_graceful_shutdown=GRACE_SECONDS,
    )
    DrainingServer(config).run()
