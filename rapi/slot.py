"""The Runtime API state machine of one execution environment, without I/O.

States follow the Runtime Interface Emulator's runtime states (see the spec,
1.8). The asyncio side feeds requests in and writes out what comes back; the
host side offers invocations and is told when one starts and ends.

    STARTED --/init/error--> INIT_ERROR
       | first /next
       v
    READY --offer--> RUNNING --/response|/error--> RESPONSE_SENT --/next--> READY ...
                                                                  (or RUNNING at once)
    any state --close()--> CLOSED
"""

from __future__ import annotations

import enum
from typing import Final, Protocol

import orjson

from rapi.invocation import MAX_RESPONSE_BYTES, Invocation, Outcome


class State(enum.Enum):
    STARTED = "Started"
    READY = "Ready"
    RUNNING = "Running"
    RESPONSE_SENT = "ResponseSent"
    INIT_ERROR = "InitError"
    CLOSED = "Closed"


class SlotHost(Protocol):
    """The environment that owns a slot."""

    def runtime_ready(self) -> None:
        """The runtime called `/next` for the first time: init is over."""

    def next_invocation(self) -> Invocation | None:
        """Pop the next queued invocation for this environment, if any."""

    def invocation_started(self, invocation: Invocation) -> None:
        """Stamp the deadline and arm the timeout; called before delivery."""

    def invocation_finished(self, invocation: Invocation) -> None:
        """Disarm the timeout; called just before `invocation.on_complete`."""

    def init_failed(self, body: bytes, content_type: bytes) -> None:
        """The runtime reported `/init/error`; the environment is finished."""


class Waiter(Protocol):
    """A parked `GET /next`."""

    def deliver(self, invocation: Invocation) -> None: ...

    def displace(self) -> None:
        """Another `/next` took this one's place; answer it with an error."""


def error_body(error_type: str, message: str) -> bytes:
    """A Runtime API error document as RIE writes it (compact, newline)."""
    return orjson.dumps({"errorMessage": message, "errorType": error_type}) + b"\n"


ACCEPTED: Final = (202, b'{"status":"OK"}\n')
INVALID_REQUEST_ID: Final = (400, error_body("InvalidRequestID", "Invalid request ID"))
TOO_LARGE: Final = (
    413,
    error_body(
        "RequestEntityTooLarge",
        f"Exceeded maximum allowed payload size ({MAX_RESPONSE_BYTES} bytes).",
    ),
)
RESPONSE_TOO_LARGE_FOR_CALLER: Final = orjson.dumps(
    {
        "errorMessage": "Response payload size exceeded maximum allowed payload size "
        f"({MAX_RESPONSE_BYTES} bytes).",
        "errorType": "Function.ResponseSizeTooLarge",
    }
)

Verdict = tuple[int, bytes]


def _invalid_transition(source: State, target: str) -> Verdict:
    return (
        403,
        error_body(
            "InvalidStateTransition",
            f"State transition from {source.value} to {target} failed for runtime. "
            "Error: State transition is not allowed",
        ),
    )


class RuntimeSlot:
    """One environment's side of the Runtime API."""

    __slots__ = ("_host", "_waiter", "current", "state")

    def __init__(self, host: SlotHost) -> None:
        self._host = host
        self.state = State.STARTED
        self.current: Invocation | None = None
        self._waiter: Waiter | None = None

    # ---------------------------------------------------------------- /next
    def on_next(self, waiter: Waiter) -> Invocation | None:
        """The runtime asks for work. Returns an invocation to render now,
        or None when `waiter` is parked until `offer()`."""
        state = self.state
        if state is State.RUNNING:
            # A repeated /next re-delivers the unanswered invocation (RIE does).
            return self.current
        if state is State.STARTED:
            self.state = State.READY
            self._host.runtime_ready()
        elif state is State.RESPONSE_SENT:
            self.current = None
            self.state = State.READY
        elif state is not State.READY:
            return None  # INIT_ERROR / CLOSED: the process is being torn down
        invocation = self._host.next_invocation()
        if invocation is not None:
            self._start(invocation)
            return invocation
        if self._waiter is not None and self._waiter is not waiter:
            self._waiter.displace()
        self._waiter = waiter
        return None

    def offer(self, invocation: Invocation) -> bool:
        """Hand `invocation` to a parked `/next`. False if none is parked."""
        waiter = self._waiter
        if waiter is None or self.state is not State.READY:
            return False
        self._waiter = None
        self._start(invocation)
        waiter.deliver(invocation)
        return True

    @property
    def idle(self) -> bool:
        """True when a `/next` is parked and an offer would be taken."""
        return self._waiter is not None and self.state is State.READY

    def drop_waiter(self, waiter: Waiter) -> None:
        if self._waiter is waiter:
            self._waiter = None

    def _start(self, invocation: Invocation) -> None:
        self.current = invocation
        self.state = State.RUNNING
        self._host.invocation_started(invocation)

    # ------------------------------------------------------ /response, /error
    def _check(self, request_id: str, target: str) -> Verdict | None:
        current = self.current
        if current is None or current.request_id != request_id:
            return INVALID_REQUEST_ID
        if self.state is not State.RUNNING:
            return _invalid_transition(self.state, target)
        return None

    def on_response(self, request_id: str, body: bytes, content_type: bytes) -> Verdict:
        rejected = self._check(request_id, "InvocationResponse")
        if rejected is not None:
            return rejected
        self._finish(Outcome.SUCCESS, body, content_type)
        return ACCEPTED

    def on_response_too_large(self, request_id: str) -> Verdict:
        """The runtime posted more than MAX_RESPONSE_BYTES: 413 to it, and a
        Function.ResponseSizeTooLarge error to the caller."""
        rejected = self._check(request_id, "InvocationResponse")
        if rejected is not None:
            return rejected
        self._finish(Outcome.FUNCTION_ERROR, RESPONSE_TOO_LARGE_FOR_CALLER, b"application/json")
        return TOO_LARGE

    def on_error(self, request_id: str, body: bytes, content_type: bytes) -> Verdict:
        rejected = self._check(request_id, "InvocationErrorResponse")
        if rejected is not None:
            return rejected
        self._finish(Outcome.FUNCTION_ERROR, body, content_type)
        return ACCEPTED

    def on_init_error(self, body: bytes, content_type: bytes) -> Verdict:
        if self.state is not State.STARTED:
            return _invalid_transition(self.state, State.INIT_ERROR.value)
        self.state = State.INIT_ERROR
        self._host.init_failed(body, content_type)
        return ACCEPTED

    def _finish(self, outcome: Outcome, body: bytes, content_type: bytes) -> None:
        invocation = self.current
        assert invocation is not None
        self.state = State.RESPONSE_SENT
        self._host.invocation_finished(invocation)
        invocation.on_complete(invocation, outcome, body, content_type)

    # ------------------------------------------------------------- teardown
    def close(self) -> Invocation | None:
        """The environment is going away. Returns the invocation that was
        running and never answered (the caller must still be told), if any."""
        unanswered = self.current if self.state is State.RUNNING else None
        self.state = State.CLOSED
        self.current = None
        self._waiter = None
        return unanswered
