"""What runs in the forked children that become a sandbox.

Two stages, because a new pid namespace only applies to the *children* of
the process that unshares it:

- stage A (forked from the spawner): unshares the namespaces, brings up `lo`
  and opens the Runtime API listener in the new netns, forks stage B, waits
  until B has exec'd (or failed), reports to the spawner, exits. B is then
  reparented to the spawner, which is a child subreaper.
- stage B (pid 1 of the new pid namespace): builds the root (mounts.plan),
  drops privileges, closes every fd it was not given, and execs the bootstrap.

Nothing here returns: both stages end in exec or os._exit.
"""

from __future__ import annotations

import array
import contextlib
import os
import socket
from typing import NoReturn

import orjson

from sandbox import linux, mounts, netns, privileges
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


def stage_a(spec: SandboxSpec, report: socket.socket, log_write: int) -> NoReturn:
    """Runs in the spawner's fresh child. Reports one message on `report`."""
    step = "unshare namespaces"
    try:
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
        error_read, error_write = os.pipe()  # both O_CLOEXEC: exec closes B's end
        pid = os.fork()
        if pid == 0:
            os.close(error_read)
            if listener is not None:
                listener.close()
            stage_b(spec, error_write, log_write)
        os.close(error_write)
        os.close(log_write)
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


def stage_b(spec: SandboxSpec, error_write: int, log_write: int) -> NoReturn:
    """Pid 1 of the new pid namespace: build the root, drop, exec."""
    step = "start"
    try:
        if "uts" in spec.namespaces:
            step = f"sethostname {spec.hostname}"
            linux.sethostname(spec.hostname)
        for item in mounts.plan(spec):
            step = item.name
            item.apply()
        step = "set up stdio"
        null = os.open("/dev/null", os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(log_write, 1)
        os.dup2(log_write, 2)
        step = "close inherited fds"
        keep = sorted({0, 1, 2, error_write})
        low = 3
        for fd in keep[3:]:
            os.closerange(low, fd)
            low = fd + 1
        os.closerange(low, 1 << 20)
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
        step = f"exec {spec.argv[0]}"
        os.execve(spec.argv[0], list(spec.argv), dict(spec.env))
    except BaseException as exc:
        err = exc.errno if isinstance(exc, OSError) and exc.errno else 0
        message = f"{exc.strerror or exc}" if isinstance(exc, OSError) else repr(exc)
        try:
            os.write(error_write, orjson.dumps({"step": step, "errno": err, "message": message}))
        finally:
            os._exit(127)
    os._exit(127)  # execve does not return


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
