"""RuntimeApi.handle: the Runtime API endpoints over a RuntimeSlot (spec 1.2-1.8, 7.1/7.2)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from rapi.http import Request
from rapi.invocation import MAX_RESPONSE_BYTES, Invocation, Outcome
from rapi.runtime_api import RuntimeApi
from rapi.slot import RuntimeSlot
from tests.unit.slot_host import DEADLINE_MS, RecordingHost

PREFIX = b"/2018-06-01/runtime/"
NEXT = b"invocation/next"
ARN = b"arn:aws:lambda:us-east-1:000000000000:function:f:live"
TRACE = b"Root=1-5bef4de7-ad49b0e87f6ef6c87fc2e700;Parent=9a9197af755a6419;Sampled=1"
OK = b'{"status":"OK"}\n'
STATE_NOT_ALLOWED = "failed for runtime. Error: State transition is not allowed"


class RecordingConnection:
    """Stores (status, headers, body) of every respond() call."""

    def __init__(self) -> None:
        self.responses: list[tuple[int, bytes, bytes]] = []

    def respond(
        self, status: int, headers: bytes, body: bytes = b"", *, close: bool = False
    ) -> None:
        self.responses.append((status, headers, body))

    @property
    def open(self) -> bool:
        return True

    @property
    def only(self) -> tuple[int, bytes, bytes]:
        assert len(self.responses) == 1, self.responses
        return self.responses[0]


class Completions:
    def __init__(self) -> None:
        self.calls: list[tuple[Invocation, Outcome, bytes, bytes]] = []

    def __call__(
        self, invocation: Invocation, outcome: Outcome, body: bytes, content_type: bytes
    ) -> None:
        self.calls.append((invocation, outcome, body, content_type))


class Harness:
    def __init__(self) -> None:
        self.host = RecordingHost()
        self.slot = RuntimeSlot(self.host)
        self.api = RuntimeApi(self.slot)
        self.done = Completions()

    def invocation(self, request_id: str = "req-1", payload: bytes = b'{"a":1}', **kw: Any):
        return Invocation(request_id, payload, ARN, 3000, TRACE, self.done, **kw)

    def send(
        self,
        method: bytes,
        resource: bytes,
        body: bytes = b"",
        headers: dict[bytes, bytes] | None = None,
        *,
        oversized: bool = False,
        prefix: bytes = PREFIX,
        conn: RecordingConnection | None = None,
    ) -> RecordingConnection:
        conn = conn or RecordingConnection()
        request = Request(method, prefix + resource, b"", headers or {}, body, True, oversized)
        self.api.handle(request, conn)
        return conn

    def next(self, conn: RecordingConnection | None = None) -> RecordingConnection:
        return self.send(b"GET", NEXT, conn=conn)

    def post(self, resource: bytes, body: bytes = b"", **headers: bytes) -> RecordingConnection:
        named = {name.replace("_", "-").lower().encode(): value for name, value in headers.items()}
        return self.send(b"POST", resource, body, named)

    def running(self, request_id: str = "req-1", **kw: Any) -> Invocation:
        invocation = self.invocation(request_id, **kw)
        conn = self.next()
        assert conn.responses == []
        assert self.slot.offer(invocation) is True
        assert conn.only[0] == 200
        return invocation


@pytest.fixture
def h() -> Harness:
    return Harness()


def header_map(headers: bytes) -> dict[str, str]:
    lines = [line for line in headers.decode().split("\r\n") if line]
    names = [line.split(":", 1)[0].lower() for line in lines]
    assert len(names) == len(set(names)), f"duplicate headers: {headers!r}"
    return {name.lower(): value.strip() for name, value in (line.split(":", 1) for line in lines)}


def assert_json_error(
    response: tuple[int, bytes, bytes], status: int, error_type: str, message: str | None = None
) -> dict[str, Any]:
    got_status, headers, body = response
    assert got_status == status
    assert header_map(headers)["content-type"] == "application/json"
    document = orjson.loads(body)
    assert isinstance(document, dict)
    assert isinstance(document["errorMessage"], str)
    assert isinstance(document["errorType"], str)
    assert document["errorType"] == error_type
    if message is not None:
        assert document["errorMessage"] == message
    return document


def assert_accepted(response: tuple[int, bytes, bytes]) -> None:
    status, headers, body = response
    assert (status, body) == (202, OK)
    assert header_map(headers)["content-type"] == "application/json"


# ------------------------------------------------------------------- /next
def test_first_next_calls_runtime_ready_once_and_parks_when_nothing_queued(h):
    conn = h.next()
    assert conn.responses == []
    assert h.host.names() == ["runtime_ready", "next_invocation"]
    assert h.slot.idle is True


def test_offer_delivers_to_parked_next_as_200_with_payload(h):
    conn = h.next()
    invocation = h.invocation(payload=b'{"hello":"world"}')
    assert h.slot.offer(invocation) is True
    status, _, body = conn.only
    assert status == 200
    assert body == b'{"hello":"world"}'


def test_offer_with_nothing_parked_returns_false(h):
    assert h.slot.offer(h.invocation()) is False
    assert h.host.names() == []


def test_next_takes_queued_invocation_immediately(h):
    invocation = h.invocation()
    h.host.queue.append(invocation)
    conn = h.next()
    assert conn.only[0] == 200
    assert h.host.names() == ["runtime_ready", "next_invocation", "invocation_started"]
    assert header_map(conn.only[1])["lambda-runtime-aws-request-id"] == "req-1"


def test_next_headers_carry_request_id_deadline_arn_trace_and_content_type(h):
    h.host.queue.append(h.invocation("8476a536-e9f4-11e8-9739-2dfe598c3fcd"))
    headers = header_map(h.next().only[1])
    assert headers["lambda-runtime-aws-request-id"] == "8476a536-e9f4-11e8-9739-2dfe598c3fcd"
    assert headers["lambda-runtime-deadline-ms"] == str(DEADLINE_MS)
    assert headers["lambda-runtime-invoked-function-arn"] == ARN.decode()
    assert headers["lambda-runtime-trace-id"] == TRACE.decode()
    assert headers["content-type"] == "application/json"


def test_next_content_type_is_the_invocation_content_type(h):
    h.host.queue.append(h.invocation(content_type=b"application/octet-stream"))
    assert header_map(h.next().only[1])["content-type"] == "application/octet-stream"


def test_next_omits_client_context_and_cognito_identity_when_not_set(h):
    h.host.queue.append(h.invocation())
    headers = header_map(h.next().only[1])
    assert "lambda-runtime-client-context" not in headers
    assert "lambda-runtime-cognito-identity" not in headers


def test_next_includes_client_context_and_cognito_identity_when_set(h):
    client_context = b'{"custom":{"k":"v"}}'
    cognito = b'{"cognitoIdentityId":"id","cognitoIdentityPoolId":"pool"}'
    h.host.queue.append(h.invocation(client_context=client_context, cognito_identity=cognito))
    headers = header_map(h.next().only[1])
    assert headers["lambda-runtime-client-context"] == client_context.decode()
    assert headers["lambda-runtime-cognito-identity"] == cognito.decode()


def test_next_body_is_the_exact_payload_bytes(h):
    payload = bytes(range(256)) + b' {"not": "re-encoded" }\r\n'
    h.host.queue.append(h.invocation(payload=payload))
    assert h.next().only[2] == payload


def test_second_next_while_running_redelivers_same_invocation_without_starting_another(h):
    invocation = h.running(payload=b'{"n":1}')
    h.host.queue.append(h.invocation("req-2", payload=b'{"n":2}'))
    calls_before = list(h.host.calls)
    status, headers, body = h.next().only
    assert status == 200
    assert header_map(headers)["lambda-runtime-aws-request-id"] == invocation.request_id
    assert header_map(headers)["lambda-runtime-deadline-ms"] == str(DEADLINE_MS)
    assert body == b'{"n":1}'
    assert h.host.calls == calls_before
    assert len(h.host.queue) == 1


def test_new_next_displaces_parked_next_with_403(h):
    first = h.next()
    second = h.next()
    assert_json_error(first.only, 403, "InvalidStateTransition")
    assert second.responses == []
    assert h.slot.offer(h.invocation()) is True
    assert second.only[0] == 200


def test_wrong_method_on_next_is_405(h):
    conn = h.send(b"POST", NEXT)
    assert_json_error(conn.only, 405, "MethodNotAllowed")
    assert h.host.names() == []


@pytest.mark.parametrize(
    ("method", "resource", "prefix"),
    [
        (b"GET", NEXT, b"/2018-06-01/runtimes/"),
        (b"GET", b"invocation/next", b"/2020-01-01/runtime/"),
        (b"GET", b"nonsense", PREFIX),
        (b"GET", b"invocation/next/", PREFIX),
        (b"POST", b"invocation/req-1/bogus", PREFIX),
        (b"POST", b"invocation/req-1/response/extra", PREFIX),
        (b"POST", b"invocation//response", PREFIX),
        (b"POST", b"init/error/", PREFIX),
        (b"GET", b"restore/next", PREFIX),
    ],
)
def test_unknown_path_is_404(h, method, resource, prefix):
    conn = h.send(method, resource, prefix=prefix)
    assert_json_error(conn.only, 404, "NotFound")
    assert h.host.names() == []


@pytest.mark.parametrize("resource", [b"invocation/req-1/response", b"invocation/req-1/error"])
def test_wrong_method_on_response_and_error_is_405(h, resource):
    invocation = h.running()
    conn = h.send(b"GET", resource)
    assert_json_error(conn.only, 405, "MethodNotAllowed")
    assert h.done.calls == []
    assert h.slot.current is invocation


def test_wrong_method_on_init_error_is_405(h):
    conn = h.send(b"GET", b"init/error")
    assert_json_error(conn.only, 405, "MethodNotAllowed")
    assert "init_failed" not in h.host.names()


# --------------------------------------------------------------- /response
def test_response_for_current_id_is_202_status_ok_and_completes_with_success(h):
    invocation = h.running()
    conn = h.post(b"invocation/req-1/response", b"\x00bytes\xff", content_type=b"text/plain")
    assert_accepted(conn.only)
    assert h.done.calls == [(invocation, Outcome.SUCCESS, b"\x00bytes\xff", b"text/plain")]


def test_response_without_content_type_defaults_to_application_json(h):
    h.running()
    h.post(b"invocation/req-1/response", b"{}")
    assert h.done.calls[0][3] == b"application/json"


def test_response_with_unknown_id_is_400_invalid_request_id(h):
    h.running()
    conn = h.post(b"invocation/other/response", b"{}")
    assert_json_error(conn.only, 400, "InvalidRequestID", "Invalid request ID")
    assert h.done.calls == []


def test_second_response_before_next_is_403_invalid_state_transition(h):
    h.running()
    h.post(b"invocation/req-1/response", b"first")
    conn = h.post(b"invocation/req-1/response", b"second")
    assert_json_error(
        conn.only,
        403,
        "InvalidStateTransition",
        f"State transition from ResponseSent to InvocationResponse {STATE_NOT_ALLOWED}",
    )
    assert [call[2] for call in h.done.calls] == [b"first"]


def test_late_response_after_next_is_400_invalid_request_id(h):
    h.running()
    h.post(b"invocation/req-1/response", b"first")
    h.next()
    conn = h.post(b"invocation/req-1/response", b"late")
    assert_json_error(conn.only, 400, "InvalidRequestID")
    assert len(h.done.calls) == 1


def test_error_after_response_is_403_invalid_state_transition(h):
    h.running()
    h.post(b"invocation/req-1/response", b"ok")
    conn = h.post(b"invocation/req-1/error", b'{"errorType":"X","errorMessage":"y"}')
    assert_json_error(
        conn.only,
        403,
        "InvalidStateTransition",
        f"State transition from ResponseSent to InvocationErrorResponse {STATE_NOT_ALLOWED}",
    )
    assert [call[1] for call in h.done.calls] == [Outcome.SUCCESS]


def test_oversized_response_is_413_and_caller_gets_response_size_too_large(h):
    invocation = h.running()
    conn = h.send(b"POST", b"invocation/req-1/response", oversized=True)
    assert_json_error(
        conn.only,
        413,
        "RequestEntityTooLarge",
        f"Exceeded maximum allowed payload size ({MAX_RESPONSE_BYTES} bytes).",
    )
    assert "6291556" in orjson.loads(conn.only[2])["errorMessage"]
    assert len(h.done.calls) == 1
    called_with, outcome, body, _ = h.done.calls[0]
    assert called_with is invocation
    assert outcome is Outcome.FUNCTION_ERROR
    assert orjson.loads(body)["errorType"] == "Function.ResponseSizeTooLarge"


def test_next_after_oversized_response_receives_the_next_event(h):
    h.running("req-1")
    h.send(b"POST", b"invocation/req-1/response", oversized=True)
    conn = h.next()
    assert conn.responses == []
    assert h.slot.offer(h.invocation("req-2", payload=b'"second"')) is True
    status, headers, body = conn.only
    assert (status, body) == (200, b'"second"')
    assert header_map(headers)["lambda-runtime-aws-request-id"] == "req-2"


def test_oversized_response_with_unknown_id_is_400_invalid_request_id(h):
    h.running()
    conn = h.send(b"POST", b"invocation/other/response", oversized=True)
    assert_json_error(conn.only, 400, "InvalidRequestID")
    assert h.done.calls == []


def test_invalid_response_mode_is_400_and_caller_gets_invalid_response_mode_header(h):
    invocation = h.running()
    conn = h.post(
        b"invocation/req-1/response", b"{}", lambda_runtime_function_response_mode=b"buffered"
    )
    assert_json_error(
        conn.only, 400, "InvalidFunctionResponseMode", "Invalid function response mode"
    )
    assert len(h.done.calls) == 1
    called_with, outcome, body, _ = h.done.calls[0]
    assert called_with is invocation
    assert outcome is Outcome.FUNCTION_ERROR
    assert orjson.loads(body)["errorType"] == "Runtime.InvalidResponseModeHeader"


def test_invalid_response_mode_with_unknown_id_is_400_invalid_request_id(h):
    h.running()
    conn = h.post(
        b"invocation/other/response", b"{}", lambda_runtime_function_response_mode=b"bogus"
    )
    assert_json_error(conn.only, 400, "InvalidRequestID")
    assert h.done.calls == []


def test_invalid_response_mode_after_response_is_403(h):
    h.running()
    h.post(b"invocation/req-1/response", b"ok")
    conn = h.post(
        b"invocation/req-1/response", b"{}", lambda_runtime_function_response_mode=b"bogus"
    )
    assert_json_error(conn.only, 403, "InvalidStateTransition")
    assert len(h.done.calls) == 1


def test_streaming_response_mode_is_accepted(h):
    h.running()
    conn = h.post(
        b"invocation/req-1/response", b"chunk", lambda_runtime_function_response_mode=b"streaming"
    )
    assert_accepted(conn.only)
    assert h.done.calls[0][1:3] == (Outcome.SUCCESS, b"chunk")


# ------------------------------------------------------------------ /error
def test_error_with_error_type_header_and_json_body_is_202_and_body_verbatim(h):
    invocation = h.running()
    body = b'{"errorMessage":"boom","errorType":"X","stackTrace":["l1"]}'
    conn = h.post(b"invocation/req-1/error", body, lambda_runtime_function_error_type=b"X")
    assert_accepted(conn.only)
    assert h.done.calls == [(invocation, Outcome.FUNCTION_ERROR, body, b"application/json")]


def test_error_without_error_type_header_is_202_and_body_verbatim(h):
    h.running()
    body = b'{"errorType":"TypeError","errorMessage":"x","trace":[]}'
    conn = h.post(
        b"invocation/req-1/error", body, content_type=b"application/vnd.aws.lambda.error+json"
    )
    assert_accepted(conn.only)
    assert h.done.calls[0][1:] == (
        Outcome.FUNCTION_ERROR,
        body,
        b"application/vnd.aws.lambda.error+json",
    )


def test_error_with_empty_body_is_202_and_builds_document_from_header(h):
    h.running()
    conn = h.post(b"invocation/req-1/error", lambda_runtime_function_error_type=b"Runtime.Boom")
    assert_accepted(conn.only)
    _, outcome, body, content_type = h.done.calls[0]
    assert outcome is Outcome.FUNCTION_ERROR
    assert orjson.loads(body)["errorType"] == "Runtime.Boom"
    assert content_type == b"application/json"


def test_error_with_neither_body_nor_header_is_202_and_caller_gets_function_error(h):
    h.running()
    conn = h.post(b"invocation/req-1/error")
    assert_accepted(conn.only)
    _, outcome, body, _ = h.done.calls[0]
    assert outcome is Outcome.FUNCTION_ERROR
    assert isinstance(orjson.loads(body)["errorType"], str)


def test_error_with_unknown_id_is_400_invalid_request_id(h):
    h.running()
    conn = h.post(b"invocation/other/error", b"{}")
    assert_json_error(conn.only, 400, "InvalidRequestID", "Invalid request ID")
    assert h.done.calls == []


def test_oversized_error_is_413_and_caller_gets_function_error(h):
    h.running()
    conn = h.send(b"POST", b"invocation/req-1/error", oversized=True)
    assert_json_error(conn.only, 413, "RequestEntityTooLarge")
    assert len(h.done.calls) == 1
    assert h.done.calls[0][1] is Outcome.FUNCTION_ERROR


def test_oversized_error_with_unknown_id_is_400_invalid_request_id(h):
    h.running()
    conn = h.send(b"POST", b"invocation/other/error", oversized=True)
    assert_json_error(conn.only, 400, "InvalidRequestID", "Invalid request ID")
    assert h.done.calls == []


# -------------------------------------------------------------- /init/error
def test_init_error_before_first_next_is_202_and_reports_body_to_host(h):
    body = b'{"errorMessage":"Unable to import module","errorType":"Runtime.ImportModuleError"}'
    conn = h.post(
        b"init/error", body, lambda_runtime_function_error_type=b"Runtime.ImportModuleError"
    )
    assert_accepted(conn.only)
    assert h.host.calls == [("init_failed", body, b"application/json")]


def test_init_error_with_empty_body_uses_error_type_header(h):
    conn = h.post(b"init/error", lambda_runtime_function_error_type=b"Runtime.Boom")
    assert_accepted(conn.only)
    [(name, body, _)] = h.host.calls
    assert name == "init_failed"
    assert orjson.loads(body)["errorType"] == "Runtime.Boom"


def test_init_error_after_next_is_403_invalid_state_transition(h):
    h.next()
    conn = h.post(b"init/error", b"{}")
    assert_json_error(
        conn.only,
        403,
        "InvalidStateTransition",
        f"State transition from Ready to InitError {STATE_NOT_ALLOWED}",
    )
    assert "init_failed" not in h.host.names()


def test_init_error_twice_is_403(h):
    h.post(b"init/error", b"{}")
    conn = h.post(b"init/error", b"{}")
    assert_json_error(conn.only, 403, "InvalidStateTransition")
    assert h.host.names().count("init_failed") == 1


def test_next_after_init_error_gets_no_response(h):
    h.post(b"init/error", b"{}")
    h.host.queue.append(h.invocation())
    conn = h.next()
    assert conn.responses == []
    assert h.slot.offer(h.invocation("req-2")) is False


# ------------------------------------------------ error document shape (29)
def _unknown_path(h: Harness) -> RecordingConnection:
    return h.send(b"GET", b"nope")


def _wrong_method(h: Harness) -> RecordingConnection:
    return h.send(b"PUT", NEXT)


def _bad_id(h: Harness) -> RecordingConnection:
    h.running()
    return h.post(b"invocation/x/response", b"{}")


def _bad_state(h: Harness) -> RecordingConnection:
    h.running()
    h.post(b"invocation/req-1/response", b"{}")
    return h.post(b"invocation/req-1/error", b"{}")


def _too_large(h: Harness) -> RecordingConnection:
    h.running()
    return h.send(b"POST", b"invocation/req-1/response", oversized=True)


def _bad_mode(h: Harness) -> RecordingConnection:
    h.running()
    return h.post(b"invocation/req-1/response", b"{}", lambda_runtime_function_response_mode=b"x")


def _init_error_late(h: Harness) -> RecordingConnection:
    h.next()
    return h.post(b"init/error", b"{}")


def _displaced(h: Harness) -> RecordingConnection:
    first = h.next()
    h.next()
    return first


@pytest.mark.parametrize(
    ("scenario", "status"),
    [
        (_unknown_path, 404),
        (_wrong_method, 405),
        (_bad_id, 400),
        (_bad_state, 403),
        (_too_large, 413),
        (_bad_mode, 400),
        (_init_error_late, 403),
        (_displaced, 403),
    ],
)
def test_every_error_response_is_json_with_string_error_message_and_type(h, scenario, status):
    status_got, headers, body = scenario(h).only
    assert status_got == status
    assert header_map(headers) == {"content-type": "application/json"}
    document = orjson.loads(body)
    assert set(document) >= {"errorMessage", "errorType"}
    assert isinstance(document["errorMessage"], str)
    assert isinstance(document["errorType"], str)
    assert document["errorType"]


def test_protocol_error_is_json_with_string_error_fields(h):
    headers, body = h.api.protocol_error(431, "Request line and headers are too large")
    assert header_map(headers) == {"content-type": "application/json"}
    document = orjson.loads(body)
    assert document["errorMessage"] == "Request line and headers are too large"
    assert isinstance(document["errorType"], str)


# ------------------------------------------------------ connections, close
def test_connection_lost_with_parked_next_drops_waiter_so_offer_returns_false(h):
    conn = h.next()
    h.api.connection_lost(conn)
    assert h.slot.idle is False
    assert h.slot.offer(h.invocation()) is False
    assert conn.responses == []


def test_connection_lost_of_another_connection_keeps_parked_next(h):
    parked = h.next()
    h.api.connection_lost(RecordingConnection())
    assert h.slot.offer(h.invocation()) is True
    assert parked.only[0] == 200


def test_connection_lost_of_displaced_next_keeps_the_newer_one(h):
    first = h.next()
    second = h.next()
    h.api.connection_lost(first)
    assert h.slot.offer(h.invocation()) is True
    assert second.only[0] == 200


def test_connection_lost_after_delivery_does_not_drop_a_later_parked_next(h):
    old = h.next()
    assert h.slot.offer(h.invocation("req-1")) is True
    assert old.only[0] == 200
    h.post(b"invocation/req-1/response", b"ok")
    # The runtime's next /next comes on a new connection; the old one goes away.
    parked = h.next()
    h.api.connection_lost(old)
    assert h.slot.idle is True
    assert h.slot.offer(h.invocation("req-2")) is True
    assert parked.only[0] == 200


def test_close_while_running_returns_unanswered_invocation(h):
    invocation = h.running()
    assert h.slot.close() is invocation
    assert h.done.calls == []


def test_close_while_ready_returns_none(h):
    h.next()
    assert h.slot.close() is None
    assert h.slot.offer(h.invocation()) is False


def test_next_after_close_does_not_deliver(h):
    h.slot.close()
    h.host.queue.append(h.invocation())
    conn = h.next()
    assert conn.responses == []
    assert h.slot.offer(h.invocation("req-2")) is False
    assert conn.responses == []
    assert h.host.names() == []
