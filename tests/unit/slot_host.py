"""A recording SlotHost shared by the Runtime API unit tests."""

from __future__ import annotations

from collections import deque
from typing import Any

from rapi.invocation import Invocation

DEADLINE_MS = 1_700_000_123_456


class RecordingHost:
    """A SlotHost that records every call and serves invocations from a FIFO."""

    def __init__(self) -> None:
        self.queue: deque[Invocation] = deque()
        self.calls: list[tuple[Any, ...]] = []

    def names(self) -> list[str]:
        return [call[0] for call in self.calls]

    def runtime_ready(self) -> None:
        self.calls.append(("runtime_ready",))

    def next_invocation(self) -> Invocation | None:
        self.calls.append(("next_invocation",))
        return self.queue.popleft() if self.queue else None

    def invocation_started(self, invocation: Invocation) -> None:
        invocation.deadline_ms = DEADLINE_MS
        self.calls.append(("invocation_started", invocation))

    def invocation_finished(self, invocation: Invocation) -> None:
        self.calls.append(("invocation_finished", invocation))

    def init_failed(self, body: bytes, content_type: bytes) -> None:
        self.calls.append(("init_failed", body, content_type))
