"""RuntimeSlot, the sans-IO Runtime API state machine (spec 1.3-1.8, checklist 7.1/7.2)."""

from __future__ import annotations

import orjson
import pytest

from rapi.invocation import MAX_RESPONSE_BYTES, Invocation, Outcome
from rapi.slot import RuntimeSlot, State
from tests.unit.slot_host import DEADLINE_MS, RecordingHost

STATE_NOT_ALLOWED = "failed for runtime. Error: State transition is not allowed"


class RecordingWaiter:
    def __init__(self) -> None:
        self.delivered: list[Invocation] = []
        self.displaced = 0

    def deliver(self, invocation: Invocation) -> None:
        self.delivered.append(invocation)

    def displace(self) -> None:
        self.displaced += 1


class Completions:
    """Collects on_complete calls; also remembers what the host had seen by then."""

    def __init__(self, host: RecordingHost) -> None:
        self.host = host
        self.calls: list[tuple[Invocation, Outcome, bytes, bytes]] = []
        self.host_calls_at_completion: list[list[str]] = []

    def __call__(
        self, invocation: Invocation, outcome: Outcome, body: bytes, content_type: bytes
    ) -> None:
        self.calls.append((invocation, outcome, body, content_type))
        self.host_calls_at_completion.append(self.host.names())


@pytest.fixture
def host() -> RecordingHost:
    return RecordingHost()


@pytest.fixture
def slot(host: RecordingHost) -> RuntimeSlot:
    return RuntimeSlot(host)


@pytest.fixture
def done(host: RecordingHost) -> Completions:
    return Completions(host)


def make_invocation(done: Completions, request_id: str = "req-1", payload: bytes = b'{"a":1}'):
    return Invocation(
        request_id,
        payload,
        b"arn:aws:lambda:us-east-1:000000000000:function:f",
        3000,
        b"Root=1-00000000-000000000000000000000000;Parent=0000000000000000;Sampled=0",
        done,
    )


def running(slot: RuntimeSlot, host: RecordingHost, invocation: Invocation) -> None:
    """Bring the slot to RUNNING with `invocation` via a parked /next."""
    waiter = RecordingWaiter()
    assert slot.on_next(waiter) is None
    assert slot.offer(invocation) is True
    assert waiter.delivered == [invocation]
    assert slot.state is State.RUNNING


def error_of(verdict: tuple[int, bytes]) -> tuple[int, str, str]:
    status, body = verdict
    document = orjson.loads(body)
    return status, document["errorType"], document["errorMessage"]


# ---------------------------------------------------------------- /next, offer
def test_first_next_calls_runtime_ready_once_and_parks_when_nothing_queued(slot, host):
    waiter = RecordingWaiter()
    assert slot.on_next(waiter) is None
    assert host.names() == ["runtime_ready", "next_invocation"]
    assert slot.state is State.READY
    assert slot.idle is True
    assert waiter.delivered == []


def test_later_next_does_not_call_runtime_ready_again(slot, host, done):
    running(slot, host, make_invocation(done))
    slot.on_response("req-1", b"ok", b"application/json")
    assert slot.on_next(RecordingWaiter()) is None
    assert host.names().count("runtime_ready") == 1


def test_offer_delivers_to_parked_waiter_and_starts_invocation(slot, host, done):
    waiter = RecordingWaiter()
    slot.on_next(waiter)
    invocation = make_invocation(done)
    assert slot.offer(invocation) is True
    assert waiter.delivered == [invocation]
    assert slot.current is invocation
    assert slot.state is State.RUNNING
    assert slot.idle is False
    # invocation_started runs before delivery, so the deadline is already stamped.
    assert host.calls[-1] == ("invocation_started", invocation)
    assert invocation.deadline_ms == DEADLINE_MS


def test_offer_with_nothing_parked_returns_false(slot, host, done):
    invocation = make_invocation(done)
    assert slot.offer(invocation) is False
    assert slot.state is State.STARTED
    assert slot.current is None
    assert "invocation_started" not in host.names()


