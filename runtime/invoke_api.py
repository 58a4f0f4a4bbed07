"""The AWS Lambda Invoke API (rest-json, 2015-03-31), as boto3 calls it.

Errors that stop an invoke before the function runs are InvokeError
subclasses (runtime/errors.py) and are rendered here, in one place, as AWS
does: status, `x-amzn-ErrorType`, and a JSON body with `Type` and
`message`/`Message`.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import time
import uuid
from collections.abc import Mapping
from typing import Final
from urllib.parse import parse_qs, unquote

import orjson

from rapi.http import Connection, Limits, Request
from rapi.invocation import Invocation, Outcome
from runtime.errors import (
    InvalidParameterValue,
    InvalidRequestContent,
    InvokeError,
    RequestTooLarge,
    ResourceNotFound,
    UnknownOperation,
    ValidationError,
)
from runtime.router import FunctionRouter

SYNC_PAYLOAD_LIMIT: Final = 6_291_456
EVENT_PAYLOAD_LIMIT: Final = 1_048_576
LIMITS: Final = Limits(max_header_bytes=64 * 1024, max_body_bytes=SYNC_PAYLOAD_LIMIT)

_FUNCTIONS: Final = b"/2015-03-31/functions/"
_INVOCATIONS: Final = b"/invocations"
_NAME_PATTERN: Final = re.compile(
    r"^(arn:(aws[a-zA-Z-]*)?:lambda:)?([a-z]{2}(-gov)?-[a-z]+-\d{1}:)?(\d{12}:)?"
    r"(function:)?([a-zA-Z0-9-_\.]+)(:(\$LATEST|[a-zA-Z0-9-_]+))?$"
)
_ARN: Final = re.compile(
    r"^(?:arn:aws[a-zA-Z-]*:lambda:(?P<region>[a-z0-9-]+):)?(?:(?P<account>\d{12}):function:)?"
    r"(?P<name>[a-zA-Z0-9_-]{1,64})(?::(?P<qualifier>\$LATEST|[a-zA-Z0-9_-]+))?$"
)
_JSON: Final = b"application/json"


def _request_id() -> str:
    return str(uuid.UUID(bytes=os.urandom(16), version=4))


def trace_id() -> bytes:
    """An X-Ray trace header: Root=1-<8 hex time>-<24 hex>;Parent=<16 hex>;Sampled=0."""
    raw = os.urandom(20).hex().encode()
    return b"Root=1-%08x-%s;Parent=%s;Sampled=0" % (int(time.time()), raw[:24], raw[24:40])


class InvokeApi:
    """HTTP application for the host's Invoke API listener."""

    def __init__(self, routers: Mapping[str, FunctionRouter], region: str, account_id: str) -> None:
        self._routers = routers
        self._region = region
        self._account = account_id
        self._arn_prefix = f"arn:aws:lambda:{region}:{account_id}:function:"

    # ----------------------------------------------------------- dispatch
    def handle(self, request: Request, conn: Connection) -> None:
        try:
            path = request.path
            if (
                request.method == b"POST"
                and path.startswith(_FUNCTIONS)
                and path.endswith(_INVOCATIONS)
            ):
                self._invoke(request, conn, path[len(_FUNCTIONS) : -len(_INVOCATIONS)])
            else:
                raise UnknownOperation(
                    f"No operation {request.method.decode('latin-1')} {path.decode('latin-1')}"
                )
        except InvokeError as exc:
            self._reject(conn, exc)

    def _reject(self, conn: Connection, exc: InvokeError) -> None:
        body: dict[str, str] = {"Type": "User" if exc.status < 500 else "Service"}
        body[exc.message_key] = exc.message
        body.update(exc.extra)
        headers = (
            b"Content-Type: application/json\r\nx-amzn-RequestId: %s\r\nx-amzn-ErrorType: %s\r\n"
            % (
                _request_id().encode(),
                exc.code.encode(),
            )
        )
        conn.respond(exc.status, headers, orjson.dumps(body))

    def protocol_error(self, status: int, message: str) -> tuple[bytes, bytes]:
        code = (
            b"RequestHeaderFieldsTooLargeException"
            if status == 431
            else b"InvalidRequestContentException"
        )
        return (
            b"Content-Type: application/json\r\nx-amzn-ErrorType: %s\r\n" % code,
            orjson.dumps({"Type": "User", "message": message}),
        )

    def connection_lost(self, conn: Connection) -> None:
        # An invocation whose caller went away still runs to completion;
        # its response is dropped by the closed connection.
        pass

    # ------------------------------------------------------------- invoke
    def _invoke(self, request: Request, conn: Connection, raw_name: bytes) -> None:
        name_text = unquote(raw_name.decode("latin-1"))
        query = parse_qs(request.query.decode("latin-1")) if request.query else {}
        router, invoked_arn, qualifier = self._resolve(name_text, query.get("Qualifier", [None])[0])
        headers = request.headers
        invocation_type = headers.get(b"x-amz-invocation-type", b"RequestResponse")
        if invocation_type not in (b"RequestResponse", b"Event", b"DryRun"):
            raise InvalidParameterValue(
                f"Unsupported invocation type {invocation_type.decode('latin-1')!r}: "
                "expected RequestResponse, Event or DryRun"
            )
        if request.oversized:
            raise RequestTooLarge(
                f"Request must be smaller than {SYNC_PAYLOAD_LIMIT} bytes for the InvokeFunction operation"
            )
        payload = request.body
        if invocation_type == b"Event" and len(payload) > EVENT_PAYLOAD_LIMIT:
            raise RequestTooLarge(
                f"{len(payload)} byte payload is too large for the Event invocation type "
                f"(limit {EVENT_PAYLOAD_LIMIT} bytes)"
            )
        if payload:
            _validate_json(payload)
        if invocation_type == b"DryRun":
            conn.respond(204, b"x-amzn-RequestId: %s\r\n" % _request_id().encode())
            return
        request_id = _request_id()
        if invocation_type == b"Event":
            # Fire and forget; retries and a durable queue come with async events.
            on_complete, client_context = _discard, None
        else:
            on_complete = _Reply(conn, b"$LATEST" if qualifier is None else qualifier.encode()).send
            client_context = _client_context(headers.get(b"x-amz-client-context"))
        invocation = Invocation(
            request_id,
            payload,
            invoked_arn,
            router.function.timeout_s * 1000,
            trace_id(),
            on_complete,
            client_context=client_context,
        )
        if invocation_type == b"RequestResponse":
            log_type = headers.get(b"x-amz-log-type", b"None")
            if log_type == b"Tail":
                invocation.log_tail = bytearray()
            elif log_type != b"None":
                raise InvalidParameterValue(
                    f"Unsupported log type {log_type.decode('latin-1')!r}: expected None or Tail"
                )
        router.submit(invocation)
        if invocation_type == b"Event":
            conn.respond(202, b"x-amzn-RequestId: %s\r\n" % request_id.encode())

    def _resolve(
        self, name_text: str, query_qualifier: str | None
    ) -> tuple[FunctionRouter, bytes, str | None]:
        """Accept a name, name:qualifier, a partial or a full ARN."""
        match = _ARN.match(name_text)
        if match is None or len(name_text) > 256 or not _NAME_PATTERN.match(name_text):
            raise ValidationError(
                f"1 validation error detected: Value '{name_text}' at 'functionName' failed to satisfy "
                f"constraint: Member must satisfy regular expression pattern: {_NAME_PATTERN.pattern}"
            )
        name = match["name"]
        qualifier = match["qualifier"]
        if query_qualifier is not None:
            if qualifier is not None and qualifier != query_qualifier:
                raise InvalidParameterValue(
                    "The derived qualifier from the function name does not match the specified qualifier."
                )
            qualifier = query_qualifier
        region = match["region"] or self._region
        account = match["account"] or self._account
        router = self._routers.get(name)
        unqualified = f"arn:aws:lambda:{region}:{account}:function:{name}"
        if router is None or region != self._region or account != self._account:
            raise ResourceNotFound(f"Function not found: {unqualified}:{qualifier or '$LATEST'}")
        if qualifier not in (None, "$LATEST"):
            raise ResourceNotFound(f"Function not found: {unqualified}:{qualifier}")
        invoked = unqualified if qualifier is None else f"{unqualified}:{qualifier}"
        return router, invoked.encode(), qualifier


