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
import time
from collections.abc import Callable
from typing import Any, NoReturn

import orjson

from sandbox import cgroups, child, linux, mounts, seccomp
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

    __slots__ = ("group", "pid", "pidfd", "silent", "status_read")

    def __init__(
        self,
        pid: int,
        pidfd: int,
        status_read: int,
        group: SandboxCgroup | None,
        silent: bool = False,
    ) -> None:
        self.pid = pid
        self.pidfd = pidfd
        self.status_read = status_read
        self.group = group
        self.silent = silent  # the host was told the spawn failed: no exit message


class _Pending:
    """A sandbox being built: stage A is running, its report has not come."""

    __slots__ = ("deadline", "group", "log_read", "pid_a", "report", "spec", "status_read", "tag")

    def __init__(
        self,
        tag: int,
        spec: SandboxSpec,
        pid_a: int,
        report: socket.socket,
        log_read: int,
        status_read: int,
        group: SandboxCgroup | None,
    ) -> None:
        self.tag = tag
        self.spec = spec
        self.pid_a = pid_a
        self.report = report
        self.log_read = log_read
        self.status_read = status_read
        self.group = group
        self.deadline = time.monotonic() + _SPAWN_TIMEOUT_S


class _Server:
    """Builds many sandboxes at once: a spawn only blocks the spawner for its
    fork; the rest happens in the children while other requests are served.
    Sandboxes are reaped through their pidfds, so no SIGCHLD handling."""

    def __init__(self, sock: socket.socket, nest_cgroups: bool) -> None:
        self.sock = sock
        self._nest = nest_cgroups
        self.poller = select.poll()
        self.pending: dict[int, _Pending] = {}  # report fd -> spawn in progress
        self.children: dict[int, _Child] = {}  # pidfd -> running sandbox init
        self._layout: CgroupLayout | None = None
        self._subtrees: dict[str, str] = {}
        self._leftovers: list[SandboxCgroup] = []
        self._serial = 0
        self._bpf: dict[str, bytes] = {}  # seccomp profile name -> compiled program
        self._templates: dict[bytes, str] = {}  # spec base (wire form) -> built system root

    def layout(self) -> CgroupLayout:
        if self._layout is None:
            layout = cgroups.detect()
            self._subtrees = cgroups.host_subtrees(layout, f"h{os.getpid()}", self._nest)
            if self._nest:
                _leave_v2_own_cgroup(layout)
            cgroups.prune_stale(layout, self._subtrees)
            self._layout = layout
        return self._layout

    def serve(self) -> NoReturn:
        self.poller.register(self.sock.fileno(), select.POLLIN)
        while True:
            try:
                events = self.poller.poll(self._poll_timeout_ms())
            except InterruptedError:
                continue
            if self._leftovers:
                self._leftovers = [g for g in self._leftovers if not g.destroy(attempts=1)]
            for fd, _mask in events:
                if fd == self.sock.fileno():
                    self._request()
                elif fd in self.pending:
                    self._finish(self.pending.pop(fd))
                elif fd in self.children:
                    self._reap(self.children.pop(fd))
            self._reap_strays()
            if self.pending:
                now = time.monotonic()
                for fd, spawn in list(self.pending.items()):
                    if spawn.deadline <= now:
                        del self.pending[fd]
                        self._finish(spawn, timed_out=True)

    def _reap_strays(self) -> None:
        """Reap children we do not track (the init of a sandbox whose stage A
        was killed before reporting it); tracked ones are reaped by pidfd."""
        while True:
            try:
                found = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return
            if found is None:
                return
            tracked = {c.pid for c in self.children.values()} | {
                p.pid_a for p in self.pending.values()
            }
            if found.si_pid in tracked:
                return
            with contextlib.suppress(ChildProcessError):
                os.waitpid(found.si_pid, os.WNOHANG)

    def _poll_timeout_ms(self) -> int | None:
        # Cgroups still busy after their sandbox died are retried soon,
        # without ever blocking a spawn on them.
        timeout = 5 if self._leftovers else None
        if self.pending:
            nearest = min(p.deadline for p in self.pending.values()) - time.monotonic()
            ms = max(0, int(nearest * 1000) + 1)
            timeout = ms if timeout is None else min(timeout, ms)
        return timeout

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
            except (ValueError, SeccompError) as exc:
                raise SandboxSetupError(f"seccomp profile {name}", 0, str(exc)) from None
            self._bpf[name] = program
        return program

    def _template_for(self, spec: SandboxSpec) -> str | None:
        """The system root for `spec.base`, built on first use (in our own
        mount namespace, so the host never sees it) and shared afterwards."""
        if not spec.base:
            return None
        targets = sorted(str(getattr(m, "target", getattr(m, "path", ""))) for m in spec.mounts)
        key = orjson.dumps([spec.to_wire()["base"], targets, spec.root_size_bytes])
        path = self._templates.get(key)
        if path is None:
            parent = os.path.dirname(spec.root_mountpoint)
            path = f"{parent}/template-{os.getpid()}-{len(self._templates)}"
            try:
                if not self._templates:
                    # Our own mount namespace: templates stay out of the host's view.
                    linux.unshare(linux.CLONE_NEWNS)
                    linux.mount(None, "/", None, linux.MS_REC | linux.MS_PRIVATE, None)
                    _prune_stale_templates(parent)
                mounts.build_template(spec, path)
            except OSError as exc:
                raise SandboxSetupError("build the system root", exc.errno or 0, str(exc)) from None
            self._templates[key] = path
        return path

    def _fail(self, tag: int, step: str, errno: int, message: str) -> None:
        self._send({"tag": tag, "ok": False, "step": step, "errno": errno, "message": message}, [])

    def _spawn(self, tag: int, spec: SandboxSpec) -> None:
        """Start building a sandbox; `_finish` completes it."""
        program: bytes | None = None
        group: SandboxCgroup | None = None
        try:
            template = self._template_for(spec)
            if spec.seccomp is not None:
                program = self._seccomp_program(spec.seccomp)
            if spec.cgroup is not None:
                self._serial += 1
                name = f"{spec.labels.get('function', 'sandbox')}-{self._serial}"
                group = SandboxCgroup.create(self.layout(), self._subtrees, name, spec.cgroup)
        except SandboxSetupError as exc:
            self._fail(tag, exc.step, exc.errno, exc.message)
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
            self._fail(tag, "fork", exc.errno or 0, str(exc))
            return
        if pid_a == 0:
            report_parent.close()
            os.close(log_read)
            os.close(status_read)
            os.set_blocking(status_write, True)
            child.stage_a(spec, report_child, log_write, status_write, group, program, template)
        report_child.close()
        os.close(log_write)
        os.close(status_write)
        spawn = _Pending(tag, spec, pid_a, report_parent, log_read, status_read, group)
        self.pending[report_parent.fileno()] = spawn
        self.poller.register(report_parent.fileno(), select.POLLIN)

    def _finish(self, spawn: _Pending, timed_out: bool = False) -> None:
        """Stage A reported (or ran out of time): answer the host."""
        self.poller.unregister(spawn.report.fileno())
        fds: list[int] = []
        if timed_out:
            with contextlib.suppress(ProcessLookupError):
                os.kill(spawn.pid_a, signal.SIGKILL)
            reply: dict[str, Any] = {
                "ok": False,
                "step": "wait for exec",
                "errno": 0,
                "message": "timed out",
            }
        else:
            data, fds = _recv(spawn.report)
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
        spawn.report.close()
        # Stage A exits right after its report; once it is reaped, the sandbox
        # init is our child (we are a subreaper).
        _wait_exact(spawn.pid_a)
        group = spawn.group
        if reply.get("ok"):
            try:
                pidfd = os.pidfd_open(reply["pid"])
                if group is not None and spawn.spec.cgroup is not None:
                    group.limit_cpu(spawn.spec.cgroup)
            except OSError as exc:
                reply = {"ok": False, "step": "pidfd_open", "errno": exc.errno, "message": str(exc)}
            except SandboxSetupError as exc:
                # Limits could not be applied: this sandbox must not run. It is
                # still reaped through its pidfd, silently.
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                self._track(_Child(reply["pid"], pidfd, spawn.status_read, group, silent=True))
                group = None
                spawn.status_read = -1
                reply = {"ok": False, "step": exc.step, "errno": exc.errno, "message": exc.message}
        if reply.get("ok"):
            self._track(_Child(reply["pid"], pidfd, spawn.status_read, group))
            reply["memory_peak"] = group.memory_peak_path() if group is not None else None
            self._send({"tag": spawn.tag, **reply}, [pidfd, spawn.log_read, *fds])
            for fd in fds:
                os.close(fd)
            os.close(spawn.log_read)
            return
        for fd in fds:
            os.close(fd)
        os.close(spawn.log_read)
        if spawn.status_read >= 0:
            os.close(spawn.status_read)
        self._drop_group(group)
        self._send({"tag": spawn.tag, **reply}, [])

    def _track(self, state: _Child) -> None:
        self.children[state.pidfd] = state
        self.poller.register(state.pidfd, select.POLLIN)

    def _drop_group(self, group: SandboxCgroup | None) -> None:
        if group is not None and not group.destroy(attempts=1):
            self._leftovers.append(group)

    def _reap(self, state: _Child) -> None:
        """A sandbox init ended (its pidfd is readable): collect and report."""
        self.poller.unregister(state.pidfd)
        try:
            result = os.waitid(os.P_PIDFD, state.pidfd, os.WEXITED)
            status = _wait_status(result) if result is not None else 0
        except ChildProcessError:
            status = 0
        os.close(state.pidfd)
        raw = b""
        if state.status_read >= 0:
            with contextlib.suppress(OSError):
                raw = os.read(state.status_read, 4)
            os.close(state.status_read)
        if len(raw) == 4:
            # The init reported how the bootstrap itself ended.
            status = struct.unpack("<i", raw)[0]
        stats = state.group.stats() if state.group is not None else {}
        self._drop_group(state.group)
        if not state.silent:
            self._send({"op": "exit", "pid": state.pid, "status": status, **stats}, [])

    def _send(self, message: dict[str, Any], fds: list[int]) -> None:
        try:
            child.send_with_fds(self.sock, message, fds)
        except OSError:
            self._shutdown()

    def _shutdown(self) -> NoReturn:
        for state in self.children.values():
            with contextlib.suppress(OSError):
                signal.pidfd_send_signal(state.pidfd, signal.SIGKILL)
        for spawn in self.pending.values():
            with contextlib.suppress(OSError):
                os.kill(spawn.pid_a, signal.SIGKILL)
        for state in self.children.values():
            if state.group is not None:
                state.group.destroy()
        for group in self._leftovers:
            group.destroy()
        cgroups.remove_subtrees(self._subtrees)
        for path in self._templates.values():
            with contextlib.suppress(OSError):
                linux.umount2(path, linux.MNT_DETACH)
                os.rmdir(path)
        os._exit(0)