def test_offer_while_running_returns_false(slot, host, done):
    first = make_invocation(done, "req-1")
    running(slot, host, first)
    assert slot.offer(make_invocation(done, "req-2")) is False
    assert slot.current is first


def test_second_offer_after_delivery_returns_false(slot, host, done):
    slot.on_next(RecordingWaiter())
    assert slot.offer(make_invocation(done, "req-1")) is True
    assert slot.offer(make_invocation(done, "req-2")) is False


def test_next_takes_queued_invocation_immediately(slot, host, done):
    invocation = make_invocation(done)
    host.queue.append(invocation)
    waiter = RecordingWaiter()
    assert slot.on_next(waiter) is invocation
    assert host.names() == ["runtime_ready", "next_invocation", "invocation_started"]
    assert slot.state is State.RUNNING
    assert slot.current is invocation
    assert slot.idle is False
    # Returned for rendering now; the waiter itself is not used.
    assert waiter.delivered == []


def test_next_after_response_takes_queued_invocation_at_once(slot, host, done):
    running(slot, host, make_invocation(done, "req-1"))
    slot.on_response("req-1", b"ok", b"application/json")
    second = make_invocation(done, "req-2")
    host.queue.append(second)
    assert slot.on_next(RecordingWaiter()) is second
    assert slot.state is State.RUNNING
    assert slot.current is second


def test_second_next_while_running_returns_same_invocation_without_starting_another(
    slot, host, done
):
    invocation = make_invocation(done)
    running(slot, host, invocation)
    host.queue.append(make_invocation(done, "req-2"))
    calls_before = list(host.calls)
    assert slot.on_next(RecordingWaiter()) is invocation
    assert host.calls == calls_before  # no next_invocation, no invocation_started
    assert slot.state is State.RUNNING
    assert len(host.queue) == 1


def test_new_next_displaces_parked_waiter(slot, host):
    first, second = RecordingWaiter(), RecordingWaiter()
    slot.on_next(first)
    assert slot.on_next(second) is None
    assert first.displaced == 1
    assert second.displaced == 0


def test_same_waiter_parking_twice_is_not_displaced(slot):
    waiter = RecordingWaiter()
    slot.on_next(waiter)
    slot.on_next(waiter)
    assert waiter.displaced == 0
    assert slot.idle is True


def test_offer_goes_to_the_newest_parked_waiter(slot, host, done):
    first, second = RecordingWaiter(), RecordingWaiter()
    slot.on_next(first)
    slot.on_next(second)
    invocation = make_invocation(done)
    assert slot.offer(invocation) is True
    assert second.delivered == [invocation]
    assert first.delivered == []


def test_drop_waiter_makes_later_offer_return_false(slot, host, done):
    waiter = RecordingWaiter()
    slot.on_next(waiter)
    slot.drop_waiter(waiter)
    assert slot.idle is False
    assert slot.offer(make_invocation(done)) is False
    assert waiter.delivered == []


def test_drop_waiter_of_a_different_waiter_keeps_the_parked_one(slot, host, done):
    first, second = RecordingWaiter(), RecordingWaiter()
    slot.on_next(first)
    slot.on_next(second)  # first is displaced
    slot.drop_waiter(first)
    assert slot.idle is True
    assert slot.offer(make_invocation(done)) is True
    assert len(second.delivered) == 1


# ------------------------------------------------------------ /response, /error
def test_response_for_current_id_is_202_and_completes_once_with_success(slot, host, done):
    invocation = make_invocation(done)
    running(slot, host, invocation)
    assert slot.on_response("req-1", b"\x00result\xff", b"text/plain") == (
        202,
        b'{"status":"OK"}\n',
    )
    assert done.calls == [(invocation, Outcome.SUCCESS, b"\x00result\xff", b"text/plain")]
    assert slot.state is State.RESPONSE_SENT
    assert host.calls[-1] == ("invocation_finished", invocation)


