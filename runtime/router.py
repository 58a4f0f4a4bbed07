"""The hot path: an invocation in, handed to an environment's parked /next.

Per function: a FIFO of invocations not yet taken and the environment that
serves them. One environment per function for now; invocations that arrive
while it is busy wait in the FIFO (bounded: past `max_queue`, 429). The
environment pulls from the FIFO when its runtime calls /next, so nothing
here takes a lock, creates a task, logs or parses a payload.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from rapi.invocation import Invocation, Outcome
from runtime.environment import describe_setup_error, platform_error
from runtime.errors import ServiceError, TooManyRequests

if TYPE_CHECKING:
    from runtime.config import FunctionConfig
    from runtime.environment import Environment
    from sandbox.errors import SandboxError

# Starts a new environment for a router (the daemon's task group runs it);
# the flag asks for a suppressed init (see Environment).
EnvironmentFactory = Callable[["FunctionRouter", bool], "Environment"]


class FunctionRouter:
    __slots__ = ("_new_environment", "_retry_init", "arn", "env", "function", "pending", "stopped")

    def __init__(
        self, function: FunctionConfig, arn: str, new_environment: EnvironmentFactory
    ) -> None:
        self.function = function
        self.arn = arn
        self.pending: deque[Invocation] = deque()
        self.env: Environment | None = None
        self._new_environment = new_environment
        self._retry_init = False
        self.stopped = False

    def submit(self, invocation: Invocation) -> None:
        """Route one invocation. Raises TooManyRequests when the queue is full."""
        env = self.env
        if env is not None and env.slot.offer(invocation):
            return
        if self.stopped:
            raise ServiceError("The host is shutting down")
        if len(self.pending) >= self.function.max_queue:
            raise TooManyRequests(
                "Rate Exceeded.", Reason="ReservedFunctionConcurrentInvocationLimitExceeded"
            )
        self.pending.append(invocation)
        if env is None:
            self._start_environment()

    # ------------------------------------------------ called by environments
    def next_invocation(self) -> Invocation | None:
        pending = self.pending
        return pending.popleft() if pending else None

    def init_failed(self, env: Environment, body_for: Callable[[str], bytes]) -> None:
        """Init failed: the oldest waiting invocation gets the error (as in Lambda)."""
        if self.pending:
            invocation = self.pending.popleft()
            invocation.on_complete(
                invocation,
                Outcome.FUNCTION_ERROR,
                body_for(invocation.request_id),
                b"application/json",
            )

    def environment_failed_to_start(self, env: Environment, exc: SandboxError) -> None:
        error_type, message = describe_setup_error(exc)
        self.init_failed(
            env, lambda rid: platform_error(error_type, f"RequestId: {rid} Error: {message}")
        )
        self.environment_ended(env)

    def retry_init(self) -> None:
        """An init ran out of its 10 s: as Lambda does, the waiting invocation
        is not failed; the next environment retries init within its timeout."""
        self._retry_init = True

    def environment_ended(self, env: Environment) -> None:
        if self.env is env:
            self.env = None
        if self.pending:
            self._start_environment()

    def _start_environment(self) -> None:
        if self.stopped:
            return
        self.env = self._new_environment(self, self._retry_init)
        self._retry_init = False

    def stop(self, grace_s: float = 0.0) -> None:
        """Host shutdown: no new environments; the current one gets SIGTERM
        and, after `grace_s`, SIGKILL."""
        self.stopped = True
        if self.env is not None:
            self.env.stop("shutdown", grace_s)
