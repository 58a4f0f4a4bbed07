"""One execution environment: a sandbox, its Runtime API slot, its logs.

    CREATING -> INITIALISING -> READY <-> BUSY
        \\             \\           \\      /
         +------------- DRAINING -------+ -> DEAD

Every transition goes through `_to()`, which refuses the ones not drawn
above. The environment is driven by callbacks (slot events, timers, the
process-exit future); its only task is `run()`, one per environment life.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import os
import signal
import time
from typing import TYPE_CHECKING, Final

import orjson

from rapi.http import ConnectionGate, HttpProtocol
from rapi.invocation import Invocation, Outcome
from rapi.runtime_api import LIMITS, RuntimeApi
from rapi.slot import RuntimeSlot
from runtime.logs import FunctionLog, LogPump, LogSource, utc_timestamp
from sandbox.errors import SandboxError, SandboxSetupError

if TYPE_CHECKING:
    from runtime.router import FunctionRouter
    from sandbox.spawner import Exit, SandboxProcess, Spawner
    from sandbox.spec import SandboxSpec

# Lambda gives on-demand init 10 s before it gives up on it.
INIT_TIMEOUT_S: Final = 10.0
# After /init/error the runtime is expected to exit; this is how long it gets.
INIT_ERROR_GRACE_S: Final = 1.0
# Runtime API connections one environment may hold open (runtimes use 1-3).
RUNTIME_API_CONNECTIONS: Final = 32
# Output an environment may log per invocation (and during init).
LOG_BUDGET_BYTES: Final = 8 * 1024 * 1024
# What X-Amz-Log-Result carries: the last 4 KB of the invocation's log.
LOG_TAIL_BYTES: Final = 4096


class EnvState(enum.Enum):
    CREATING = "creating"
    INITIALISING = "initialising"
    READY = "ready"
    BUSY = "busy"
    DRAINING = "draining"
    DEAD = "dead"


_ALLOWED: Final = {
    EnvState.CREATING: {EnvState.INITIALISING, EnvState.DRAINING, EnvState.DEAD},
    EnvState.INITIALISING: {EnvState.READY, EnvState.DRAINING},
    EnvState.READY: {EnvState.BUSY, EnvState.DRAINING},
    EnvState.BUSY: {EnvState.READY, EnvState.DRAINING},
    EnvState.DRAINING: {EnvState.DEAD},
    EnvState.DEAD: set(),
}


class IllegalTransition(RuntimeError):
    pass


def platform_error(error_type: str, message: str) -> bytes:
    """A platform-made function error, in the key order AWS uses."""
    return orjson.dumps({"errorType": error_type, "errorMessage": message})


def exit_message(status: int) -> str:
    """Describe a wait status the way Lambda (Go's ProcessState) does."""
    code = os.waitstatus_to_exitcode(status)
    if code == 0:
        return "Runtime exited without providing a reason"
    if code > 0:
        return f"Runtime exited with error: exit status {code}"
    name = signal.strsignal(-code) or f"signal {-code}"
    return f"Runtime exited with error: signal: {name[0].lower() + name[1:]}"


class Environment(LogSource):
    """Implements rapi.slot.SlotHost for the router that owns it."""

    def __init__(
        self,
        router: FunctionRouter,
        spawner: Spawner,
        spec: SandboxSpec,
        log: FunctionLog,
        init_timeout_s: float = INIT_TIMEOUT_S,
        suppressed_init: bool = False,
    ) -> None:
        self.router = router
        # A suppressed init is Lambda's retry of a timed-out init during the
        # first invoke, bounded by the function timeout instead.
        self.suppressed_init = suppressed_init
        self._init_timeout_s = router.function.timeout_s if suppressed_init else init_timeout_s
        self._spawner = spawner
        self._spec = spec
        self._log = log
        self._loop = asyncio.get_running_loop()
        self.state = EnvState.CREATING
        self.slot = RuntimeSlot(self)
        self.process: SandboxProcess | None = None
        self._server: asyncio.AbstractServer | None = None
        self._log_transport: asyncio.ReadTransport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._created_ns = time.perf_counter_ns()
        self._init_ms: float | None = None
        self._report_init = False
        self._ended_by: str | None = None
        self._request_id = b"INIT"
        self._timeout_s = router.function.timeout_s
        self._memory_peak_fd = -1
        self._log_budget = LOG_BUDGET_BYTES
        self._tail: bytearray | None = None
        self._unanswered: Invocation | None = None

    # ------------------------------------------------------------ lifecycle
    def _to(self, state: EnvState) -> None:
        if state not in _ALLOWED[self.state]:
            raise IllegalTransition(f"environment {self.state.value} -> {state.value}")
        self.state = state

    async def run(self) -> None:
        """Create the sandbox, serve its Runtime API, wait for it to end."""
        try:
            self.process = await self._spawner.spawn(self._spec)
        except SandboxError as exc:
            self._to(EnvState.DEAD)
            self.router.environment_failed_to_start(self, exc)
            return
        process = self.process
        try:
            if self.state is EnvState.CREATING:
                try:
                    await self._attach(process)
                except OSError as exc:
                    self._log.platform(b"could not attach to the sandbox: %s" % str(exc).encode())
                    self.stop("attach failed")
                else:
                    self._to(EnvState.INITIALISING)
                    self._timer = self._loop.call_later(self._init_timeout_s, self._init_timed_out)
            else:  # stopped while we were spawning
                process.kill()
            ended = await process.exited
        finally:
            # On cancellation (host shutdown) this is where the sandbox dies.
            if not process.exited.done():
                process.kill()
        self._ended(ended)

    async def _attach(self, process: SandboxProcess) -> None:
        assert process.listener is not None
        api = RuntimeApi(self.slot)
        gate = ConnectionGate(RUNTIME_API_CONNECTIONS)
        self._server = await self._loop.create_server(
            lambda: HttpProtocol(api, LIMITS, gate), sock=process.listener, start_serving=True
        )
        pipe = open(process.log_fd, "rb", buffering=0, closefd=True)  # noqa: SIM115 - owned by the transport
        self._log_transport, _ = await self._loop.connect_read_pipe(lambda: LogPump(self), pipe)
        if process.memory_peak_path is not None:
            with contextlib.suppress(OSError):
                self._memory_peak_fd = os.open(process.memory_peak_path, os.O_RDONLY | os.O_CLOEXEC)

    def stop(self, reason: str = "shutdown", grace_s: float = 0.0) -> None:
        """End the sandbox; `run()` finishes when the spawner reaps it.

        With a grace period the bootstrap gets SIGTERM first (its init
        forwards it) and SIGKILL when the grace is over, as Lambda does.
        """
        if self.state in (EnvState.DRAINING, EnvState.DEAD):
            return
        self._ended_by = self._ended_by or reason
        self._to(EnvState.DRAINING)
        self._cancel_timer()
        # No more offers or /next deliveries; a running invocation is answered
        # when the process is gone (`_ended`).
        self._unanswered = self.slot.close()
        if self.process is not None:
            if grace_s > 0:
                self.process.kill(signal.SIGTERM)
                self._timer = self._loop.call_later(grace_s, self.process.kill)
            else:
                self.process.kill()

    def _ended(self, ended: Exit) -> None:
        self._cancel_timer()
        before_ready = self._init_ms is None
        unanswered = self.slot.close() or self._unanswered
        self._unanswered = None
        if self.state is not EnvState.DRAINING:
            self._to(EnvState.DRAINING)
        # An OOM kill shows as SIGKILL; the cgroup's counter tells them apart.
        error_type = "Runtime.OutOfMemory" if ended.oom_kills else "Runtime.ExitError"
        if unanswered is not None:
            message = f"RequestId: {unanswered.request_id} Error: {exit_message(ended.status)}"
            self._log.platform(b"%s %s" % (unanswered.request_id.encode(), message.encode()))
            self._log.platform(error_type.encode())
            self._complete(unanswered, error_type, platform_error(error_type, message))
        elif before_ready and self._ended_by is None:
            self._init_report(b"error", error_type)
            self.router.init_failed(
                self,
                lambda rid: platform_error(
                    error_type, f"RequestId: {rid} Error: {exit_message(ended.status)}"
                ),
            )
        self._release()
        self._to(EnvState.DEAD)
        self.router.environment_ended(self)

    def _release(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        if self._log_transport is not None:
            # Every process of the sandbox is gone with its pid namespace, so
            # the pipe reaches EOF by itself once the pump has read the rest.
            self._log_transport = None
        elif self.process is not None:
            with contextlib.suppress(OSError):
                os.close(self.process.log_fd)
        if self.process is not None:
            self.process.close()
        if self._memory_peak_fd >= 0:
            os.close(self._memory_peak_fd)
            self._memory_peak_fd = -1

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _init_timed_out(self) -> None:
        self._timer = None
        self._ended_by = "init timeout"
        self._init_report(b"timeout", "Sandbox.Timedout")
        if self.suppressed_init:
            message = f"Task timed out after {self._timeout_s:.2f} seconds"
            self.router.init_failed(
                self,
                lambda rid: platform_error(
                    "Sandbox.Timedout", f"RequestId: {rid} Error: {message}"
                ),
            )
        else:
            self.router.retry_init()
        self.stop("init timeout")

    # ------------------------------------------------------- SlotHost side
    def runtime_ready(self) -> None:
        if self.state is not EnvState.INITIALISING:
            return  # being torn down already (init timeout, shutdown)
        self._cancel_timer()
        self._init_ms = (time.perf_counter_ns() - self._created_ns) / 1e6
        self._report_init = True
        self._to(EnvState.READY)

    def next_invocation(self) -> Invocation | None:
        if self.state is not EnvState.READY:
            return None  # draining: queued invocations wait for the next environment
        return self.router.next_invocation()

    def invocation_started(self, invocation: Invocation) -> None:
        self._to(EnvState.BUSY)
        invocation.started_ns = time.perf_counter_ns()
        invocation.deadline_ms = int(time.time() * 1000) + invocation.timeout_ms
        rid = invocation.request_id.encode()
        self._request_id = rid
        self._log_budget = LOG_BUDGET_BYTES
        self._timer = self._loop.call_later(invocation.timeout_ms / 1000, self._timed_out)
        self._tail = invocation.log_tail
        self._platform(b"START RequestId: %s Version: $LATEST" % rid)

    def invocation_finished(self, invocation: Invocation) -> None:
        self._cancel_timer()
        self._to(EnvState.READY)
        if self._tail is not None:
            self._drain_output()
        self._report(invocation, b"")
        self._tail = None

    def init_failed(self, body: bytes, content_type: bytes) -> None:
        self._cancel_timer()
        self._ended_by = "init error"
        try:
            error_type = str(orjson.loads(body).get("errorType", "Runtime.Unknown"))
        except (orjson.JSONDecodeError, AttributeError):
            error_type = "Runtime.Unknown"
        self._init_report(b"error", error_type)
        self.router.init_failed(self, lambda _rid: body)
        # The runtime should exit by itself after /init/error; make sure.
        self._timer = self._loop.call_later(INIT_ERROR_GRACE_S, self.stop, "init error")

    def _init_report(self, status: bytes, error_type: str) -> None:
        """Lambda's line for an init that failed (checklist 126)."""
        elapsed = (time.perf_counter_ns() - self._created_ns) / 1e6
        phase = b"invoke" if self.suppressed_init else b"init"
        self._log.platform(
            b"INIT_REPORT Init Duration: %.2f ms\tPhase: %s\tStatus: %s\tError Type: %s"
            % (elapsed, phase, status, error_type.encode())
        )

    # ------------------------------------------------------------- timeouts
    def _timed_out(self) -> None:
        self._timer = None
        invocation = self.slot.current
        self._ended_by = "timeout"
        unanswered = self.slot.close()
        if unanswered is not None and invocation is not None:
            message = f"Task timed out after {self._timeout_s:.2f} seconds"
            rid = invocation.request_id.encode()
            self._report(invocation, b"Status: timeout")
            self._log.platform(b"%s %s %s" % (utc_timestamp(), rid, message.encode()))
            invocation.on_complete(
                invocation,
                Outcome.FUNCTION_ERROR,
                platform_error(
                    "Sandbox.Timedout", f"RequestId: {invocation.request_id} Error: {message}"
                ),
                b"application/json",
            )
        self.stop("timeout")

    # ----------------------------------------------------------------- logs
    def log_output(self, line: bytes) -> None:
        # A function printing gigabytes must not fill the host's disk: past
        # the budget, its lines are dropped (once noted) until the next invoke.
        budget = self._log_budget - len(line)
        self._log_budget = budget
        if budget >= 0:
            self._log.output(self._request_id, line)
            if self._tail is not None:
                self._keep_tail(line)
        elif budget + len(line) >= 0:
            self._log.output(
                self._request_id,
                b"[firelet] more than %d bytes of output in one invocation; the rest is dropped"
                % LOG_BUDGET_BYTES,
            )

    def _max_memory_mb(self) -> int:
        """Peak memory of the environment so far, from its cgroup (one pread)."""
        if self._memory_peak_fd < 0:
            return 0
        try:
            return int(os.pread(self._memory_peak_fd, 32, 0)) >> 20
        except (OSError, ValueError):
            return 0

    def _report(self, invocation: Invocation, status: bytes) -> None:
        rid = invocation.request_id.encode()
        duration = (time.perf_counter_ns() - invocation.started_ns) / 1e6
        line = b"REPORT RequestId: %s\tDuration: %.2f ms\tBilled Duration: %d ms\t" % (
            rid,
            duration,
            -(-duration // 1),
        )
        line += b"Memory Size: %d MB\tMax Memory Used: %d MB\t" % (
            self.router.function.memory_mb,
            self._max_memory_mb(),
        )
        if self._report_init and self._init_ms is not None:
            line += b"Init Duration: %.2f ms\t" % self._init_ms
            self._report_init = False
        self._platform(b"END RequestId: %s" % rid)
        self._platform(line + status)

    def _platform(self, line: bytes) -> None:
        self._log.platform(line)
        if self._tail is not None:
            self._keep_tail(line)

    def _keep_tail(self, line: bytes) -> None:
        tail = self._tail
        assert tail is not None
        tail += line + b"\n"
        if len(tail) > 4 * LOG_TAIL_BYTES:
            del tail[:-LOG_TAIL_BYTES]

    def _drain_output(self) -> None:
        """Read what the runtime printed before it posted its response, so
        the log tail the caller asked for has it (the pump may lag)."""
        transport = self._log_transport
        pipe = transport.get_extra_info("pipe") if transport is not None else None
        if pipe is None:
            return
        protocol = transport.get_protocol()  # type: ignore[union-attr]
        assert isinstance(protocol, LogPump)
        for _ in range(16):
            try:
                data = os.read(pipe.fileno(), 65536)
            except (BlockingIOError, OSError, ValueError):
                return
            if not data:
                return
            protocol.data_received(data)

    def _complete(self, invocation: Invocation, error_type: str, body: bytes) -> None:
        self._report(invocation, b"Status: error\tError Type: %s" % error_type.encode())
        invocation.on_complete(invocation, Outcome.FUNCTION_ERROR, body, b"application/json")


def describe_setup_error(exc: SandboxError) -> tuple[str, str]:
    """Map a sandbox failure to the Lambda error type the caller sees."""
    if isinstance(exc, SandboxSetupError) and exc.step.startswith("exec "):
        return "Runtime.InvalidEntrypoint", f"Couldn't find valid bootstrap(s): {exc.message}"
    return "Sandbox.Failure", str(exc)
