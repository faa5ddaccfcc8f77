"""Connection limits uvicorn does not have: deadlines for request headers and for a stalled response,
and a cap on open connections.

uvicorn (0.54) times out idle keep-alive connections, but a client that opens a connection and then
sends its request line and headers a byte at a time ("slow loris"), or nothing at all, holds the
connection for as long as it likes; a few hundred of them exhaust the process's file descriptors.
````guarded_protocol`` returns uvicorn's h11 protocol with three additions:

- **header deadline**: from the moment a connection opens, and again each time a response has been
  sent on it, the client has ``header_timeout`` seconds to deliver the complete headers of its next
  request. Past it the connection is closed, with a 408 when part of a request had arrived (an idle
  keep-alive connection is just closed, as uvicorn's own keep-alive timeout does). The request body
  is bounded by the app itself (``read_upload``'s body timeout), where a JSON 408 can be answered.
- **connection cap**: a connection opened while ``max_connections`` are already open is answered
  503 with ``Retry-After`` at once and closed, without parsing anything from it. uvicorn's own
  ``limit_concurrency`` answers 503 only once a request has arrived, so it keeps every excess
  connection (and its descriptor) open until then.

- **send deadline**: a client that sends a request and then does not read the response would otherwise
  hold its connection, and the response buffered for it, for ever: once the socket's buffers are
  full, uvicorn waits for them to drain, without limit. Each time the transport's write buffer fills
  up (``pause_writing``), the client has ``send_timeout`` seconds to take enough of it (down to the
  low-water mark, tens of KB) that writing resumes; past that the connection is aborted, which frees
  its slot under the cap, its buffers and the app's pending send. A trickle of a few bytes at a
  time does not resume writing, so it does not extend the deadline.

The h11 protocol is used whatever else is installed: it is the one these additions are tested with,
and parsing costs nothing next to translating an image.
"""

from __future__ import annotations

import asyncio
import json

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["DEFAULT_HEADER_TIMEOUT", "DEFAULT_MAX_CONNECTIONS", "DEFAULT_SEND_TIMEOUT", "GuardedH11Protocol",
           "guarded_protocol"]

DEFAULT_HEADER_TIMEOUT = 10.0
DEFAULT_SEND_TIMEOUT = 30.0
DEFAULT_MAX_CONNECTIONS = 64
# After a refusal the write side is shut and what the client still sends is read and dropped for up
# to this long, so its request does not meet a closed socket: a reset would destroy the response
# before the client read it (the staged close of RFC 9112 sec. 9.6).
_LINGER_SECONDS = 1.0


def _raw_response(status: int, reason: str, message: str, extra_headers: str = "") -> bytes:
    """A complete HTTP/1.1 response written straight to the socket, for a connection about to be closed.

    h11 cannot send a response before it has parsed a request, and neither case here has one.
    """
    body = json.dumps({"error": message}).encode()
    head = (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n{extra_headers}\r\n")
    return head.encode("ascii") + body


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a header deadline and a connection cap (module docstring)."""

    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    send_timeout: float = DEFAULT_SEND_TIMEOUT

    _send_timer: asyncio.TimerHandle | None = None  # armed while writing is paused on a full buffer

    _header_timer: asyncio.TimerHandle | None = None
    _partial = False  # bytes of the next request have arrived since the deadline was set
    _closing: asyncio.TimerHandle | None = None  # set once a refusal has been written
    _counted = False  # in uvicorn's set of open connections

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        # The set holds the open connections of the whole server (uvicorn's ServerState).
        if len(self.connections) >= self.max_connections:
            self.transport = transport
            message = f"server busy: {self.max_connections} connections are open; retry in a moment"
            self._refuse(_raw_response(503, "Service Unavailable", message, "retry-after: 1\r\n"))
            return
        super().connection_made(transport)
        self._counted = True
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._stop_send_timer()
        if self._closing is not None:
            self._closing.cancel()
        if self._counted:
            super().connection_lost(exc)
        else:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self._closing is not None:
            return  # refused: read and dropped (_LINGER_SECONDS)
        before = self.cycle
        super().data_received(data)
        # uvicorn starts a new request/response cycle exactly when a request's headers are complete.
        if self.cycle is not before:
            self._disarm()
        elif self._header_timer is not None and self.conn.their_state is h11.IDLE:
            self._partial = True  # not the unread rest of a body whose response was already sent

    def on_response_complete(self) -> None:
        # Armed before uvicorn handles pipelined requests, so one already complete disarms it again.
        self._arm()
        before = self.cycle
        super().on_response_complete()
        if self.cycle is not before:
            self._disarm()

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._send_timer is None and self._counted:
            self._send_timer = self.loop.call_later(self.send_timeout, self._send_timeout_expired)

    def resume_writing(self) -> None:
        self._stop_send_timer()
        super().resume_writing()

    def _stop_send_timer(self) -> None:
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None

    def _send_timeout_expired(self) -> None:
        # Nothing can be said to a client that does not read; abort drops the unsent bytes at once
        # (close would wait for them), and connection_lost releases the app's pending send.
        self._send_timer = None
        self.transport.abort()

    def _arm(self) -> None:
        self._disarm()
        self._partial = False
        self._header_timer = self.loop.call_later(self.header_timeout, self._header_timeout_expired)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timeout_expired(self) -> None:
        self._header_timer = None
        if self.transport.is_closing() or self._closing is not None:
            return
        if self._partial:
            message = f"request headers not received within {self.header_timeout:g} s"
            self._refuse(_raw_response(408, "Request Timeout", message))
        else:
            self.transport.close()  # idle: nothing to answer, as uvicorn's keep-alive timeout does

    def _refuse(self, response: bytes) -> None:
        """Write ``response``, shut the write side, drop what still arrives, close within _LINGER_SECONDS."""
        self.transport.write(response)
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self._closing = self.loop.call_later(_LINGER_SECONDS, self.transport.close)


def guarded_protocol(*, header_timeout: float, max_connections: int,
                     send_timeout: float = DEFAULT_SEND_TIMEOUT) -> type[GuardedH11Protocol]:
    """The protocol class to give ``uvicorn.Config(http=...)``, with these limits."""
    if not header_timeout > 0:
        raise ValueError(f"header_timeout must be positive, got {header_timeout}")
    if not send_timeout > 0:
        raise ValueError(f"send_timeout must be positive, got {send_timeout}")
    if max_connections < 1:
        raise ValueError(f"max_connections must be >= 1, got {max_connections}")
    return type("GuardedH11Protocol", (GuardedH11Protocol,),
                {"header_timeout": float(header_timeout), "max_connections": int(max_connections),
                 "send_timeout": float(send_timeout)})
