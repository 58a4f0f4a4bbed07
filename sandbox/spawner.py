"""The spawner: a small fork server that turns specs into running sandboxes.

It is forked once at host start, before the event loop grows threads or a
large heap, so creating a sandbox never forks the big host process. Host and
spawner talk over a SOCK_SEQPACKET socketpair (one JSON message per packet,
fds by SCM_RIGHTS):

    host -> spawner  {"op": "spawn", "tag": n, "spec": {...}}
    spawner -> host  {"tag": n, "ok": true, "pid": p}   fds: [pidfd, log, listener?]
                     {"tag": n, "ok": false, "step": s, "errno": e, "message": m}
                     {"op": "exit", "pid": p, "status": wait_status}

The spawner is a child subreaper: each sandbox's pid 1 becomes its child, so
it reaps them and reports their exit status. When the host goes away (EOF on
the socket) it kills every sandbox it started and exits.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import os
import select
import signal
import socket
import struct
import sys
from collections.abc import Callable
from typing import Any, NoReturn

import orjson

from sandbox import cgroups, child, linux, seccomp
from sandbox.cgroups import CgroupLayout, SandboxCgroup
from sandbox.errors import SandboxSetupError, SpawnerError
from sandbox.seccomp import SeccompError
from sandbox.seccomp_profile import get_profile
from sandbox.spec import SandboxSpec

_MAX_MESSAGE = 256 * 1024
_MAX_FDS = 8
# A sandbox that has not exec'd by then is reported as failed.
_SPAWN_TIMEOUT_S = 30.0


def _recv(sock: socket.socket) -> tuple[bytes, list[int]]:
    fds = array.array("i")
    data, ancdata, _flags, _addr = sock.recvmsg(
        _MAX_MESSAGE, socket.CMSG_SPACE(_MAX_FDS * fds.itemsize)
    )
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - (len(payload) % fds.itemsize)])
    return data, list(fds)


# ---------------------------------------------------------------- server side
class _Child:
    """What the spawner keeps per running sandbox."""

    __slots__ = ("group", "pidfd", "status_read")

    def __init__(self, pidfd: int, status_read: int, group: SandboxCgroup | None) -> None:
        self.pidfd = pidfd
        self.status_read = status_read
        self.group = group


class _Server:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.children: dict[int, _Child] = {}  # pid of the sandbox init -> its state
        self._layout: CgroupLayout | None = None
        self.cgroup_base = f"{cgroups.BASE_NAME}/h{os.getpid()}"
        self._leftovers: list[SandboxCgroup] = []
        self._serial = 0
        self._bpf: dict[str, bytes] = {}  # seccomp profile name -> compiled program

    def layout(self) -> CgroupLayout:
        if self._layout is None:
            self._layout = cgroups.detect()
            cgroups.prune_stale(self._layout)
        return self._layout

    def serve(self) -> NoReturn:
        wake_read, wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_write)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        poller = select.poll()
        poller.register(self.sock.fileno(), select.POLLIN)
        poller.register(wake_read, select.POLLIN)
        while True:
            try:
                # Cgroups still busy after their sandbox died are retried soon,
                # without ever blocking a spawn on them.
                events = poller.poll(5 if self._leftovers else None)
            except InterruptedError:
                continue
            if self._leftovers:
                self._leftovers = [g for g in self._leftovers if not g.destroy(attempts=1)]
            for fd, _mask in events:
                if fd == wake_read:
                    with contextlib.suppress(BlockingIOError):
                        os.read(wake_read, 4096)
                    self._reap()
                else:
                    self._request()

    def _request(self) -> None:
        try:
            data, fds = _recv(self.sock)
        except OSError:
            data, fds = b"", []
        for fd in fds:
            os.close(fd)
        if not data:
            self._shutdown()
        message = orjson.loads(data)
        if message.get("op") == "spawn":
            self._spawn(message["tag"], SandboxSpec.from_wire(message["spec"]))
        elif message.get("op") == "shutdown":
            self._shutdown()

    def _seccomp_program(self, name: str) -> bytes:
        program = self._bpf.get(name)
        if program is None:
            try:
                program = seccomp.export_bpf(get_profile(name))
            except ValueError as exc:
                raise SandboxSetupError(f"seccomp profile {name}", 0, str(exc)) from None
            except SeccompError as exc:
                raise SandboxSetupError(f"seccomp profile {name}", 0, str(exc)) from None
            self._bpf[name] = program
        return program

    def _fail(self, tag: int, exc: SandboxSetupError) -> None:
        self._send(
            {"tag": tag, "ok": False, "step": exc.step, "errno": exc.errno, "message": exc.message},
            [],
        )

    def _spawn(self, tag: int, spec: SandboxSpec) -> None:
        program: bytes | None = None
        if spec.seccomp is not None:
            try:
                program = self._seccomp_program(spec.seccomp)
            except SandboxSetupError as exc:
                self._fail(tag, exc)
                return
        group: SandboxCgroup | None = None
        if spec.cgroup is not None:
            self._serial += 1
            name = f"{spec.labels.get('function', 'sandbox')}-{self._serial}"
            try:
                group = SandboxCgroup.create(self.layout(), self.cgroup_base, name, spec.cgroup)
            except SandboxSetupError as exc:
                self._fail(tag, exc)
                return
        log_read, log_write = os.pipe()
        status_read, status_write = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        report_parent, report_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            pid_a = os.fork()
        except OSError as exc:
            for fd in (log_read, log_write, status_read, status_write):
                os.close(fd)
            report_parent.close()
            report_child.close()
            self._drop_group(group)
            self._send(
                {"tag": tag, "ok": False, "step": "fork", "errno": exc.errno, "message": str(exc)},
                [],
            )
            return
        if pid_a == 0:
            report_parent.close()
            os.close(log_read)
            os.close(status_read)
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            os.set_blocking(status_write, True)
            child.stage_a(spec, report_child, log_write, status_write, group, program)
        report_child.close()
        os.close(log_write)
        os.close(status_write)
        reply: dict[str, Any]
        fds: list[int] = []
        try:
            ready, _, _ = select.select([report_parent], [], [], _SPAWN_TIMEOUT_S)
            if not ready:
                os.kill(pid_a, signal.SIGKILL)
                reply = {"ok": False, "step": "wait for exec", "errno": 0, "message": "timed out"}
            else:
                data, fds = _recv(report_parent)
                reply = (
                    orjson.loads(data)
                    if data
                    else {
                        "ok": False,
                        "step": "stage A",
                        "errno": 0,
                        "message": "exited without a report",
                    }
                )
        finally:
            report_parent.close()
            _wait_exact(pid_a)
        if reply.get("ok"):
            pid = reply["pid"]
            try:
                pidfd = os.pidfd_open(pid)
            except OSError as exc:
                reply = {"ok": False, "step": "pidfd_open", "errno": exc.errno, "message": str(exc)}
            else:
                if group is not None and spec.cgroup is not None:
                    try:
                        group.limit_cpu(spec.cgroup)
                    except SandboxSetupError as exc:
                        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                        reply = {
                            "ok": False,
                            "step": exc.step,
                            "errno": exc.errno,
                            "message": exc.message,
                        }
                self.children[pid] = _Child(pidfd, status_read, group)
                reply["memory_peak"] = group.memory_peak_path() if group is not None else None
                self._send({"tag": tag, **reply}, [pidfd, log_read, *fds] if reply["ok"] else [])
                for fd in fds:
                    os.close(fd)
                os.close(log_read)
                return
        for fd in fds:
            os.close(fd)
        os.close(log_read)
        os.close(status_read)
        self._drop_group(group)
        self._send({"tag": tag, **reply}, [])

    def _drop_group(self, group: SandboxCgroup | None) -> None:
        if group is not None and not group.destroy(attempts=1):
            self._leftovers.append(group)

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            state = self.children.pop(pid, None)
            if state is None:
                continue
            os.close(state.pidfd)
            try:
                raw = os.read(state.status_read, 4)
            except OSError:
                raw = b""
            os.close(state.status_read)
            if len(raw) == 4:
                # The init reported how the bootstrap itself ended.
                status = struct.unpack("<i", raw)[0]
            stats = state.group.stats() if state.group is not None else {}
            self._drop_group(state.group)
            self._send({"op": "exit", "pid": pid, "status": status, **stats}, [])

    def _send(self, message: dict[str, Any], fds: list[int]) -> None:
        try:
            child.send_with_fds(self.sock, message, fds)
        except OSError:
            self._shutdown()

    def _shutdown(self) -> NoReturn:
        for state in self.children.values():
            with contextlib.suppress(OSError):
                signal.pidfd_send_signal(state.pidfd, signal.SIGKILL)
        for state in self.children.values():
            if state.group is not None:
                state.group.destroy()
        for group in self._leftovers:
            group.destroy()
        if self._layout is not None:
            cgroups.remove_subtree(self._layout, self.cgroup_base)
        os._exit(0)


def _wait_exact(pid: int) -> None:
    while True:
        try:
            os.waitpid(pid, 0)
            return
        except InterruptedError:
            continue
        except ChildProcessError:
            return


def _run_server(sock: socket.socket, keep_fd: int) -> NoReturn:
    try:
        linux.prctl(linux.PR_SET_PDEATHSIG, signal.SIGKILL)
        linux.prctl(linux.PR_SET_CHILD_SUBREAPER, 1)
        linux.prctl(linux.PR_SET_NAME, int.from_bytes(b"firelet-spawn\0", "little"))
    except OSError:
        pass
    try:
        # The host handles Ctrl-C and tells us to stop; do not die first.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.closerange(3, keep_fd)
        os.closerange(keep_fd + 1, 1 << 16)
        _Server(sock).serve()
    except BaseException:
        import traceback

        traceback.print_exc(file=sys.stderr)
    os._exit(70)


# ------------------------------------------------------------------ host side
class Exit:
    """How a sandbox ended, with its cgroup accounting (0 when not measured)."""

    __slots__ = ("cpu_ns", "max_memory_bytes", "oom_kills", "status")

    def __init__(
        self, status: int, oom_kills: int = 0, max_memory_bytes: int = 0, cpu_ns: int = 0
    ) -> None:
        self.status = status  # wait status of the bootstrap (or of its init)
        self.oom_kills = oom_kills
        self.max_memory_bytes = max_memory_bytes
        self.cpu_ns = cpu_ns

    @classmethod
    def from_message(cls, message: dict[str, Any]) -> Exit:
        return cls(
            message["status"],
            message.get("oom_kills", 0),
            message.get("max_memory_bytes", 0),
            message.get("cpu_ns", 0),
        )


class SandboxProcess:
    """A running sandbox as the host sees it."""

    __slots__ = ("exited", "listener", "log_fd", "memory_peak_path", "pid", "pidfd")

    def __init__(
        self,
        pid: int,
        pidfd: int,
        log_fd: int,
        listener: socket.socket | None,
        memory_peak_path: str | None = None,
    ) -> None:
        self.pid = pid
        self.pidfd = pidfd
        self.log_fd = log_fd
        self.listener = listener
        # The cgroup file with the sandbox's peak memory, for REPORT lines.
        self.memory_peak_path = memory_peak_path
        # Resolves when the spawner has reaped the sandbox's init.
        self.exited: asyncio.Future[Exit] = asyncio.get_running_loop().create_future()

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal pid 1 of the sandbox; killing it ends the whole pid namespace."""
        if self.pidfd >= 0 and not self.exited.done():
            with contextlib.suppress(ProcessLookupError, OSError):
                signal.pidfd_send_signal(self.pidfd, sig)

    def close(self) -> None:
        """Release host-side fds (after exit)."""
        if self.pidfd >= 0:
            os.close(self.pidfd)
            self.pidfd = -1
        if self.listener is not None:
            self.listener.close()
            self.listener = None