def _prune_stale_templates(parent: str) -> None:
    """Remove the (empty, from here) mount points of dead spawners' templates."""
    with contextlib.suppress(OSError):
        for entry in os.listdir(parent):
            owner = entry.split("-")[1] if entry.startswith("template-") else ""
            if owner.isdigit() and not os.path.exists(f"/proc/{owner}"):
                with contextlib.suppress(OSError):
                    os.rmdir(os.path.join(parent, entry))


def _leave_v2_own_cgroup(layout: CgroupLayout) -> None:
    """On cgroup v2 a cgroup with processes cannot give controllers to its
    children. When sandboxes nest below our own cgroup (systemd's
    Delegate=yes), move the host and the spawner into a `host` leaf first."""
    own = layout.own.get("v2", "/")
    wanted = {"memory", "pids", "cpu"} & layout.unified_controllers
    if layout.unified is None or own == "/" or not wanted:
        return
    leaf = os.path.join(layout.unified, own.lstrip("/"), "host")
    os.makedirs(leaf, 0o755, exist_ok=True)
    for pid in (os.getppid(), os.getpid()):
        with open(os.path.join(leaf, "cgroup.procs"), "w") as f:
            f.write(str(pid))


def _wait_status(result: os.waitid_result) -> int:
    """A waitid() result as the classic wait status int (os.waitstatus_to_exitcode reads it)."""
    if result.si_code == os.CLD_EXITED:
        return (result.si_status & 0xFF) << 8
    if result.si_code == os.CLD_DUMPED:
        return result.si_status | 0x80
    return result.si_status


def _wait_exact(pid: int) -> None:
    while True:
        try:
            os.waitpid(pid, 0)
            return
        except InterruptedError:
            continue
        except ChildProcessError:
            return


def _run_server(sock: socket.socket, keep_fd: int, nest_cgroups: bool, rootless: bool) -> NoReturn:
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
        if rootless:
            linux.enter_own_user_namespace()
        _Server(sock, nest_cgroups).serve()
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
    def start(cls, nest_cgroups: bool = True, rootless: bool = False) -> Spawner:
        """Fork the spawner. Call before the event loop starts threads.

        `nest_cgroups`: sandbox cgroups go below the host's own cgroup (where
        a delegated subtree is) rather than below each hierarchy's root.
        `rootless`: the host is not root; the spawner works inside a user
        namespace of its own (specs must then ask for uid 0 and no cgroups).
        """
        host_end, server_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            host_end.close()
            _run_server(server_end, server_end.fileno(), nest_cgroups, rootless)
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
