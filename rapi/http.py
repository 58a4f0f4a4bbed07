"""A small HTTP/1.1 server protocol on asyncio, driven by httptools.

It serves exactly what the Runtime API and the Invoke API need: keep-alive,
pipelining (responses strictly in request order), Content-Length and chunked
request bodies, `Expect: 100-continue`, and hard limits on header and body
size. Bodies over the limit are read and discarded so the connection stays
usable and the client still sees our status code; the application decides
what that status is (the Runtime API and the Invoke API answer differently).

The application sees one `Request` at a time per connection and answers with
`Connection.respond()`, possibly much later (a parked `/next`).
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass
from typing import Protocol

import httptools

_REASONS: dict[int, bytes] = {
    100: b"Continue",
    200: b"OK",
    202: b"Accepted",
    204: b"No Content",
    400: b"Bad Request",
    403: b"Forbidden",
    404: b"Not Found",
    405: b"Method Not Allowed",
    409: b"Conflict",
    413: b"Request Entity Too Large",
    415: b"Unsupported Media Type",
    429: b"Too Many Requests",
    431: b"Request Header Fields Too Large",
    500: b"Internal Server Error",
    502: b"Bad Gateway",
    503: b"Service Unavailable",
}

_STATUS_LINES: dict[int, bytes] = {
    code: b"HTTP/1.1 %d %s\r\n" % (code, reason) for code, reason in _REASONS.items()
}

# Pipelined requests parked behind a slow response before we stop reading.
_MAX_QUEUED_REQUESTS = 16


def status_line(status: int) -> bytes:
    """The `HTTP/1.1 <code> <reason>\\r\\n` line for a status code."""
    line = _STATUS_LINES.get(status)
    if line is None:
        line = b"HTTP/1.1 %d Status\r\n" % status
    return line


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-listener ceilings. Header bytes count the request line too."""

    max_header_bytes: int = 64 * 1024
    max_headers: int = 100
    max_body_bytes: int = 6 * 1024 * 1024


class ConnectionGate:
    """Caps the connections open at once on one listener. A function's
    runtime needs one or two; a flood must not use up the host's fds."""

    __slots__ = ("limit", "open")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open = 0


class Request:
    """One parsed request. Header names are lower-case bytes."""

    __slots__ = ("body", "headers", "keep_alive", "method", "oversized", "path", "query")

    def __init__(
        self,
        method: bytes,
        path: bytes,
        query: bytes,
        headers: dict[bytes, bytes],
        body: bytes,
        keep_alive: bool,
        oversized: bool,
    ) -> None:
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.body = body
        self.keep_alive = keep_alive
        # True when the body exceeded Limits.max_body_bytes; `body` is then empty.
        self.oversized = oversized

    def __repr__(self) -> str:
        return f"Request({self.method!r} {self.path!r}, {len(self.body)} bytes)"


class Connection(Protocol):
    """What an application may do with the connection a request came on."""

    def respond(
        self, status: int, headers: bytes, body: bytes = b"", *, close: bool = False
    ) -> None: ...

    @property
    def open(self) -> bool: ...


class Application(Protocol):
    """The callbacks a listener's application implements."""

    def handle(self, request: Request, conn: Connection) -> None:
        """Answer `request` now or later with exactly one `conn.respond()`."""

    def protocol_error(self, status: int, message: str) -> tuple[bytes, bytes]:
        """Headers and body for a 400/431 the protocol itself sends."""

    def connection_lost(self, conn: Connection) -> None:
        """The peer went away; drop anything parked on `conn`."""


