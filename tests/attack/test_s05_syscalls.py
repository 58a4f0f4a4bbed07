"""S5: the seccomp profile holds inside a real sandbox: blocked calls fail
with EPERM (clone3 with ENOSYS) and the process is not killed; ordinary work
(threads, subprocesses, sockets) goes on."""

from __future__ import annotations

from sandbox.seccomp_profile import DEFAULT_PROFILE

# x86_64 numbers of a sample of the denied calls, with arguments that would
# not fail with EPERM for other reasons.
PROBES = {
    "ptrace": (101, (16, 1, 0, 0)),
    "process_vm_readv": (310, (1, 0, 0, 0, 0, 0)),
    "kexec_load": (246, (0, 0, 0, 0)),
    "perf_event_open": (298, (0, 0, -1, -1, 0)),
    "userfaultfd": (323, (0,)),
    "open_by_handle_at": (304, (0, 0, 0)),
    "iopl": (172, (3,)),
    "ioperm": (173, (0, 1, 1)),
    "acct": (163, (0,)),
    "quotactl": (179, (0, 0, 0, 0)),
    "swapon": (167, (0, 0)),
    "setns": (308, (0, 0)),
    "pivot_root": (155, (0, 0)),
    "io_uring_setup": (425, (1, 0)),
    "fsopen": (430, (0, 0)),
}


def test_blocked_syscalls_fail_without_killing_the_function(attack):
    for name in PROBES:
        assert name in DEFAULT_PROFILE.syscalls(), name
    result = attack.result(
        f"""
import ctypes, errno, os, socket, subprocess, threading
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def call(number, args):
    rc = libc.syscall(ctypes.c_long(number), *[ctypes.c_long(a) for a in args])
    return errno.errorcode.get(ctypes.get_errno(), "?") if rc < 0 else "succeeded"
outcome = {{name: call(number, args) for name, (number, args) in {PROBES!r}.items()}}
outcome["clone3"] = call(435, (0, 0))
outcome["unshare_user"] = call(272, (0x10000000,))
outcome["clone_newns"] = call(56, (0x00020000 | 17, 0, 0, 0, 0))
box = []
thread = threading.Thread(target=lambda: box.append("thread ran"))
thread.start(); thread.join()
outcome["thread"] = box[0]
outcome["subprocess"] = subprocess.run(["/bin/echo", "child ran"], capture_output=True, text=True).stdout.strip()
outcome["tcp_socket"] = "ok" if socket.socket().close() is None else "?"
result = outcome
"""
    )
    for name in PROBES:
        assert result[name] == "EPERM", (name, result[name])
    assert result["clone3"] == "ENOSYS"
    assert result["unshare_user"] == "EPERM"
    assert result["clone_newns"] == "EPERM"
    assert result["thread"] == "thread ran"
    assert result["subprocess"] == "child ran"
    assert result["tcp_socket"] == "ok"
    # The function was not killed: the same environment answers again.
    assert attack.result("result = 'same process'") == "same process"
    attack.host.wait_for_log(r"(?s)\[hostile\] REPORT.*\[hostile\] REPORT")
    assert (
        attack.host.logs().count("[hostile] REPORT")
        == attack.host.logs().count("Init Duration") + 1
    )
    attack.assert_healthy()