class Spawner:
    """Host-side handle of the fork server."""

    def __init__(self, sock: socket.socket, pid: int) -> None:
        self._sock = sock
        self.pid = pid
        self._tag = 0
        self._pending: dict[int, asyncio.Future[tuple[dict[str, Any], list[int]]]] = {}
        self._processes: dict[int, SandboxProcess] = {}
        self._early_exits: dict[int, Exit] = {}
        self._reader_installed = False
        self._reader_loop: asyncio.AbstractEventLoop | None = None
        self._lost: Callable[[], None] | None = None

    @classmethod
    def start(cls) -> Spawner:
        """Fork the spawner. Call before the event loop starts threads."""
        host_end, server_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            host_end.close()
            _run_server(server_end, server_end.fileno())
        server_end.close()
        host_end.setblocking(False)
        return cls(host_end, pid)

    def _ensure_reader(self) -> None:
        loop = asyncio.get_running_loop()
        if self._reader_loop is not loop:
            # First use, or a new event loop (tests run several): watch the
            # socket from the loop that awaits the replies.
            loop.add_reader(self._sock.fileno(), self._on_readable)
            self._reader_loop = loop
            self._reader_installed = True

    async def spawn(self, spec: SandboxSpec) -> SandboxProcess:
        """Create a sandbox; returns once its bootstrap has been exec'd."""
        self._ensure_reader()
        self._tag += 1
        tag = self._tag
        future: asyncio.Future[tuple[dict[str, Any], list[int]]] = (
            asyncio.get_running_loop().create_future()
        )
        self._pending[tag] = future
        try:
            self._sock.send(orjson.dumps({"op": "spawn", "tag": tag, "spec": spec.to_wire()}))
        except OSError as exc:
            self._pending.pop(tag, None)
            raise SpawnerError(f"the spawner is gone: {exc}") from exc
        reply, fds = await future
        if not reply.get("ok"):
            raise SandboxSetupError(
                reply.get("step", "?"), reply.get("errno", 0), reply.get("message", "?")
            )
        pidfd, log_fd, *rest = fds
        listener = socket.socket(fileno=rest[0]) if rest else None
        if listener is not None:
            listener.setblocking(False)
        process = SandboxProcess(reply["pid"], pidfd, log_fd, listener, reply.get("memory_peak"))
        early = self._early_exits.pop(process.pid, None)
        if early is not None:
            process.exited.set_result(early)
        else:
            self._processes[process.pid] = process
        return process

    def _on_readable(self) -> None:
        while True:
            try:
                data, fds = _recv(self._sock)
            except BlockingIOError:
                return
            except OSError:
                data, fds = b"", []
            if not data:
                self._on_lost()
                return
            message = orjson.loads(data)
            if message.get("op") == "exit":
                process = self._processes.pop(message["pid"], None)
                if process is None:
                    # Reply and exit can race only if the spawn reply is still
                    # being processed; keep the exit for spawn() to pick up.
                    self._early_exits[message["pid"]] = Exit.from_message(message)
                elif not process.exited.done():
                    process.exited.set_result(Exit.from_message(message))
                continue
            future = self._pending.pop(message.get("tag", -1), None)
            if future is not None and not future.done():
                future.set_result((message, fds))
            else:
                for fd in fds:
                    os.close(fd)

    def _on_lost(self) -> None:
        loop = asyncio.get_running_loop()
        loop.remove_reader(self._sock.fileno())
        self._reader_installed = False
        self._reader_loop = None
        error = SpawnerError("the spawner process exited")
        for future in self._pending.values():
            if not future.done():
                future.set_exception(error)
        self._pending.clear()
        for process in self._processes.values():
            if not process.exited.done():
                process.exited.set_result(Exit(signal.SIGKILL))
        self._processes.clear()

    def close(self) -> None:
        """Stop the spawner; it kills every sandbox it started."""
        if self._reader_installed:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self._sock.fileno())
            self._reader_installed = False
        with contextlib.suppress(OSError):
            self._sock.setblocking(True)
            self._sock.send(orjson.dumps({"op": "shutdown"}))
        self._sock.close()
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, 0)
