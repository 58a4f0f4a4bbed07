"""One event on its way through an execution environment, and its outcome."""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Final

# Limits from the Runtime API (see shared/spec/lambda-api.md 1.9).
MAX_RESPONSE_BYTES: Final = 6_291_556


class Outcome(enum.Enum):
    SUCCESS = "success"
    # The runtime reported an error (`/error`, `/init/error`) or the platform
    # made one (timeout, crash, oversized response). Either way the caller sees
    # 200 + `X-Amz-Function-Error: Unhandled`.
    FUNCTION_ERROR = "function_error"


class Invocation:
    """What the Runtime API hands to `/next` and what comes back.

    Plain slots class: one is made per invoke on the hot path, so no
    dataclass machinery and no validation here. Header values are bytes,
    ready to be written on the wire.
    """

    __slots__ = (
        "client_context",
        "cognito_identity",
        "content_type",
        "deadline_ms",
        "function_arn",
        "log_tail",
        "on_complete",
        "payload",
        "request_id",
        "started_ns",
        "timeout_ms",
        "trace_id",
    )

    def __init__(
        self,
        request_id: str,
        payload: bytes,
        function_arn: bytes,
        timeout_ms: int,
        trace_id: bytes,
        on_complete: Callable[[Invocation, Outcome, bytes, bytes], None],
        *,
        content_type: bytes = b"application/json",
        client_context: bytes | None = None,
        cognito_identity: bytes | None = None,
    ) -> None:
        self.request_id = request_id
        self.payload = payload
        self.function_arn = function_arn
        self.timeout_ms = timeout_ms
        self.trace_id = trace_id
        # Called exactly once with (invocation, outcome, body, content_type).
        self.on_complete = on_complete
        self.content_type = content_type
        self.client_context = client_context
        self.cognito_identity = cognito_identity
        # The caller asked for LogType=Tail: the host collects this
        # invocation's log lines here (bounded) for X-Amz-Log-Result.
        self.log_tail: bytearray | None = None
        # Set when the invocation is handed to the runtime.
        self.deadline_ms = 0
        self.started_ns = 0

    def __repr__(self) -> str:
        return f"Invocation({self.request_id})"
