"""The seccomp layer, tested with real filters loaded in forked children.

Each probe runs in a fresh child (os.fork) that calls setsid() (so that even
an unfiltered vhangup() cannot touch the test's terminal), loads the filter,
makes the call and sends the result back over a pipe. The probes use invalid
arguments, so that the same call WITHOUT the filter fails harmlessly with a
different error (or succeeds harmlessly in the throwaway child); the
`*_without_filter` tests check that, so an EPERM under the filter is known to
come from the filter.
"""

from __future__ import annotations

import ctypes
import errno
import json
import mmap
import os
import random
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyseccomp
import pytest

from sandbox import seccomp
from sandbox.errors import SandboxError
from sandbox.seccomp_profile import (
    AF_ALG,
    AF_PACKET,
    AF_VSOCK,
    CLONE_NAMESPACE_FLAGS,
    CLONE_NEWNET,
    CLONE_NEWUSER,
    DEFAULT_PROFILE,
    PERSONALITY_ALLOWED,
    U64,
    UNSHARE_NAMESPACE_FLAGS,
    ArgCheck,
    Profile,
    Rule,
    get_profile,
)

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long

CLONE_FS = 0x00000200
CLONE_FILES = 0x00000400
CLONE_THREAD = 0x00010000
BAD_FD = -1
IS_X86_64 = pyseccomp.system_arch() == pyseccomp.Arch.X86_64
SKIPPED = seccomp.skipped_syscalls(DEFAULT_PROFILE)


# --- running code in a filtered child -------------------------------------------


@dataclass
class ChildResult:
    exit_code: int | None
    signal: int | None
    value: Any = None
    error: str | None = None


