"""Turn a `sandbox.seccomp_profile.Profile` into a seccomp BPF filter and load it.

Typical use: build once in the parent (`compile_filter` or `export_bpf`), then
in the forked sandbox child, after the capabilities are dropped and just
before exec, call `load(...)`. Loading sets PR_SET_NO_NEW_PRIVS, so it works
without CAP_SYS_ADMIN. Only the native ABI is filtered; syscalls made through
another ABI (i386 `int 0x80`, x32) fail with `profile.foreign_abi_errno`.

pyseccomp (and libseccomp under it) is imported lazily, so that a host
without libseccomp gets a `SeccompError` naming what is missing instead of an
ImportError at import time.
"""

from __future__ import annotations

import ctypes
import os
from types import ModuleType
from typing import TYPE_CHECKING, cast

from sandbox.errors import SandboxError
from sandbox.seccomp_profile import ArgCheck, Profile, Rule

if TYPE_CHECKING:
    import pyseccomp

__all__ = [
    "SeccompError",
    "compile_filter",
    "export_bpf",
    "load",
    "skipped_syscalls",
]

_PR_SET_NO_NEW_PRIVS = 38
_PR_SET_SECCOMP = 22
_SECCOMP_MODE_FILTER = 2
_BPF_INSN_SIZE = 8  # struct sock_filter: u16 code, u8 jt, u8 jf, u32 k


class SeccompError(SandboxError):
    """The seccomp filter could not be built or loaded; says which feature is missing."""


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def _lib() -> ModuleType:
    try:
        import pyseccomp
    except ImportError as exc:
        raise SeccompError(
            "seccomp filtering needs the Python package 'pyseccomp' (missing: pyseccomp)"
        ) from exc
    except (RuntimeError, OSError) as exc:  # pyseccomp raises RuntimeError without the .so
        raise SeccompError(
            f"seccomp filtering needs libseccomp (missing: libseccomp.so.2): {exc}"
        ) from exc
    return cast(ModuleType, pyseccomp)


def _resolve(lib: ModuleType, name: str) -> int | None:
    """The native syscall number, or None if the name is absent on this arch."""
    number = lib.resolve_syscall(lib.Arch.NATIVE, name)
    # -1 (__NR_SCMP_ERROR): unknown to libseccomp; other negatives are
    # libseccomp's pseudo numbers for syscalls that exist on other arches.
    return number if number >= 0 else None


def skipped_syscalls(profile: Profile) -> dict[str, str]:
    """Syscalls the profile names that this arch / libseccomp does not have, with why."""
    lib = _lib()
    skipped: dict[str, str] = {}
    for name in profile.syscalls():
        number = lib.resolve_syscall(lib.Arch.NATIVE, name)
        if number == -1:
            skipped[name] = "unknown to this libseccomp"
        elif number < 0:
            skipped[name] = "not a syscall on this architecture"
    return skipped


def _arg(lib: ModuleType, check: ArgCheck) -> pyseccomp.Arg:
    op = {
        "eq": lib.EQ,
        "ne": lib.NE,
        "lt": lib.LT,
        "le": lib.LE,
        "gt": lib.GT,
        "ge": lib.GE,
        "masked_eq": lib.MASKED_EQ,
    }[check.op]
    if check.op == "masked_eq":  # libseccomp: datum_a is the mask, datum_b the value
        return lib.Arg(check.index, op, check.mask, check.value)
    return lib.Arg(check.index, op, check.value)


def _action(lib: ModuleType, rule: Rule) -> int:
    return int(lib.KILL_PROCESS if rule.action == "kill" else lib.ERRNO(rule.errno))


def compile_filter(profile: Profile) -> pyseccomp.SyscallFilter:
    """Build the filter for the native architecture; absent syscalls are skipped."""
    lib = _lib()
    native = lib.system_arch()
    if native in (lib.Arch.S390, lib.Arch.S390X):
        raise SeccompError("the seccomp profiles assume clone(flags, ...); s390 is not supported")
    try:
        flt = lib.SyscallFilter(lib.ALLOW)
        flt.set_attr(lib.Attr.ACT_BADARCH, lib.ERRNO(profile.foreign_abi_errno))
        for rule in profile.rules:
            action = _action(lib, rule)
            for name in rule.syscalls:
                number = _resolve(lib, name)
                if number is None:
                    continue
                if not rule.when:
                    flt.add_rule(action, number)
                for clause in rule.when:
                    flt.add_rule(action, number, *(_arg(lib, check) for check in clause))
    except OSError as exc:
        raise SeccompError(
            f"libseccomp rejected profile {profile.name!r}: {exc.strerror or exc}"
        ) from exc
    return flt


def export_bpf(profile: Profile) -> bytes:
    """The profile's BPF program (struct sock_filter[]), for caching and `load(bytes)`."""
    flt = compile_filter(profile)
    fd = os.memfd_create("firelet-seccomp", os.MFD_CLOEXEC)
    with open(fd, "w+b") as out:
        try:
            flt.export_bpf(out)
        except OSError as exc:
            raise SeccompError(f"libseccomp could not export the BPF program: {exc}") from exc
        out.seek(0)
        program = out.read()
    if not program or len(program) % _BPF_INSN_SIZE:
        raise SeccompError(f"libseccomp exported a malformed BPF program ({len(program)} bytes)")
    return program


def load(flt: pyseccomp.SyscallFilter | bytes) -> None:
    """Install a filter on the calling thread (meant for a single-threaded child before exec).

    Accepts a filter from `compile_filter` or a program from `export_bpf`.
    The filter cannot be removed; it is inherited across fork and exec.
    """
    if isinstance(flt, bytes | bytearray):
        _load_bpf(bytes(flt))
        return
    try:
        flt.load()
    except OSError as exc:
        raise SeccompError(_load_failure(exc.errno)) from exc


def _load_failure(err: int | None) -> str:
    reason = os.strerror(err) if err else "unknown error"
    return (
        f"loading the seccomp filter failed ({reason}); needs kernel seccomp filter "
        "mode (CONFIG_SECCOMP_FILTER) and no_new_privs or CAP_SYS_ADMIN"
    )


def _load_bpf(program: bytes) -> None:
    count, rest = divmod(len(program), _BPF_INSN_SIZE)
    if not count or rest or count > 4096:
        raise SeccompError(f"not a BPF program: {len(program)} bytes")
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl.argtypes = [ctypes.c_int] + [
        ctypes.c_ulong
    ] * 4  # the kernel checks unused args are 0
    libc.prctl.restype = ctypes.c_int
    buf = ctypes.create_string_buffer(program, len(program))
    prog = _SockFprog(count, ctypes.cast(buf, ctypes.c_void_p))
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise SeccompError(_load_failure(ctypes.get_errno()))
    if libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.addressof(prog), 0, 0) != 0:
        raise SeccompError(_load_failure(ctypes.get_errno()))
