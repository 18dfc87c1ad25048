"""uvicorn's HTTP/1.1 protocol with the two guards `zerograd serve` needs and uvicorn lacks.

uvicorn closes a connection that stays idle after an answer (its keep-alive timeout), but not one
that never sends a byte, nor one that sends a request a byte at a time (slowloris): each such
socket stays open for ever, and enough of them use up the process's file descriptors. Here

- a request must arrive in full, headers and body, within `read_timeout` seconds of the
  connection opening or of the previous answer; otherwise the connection is closed;
- past `max_connections` open connections, the one that has waited longest without sending a
  complete request is closed to make room, so a new client is always heard.

Connections whose request is being answered are never closed by either guard.
"""
from __future__ import annotations

import asyncio
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

try:
    import resource
except ImportError:  # Windows: no limit on open files to raise
    resource = None  # type: ignore[assignment]

READ_TIMEOUT = 10.0  # seconds for a whole request: a browser's upload of a few MiB takes far less
MAX_CONNECTIONS = 500  # a page needs a handful; a few hundred leaves room for scripts and tabs

_WAITING = (h11.IDLE, h11.SEND_BODY)  # the client has not sent a complete request yet


class GuardedH11Protocol(H11Protocol):
    """See the module docstring; `guarded_protocol` makes one with its limits set."""

    read_timeout: float = READ_TIMEOUT
    max_connections: int = MAX_CONNECTIONS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.read_deadline: asyncio.TimerHandle | None = None
        self.waiting_since = 0.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.start_waiting()
        self.make_room()

    def connection_lost(self, exc: Exception | None) -> None:
        self.stop_waiting()
        super().connection_lost(exc)

    def handle_events(self) -> None:
        super().handle_events()
        if self.conn.their_state not in _WAITING:  # the request is in (or the connection is over)
            self.stop_waiting()

    def on_response_complete(self) -> None:
        self.start_waiting()  # before the base class, which may go on to read a pipelined request
        super().on_response_complete()

    def start_waiting(self) -> None:
        self.stop_waiting()
        self.waiting_since = self.loop.time()
        self.read_deadline = self.loop.call_later(self.read_timeout, self.read_timed_out)

    def stop_waiting(self) -> None:
        if self.read_deadline is not None:
            self.read_deadline.cancel()
            self.read_deadline = None

    def read_timed_out(self) -> None:
        self.read_deadline = None
        if self.conn.their_state in _WAITING and not self.transport.is_closing():
            self.transport.close()  # a body half sent reaches the app as a disconnect

    def is_waiting(self) -> bool:
        return self.read_deadline is not None and self.conn.their_state in _WAITING and not self.transport.is_closing()

    def make_room(self) -> None:
        """Close the longest-waiting connections while there are more than `max_connections`."""
        # Connections closed a moment ago stay in the set until the event loop reports them lost.
        connections = [c for c in self.server_state.connections if not c.transport.is_closing()]
        excess = len(connections) - self.max_connections
        if excess <= 0:
            return
        waiting = [c for c in connections if c is not self and isinstance(c, GuardedH11Protocol) and c.is_waiting()]
        for connection in sorted(waiting, key=lambda c: c.waiting_since)[:excess]:
            connection.stop_waiting()
            connection.transport.close()


def guarded_protocol(read_timeout: float = READ_TIMEOUT,
                     max_connections: int = MAX_CONNECTIONS) -> type[GuardedH11Protocol]:
    """The protocol class to give uvicorn (`uvicorn.Config(http=...)`) with these limits."""
    if read_timeout <= 0 or max_connections < 1:
        raise ValueError(f"read_timeout must be > 0 and max_connections >= 1, got {read_timeout} and {max_connections}")
    return type("GuardedH11Protocol", (GuardedH11Protocol,),
                {"read_timeout": float(read_timeout), "max_connections": int(max_connections)})


def raise_open_file_limit() -> int | None:
    """Raise this process's soft limit on open files to its hard limit (many systems start at 1024,
    which idle sockets reach quickly); the limit now in force (None where there is no such limit)."""
    if resource is None:  # Windows: no such limit to raise
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        wanted = 65536 if hard == resource.RLIM_INFINITY else hard
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, wanted), hard))
            soft = max(soft, wanted)
        except (ValueError, OSError):  # not allowed here: keep the limit there is
            pass
    return soft