def run_in_child(body: Callable[[], Any], flt: Any = None, timeout: float = 20.0) -> ChildResult:
    """Fork; in the child: setsid, load `flt` (if any), run `body`, report its value."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        code = 0
        try:
            os.close(read_end)
            os.setsid()
            if flt is not None:
                seccomp.load(flt)
            payload = json.dumps({"value": body()})
        except BaseException:
            payload = json.dumps({"error": traceback.format_exc()})
            code = 3
        try:
            data = payload.encode()
            while data:
                data = data[os.write(write_end, data) :]
        finally:
            os._exit(code)
    os.close(write_end)
    deadline = time.monotonic() + timeout
    chunks: list[bytes] = []
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            ready, _, _ = select.select([read_end], [], [], remaining)
            if not ready:
                break
            chunk = os.read(read_end, 65536)
            if not chunk:
                break
            chunks.append(chunk)
        status = None
        while time.monotonic() < deadline:
            waited, status = os.waitpid(pid, os.WNOHANG)
            if waited:
                break
            status = None
            time.sleep(0.005)
        if status is None:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail(f"child {pid} did not finish within {timeout}s")
    finally:
        os.close(read_end)
    report = json.loads(b"".join(chunks)) if chunks else {}
    return ChildResult(
        exit_code=os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else None,
        signal=os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
        value=report.get("value"),
        error=report.get("error"),
    )


def value_of(result: ChildResult) -> Any:
    assert result.error is None, result.error
    assert result.signal is None, f"child killed by signal {result.signal}"
    assert result.exit_code == 0
    return result.value


def nr(name: str) -> int:
    number = pyseccomp.resolve_syscall(pyseccomp.Arch.NATIVE, name)
    assert number >= 0, f"{name} is not a syscall here"
    return number


def raw_syscall(name: str, *args: int) -> tuple[int, int]:
    """(return value, errno) of syscall(name, args...), args as unsigned 64-bit."""
    ctypes.set_errno(0)
    ret = _libc.syscall(ctypes.c_long(nr(name)), *(ctypes.c_ulong(a & U64) for a in args))
    return ret, ctypes.get_errno() if ret == -1 else 0


def probe(name: str, *args: int) -> Callable[[], tuple[int, int]]:
    return lambda: raw_syscall(name, *args)


@pytest.fixture(scope="module")
def default_filter() -> Any:
    return seccomp.compile_filter(DEFAULT_PROFILE)


# Harmless, invalid arguments: unfiltered (and as root), each call fails with
# EFAULT/EINVAL/EBADF/ESRCH/ENOSYS/... or (vhangup without a tty) succeeds.
PROBES: dict[str, tuple[int, ...]] = {
    "mount": (1, 1, 1, 0, 1),
    "umount2": (1, 0),
    "pivot_root": (1, 1),
    "chroot": (1,),
    "open_tree": (BAD_FD, 1, 0),
    "move_mount": (BAD_FD, 1, BAD_FD, 1, 0xFFFFFFFF),
    "fsopen": (1, 0xFFFFFFFF),
    "fsconfig": (BAD_FD, 0, 0, 0, 0),
    "fsmount": (BAD_FD, 0xFFFFFFFF, 0),
    "fspick": (BAD_FD, 1, 0xFFFFFFFF),
    "mount_setattr": (BAD_FD, 1, 0xFFFFFFFF, 1, 0),
    "swapon": (1, 0),
    "swapoff": (1,),
    "quotactl": (0xFFFFFFFF, 1, 0, 0),
    "quotactl_fd": (BAD_FD, 0, 0, 0),
    "open_by_handle_at": (BAD_FD, 1, 0),
    "name_to_handle_at": (BAD_FD, 1, 1, 1, 0),
    "setns": (BAD_FD, 0),
    "sethostname": (1, 0xFFFFF),
    "setdomainname": (1, 0xFFFFF),
    "ptrace": (0xFFFF, -1, 0, 0),
    "process_vm_readv": (0, 0, 0, 0, 0, 1),
    "process_vm_writev": (0, 0, 0, 0, 0, 1),
    "process_madvise": (BAD_FD, 0, 0, 0, 0xFFFF),
    "kcmp": (-1, -1, 0, 0, 0),
    "pidfd_getfd": (BAD_FD, 0, 0),
    "init_module": (1, 0, 1),
    "finit_module": (BAD_FD, 1, 0),
    "delete_module": (1, 0),
    "create_module": (),
    "query_module": (),
    "get_kernel_syms": (),
    "kexec_load": (0, 1000, 1, 0),
    "kexec_file_load": (BAD_FD, BAD_FD, 0, 0, 0xFFFF),
    "reboot": (0, 0, 0, 0),
    "bpf": (9999, 0, 0),
    "perf_event_open": (1, 0, -1, -1, 0),
    "userfaultfd": (0xFFFF,),
    "fanotify_init": (0xFFFFFFFF, 0),
    "lookup_dcookie": (0, 1, 0),
    "syslog": (9999, 0, 0),
    "acct": (1,),
    "vhangup": (),
    "io_uring_setup": (0, 1),
    "io_uring_enter": (BAD_FD, 0, 0, 0, 0, 0),
    "io_uring_register": (BAD_FD, 0, 0, 0),
    "keyctl": (9999, 0, 0, 0, 0),
    "add_key": (1, 1, 1, 0, 0),
    "request_key": (1, 1, 0, 0),
    "iopl": (99,),
    "ioperm": (0x10000, 1, 1),
    "settimeofday": (1, 1),
    "clock_settime": (9999, 1),
    "adjtimex": (1,),
    "clock_adjtime": (9999, 1),
    "mbind": (0, 0, 0xFFFF, 0, 0, 0),
    "set_mempolicy": (0xFFFF, 0, 0),
    "get_mempolicy": (0, 0, 0, 0, 0xFFFF),
    "set_mempolicy_home_node": (0, 0, 0, 0xFFFF),
    "migrate_pages": (-1, 0, 0, 0),
    "move_pages": (0, 0, 0, 0, 0, 0xFF00),
    "uselib": (1,),
    "nfsservctl": (),
    "_sysctl": (1,),
    "sysfs": (0xFF, 0, 0),
    "ustat": (0, 1),
    "afs_syscall": (),
    "getpmsg": (),
    "putpmsg": (),
    "security": (),
    "tuxcall": (),
    "vserver": (),
}

DENIED_EPERM = [n for n in DEFAULT_PROFILE.syscalls_denied(errno.EPERM) if n not in SKIPPED]


# --- the unconditional deny list ---------------------------------------------------


@pytest.mark.parametrize("name", DENIED_EPERM)
def test_denied_syscall_returns_eperm(name: str, default_filter: Any) -> None:
    ret, err = value_of(run_in_child(probe(name, *PROBES[name]), default_filter))
    assert (ret, errno.errorcode.get(err, err)) == (-1, "EPERM")


@pytest.mark.parametrize("name", DENIED_EPERM)
def test_probe_fails_differently_without_filter(name: str) -> None:
    # As root (the suite's premise) the unfiltered call fails for other reasons.
    ret, err = value_of(run_in_child(probe(name, *PROBES[name])))
    assert not (ret == -1 and err == errno.EPERM), f"{name} gives EPERM even without the filter"


def test_every_denied_syscall_has_a_probe() -> None:
    assert set(DENIED_EPERM) <= set(PROBES)


def test_clone3_returns_enosys(default_filter: Any) -> None:
    assert value_of(run_in_child(probe("clone3", 1, 88))) == [-1, errno.EFAULT]
    assert value_of(run_in_child(probe("clone3", 1, 88), default_filter)) == [-1, errno.ENOSYS]


# --- namespaces: unshare and clone flags -------------------------------------------


@pytest.mark.parametrize(
    "flag", [CLONE_NEWUSER, CLONE_NEWNET], ids=["CLONE_NEWUSER", "CLONE_NEWNET"]
)
def test_unshare_new_namespace_denied(flag: int, default_filter: Any) -> None:
    if os.geteuid() == 0:  # control: unfiltered it works (in the throwaway child)
        assert value_of(run_in_child(probe("unshare", flag))) == [0, 0]
    assert value_of(run_in_child(probe("unshare", flag), default_filter)) == [-1, errno.EPERM]


@pytest.mark.parametrize("flag", UNSHARE_NAMESPACE_FLAGS, ids=hex)
def test_unshare_any_namespace_flag_denied(flag: int, default_filter: Any) -> None:
    # Together with harmless flags, so the mask test is on one bit among others.
    flags = flag | CLONE_FS | CLONE_FILES
    assert value_of(run_in_child(probe("unshare", flags), default_filter)) == [-1, errno.EPERM]


def test_unshare_without_namespace_flags_allowed(default_filter: Any) -> None:
    def body() -> list[list[int]]:
        return [
            list(raw_syscall("unshare", 0)),
            list(raw_syscall("unshare", CLONE_FS | CLONE_FILES)),
        ]

    assert value_of(run_in_child(body, default_filter)) == [[0, 0], [0, 0]]


@pytest.mark.parametrize("flag", CLONE_NAMESPACE_FLAGS, ids=hex)
def test_clone_with_namespace_flag_denied(flag: int, default_filter: Any) -> None:
    # CLONE_THREAD without CLONE_SIGHAND is invalid: unfiltered, clone fails
    # with EINVAL and never creates a process.
    call = probe("clone", flag | CLONE_THREAD, 0, 0, 0, 0)
    assert value_of(run_in_child(call)) == [-1, errno.EINVAL]
    assert value_of(run_in_child(call, default_filter)) == [-1, errno.EPERM]


def test_fork_threads_and_subprocess_work_under_filter(default_filter: Any) -> None:
    def body() -> dict[str, Any]:
        out: dict[str, Any] = {}
        with open("/proc/self/status") as status:
            out["seccomp_mode"] = next(
                line.split()[1] for line in status if line.startswith("Seccomp:")
            )
        out["mount"] = list(raw_syscall("mount", 1, 1, 1, 0, 1))
        seen: list[int] = []
        thread = threading.Thread(target=lambda: seen.append(threading.get_native_id()))
        thread.start()
        thread.join(10)
        out["thread_ran"] = bool(seen) and seen[0] != threading.get_native_id()
        pid = os.fork()
        if pid == 0:
            os._exit(5)
        out["fork_exit"] = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
        out["true"] = subprocess.run(["/bin/true"], timeout=10).returncode
        out["sh"] = subprocess.run(["/bin/sh", "-c", "exit 3"], timeout=10).returncode
        return out

    assert value_of(run_in_child(body, default_filter)) == {
        "seccomp_mode": "2",
        "mount": [-1, errno.EPERM],
        "thread_ran": True,
        "fork_exit": 5,
        "true": 0,
        "sh": 3,
    }


# --- sockets ------------------------------------------------------------------------


SOCKET_DENIED = [
    (AF_PACKET, socket.SOCK_RAW),
    (AF_ALG, socket.SOCK_SEQPACKET),
    (AF_VSOCK, socket.SOCK_STREAM),
    # The kernel takes `int family`: upper bits must not slip past the filter.
    ((1 << 32) | AF_PACKET, socket.SOCK_RAW),
]


@pytest.mark.parametrize(
    ("family", "kind"), SOCKET_DENIED, ids=["AF_PACKET", "AF_ALG", "AF_VSOCK", "AF_PACKET_hi"]
)
def test_socket_family_denied(family: int, kind: int, default_filter: Any) -> None:
    def body() -> list[int]:
        ret, err = raw_syscall("socket", family, kind, 0)
        if ret >= 0:
            os.close(ret)
        return [min(ret, 0), err]

    assert value_of(run_in_child(body, default_filter)) == [-1, errno.EPERM]


def test_socket_high_bits_are_ignored_by_the_kernel() -> None:
    """Why the AF_PACKET_hi case matters: unfiltered, the kernel drops the upper bits."""
    ret, err = value_of(run_in_child(probe("socket", (1 << 32) | AF_PACKET, socket.SOCK_RAW, 0)))
    assert ret >= 0, errno.errorcode.get(err, err)


def test_ordinary_sockets_work_under_filter(default_filter: Any) -> None:
    def body() -> list[str]:
        made = []
        for family, kind, proto in (
            (socket.AF_INET, socket.SOCK_STREAM, 0),
            (socket.AF_INET, socket.SOCK_DGRAM, 0),
            (socket.AF_UNIX, socket.SOCK_STREAM, 0),
            (socket.AF_NETLINK, socket.SOCK_RAW, 0),  # NETLINK_ROUTE
        ):
            with socket.socket(family, kind, proto) as sock:
                made.append(sock.family.name)
        left, right = socket.socketpair()
        left.sendall(b"x")
        made.append(right.recv(1).decode())
        return made

    assert value_of(run_in_child(body, default_filter)) == [
        "AF_INET",
        "AF_INET",
        "AF_UNIX",
        "AF_NETLINK",
        "x",
    ]


# --- personality --------------------------------------------------------------------


def _personality_samples() -> list[int]:
    rng = random.Random(1234)
    samples = set(PERSONALITY_ALLOWED)
    samples |= {1 << b for b in range(64)}
    samples |= {v | (1 << b) for v in PERSONALITY_ALLOWED for b in range(64)}
    samples |= {0xFFFFFFFF & ~(1 << b) for b in range(32)}
    samples |= {rng.getrandbits(32) for _ in range(300)}
    samples |= {rng.getrandbits(64) for _ in range(100)}
    return sorted(samples)


def test_personality_model_matches_allowed_set() -> None:
    rule = DEFAULT_PROFILE.rule_for("personality")
    assert rule is not None
    for value in _personality_samples():
        assert rule.denies([value]) == (value not in PERSONALITY_ALLOWED), hex(value)


def test_personality_filter_allows_only_docker_values(default_filter: Any) -> None:
    samples = _personality_samples()

    def body() -> list[bool]:
        denied = []
        for value in samples:
            ret, err = raw_syscall("personality", value)
            if ret == -1 and err == errno.EPERM:
                denied.append(True)
            else:
                assert ret != -1, (hex(value), err)
                raw_syscall("personality", 0)  # back to PER_LINUX
                denied.append(False)
        return denied

    denied = value_of(run_in_child(body, default_filter))
    wrong = [
        hex(v) for v, d in zip(samples, denied, strict=True) if d != (v not in PERSONALITY_ALLOWED)
    ]
    assert wrong == []
    assert denied.count(False) == len(PERSONALITY_ALLOWED)


# --- actions, the BPF program, foreign ABIs ------------------------------------------


def test_blocked_call_does_not_kill_the_process(default_filter: Any) -> None:
    def body() -> None:
        ret, err = raw_syscall("mount", 1, 1, 1, 0, 1)
        os._exit(7 if (ret, err) == (-1, errno.EPERM) else 9)

    result = run_in_child(body, default_filter)
    assert (result.signal, result.exit_code) == (None, 7)


def test_kill_rule_kills_with_sigsys() -> None:
    profile = Profile(name="test-kill", rules=(Rule(("getppid",), action="kill"),))
    result = run_in_child(os.getppid, seccomp.compile_filter(profile))
    assert result.signal == signal.SIGSYS


def test_default_profile_has_no_kill_rules() -> None:
    assert {rule.action for rule in DEFAULT_PROFILE.rules} == {"errno"}


def test_export_bpf_is_a_loadable_program() -> None:
    program = seccomp.export_bpf(DEFAULT_PROFILE)
    assert len(program) > 0
    assert len(program) % 8 == 0

    def body() -> list[list[int]]:
        return [
            list(raw_syscall("mount", 1, 1, 1, 0, 1)),
            list(raw_syscall("clone3", 1, 88)),
            [int(raw_syscall("getpid")[0] == os.getpid()), 0],
        ]

    assert value_of(run_in_child(body, program)) == [
        [-1, errno.EPERM],
        [-1, errno.ENOSYS],
        [1, 0],
    ]


def test_load_rejects_garbage() -> None:
    with pytest.raises(seccomp.SeccompError):
        seccomp.load(b"\x00" * 7)


# mov eax, 20 (i386 getpid); int 0x80; ret
_I386_GETPID = b"\xb8\x14\x00\x00\x00\xcd\x80\xc3"


def _i386_getpid() -> list[int]:
    page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    page.write(_I386_GETPID)
    func = ctypes.CFUNCTYPE(ctypes.c_int)(ctypes.addressof(ctypes.c_char.from_buffer(page)))
    return [func(), os.getpid()]


@pytest.mark.skipif(not IS_X86_64, reason="needs the x86_64 kernel's IA32 compat syscall ABI")
def test_i386_syscalls_fail_with_enosys(default_filter: Any) -> None:
    control = run_in_child(_i386_getpid)
    if control.signal is not None:
        pytest.skip("kernel lacks CONFIG_IA32_EMULATION (int 0x80 killed the process)")
    ret, pid = value_of(control)
    assert ret == pid
    ret, _ = value_of(run_in_child(_i386_getpid, default_filter))
    assert ret == -errno.ENOSYS


# --- the profile as data ----------------------------------------------------------------


def test_profile_lists_no_duplicate_syscalls() -> None:
    names = DEFAULT_PROFILE.syscalls()
    duplicates = sorted({n for n in names if names.count(n) > 1})
    assert duplicates == []
    assert len(names) > 80


def test_profile_rejects_duplicates_and_bad_clauses() -> None:
    with pytest.raises(ValueError, match="more than one rule"):
        Profile(name="dup", rules=(Rule(("mount",)), Rule(("mount",), errno=errno.EACCES)))
    with pytest.raises(ValueError, match="distinct arguments"):
        Rule(("socket",), when=((ArgCheck(0, "gt", 1), ArgCheck(0, "lt", 9)),))


def test_restricted_and_denied_lists() -> None:
    assert set(DEFAULT_PROFILE.syscalls_restricted()) == {
        "unshare",
        "clone",
        "socket",
        "personality",
    }
    assert DEFAULT_PROFILE.syscalls_denied(errno.ENOSYS) == ("clone3",)
    assert "mount" in DEFAULT_PROFILE.syscalls_denied()
    assert "clone3" not in DEFAULT_PROFILE.syscalls_denied(errno.EPERM)


# Every x86_64 syscall Docker's default profile denies to a container without
# extra capabilities (moby profiles/seccomp/default.json with moby#47341,
# i.e. allowlist plus ptrace/process_vm_* on kernels >= 4.8, complemented
# against libseccomp 2.5.4's x86_64 table). clone, socket, personality and
# unshare are only restricted (unshare(0) is allowed on purpose).
DOCKER_DENIED_X86_64 = [
    "_sysctl",
    "acct",
    "add_key",
    "afs_syscall",
    "bpf",
    "chroot",
    "clock_settime",
    "clone",
    "clone3",
    "create_module",
    "delete_module",
    "fanotify_init",
    "finit_module",
    "fsconfig",
    "fsmount",
    "fsopen",
    "fspick",
    "get_kernel_syms",
    "get_mempolicy",
    "getpmsg",
    "init_module",
    "ioperm",
    "iopl",
    "kcmp",
    "kexec_file_load",
    "kexec_load",
    "keyctl",
    "lookup_dcookie",
    "mbind",
    "migrate_pages",
    "mount",
    "mount_setattr",
    "move_mount",
    "move_pages",
    "nfsservctl",
    "open_by_handle_at",
    "open_tree",
    "perf_event_open",
    "personality",
    "pidfd_getfd",
    "pivot_root",
    "process_madvise",
    "putpmsg",
    "query_module",
    "quotactl",
    "quotactl_fd",
    "reboot",
    "request_key",
    "security",
    "set_mempolicy",
    "set_mempolicy_home_node",
    "setdomainname",
    "sethostname",
    "setns",
    "settimeofday",
    "socket",
    "swapoff",
    "swapon",
    "sysfs",
    "syslog",
    "tuxcall",
    "umount2",
    "unshare",
    "uselib",
    "userfaultfd",
    "ustat",
    "vhangup",
    "vserver",
]


def test_covers_everything_docker_denies() -> None:
    named = set(DEFAULT_PROFILE.syscalls())
    assert sorted(set(DOCKER_DENIED_X86_64) - named) == []


def test_get_profile() -> None:
    assert get_profile("default") is DEFAULT_PROFILE
    with pytest.raises(ValueError, match="unknown seccomp profile"):
        get_profile("no-such-profile")


# --- names libseccomp does not know, missing libseccomp ---------------------------------


def test_unknown_and_foreign_names_are_skipped(default_filter: Any) -> None:
    profile = Profile(name="skips", rules=(Rule(("firelet_no_such_syscall", "vm86", "getppid")),))
    skipped = seccomp.skipped_syscalls(profile)
    assert skipped["firelet_no_such_syscall"] == "unknown to this libseccomp"
    if IS_X86_64:
        assert skipped["vm86"] == "not a syscall on this architecture"
        assert {"vm86", "vm86old", "stime", "umount"} <= set(SKIPPED)
    assert "getppid" not in skipped
    result = run_in_child(probe("getppid"), seccomp.compile_filter(profile))
    assert value_of(result) == [-1, errno.EPERM]
    assert set(SKIPPED) < set(DEFAULT_PROFILE.syscalls())


def test_missing_pyseccomp_gives_seccomp_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyseccomp", None)
    with pytest.raises(seccomp.SeccompError, match="pyseccomp") as info:
        seccomp.compile_filter(DEFAULT_PROFILE)
    assert isinstance(info.value, SandboxError)


def test_missing_libseccomp_gives_seccomp_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import ctypes.util

    real = ctypes.util.find_library
    monkeypatch.delitem(sys.modules, "pyseccomp")
    monkeypatch.setattr(
        ctypes.util, "find_library", lambda name: None if name == "seccomp" else real(name)
    )
    with pytest.raises(seccomp.SeccompError, match="libseccomp"):
        seccomp.export_bpf(DEFAULT_PROFILE)