class HttpProtocol(asyncio.Protocol):
    """One instance per TCP connection."""

    __slots__ = (
        "_admitted",
        "_app",
        "_body_bytes",
        "_body_parts",
        "_closed",
        "_dispatching",
        "_eof",
        "_error",
        "_gate",
        "_head_fed",
        "_header_bytes",
        "_header_count",
        "_headers",
        "_in_flight",
        "_keep_alive",
        "_limits",
        "_oversized",
        "_parser",
        "_paused",
        "_queue",
        "_transport",
        "_url",
    )

    def __init__(
        self, app: Application, limits: Limits, gate: ConnectionGate | None = None
    ) -> None:
        self._app = app
        self._limits = limits
        self._gate = gate
        self._admitted = False
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._queue: deque[Request] = deque()
        self._in_flight = False
        self._closed = False
        self._paused = False
        self._eof = False
        self._keep_alive = True
        # Set while respond() hands queued requests to the app, so an app that
        # answers inside handle() does not nest one respond() per request.
        self._dispatching = False
        # A parse error seen while earlier requests are still unanswered: it is
        # sent after their responses, to keep responses in request order.
        self._error: tuple[int, str] | None = None
        # Raw bytes fed while one request head is incomplete (None outside a
        # head, -1 when it began in the chunk being fed): httptools buffers a
        # header line whole before on_header, so on_header cannot bound it.
        self._head_fed: int | None = None
        self._reset_message()

    # ----------------------------------------------------------- asyncio side
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        gate = self._gate
        if gate is not None:
            if gate.open >= gate.limit:
                self._closed = True
                transport.abort()  # type: ignore[attr-defined]
                return
            gate.open += 1
        self._admitted = True

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._admitted:
            return
        self._admitted = False
        if self._gate is not None:
            self._gate.open -= 1
        self._closed = True
        self._queue.clear()
        self._app.connection_lost(self)

    def data_received(self, data: bytes) -> None:
        if self._closed or self._error is not None:
            return
        try:
            self._parser.feed_data(data)
            fed = self._head_fed
            if fed is not None:
                # Only whole chunks fed inside one head count (never the
                # previous request's body bytes), so this never overcounts.
                fed = 0 if fed < 0 else fed + len(data)
                self._head_fed = fed
                if fed > self._limits.max_header_bytes:
                    raise _LimitExceeded(431, "Request line and headers are too large")
        except _LimitExceeded as exc:
            self._fail(exc.status, exc.message)
        except httptools.HttpParserUpgrade:
            self._fail(400, "Protocol upgrades are not supported")
        except httptools.HttpParserError as exc:
            cause = exc.__cause__ or exc.__context__
            if isinstance(cause, _LimitExceeded):
                self._fail(cause.status, cause.message)
            else:
                if cause is not None:
                    # handle() itself raised: its request will never be
                    # answered, so do not wait for it before failing.
                    self._in_flight = False
                self._fail(400, f"Malformed HTTP request: {exc}")

    def eof_received(self) -> bool:
        # Half-closed by the peer: answer what is in flight, then close.
        self._eof = True
        return self._in_flight or bool(self._queue)

    # -------------------------------------------------------- httptools side
    def _reset_message(self) -> None:
        self._url = b""
        self._headers: dict[bytes, bytes] = {}
        self._header_bytes = 0
        self._header_count = 0
        self._body_parts: list[bytes] = []
        self._body_bytes = 0
        self._oversized = False

    def on_message_begin(self) -> None:
        self._reset_message()
        self._head_fed = -1

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._header_bytes += len(url)
        if self._header_bytes > self._limits.max_header_bytes:
            raise _LimitExceeded(431, "Request line and headers are too large")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value) + 4
        if self._header_bytes > self._limits.max_header_bytes:
            raise _LimitExceeded(431, "Request line and headers are too large")
        # Count header lines, not distinct names: duplicates are joined below.
        self._header_count += 1
        if self._header_count > self._limits.max_headers:
            raise _LimitExceeded(431, "Too many request headers")
        name = name.lower()
        previous = self._headers.get(name)
        self._headers[name] = value if previous is None else previous + b", " + value

    def on_headers_complete(self) -> None:
        self._head_fed = None
        if self._parser.should_upgrade():
            # Refuse before on_message_complete would hand it to the app.
            raise _LimitExceeded(400, "Protocol upgrades are not supported")
        length = self._headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self._limits.max_body_bytes:
            self._oversized = True
        expect = self._headers.get(b"expect")
        if (
            expect is not None
            and expect.lower() == b"100-continue"
            and not self._oversized
            and not self._closed
        ):
            assert self._transport is not None
            self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        if self._oversized:
            return
        if self._body_bytes > self._limits.max_body_bytes:
            self._oversized = True
            self._body_parts.clear()
            return
        self._body_parts.append(body)

    def on_message_complete(self) -> None:
        if self._closed:
            # respond(close=True) inside handle(); the rest of the chunk is moot.
            return
        parts = self._body_parts
        body = parts[0] if len(parts) == 1 else b"".join(parts)
        url = self._url
        path, sep, query = url.partition(b"?")
        request = Request(
            self._parser.get_method(),
            path,
            query if sep else b"",
            self._headers,
            body,
            self._parser.should_keep_alive(),
            self._oversized,
        )
        self._reset_message()
        if self._in_flight:
            self._queue.append(request)
            if len(self._queue) >= _MAX_QUEUED_REQUESTS and not self._paused:
                assert self._transport is not None
                self._transport.pause_reading()
                self._paused = True
        else:
            self._dispatch(request)

    # ------------------------------------------------------- application side
    @property
    def open(self) -> bool:
        return not self._closed

    def _dispatch(self, request: Request) -> None:
        self._in_flight = True
        self._keep_alive = request.keep_alive
        self._app.handle(request, self)

    def respond(
        self, status: int, headers: bytes, body: bytes = b"", *, close: bool = False
    ) -> None:
        """Send the response to the oldest unanswered request.

        `headers` are complete `Name: value\\r\\n` lines without Content-Length
        or Connection, which this method adds.
        """
        if self._closed or not self._in_flight:
            return
        transport = self._transport
        assert transport is not None
        close = close or not self._keep_alive
        head = b"%s%sContent-Length: %d\r\n%s\r\n" % (
            status_line(status),
            headers,
            len(body),
            b"Connection: close\r\n" if close else b"",
        )
        if len(body) < 65536:
            transport.write(head + body)
        else:
            transport.writelines((head, body))
        self._in_flight = False
        if close:
            self._close()
            return
        if self._dispatching:
            return  # called from handle() below: that loop carries on
        self._dispatching = True
        try:
            while self._queue and not self._in_flight and not self._closed:
                if self._paused and len(self._queue) <= _MAX_QUEUED_REQUESTS // 2:
                    transport.resume_reading()
                    self._paused = False
                self._dispatch(self._queue.popleft())
        finally:
            self._dispatching = False
        if self._in_flight or self._closed:
            return
        if self._error is not None:
            self._fail(*self._error)
        elif self._eof:
            self._close()

    def _fail(self, status: int, message: str) -> None:
        """Answer a request we could not parse, then close: framing is lost."""
        if self._closed:
            return
        if self._in_flight:
            self._error = (status, message)  # respond() sends it in turn
            return
        headers, body = self._app.protocol_error(status, message)
        assert self._transport is not None
        self._transport.write(
            b"%s%sContent-Length: %d\r\nConnection: close\r\n\r\n%s"
            % (status_line(status), headers, len(body), body)
        )
        self._close()

    def _close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._queue.clear()
        assert self._transport is not None
        self._transport.close()


class _LimitExceeded(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