def test_invocation_finished_is_called_before_on_complete(slot, host, done):
    running(slot, host, make_invocation(done))
    slot.on_response("req-1", b"ok", b"application/json")
    assert done.host_calls_at_completion[0][-1] == "invocation_finished"


def test_response_with_unknown_id_is_400_invalid_request_id(slot, host, done):
    running(slot, host, make_invocation(done))
    assert error_of(slot.on_response("nope", b"x", b"application/json")) == (
        400,
        "InvalidRequestID",
        "Invalid request ID",
    )
    assert done.calls == []
    assert slot.state is State.RUNNING


def test_response_before_any_invocation_is_400_invalid_request_id(slot):
    assert slot.on_response("req-1", b"x", b"application/json")[0] == 400
    slot.on_next(RecordingWaiter())
    assert error_of(slot.on_response("req-1", b"x", b"application/json"))[1] == ("InvalidRequestID")


def test_second_response_before_next_is_403_invalid_state_transition(slot, host, done):
    running(slot, host, make_invocation(done))
    slot.on_response("req-1", b"first", b"application/json")
    assert error_of(slot.on_response("req-1", b"second", b"application/json")) == (
        403,
        "InvalidStateTransition",
        f"State transition from ResponseSent to InvocationResponse {STATE_NOT_ALLOWED}",
    )
    assert len(done.calls) == 1
    assert done.calls[0][2] == b"first"


def test_late_response_after_next_is_400_invalid_request_id(slot, host, done):
    running(slot, host, make_invocation(done))
    slot.on_response("req-1", b"first", b"application/json")
    slot.on_next(RecordingWaiter())
    assert error_of(slot.on_response("req-1", b"late", b"application/json"))[:2] == (
        400,
        "InvalidRequestID",
    )
    assert len(done.calls) == 1


def test_error_after_response_is_403_invalid_state_transition(slot, host, done):
    running(slot, host, make_invocation(done))
    slot.on_response("req-1", b"ok", b"application/json")
    assert error_of(slot.on_error("req-1", b"{}", b"application/json")) == (
        403,
        "InvalidStateTransition",
        f"State transition from ResponseSent to InvocationErrorResponse {STATE_NOT_ALLOWED}",
    )
    assert [call[1] for call in done.calls] == [Outcome.SUCCESS]


def test_response_after_error_is_403_invalid_state_transition(slot, host, done):
    running(slot, host, make_invocation(done))
    assert slot.on_error("req-1", b"{}", b"application/json")[0] == 202
    assert error_of(slot.on_response("req-1", b"ok", b"application/json"))[:2] == (
        403,
        "InvalidStateTransition",
    )
    assert [call[1] for call in done.calls] == [Outcome.FUNCTION_ERROR]


def test_error_with_unknown_id_is_400_invalid_request_id(slot, host, done):
    running(slot, host, make_invocation(done))
    assert error_of(slot.on_error("nope", b"{}", b"application/json"))[:2] == (
        400,
        "InvalidRequestID",
    )
    assert done.calls == []


def test_error_is_202_and_caller_gets_function_error_with_body_verbatim(slot, host, done):
    invocation = make_invocation(done)
    running(slot, host, invocation)
    body = b'{"errorType":"X","errorMessage":"boom","trace":["a"]}'
    content_type = b"application/vnd.aws.lambda.error+json"
    assert slot.on_error("req-1", body, content_type) == (202, b'{"status":"OK"}\n')
    assert done.calls == [(invocation, Outcome.FUNCTION_ERROR, body, content_type)]
    assert slot.state is State.RESPONSE_SENT


def test_response_too_large_is_413_and_caller_gets_response_size_too_large(slot, host, done):
    invocation = make_invocation(done)
    running(slot, host, invocation)
    assert error_of(slot.on_response_too_large("req-1")) == (
        413,
        "RequestEntityTooLarge",
        f"Exceeded maximum allowed payload size ({MAX_RESPONSE_BYTES} bytes).",
    )
    assert len(done.calls) == 1
    called_with, outcome, body, content_type = done.calls[0]
    assert called_with is invocation
    assert outcome is Outcome.FUNCTION_ERROR
    assert orjson.loads(body)["errorType"] == "Function.ResponseSizeTooLarge"
    assert content_type == b"application/json"
    assert slot.state is State.RESPONSE_SENT


