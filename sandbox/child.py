"""What runs in the forked children that become a sandbox.

Two stages, because a new pid namespace only applies to the *children* of
the process that unshares it:

- stage A (forked from the spawner): unshares the namespaces, brings up `lo`
  and opens the Runtime API listener in the new netns, forks stage B, waits
  until B has exec'd (or failed), reports to the spawner, exits. B is then
  reparented to the spawner, which is a child subreaper.
- stage B (pid 1 of the new pid namespace): builds the root (mounts.plan),
  forks stage C and stays as the namespace's init.
- stage C: limits, privileges, seccomp, exec of the bootstrap.

Nothing here returns: both stages end in exec or os._exit.
"""

from __future__ import annotations

import array
import contextlib
import os
import resource
import signal
import socket
import struct
from typing import NoReturn

import orjson

from sandbox import linux, mounts, netns, privileges, seccomp
from sandbox.cgroups import SandboxCgroup
from sandbox.spec import SandboxSpec

# Exit codes of stage A (only the spawner sees them).
_EXIT_OK = 0
_EXIT_FAILED = 71


def send_with_fds(sock: socket.socket, message: dict[str, object], fds: list[int]) -> None:
    payload = orjson.dumps(message)
    if fds:
        sock.sendmsg([payload], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
    else:
        sock.send(payload)


def stage_a(
    spec: SandboxSpec,
    report: socket.socket,
    log_write: int,
    status_write: int,
    group: SandboxCgroup | None,
    seccomp_bpf: bytes | None = None,
    template: str | None = None,
) -> NoReturn:
    """Runs in the spawner's fresh child. Reports one message on `report`."""
    step = "join cgroups"
    try:
        if group is not None:
            group.attach_self()
        step = "unshare namespaces"
        flags = 0
        for name in spec.namespaces:
            flags |= linux.NAMESPACE_FLAGS[name]
        linux.unshare(flags)
        listener = None
        if spec.listen_port is not None:
            step = "bring up lo in the new network namespace"
            netns.loopback_up()
            step = f"listen on 127.0.0.1:{spec.listen_port}"
            listener = netns.listen_loopback(spec.listen_port)
        step = "fork the sandbox init"
        error_read, error_write = os.pipe()  # O_CLOEXEC: the bootstrap's exec closes it
        pid = os.fork()
        if pid == 0:
            os.close(error_read)
            if listener is not None:
                listener.close()
            stage_b(spec, error_write, log_write, status_write, seccomp_bpf, template)
        os.close(error_write)
        os.close(log_write)
        os.close(status_write)
        failure = _read_all(error_read)
        if failure:
            os.waitpid(pid, 0)
            send_with_fds(report, {"ok": False, **orjson.loads(failure)}, [])
            os._exit(_EXIT_FAILED)
        fds = [listener.fileno()] if listener is not None else []
        send_with_fds(report, {"ok": True, "pid": pid}, fds)
        os._exit(_EXIT_OK)
    except BaseException as exc:  # report anything, never unwind into the spawner
        _report_failure(report, step, exc)
        os._exit(_EXIT_FAILED)


def stage_b(
    spec: SandboxSpec,
    error_write: int,
    log_write: int,
    status_write: int,
    seccomp_bpf: bytes | None,
    template: str | None = None,
) -> NoReturn:
    """Pid 1 of the new pid namespace: build the root, start the bootstrap,
    then stay as its init (reap orphans, forward signals, report its status).

    The bootstrap is not pid 1 itself because the kernel shields a namespace's
    init from signals it has no handler for: `kill -9 $$` or SIGTERM from the
    host would not reach it, unlike in Lambda.
    """
    step = "start"
    try:
        if "uts" in spec.namespaces:
            step = f"sethostname {spec.hostname}"
            linux.sethostname(spec.hostname)
        for item in mounts.plan(spec, template):
            step = item.name
            item.apply()
        # Privileges go before the fork, once: the bootstrap inherits the
        # dropped state, and the init keeps nothing the bootstrap lacks.
        step = "drop the capability bounding set"
        privileges.drop_bounding_set()
        step = "lock securebits"
        privileges.lock_securebits()
        step = f"switch to uid {spec.uid} gid {spec.gid}"
        privileges.become(spec.uid, spec.gid)
        step = "clear capabilities"
        privileges.clear_all_capabilities()
        step = "set no_new_privs"
        privileges.no_new_privs()
        # The init holds a copy of the spawner's memory (other functions'
        # specs): nothing in the sandbox may read or trace it, even with the
        # same uid (rootless). The bootstrap's exec makes it dumpable again.
        step = "make the init non-dumpable"
        linux.prctl(linux.PR_SET_DUMPABLE, 0)
        step = "fork the bootstrap"
        pid = os.fork()
        if pid == 0:
            os.close(status_write)
            stage_c(spec, error_write, log_write, seccomp_bpf)
        step = "close the init's fds"
        _close_all_but({status_write, error_write})
        null = os.open("/dev/null", os.O_RDWR)
        for fd in (0, 1, 2):  # the spawner's stdio is the host's: not ours to keep
            os.dup2(null, fd)
        os.close(null)
        # Last: the spawner learns the bootstrap exec'd when every copy is closed.
        os.close(error_write)
    except BaseException as exc:
        _report_setup_error(error_write, step, exc)
    _init_loop(pid, status_write)


def stage_c(
    spec: SandboxSpec, error_write: int, log_write: int, seccomp_bpf: bytes | None
) -> NoReturn:
    """The bootstrap's process (already unprivileged): stdio, fds, limits,
    seccomp, exec."""
    step = "start"
    try:
        os.setsid()
        for signum in _FORWARDED:
            signal.signal(signum, signal.SIG_DFL)
        step = "set up stdio"
        null = os.open("/dev/null", os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(log_write, 1)
        os.dup2(log_write, 2)
        step = "close inherited fds"
        _close_all_but({error_write})
        step = "set rlimits"
        limits = spec.rlimits
        _setrlimit(resource.RLIMIT_NOFILE, limits.nofile)
        _setrlimit(resource.RLIMIT_CORE, limits.core)
        if limits.nproc is not None:
            _setrlimit(resource.RLIMIT_NPROC, limits.nproc)
        if limits.fsize is not None:
            _setrlimit(resource.RLIMIT_FSIZE, limits.fsize)
        if seccomp_bpf is not None:
            # Last before exec: the filter was compiled once by the spawner.
            step = f"load seccomp profile {spec.seccomp}"
            seccomp.load(seccomp_bpf)
        step = f"exec {spec.argv[0]}"
        os.execve(spec.argv[0], list(spec.argv), dict(spec.env))
    except BaseException as exc:
        _report_setup_error(error_write, step, exc)
    os._exit(127)


# Signals the init passes on to the bootstrap (SIGKILL ends the namespace).
_FORWARDED = (
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
)


def _init_loop(bootstrap: int, status_write: int) -> NoReturn:
    """Reap every child; when the bootstrap ends, report its status and exit
    (the whole pid namespace goes with us)."""
    for signum in _FORWARDED:
        signal.signal(signum, lambda sig, _frame: _forward(bootstrap, sig))
    while True:
        try:
            pid, status = os.waitpid(-1, 0)
        except InterruptedError:
            continue
        except ChildProcessError:
            os._exit(0)
        if pid == bootstrap:
            with contextlib.suppress(OSError):
                os.write(status_write, struct.pack("<i", status))
            os._exit(0)


def _forward(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signum)


def _setrlimit(which: int, value: int) -> None:
    # Only lowering is possible now (no CAP_SYS_RESOURCE): never ask for more
    # than the current hard limit.
    _soft, hard = resource.getrlimit(which)
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
    resource.setrlimit(which, (value, value))


def _close_all_but(keep: set[int]) -> None:
    low = 3
    for fd in sorted(fd for fd in keep if fd >= 3):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, 1 << 20)


def _report_setup_error(error_write: int, step: str, exc: BaseException) -> NoReturn:
    err = exc.errno if isinstance(exc, OSError) and exc.errno else 0
    message = f"{exc.strerror or exc}" if isinstance(exc, OSError) else repr(exc)
    try:
        os.write(error_write, orjson.dumps({"step": step, "errno": err, "message": message}))
    finally:
        os._exit(127)


def _report_failure(report: socket.socket, step: str, exc: BaseException) -> None:
    err = exc.errno if isinstance(exc, OSError) and exc.errno else 0
    message = f"{exc.strerror or exc}" if isinstance(exc, OSError) else repr(exc)
    with contextlib.suppress(OSError):
        send_with_fds(report, {"ok": False, "step": step, "errno": err, "message": message}, [])


def _read_all(fd: int) -> bytes:
    chunks = []
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks)
