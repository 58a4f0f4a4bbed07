"""Byte-level tests of `rapi.http.HttpProtocol`, driven without an event loop.

A recording transport stands in for the socket and a recording application
stands in for the Runtime API / Invoke API.
"""

from __future__ import annotations

from collections.abc import Iterable

import pytest

from rapi.http import HttpProtocol, Limits, Request


class RecordingTransport:
    """Just enough of `asyncio.Transport` for `HttpProtocol`."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.closed = False
        self.paused = False
        self.pause_calls = 0
        self.resume_calls = 0

    @property
    def data(self) -> bytes:
        return b"".join(self.chunks)

    def write(self, data: bytes) -> None:
        assert not self.closed, "write after close"
        self.chunks.append(bytes(data))

    def writelines(self, lines: Iterable[bytes]) -> None:
        for line in lines:
            self.write(line)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        self.paused = True
        self.pause_calls += 1

    def resume_reading(self) -> None:
        self.paused = False
        self.resume_calls += 1

    def get_extra_info(self, name: str, default: object = None) -> object:
        return default


class RecordingApp:
    """Records everything; answers at once (echoing the body) unless `later`."""

    def __init__(self, later: bool = False) -> None:
        self.later = later
        self.requests: list[Request] = []
        self.conns: list[HttpProtocol] = []
        self.errors: list[tuple[int, str]] = []
        self.lost: list[HttpProtocol] = []

    def handle(self, request: Request, conn: HttpProtocol) -> None:
        self.requests.append(request)
        self.conns.append(conn)
        if not self.later:
            answer(conn, request)

    def protocol_error(self, status: int, message: str) -> tuple[bytes, bytes]:
        self.errors.append((status, message))
        return b"X-Error: yes\r\n", message.encode()

    def connection_lost(self, conn: HttpProtocol) -> None:
        self.lost.append(conn)


def answer(conn: HttpProtocol, request: Request, status: int = 200) -> None:
    conn.respond(status, b"X-Path: %s\r\n" % request.path, request.body)


def make(
    later: bool = False, **limits: int
) -> tuple[HttpProtocol, RecordingTransport, RecordingApp]:
    app = RecordingApp(later=later)
    proto = HttpProtocol(app, Limits(**limits))
    transport = RecordingTransport()
    proto.connection_made(transport)  # type: ignore[arg-type]
    return proto, transport, app


def feed_bytewise(proto: HttpProtocol, data: bytes) -> None:
    for i in range(len(data)):
        proto.data_received(data[i : i + 1])


class Response:
    def __init__(self, status_line: bytes, headers: list[tuple[bytes, bytes]], body: bytes):
        self.status_line = status_line
        self.headers = headers
        self.body = body

    @property
    def status(self) -> int:
        return int(self.status_line.split(b" ")[1])

    def header(self, name: bytes) -> bytes | None:
        values = [v for n, v in self.headers if n.lower() == name.lower()]
        assert len(values) <= 1, f"{name!r} sent {len(values)} times"
        return values[0] if values else None


def parse_responses(data: bytes) -> list[Response]:
    """Split the bytes written into responses; strict about framing."""
    responses = []
    while data:
        head, sep, data = data.partition(b"\r\n\r\n")
        assert sep, f"incomplete response head: {head!r}"
        status_line, *lines = head.split(b"\r\n")
        headers = []
        for line in lines:
            name, colon, value = line.partition(b": ")
            assert colon, f"bad header line {line!r}"
            headers.append((name, value))
        response = Response(status_line, headers, b"")
        if response.status >= 200:
            length = response.header(b"Content-Length")
            assert length is not None, "final response without Content-Length"
            n = int(length)
            assert len(data) >= n, "response body shorter than Content-Length"
            response.body, data = data[:n], data[n:]
        responses.append(response)
    return responses


GET = b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n"


def get(path: bytes) -> bytes:
    return b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path


def post(path: bytes, body: bytes, extra: bytes = b"") -> bytes:
    return b"POST %s HTTP/1.1\r\nHost: x\r\n%sContent-Length: %d\r\n\r\n%s" % (
        path,
        extra,
        len(body),
        body,
    )


def chunked(path: bytes, *chunks: bytes) -> bytes:
    encoded = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks)
    return b"POST %s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n%s0\r\n\r\n" % (
        path,
        encoded,
    )


# ------------------------------------------------------------------ parsing
def test_request_in_one_chunk_is_parsed_and_answered() -> None:
    proto, transport, app = make()
    proto.data_received(GET)
    assert len(app.requests) == 1
    request = app.requests[0]
    assert request.method == b"GET"
    assert request.path == b"/hello"
    assert request.query == b""
    assert request.headers == {b"host": b"x"}
    assert request.body == b""
    assert request.keep_alive is True
    assert request.oversized is False
    assert transport.data == b"HTTP/1.1 200 OK\r\nX-Path: /hello\r\nContent-Length: 0\r\n\r\n"
    assert not transport.closed


def test_request_split_byte_by_byte_is_parsed_once() -> None:
    proto, transport, app = make()
    feed_bytewise(proto, GET)
    assert len(app.requests) == 1
    assert app.requests[0].method == b"GET"
    assert app.requests[0].path == b"/hello"
    assert app.requests[0].headers == {b"host": b"x"}
    assert [r.status for r in parse_responses(transport.data)] == [200]


def test_content_length_body_is_delivered_whole() -> None:
    proto, _, app = make()
    proto.data_received(post(b"/p", b"hello world"))
    assert len(app.requests) == 1
    assert app.requests[0].body == b"hello world"
    assert app.requests[0].headers[b"content-length"] == b"11"


def test_content_length_body_split_byte_by_byte_is_reassembled() -> None:
    proto, transport, app = make()
    feed_bytewise(proto, post(b"/p", b"hello world"))
    assert [r.body for r in app.requests] == [b"hello world"]
    assert parse_responses(transport.data)[0].body == b"hello world"


def test_chunked_body_with_several_chunks_is_reassembled() -> None:
    proto, _, app = make()
    proto.data_received(chunked(b"/c", b"abc", b"defgh", b"i" * 20))
    assert len(app.requests) == 1
    assert app.requests[0].body == b"abcdefgh" + b"i" * 20
    assert app.requests[0].oversized is False


def test_chunked_body_split_across_feeds_is_reassembled() -> None:
    proto, _, app = make()
    raw = chunked(b"/c", b"abc", b"defgh", b"i" * 20)
    cut1, cut2 = raw.index(b"\r\n\r\n") + 6, len(raw) - 9
    proto.data_received(raw[:cut1])
    proto.data_received(raw[cut1:cut2])
    assert app.requests == []
    proto.data_received(raw[cut2:])
    assert [r.body for r in app.requests] == [b"abcdefgh" + b"i" * 20]


def test_chunked_body_split_byte_by_byte_is_reassembled() -> None:
    proto, transport, app = make()
    feed_bytewise(proto, chunked(b"/c", b"abc", b"defgh"))
    assert [r.body for r in app.requests] == [b"abcdefgh"]
    assert parse_responses(transport.data)[0].body == b"abcdefgh"


def test_query_string_is_split_off_the_path() -> None:
    proto, _, app = make()
    proto.data_received(get(b"/a?b=1"))
    assert app.requests[0].path == b"/a"
    assert app.requests[0].query == b"b=1"


def test_query_string_split_across_feeds_is_split_off_the_path() -> None:
    proto, _, app = make()
    feed_bytewise(proto, get(b"/a/b?c=1&d=2"))
    assert app.requests[0].path == b"/a/b"
    assert app.requests[0].query == b"c=1&d=2"


def test_header_names_are_lower_cased_and_values_kept() -> None:
    proto, _, app = make()
    proto.data_received(b"GET / HTTP/1.1\r\nHOST: x\r\nX-Mixed-Case: Keep-This\r\n\r\n")
    assert app.requests[0].headers == {b"host": b"x", b"x-mixed-case": b"Keep-This"}


def test_duplicate_headers_are_joined_with_comma_space() -> None:
    proto, _, app = make()
    proto.data_received(b"GET / HTTP/1.1\r\nX-A: 1\r\nx-a: 2\r\nHost: x\r\nX-A: 3\r\n\r\n")
    assert app.requests[0].headers[b"x-a"] == b"1, 2, 3"


# --------------------------------------------------------------- keep-alive
def test_keep_alive_connection_answers_two_requests() -> None:
    proto, transport, app = make()
    proto.data_received(get(b"/one"))
    proto.data_received(get(b"/two"))
    assert [r.path for r in app.requests] == [b"/one", b"/two"]
    responses = parse_responses(transport.data)
    assert [r.header(b"X-Path") for r in responses] == [b"/one", b"/two"]
    assert all(r.header(b"Connection") is None for r in responses)
    assert not transport.closed


def test_connection_close_request_gets_connection_close_and_transport_closes() -> None:
    proto, transport, app = make(later=True)
    proto.data_received(b"GET /bye HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert app.requests[0].keep_alive is False
    assert not transport.closed  # not until answered
    answer(proto, app.requests[0])
    [response] = parse_responses(transport.data)
    assert response.header(b"Connection") == b"close"
    assert transport.closed
    assert not proto.open


def test_http10_without_keep_alive_closes_after_respond() -> None:
    proto, transport, app = make(later=True)
    proto.data_received(b"GET /old HTTP/1.0\r\n\r\n")
    assert app.requests[0].keep_alive is False
    assert not transport.closed
    answer(proto, app.requests[0])
    [response] = parse_responses(transport.data)
    assert response.status_line == b"HTTP/1.1 200 OK"
    assert response.header(b"Connection") == b"close"
    assert transport.closed


def test_http10_with_keep_alive_header_stays_open() -> None:
    proto, transport, app = make()
    proto.data_received(b"GET /old HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    assert app.requests[0].keep_alive is True
    assert parse_responses(transport.data)[0].header(b"Connection") is None
    assert not transport.closed


def test_respond_with_close_closes_a_keep_alive_connection() -> None:
    proto, transport, app = make(later=True)
    proto.data_received(GET)
    proto.respond(503, b"", b"later", close=True)
    [response] = parse_responses(transport.data)
    assert response.status == 503
    assert response.header(b"Connection") == b"close"
    assert transport.closed


def test_pipelined_request_after_respond_close_is_never_dispatched() -> None:
    proto, transport, app = make(later=True)
    app.handle = lambda request, conn: (  # type: ignore[method-assign]
        app.requests.append(request),
        conn.respond(200, b"", b"", close=True),
    )
    proto.data_received(get(b"/1") + get(b"/2"))
    assert [r.path for r in app.requests] == [b"/1"]
    assert len(parse_responses(transport.data)) == 1
    assert transport.closed


# --------------------------------------------------------------- pipelining
def test_pipelined_requests_in_one_chunk_are_dispatched_one_at_a_time() -> None:
    proto, transport, app = make(later=True)
    proto.data_received(get(b"/1") + get(b"/2") + get(b"/3"))
    assert [r.path for r in app.requests] == [b"/1"]
    assert transport.data == b""


def test_second_pipelined_request_is_dispatched_only_after_first_is_answered() -> None:
    proto, transport, app = make(later=True)
    proto.data_received(get(b"/1") + get(b"/2") + get(b"/3"))
    answer(proto, app.requests[0])
    assert [r.path for r in app.requests] == [b"/1", b"/2"]
    assert [r.header(b"X-Path") for r in parse_responses(transport.data)] == [b"/1"]
    answer(proto, app.requests[1])
    assert [r.path for r in app.requests] == [b"/1", b"/2", b"/3"]
    answer(proto, app.requests[2])
    assert len(app.requests) == 3


def test_pipelined_responses_come_out_in_request_order_when_app_answers_later() -> None:
    proto, transport, app = make(later=True)
    proto.data_received(get(b"/1") + post(b"/2", b"two") + get(b"/3"))
    for i in range(3):
        answer(proto, app.requests[i], status=(200, 202, 404)[i])
    responses = parse_responses(transport.data)
    assert [r.header(b"X-Path") for r in responses] == [b"/1", b"/2", b"/3"]
    assert [r.status for r in responses] == [200, 202, 404]
    assert responses[1].body == b"two"
    assert not transport.closed


def test_respond_with_nothing_in_flight_writes_nothing() -> None:
    proto, transport, app = make(later=True)
    proto.data_received(GET)
    answer(proto, app.requests[0])
    before = transport.data
    proto.respond(200, b"", b"extra")
    assert transport.data == before


def test_many_pipelined_requests_answered_inside_handle_do_not_recurse() -> None:
    # The first is parked; once it is answered, each later one is answered
    # inside handle(). That must not nest one respond() per queued request.
    count = 3000
    proto, transport, app = make(later=True)
    proto.data_received(get(b"/x") * count)
    assert len(app.requests) == 1
    app.later = False
    answer(proto, app.requests[0])
    assert len(app.requests) == count
    assert len(parse_responses(transport.data)) == count


def test_full_pipeline_queue_pauses_reading_and_draining_resumes_it() -> None:
    proto, transport, app = make(later=True)
    proto.data_received(get(b"/x") * 20)
    assert transport.paused
    while transport.paused:
        answer(proto, app.requests[-1])
    assert transport.resume_calls == 1
    assert len(app.requests) < 20  # resumed before the queue ran dry


# ------------------------------------------------------------ response head
@pytest.mark.parametrize(
    ("status", "line"),
    [
        (200, b"HTTP/1.1 200 OK\r\n"),
        (202, b"HTTP/1.1 202 Accepted\r\n"),
        (204, b"HTTP/1.1 204 No Content\r\n"),
        (404, b"HTTP/1.1 404 Not Found\r\n"),
        (413, b"HTTP/1.1 413 Request Entity Too Large\r\n"),
        (431, b"HTTP/1.1 431 Request Header Fields Too Large\r\n"),
        (502, b"HTTP/1.1 502 Bad Gateway\r\n"),
        (299, b"HTTP/1.1 299 Status\r\n"),
    ],
)
def test_respond_writes_the_right_status_line_and_reason(status: int, line: bytes) -> None:
    proto, transport, _ = make(later=True)
    proto.data_received(GET)
    proto.respond(status, b"", b"")
    assert transport.data.startswith(line)


def test_respond_adds_content_length_after_app_headers() -> None:
    proto, transport, _ = make(later=True)
    proto.data_received(GET)
    proto.respond(200, b"Content-Type: text/plain\r\nX-A: b\r\n", b"12345")
    assert transport.data == (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-A: b\r\nContent-Length: 5\r\n\r\n12345"
    )


def test_respond_on_closing_request_adds_connection_close_header() -> None:
    proto, transport, _ = make(later=True)
    proto.data_received(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
    proto.respond(404, b"X-A: b\r\n", b"no")
    assert transport.data == (
        b"HTTP/1.1 404 Not Found\r\nX-A: b\r\nContent-Length: 2\r\nConnection: close\r\n\r\nno"
    )


def test_large_response_body_is_written_intact() -> None:
    proto, transport, _ = make(later=True)
    proto.data_received(GET)
    body = bytes(range(256)) * 1024  # 256 KiB: the writelines path
    proto.respond(200, b"", body)
    [response] = parse_responses(transport.data)
    assert response.header(b"Content-Length") == b"%d" % len(body)
    assert response.body == body


# ------------------------------------------------------------------- limits
def test_headers_over_max_header_bytes_get_431_and_close() -> None:
    proto, transport, app = make(later=True, max_header_bytes=200)
    proto.data_received(b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 300 + b"\r\n\r\n")
    assert app.requests == []
    assert app.errors[0][0] == 431
    [response] = parse_responses(transport.data)
    assert response.status_line == b"HTTP/1.1 431 Request Header Fields Too Large"
    assert response.header(b"Connection") == b"close"
    assert response.header(b"X-Error") == b"yes"
    assert transport.closed


def test_long_request_line_counts_toward_max_header_bytes() -> None:
    proto, transport, app = make(later=True, max_header_bytes=200)
    feed_bytewise(proto, get(b"/" + b"p" * 300))
    assert app.requests == []
    assert [status for status, _ in app.errors] == [431]
    assert parse_responses(transport.data)[0].status == 431
    assert transport.closed


def test_many_small_headers_over_max_header_bytes_get_431() -> None:
    proto, transport, app = make(later=True, max_header_bytes=200)
    lines = b"".join(b"X-%d: v\r\n" % i for i in range(40))
    proto.data_received(b"GET / HTTP/1.1\r\n" + lines + b"\r\n")
    assert app.requests == []
    assert [status for status, _ in app.errors] == [431]
    assert transport.closed


def test_endless_header_line_gets_431_before_it_ends() -> None:
    # httptools buffers a header line whole before on_header; the protocol
    # must still stop a line that never ends instead of buffering forever.
    proto, transport, app = make(later=True, max_header_bytes=1000)
    proto.data_received(b"GET / HTTP/1.1\r\nX-Big: ")
    for _ in range(50):
        proto.data_received(b"a" * 100)
        if transport.closed:
            break
    assert [status for status, _ in app.errors] == [431]
    assert parse_responses(transport.data)[0].status == 431
    assert transport.closed


def test_head_split_across_feeds_within_limit_is_accepted() -> None:
    # Body bytes of an earlier request in the same chunk must not count.
    proto, transport, app = make(max_header_bytes=100, max_body_bytes=1000)
    second = get(b"/2")
    proto.data_received(post(b"/1", b"b" * 500) + second[:5])
    proto.data_received(second[5:])
    assert [r.path for r in app.requests] == [b"/1", b"/2"]
    assert app.errors == []
    assert not transport.closed


def test_more_than_max_headers_get_431() -> None:
    proto, transport, app = make(later=True, max_headers=5)
    lines = b"".join(b"X-%d: v\r\n" % i for i in range(6))
    proto.data_received(b"GET / HTTP/1.1\r\n" + lines + b"\r\n")
    assert app.requests == []
    assert app.errors == [(431, "Too many request headers")]
    assert parse_responses(transport.data)[0].status == 431
    assert transport.closed


def test_exactly_max_headers_are_accepted() -> None:
    proto, transport, app = make(max_headers=5)
    lines = b"".join(b"X-%d: v\r\n" % i for i in range(5))
    proto.data_received(b"GET / HTTP/1.1\r\n" + lines + b"\r\n")
    assert len(app.requests) == 1
    assert len(app.requests[0].headers) == 5
    assert app.errors == []


def test_repeated_header_name_counts_each_line_toward_max_headers() -> None:
    proto, transport, app = make(later=True, max_headers=5)
    proto.data_received(b"GET / HTTP/1.1\r\n" + b"X-Same: v\r\n" * 6 + b"\r\n")
    assert app.requests == []
    assert app.errors == [(431, "Too many request headers")]
    assert transport.closed


def test_content_length_over_limit_is_oversized_with_empty_body_and_no_100_continue() -> None:
    proto, transport, app = make(later=True, max_body_bytes=10)
    raw = post(b"/big", b"x" * 11, extra=b"Expect: 100-continue\r\n")
    head_end = raw.index(b"\r\n\r\n") + 4
    proto.data_received(raw[:head_end])
    assert transport.data == b""  # no 100 Continue for a body we will discard
    proto.data_received(raw[head_end:])
    [request] = app.requests
    assert request.oversized is True
    assert request.body == b""
    proto.respond(413, b"", b"too big")
    [response] = parse_responses(transport.data)
    assert response.status == 413
    assert b"100 Continue" not in transport.data


def test_oversized_body_is_drained_so_the_connection_stays_usable() -> None:
    proto, transport, app = make(max_body_bytes=10)
    proto.data_received(post(b"/big", b"x" * 50) + get(b"/next"))
    assert [(r.path, r.oversized) for r in app.requests] == [(b"/big", True), (b"/next", False)]
    assert [r.status for r in parse_responses(transport.data)] == [200, 200]
    assert not transport.closed


def test_chunked_body_growing_past_limit_is_oversized() -> None:
    proto, _, app = make(later=True, max_body_bytes=10)
    proto.data_received(chunked(b"/c", b"abcdef", b"ghijkl"))
    [request] = app.requests
    assert request.oversized is True
    assert request.body == b""


def test_content_length_body_exactly_at_limit_is_accepted_intact() -> None:
    proto, _, app = make(later=True, max_body_bytes=10)
    proto.data_received(post(b"/p", b"0123456789"))
    [request] = app.requests
    assert request.oversized is False
    assert request.body == b"0123456789"


def test_chunked_body_exactly_at_limit_is_accepted_intact() -> None:
    proto, _, app = make(later=True, max_body_bytes=10)
    feed_bytewise(proto, chunked(b"/c", b"01234", b"56789"))
    [request] = app.requests
    assert request.oversized is False
    assert request.body == b"0123456789"


def test_expect_100_continue_within_limit_sends_continue_before_final_response() -> None:
    proto, transport, app = make(later=True, max_body_bytes=10)
    raw = post(b"/p", b"hello", extra=b"Expect: 100-continue\r\n")
    head_end = raw.index(b"\r\n\r\n") + 4
    proto.data_received(raw[:head_end])
    assert transport.data == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert app.requests == []
    proto.data_received(raw[head_end:])
    answer(proto, app.requests[0])
    responses = parse_responses(transport.data)
    assert [r.status for r in responses] == [100, 200]
    assert responses[1].body == b"hello"


# ---------------------------------------------------------- malformed input
MALFORMED = {
    "garbage": b"\x00\x01\x02 not http at all\r\n\r\n",
    "bad_chunk_size": b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
    "invalid_header_name": b"GET / HTTP/1.1\r\nBad Header: v\r\n\r\n",
    "control_char_in_header_value": b"GET / HTTP/1.1\r\nX-A: a\x01b\r\n\r\n",
    "bad_version": b"GET / HTTP/9.9\r\n\r\n",
    "content_length_and_chunked": (
        b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n0\r\n\r\n"
    ),
    "websocket_upgrade": (
        b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
    ),
    "connect": b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com\r\n\r\n",
}


@pytest.mark.parametrize("raw", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_request_gets_400_and_close_without_reaching_the_app(raw: bytes) -> None:
    proto, transport, app = make(later=True)
    proto.data_received(raw)  # must not raise
    assert app.requests == []
    assert [status for status, _ in app.errors] == [400]
    [response] = parse_responses(transport.data)
    assert response.status_line == b"HTTP/1.1 400 Bad Request"
    assert response.header(b"Connection") == b"close"
    assert response.body == app.errors[0][1].encode()
    assert transport.closed
    assert not proto.open


@pytest.mark.parametrize("raw", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_request_fed_byte_by_byte_gets_one_400(raw: bytes) -> None:
    proto, transport, app = make(later=True)
    feed_bytewise(proto, raw)
    assert app.requests == []
    assert [status for status, _ in app.errors] == [400]
    assert [r.status for r in parse_responses(transport.data)] == [400]
    assert transport.closed


def test_data_after_a_protocol_error_is_ignored() -> None:
    proto, transport, app = make()
    proto.data_received(MALFORMED["garbage"])
    written = transport.data
    proto.data_received(GET)
    assert app.requests == []
    assert transport.data == written


def test_malformed_request_behind_an_unanswered_one_waits_for_its_response() -> None:
    proto, transport, app = make(later=True)
    proto.data_received(get(b"/ok") + get(b"/queued") + b"\x00garbage\r\n\r\n")
    assert transport.data == b""
    assert not transport.closed
    answer(proto, app.requests[0])
    answer(proto, app.requests[1])
    assert [r.path for r in app.requests] == [b"/ok", b"/queued"]
    responses = parse_responses(transport.data)
    assert [r.status for r in responses] == [200, 200, 400]
    assert [r.header(b"X-Path") for r in responses[:2]] == [b"/ok", b"/queued"]
    assert responses[2].header(b"Connection") == b"close"
    assert transport.closed


def test_exception_from_handle_is_answered_with_400_and_close() -> None:
    proto, transport, app = make()

    def explode(request: Request, conn: HttpProtocol) -> None:
        raise RuntimeError("app bug")

    app.handle = explode  # type: ignore[method-assign]
    proto.data_received(GET)  # must not raise
    assert [r.status for r in parse_responses(transport.data)] == [400]
    assert transport.closed


# -------------------------------------------------------- connection state
def test_respond_after_connection_lost_is_a_noop_and_app_is_told_once() -> None:
    proto, transport, app = make(later=True)
    proto.data_received(GET)
    proto.connection_lost(None)
    assert app.lost == [proto]
    assert not proto.open
    proto.respond(200, b"", b"late")
    assert transport.data == b""
    assert not transport.closed
    proto.data_received(GET)
    assert len(app.requests) == 1


def test_connection_lost_after_protocol_close_tells_the_app_once() -> None:
    proto, transport, app = make()
    proto.data_received(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
    assert transport.closed
    assert app.lost == []
    proto.connection_lost(None)
    assert app.lost == [proto]


def test_eof_while_response_pending_keeps_transport_open_until_respond() -> None:
    proto, transport, app = make(later=True)
    proto.data_received(GET)
    assert proto.eof_received() is True  # keep the transport half-open
    assert not transport.closed
    answer(proto, app.requests[0])
    assert [r.status for r in parse_responses(transport.data)] == [200]
    assert transport.closed


def test_eof_with_pipelined_requests_pending_answers_them_all_then_closes() -> None:
    proto, transport, app = make(later=True)
    proto.data_received(get(b"/1") + get(b"/2"))
    assert proto.eof_received() is True
    answer(proto, app.requests[0])
    assert not transport.closed
    answer(proto, app.requests[1])
    assert [r.header(b"X-Path") for r in parse_responses(transport.data)] == [b"/1", b"/2"]
    assert transport.closed


def test_eof_with_nothing_pending_lets_the_transport_close() -> None:
    proto, transport, _ = make()
    proto.data_received(GET)
    assert proto.eof_received() is False
