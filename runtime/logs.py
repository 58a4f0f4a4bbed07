"""Function logs: the bootstrap's output and the platform's START/END/REPORT lines.

Everything goes through one buffered sink that flushes once per loop
iteration, so a busy invoke path costs an append, not a write(2) per line.
Each line is prefixed with the function name and the request id in flight
(or "INIT" before the first invocation), the way CloudWatch groups them.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Final

# A single log line longer than this is cut into pieces.
MAX_LINE_BYTES: Final = 256 * 1024
_FLUSH_AT: Final = 256 * 1024


def utc_timestamp() -> bytes:
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)).encode() + b".%03dZ" % (
        int(now * 1000) % 1000
    )


class LogSink:
    """Buffered writer to one fd (the host's stderr by default)."""

    __slots__ = ("_buffer", "_fd", "_loop", "_scheduled")

    def __init__(self, fd: int = 2) -> None:
        self._fd = fd
        self._buffer = bytearray()
        self._scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None

    def write(self, data: bytes) -> None:
        self._buffer += data
        if len(self._buffer) >= _FLUSH_AT:
            self.flush()
        elif not self._scheduled:
            if self._loop is None:
                self._loop = asyncio.get_running_loop()
            self._scheduled = True
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        self._scheduled = False
        data = self._buffer
        if not data:
            return
        self._buffer = bytearray()
        view = memoryview(data)
        while view:
            try:
                written = os.write(self._fd, view)
            except BlockingIOError:
                continue
            except OSError:
                return  # nowhere to log to; never take the host down for it
            view = view[written:]


class FunctionLog:
    """Log lines of one function."""

    __slots__ = ("prefix", "sink")

    def __init__(self, sink: LogSink, function_name: str) -> None:
        self.sink = sink
        self.prefix = f"[{function_name}] ".encode()

    def output(self, request_id: bytes, line: bytes) -> None:
        """One line the bootstrap printed (without its newline)."""
        self.sink.write(b"%s%s %s\n" % (self.prefix, request_id, line))

    def platform(self, line: bytes) -> None:
        self.sink.write(b"%s%s\n" % (self.prefix, line))


class LogPump(asyncio.Protocol):
    """Reads an environment's stdout/stderr pipe and splits it into lines."""

    __slots__ = ("_env", "_partial")

    def __init__(self, env: LogSource) -> None:
        self._env = env
        self._partial = b""

    def data_received(self, data: bytes) -> None:
        if self._partial:
            data = self._partial + data
            self._partial = b""
        lines = data.split(b"\n")
        self._partial = lines.pop()
        if len(self._partial) > MAX_LINE_BYTES:
            lines.append(self._partial)
            self._partial = b""
        env = self._env
        for line in lines:
            while len(line) > MAX_LINE_BYTES:
                env.log_output(line[:MAX_LINE_BYTES])
                line = line[MAX_LINE_BYTES:]
            env.log_output(line)

    def eof_received(self) -> bool:
        if self._partial:
            self._env.log_output(self._partial)
            self._partial = b""
        return False


class LogSource:
    """What a LogPump feeds: the environment, which knows the request id."""

    def log_output(self, line: bytes) -> None:
        raise NotImplementedError