class _Reply:
    """Writes the caller's response when the invocation completes."""

    __slots__ = ("conn", "version")

    def __init__(self, conn: Connection, version: bytes) -> None:
        self.conn = conn
        self.version = version

    def send(
        self, invocation: Invocation, outcome: Outcome, body: bytes, content_type: bytes
    ) -> None:
        headers = b"Content-Type: %s\r\nX-Amz-Executed-Version: %s\r\nx-amzn-RequestId: %s\r\n" % (
            content_type,
            self.version,
            invocation.request_id.encode(),
        )
        if outcome is Outcome.FUNCTION_ERROR:
            headers += b"X-Amz-Function-Error: Unhandled\r\n"
        if invocation.log_tail is not None:
            headers += b"X-Amz-Log-Result: %s\r\n" % base64.b64encode(invocation.log_tail[-4096:])
        self.conn.respond(200, headers, body)


def _discard(invocation: Invocation, outcome: Outcome, body: bytes, content_type: bytes) -> None:
    return None


def _validate_json(payload: bytes) -> None:
    """AWS refuses payloads that are not one JSON document. orjson is strict
    RFC 8259 but also refuses integers past 64 bits, which AWS accepts; the
    stdlib parser (minus NaN/Infinity) decides those rare cases."""
    try:
        orjson.loads(payload)
        return
    except orjson.JSONDecodeError as exc:
        first_error = str(exc)
    try:
        json.loads(payload, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError):
        raise InvalidRequestContent(
            f"Could not parse request body into json: Could not parse payload into json: {first_error}"
        ) from None


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def _client_context(value: bytes | None) -> bytes | None:
    if value is None:
        return None
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequestContent(
            "Client context must be a valid Base64-encoded JSON object."
        ) from None
