"""The Runtime API (2018-06-01) endpoints, served for one environment.

Each environment has its own listener (inside its own network namespace), so
the application object is per environment and knows its slot without
trusting anything the bootstrap says.
"""

from __future__ import annotations

from typing import Final

import orjson

from rapi.http import Connection, Limits, Request
from rapi.invocation import MAX_RESPONSE_BYTES, Invocation
from rapi.slot import RuntimeSlot, error_body

PREFIX: Final = b"/2018-06-01/runtime/"
NEXT: Final = b"invocation/next"
INVOCATION: Final = b"invocation/"
INIT_ERROR: Final = b"init/error"

JSON_HEADERS: Final = b"Content-Type: application/json\r\n"

# The Runtime API's body limit; /response bodies above it get 413.
LIMITS: Final = Limits(max_header_bytes=64 * 1024, max_body_bytes=MAX_RESPONSE_BYTES)

_NOT_FOUND: Final = error_body("NotFound", "Not found")
_METHOD_NOT_ALLOWED: Final = error_body("MethodNotAllowed", "Method not allowed")
_DISPLACED: Final = error_body("InvalidStateTransition", "Another /next call replaced this one")
_BAD_MODE: Final = error_body("InvalidFunctionResponseMode", "Invalid function response mode")
_BAD_MODE_FOR_CALLER: Final = orjson.dumps(
    {
        "errorMessage": "Invalid function response mode",
        "errorType": "Runtime.InvalidResponseModeHeader",
    }
)
_TOO_LARGE_BODY: Final = error_body(
    "RequestEntityTooLarge",
    f"Exceeded maximum allowed payload size ({MAX_RESPONSE_BYTES} bytes).",
)


def render_next_headers(invocation: Invocation) -> bytes:
    """Headers of a `/next` response: every one awslambdaric and the Rust,
    Go and Node clients read, so none of them trips on a missing one."""
    head = b"Content-Type: %s\r\nLambda-Runtime-Aws-Request-Id: %s\r\n" % (
        invocation.content_type,
        invocation.request_id.encode(),
    )
    head += b"Lambda-Runtime-Deadline-Ms: %d\r\nLambda-Runtime-Invoked-Function-Arn: %s\r\n" % (
        invocation.deadline_ms,
        invocation.function_arn,
    )
    head += b"Lambda-Runtime-Trace-Id: %s\r\n" % invocation.trace_id
    if invocation.client_context is not None:
        head += b"Lambda-Runtime-Client-Context: %s\r\n" % invocation.client_context
    if invocation.cognito_identity is not None:
        head += b"Lambda-Runtime-Cognito-Identity: %s\r\n" % invocation.cognito_identity
    return head


class _NextWaiter:
    __slots__ = ("conn",)

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def deliver(self, invocation: Invocation) -> None:
        self.conn.respond(200, render_next_headers(invocation), invocation.payload)

    def displace(self) -> None:
        self.conn.respond(403, JSON_HEADERS, _DISPLACED)


class RuntimeApi:
    """HTTP application for one environment's Runtime API listener."""

    __slots__ = ("_waiters", "slot")

    def __init__(self, slot: RuntimeSlot) -> None:
        self.slot = slot
        # Parked /next per connection, to drop it if the connection closes.
        self._waiters: dict[int, _NextWaiter] = {}

    def handle(self, request: Request, conn: Connection) -> None:
        path = request.path
        if not path.startswith(PREFIX):
            conn.respond(404, JSON_HEADERS, _NOT_FOUND)
            return
        resource = path[len(PREFIX) :]
        if resource == NEXT:
            if request.method != b"GET":
                conn.respond(405, JSON_HEADERS, _METHOD_NOT_ALLOWED)
                return
            self._next(conn)
        elif resource.startswith(INVOCATION):
            request_id, _, action = resource[len(INVOCATION) :].partition(b"/")
            if action not in (b"response", b"error") or not request_id:
                conn.respond(404, JSON_HEADERS, _NOT_FOUND)
            elif request.method != b"POST":
                conn.respond(405, JSON_HEADERS, _METHOD_NOT_ALLOWED)
            elif action == b"response":
                self._response(request, request_id, conn)
            else:
                self._error(request, request_id, conn)
        elif resource == INIT_ERROR:
            if request.method != b"POST":
                conn.respond(405, JSON_HEADERS, _METHOD_NOT_ALLOWED)
                return
            body, content_type = _error_document(request)
            status, reply = self.slot.on_init_error(body, content_type)
            conn.respond(status, JSON_HEADERS, reply)
        else:
            conn.respond(404, JSON_HEADERS, _NOT_FOUND)

    def _next(self, conn: Connection) -> None:
        waiter = _NextWaiter(conn)
        invocation = self.slot.on_next(waiter)
        if invocation is not None:
            waiter.deliver(invocation)
        elif self.slot.idle:
            self._waiters[id(conn)] = waiter
        # else: the environment is being torn down; the /next stays unanswered
        # until the process is killed, as AWS does (checklist 14).

    def _response(self, request: Request, request_id: bytes, conn: Connection) -> None:
        rid = request_id.decode("latin-1")
        mode = request.headers.get(b"lambda-runtime-function-response-mode")
        if mode is not None and mode.lower() != b"streaming":
            # 400 to the runtime, and the invocation ends for the caller with
            # Runtime.InvalidResponseModeHeader (RIE does both, spec 1.7).
            status, reply = self.slot.on_error(rid, _BAD_MODE_FOR_CALLER, b"application/json")
            if status == 202:
                status, reply = 400, _BAD_MODE
            conn.respond(status, JSON_HEADERS, reply)
            return
        if request.oversized:
            status, reply = self.slot.on_response_too_large(rid)
            conn.respond(status, JSON_HEADERS, reply)
            return
        content_type = request.headers.get(b"content-type", b"application/json")
        status, reply = self.slot.on_response(rid, request.body, content_type)
        conn.respond(status, JSON_HEADERS, reply)

    def _error(self, request: Request, request_id: bytes, conn: Connection) -> None:
        rid = request_id.decode("latin-1")
        if request.oversized:
            # An error document over 6 MB is not worth keeping; the caller
            # still learns the function failed.
            status, reply = self.slot.on_error(
                rid,
                error_body("Function.ResponseSizeTooLarge", "Error payload too large"),
                b"application/json",
            )
            if status == 202:
                status, reply = 413, _TOO_LARGE_BODY
            conn.respond(status, JSON_HEADERS, reply)
            return
        body, content_type = _error_document(request)
        status, reply = self.slot.on_error(rid, body, content_type)
        conn.respond(status, JSON_HEADERS, reply)

    def protocol_error(self, status: int, message: str) -> tuple[bytes, bytes]:
        return JSON_HEADERS, error_body("InvalidRequest", message)

    def connection_lost(self, conn: Connection) -> None:
        waiter = self._waiters.pop(id(conn), None)
        if waiter is not None:
            self.slot.drop_waiter(waiter)


def _error_document(request: Request) -> tuple[bytes, bytes]:
    """The error body to pass to the caller, verbatim when there is one.

    The official clients do not send Lambda-Runtime-Function-Error-Type on
    /error; when the body is empty we build the document from the header.
    """
    content_type = request.headers.get(b"content-type", b"application/json")
    if request.body:
        return request.body, content_type
    error_type = request.headers.get(b"lambda-runtime-function-error-type", b"Runtime.Unknown")
    return error_body(error_type.decode("latin-1"), ""), b"application/json"