def test_response_too_large_with_unknown_id_is_400_and_completes_nothing(slot, host, done):
    running(slot, host, make_invocation(done))
    assert error_of(slot.on_response_too_large("nope"))[:2] == (400, "InvalidRequestID")
    assert done.calls == []


def test_next_after_oversized_response_delivers_next_event(slot, host, done):
    running(slot, host, make_invocation(done, "req-1"))
    slot.on_response_too_large("req-1")
    waiter = RecordingWaiter()
    assert slot.on_next(waiter) is None
    second = make_invocation(done, "req-2")
    assert slot.offer(second) is True
    assert waiter.delivered == [second]
    assert slot.on_response("req-2", b"ok", b"application/json")[0] == 202


# ------------------------------------------------------------------ /init/error
def test_init_error_before_first_next_is_202_and_reports_to_host(slot, host):
    body = b'{"errorType":"Runtime.ImportModuleError","errorMessage":"x"}'
    assert slot.on_init_error(body, b"application/json") == (202, b'{"status":"OK"}\n')
    assert host.calls == [("init_failed", body, b"application/json")]
    assert slot.state is State.INIT_ERROR


def test_init_error_after_next_is_403_invalid_state_transition(slot, host):
    slot.on_next(RecordingWaiter())
    assert error_of(slot.on_init_error(b"{}", b"application/json")) == (
        403,
        "InvalidStateTransition",
        f"State transition from Ready to InitError {STATE_NOT_ALLOWED}",
    )
    assert "init_failed" not in host.names()


def test_init_error_twice_is_403(slot, host):
    slot.on_init_error(b"{}", b"application/json")
    assert error_of(slot.on_init_error(b"{}", b"application/json"))[:2] == (
        403,
        "InvalidStateTransition",
    )
    assert host.names().count("init_failed") == 1


def test_next_after_init_error_does_not_deliver_or_park(slot, host, done):
    slot.on_init_error(b"{}", b"application/json")
    host.queue.append(make_invocation(done))
    assert slot.on_next(RecordingWaiter()) is None
    assert slot.idle is False
    assert "runtime_ready" not in host.names()
    assert "next_invocation" not in host.names()


# -------------------------------------------------------------------- close()
def test_close_while_running_returns_unanswered_invocation(slot, host, done):
    invocation = make_invocation(done)
    running(slot, host, invocation)
    assert slot.close() is invocation
    assert slot.state is State.CLOSED
    assert slot.current is None
    # The slot does not answer the caller itself; that is the host's job.
    assert done.calls == []


def test_close_after_response_returns_none(slot, host, done):
    running(slot, host, make_invocation(done))
    slot.on_response("req-1", b"ok", b"application/json")
    assert slot.close() is None


def test_close_while_ready_returns_none_and_forgets_parked_waiter(slot, host, done):
    waiter = RecordingWaiter()
    slot.on_next(waiter)
    assert slot.close() is None
    assert slot.idle is False
    assert slot.offer(make_invocation(done)) is False
    assert waiter.delivered == []


def test_next_after_close_does_not_deliver(slot, host, done):
    slot.close()
    host.queue.append(make_invocation(done))
    waiter = RecordingWaiter()
    assert slot.on_next(waiter) is None
    assert slot.idle is False
    assert slot.offer(make_invocation(done, "req-2")) is False
    assert waiter.delivered == []
    assert host.names() == []


def test_response_after_close_is_rejected_and_completes_nothing(slot, host, done):
    running(slot, host, make_invocation(done))
    slot.close()
    assert error_of(slot.on_response("req-1", b"ok", b"application/json"))[:2] == (
        400,
        "InvalidRequestID",
    )
    assert done.calls == []
