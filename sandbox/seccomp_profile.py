"""Seccomp profiles as plain data, so that a change to them reads well in a diff.

A profile is a deny list: every syscall is allowed unless a `Rule` names it.
A rule denies its syscalls always, or only when one of its `when` clauses
matches the call's arguments (clauses are ORed; the checks inside one clause
are ANDed, at most one check per argument, which is what libseccomp can
express). `sandbox.seccomp` turns a profile into a BPF filter.

`DEFAULT_PROFILE` denies everything Docker's default seccomp profile denies to
a container without extra capabilities (moby profiles/seccomp/default.json,
as of moby#47341, 2024), plus a few more (see the comments on each group).
Deliberate differences from Docker:

* stricter: ptrace, process_vm_readv/writev, name_to_handle_at, adjtimex,
  clock_adjtime, the io_uring calls and socket(AF_PACKET/AF_ALG) are denied;
  syscalls reached through a foreign ABI (i386 `int 0x80`, x32) fail with
  ENOSYS instead of being checked against the same rules, so 32-bit programs
  cannot run in the sandbox;
* looser: unshare() without any CLONE_NEW* flag is allowed (it only
  unshares the caller's own fs/files/sysvsem state), and, as with any deny
  list, syscalls newer than this list are allowed.

The sandbox has no capabilities when the filter is loaded, so most of these
calls would fail anyway; the filter keeps the kernel code behind them out of
reach (defence in depth), and returns errors rather than killing the process.
"""

from __future__ import annotations

import errno
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

Op = Literal["eq", "ne", "lt", "le", "gt", "ge", "masked_eq"]
Action = Literal["errno", "kill"]

U32 = 0xFFFF_FFFF
U64 = 0xFFFF_FFFF_FFFF_FFFF

_OPS: frozenset[str] = frozenset({"eq", "ne", "lt", "le", "gt", "ge", "masked_eq"})


@dataclass(frozen=True, slots=True)
class ArgCheck:
    """One comparison on a 64-bit syscall argument.

    `masked_eq` is true when `arg & mask == value`; the other ops compare the
    whole argument with `value` (unsigned) and ignore `mask`.
    """

    index: int
    op: Op
    value: int
    mask: int = U64

    def __post_init__(self) -> None:
        if not 0 <= self.index <= 5:
            raise ValueError(f"argument index {self.index} is not in 0..5")
        if self.op not in _OPS:
            raise ValueError(f"unknown comparison {self.op!r}")
        if not (0 <= self.value <= U64 and 0 <= self.mask <= U64):
            raise ValueError("value and mask must be unsigned 64-bit integers")

    def matches(self, args: Sequence[int]) -> bool:
        """Evaluate the check in Python (same semantics as the BPF filter)."""
        arg = args[self.index] & U64
        match self.op:
            case "eq":
                return arg == self.value
            case "ne":
                return arg != self.value
            case "lt":
                return arg < self.value
            case "le":
                return arg <= self.value
            case "gt":
                return arg > self.value
            case "ge":
                return arg >= self.value
            case _:
                return arg & self.mask == self.value


Clause = tuple[ArgCheck, ...]


@dataclass(frozen=True, slots=True)
class Rule:
    """Deny `syscalls` (always, or when any clause of `when` matches).

    `action="errno"` makes the call fail with `errno`; `action="kill"` kills
    the whole process with SIGSYS.
    """

    syscalls: tuple[str, ...]
    action: Action = "errno"
    errno: int = errno.EPERM
    when: tuple[Clause, ...] = ()
    comment: str = ""

    def __post_init__(self) -> None:
        if not self.syscalls:
            raise ValueError("a rule needs at least one syscall")
        if len(set(self.syscalls)) != len(self.syscalls):
            raise ValueError(f"duplicate syscall in rule {self.syscalls}")
        if self.action not in ("errno", "kill"):
            raise ValueError(f"unknown action {self.action!r}")
        if not 0 < self.errno < 4096:
            raise ValueError(f"errno {self.errno} out of range")
        for clause in self.when:
            indexes = [check.index for check in clause]
            if not clause or len(set(indexes)) != len(indexes):
                raise ValueError(
                    f"rule for {self.syscalls}: a clause needs 1..6 checks on distinct arguments"
                )

    @property
    def conditional(self) -> bool:
        return bool(self.when)

    def denies(self, args: Sequence[int]) -> bool:
        """True when a call with these arguments is denied (Python model)."""
        if not self.when:
            return True
        return any(all(check.matches(args) for check in clause) for clause in self.when)


@dataclass(frozen=True, slots=True)
class Profile:
    """A named deny list. `default_action` is always "allow"."""

    name: str
    rules: tuple[Rule, ...]
    default_action: Literal["allow"] = "allow"
    # What a syscall made through an ABI the filter was not built for gets
    # (i386 `int 0x80` or x32 calls from an x86_64 process).
    foreign_abi_errno: int = errno.ENOSYS

    def __post_init__(self) -> None:
        if self.default_action != "allow":
            raise ValueError("profiles are deny lists: default_action must be 'allow'")
        seen: set[str] = set()
        for rule in self.rules:
            for name in rule.syscalls:
                if name in seen:
                    raise ValueError(f"syscall {name!r} appears in more than one rule")
                seen.add(name)

    def syscalls(self) -> tuple[str, ...]:
        """Every syscall the profile names, in profile order."""
        return tuple(name for rule in self.rules for name in rule.syscalls)

    def syscalls_denied(self, errno: int | None = None) -> tuple[str, ...]:
        """Syscalls denied whatever their arguments (optionally: with this errno)."""
        return tuple(
            name
            for rule in self.rules
            if not rule.conditional
            and rule.action == "errno"
            and (errno is None or rule.errno == errno)
            for name in rule.syscalls
        )

    def syscalls_restricted(self) -> tuple[str, ...]:
        """Syscalls denied only for some arguments."""
        return tuple(name for rule in self.rules if rule.conditional for name in rule.syscalls)

    def rule_for(self, syscall: str) -> Rule | None:
        for rule in self.rules:
            if syscall in rule.syscalls:
                return rule
        return None


# --- helpers that build clauses ------------------------------------------------


def any_bit_set(index: int, bits: Iterable[int]) -> tuple[Clause, ...]:
    """One clause per bit: matches when argument `index` has any of `bits` set."""
    return tuple((ArgCheck(index, "masked_eq", bit, mask=bit),) for bit in bits)


def int_arg_in(index: int, values: Iterable[int]) -> tuple[Clause, ...]:
    """Matches when the low 32 bits of argument `index` equal one of `values`.

    For kernel parameters declared `int`/`unsigned int`: the kernel drops the
    upper 32 bits, so a check on the whole register could be dodged by setting
    them.
    """
    return tuple((ArgCheck(index, "masked_eq", value & U32, mask=U32),) for value in values)


def u32_arg_not_in(index: int, allowed: Iterable[int]) -> tuple[Clause, ...]:
    """Matches when argument `index` is not one of `allowed`.

    libseccomp allows one check per argument in a rule, so "x not in S" is
    built from single masked comparisons, ORed:

    * x > 0xffffffff (any upper bit set: denied, whatever the kernel would do);
    * otherwise x differs from every allowed value. With P = the bits used by
      the allowed values (all of them subsets of P, plus possibly 0xffffffff)
      and a pivot bit p outside P, x is denied when it sets a bit outside P and
      is not all ones: either x has p set and some other bit c clear (one
      clause per c), or x has p clear and some bit b outside P set (one clause
      per b).

    Only sets of that shape are supported (every allowed value except
    0xffffffff has all its bits in P and every combination of P's bits is
    allowed); anything else raises ValueError.
    """
    allowed = frozenset(allowed)
    small = allowed - {U32}
    used = 0
    for value in small:
        used |= value
    combos = {0}
    for bit in (1 << b for b in range(32) if used & (1 << b)):
        combos |= {c | bit for c in combos}
    if combos != small or used == U32:
        raise ValueError("u32_arg_not_in supports only 'all combinations of some bits' sets")
    outside = [1 << b for b in range(32) if not used & (1 << b)]
    pivot = outside[-1]
    clauses: list[Clause] = [(ArgCheck(index, "gt", U32),)]
    if U32 in allowed:
        others = [1 << b for b in range(32) if (1 << b) != pivot]
        clauses += [(ArgCheck(index, "masked_eq", pivot, mask=pivot | c),) for c in others]
        clauses += [
            (ArgCheck(index, "masked_eq", b, mask=b | pivot),) for b in outside if b != pivot
        ]
    else:
        clauses += [(ArgCheck(index, "masked_eq", b, mask=b),) for b in outside]
    return tuple(clauses)


# --- the default profile ---------------------------------------------------------

CLONE_NEWTIME = 0x00000080
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

# For clone() the low byte is the exit signal, so CLONE_NEWTIME (0x80) is
# only meaningful for unshare() and clone3(). Docker masks 0x7E020000.
CLONE_NAMESPACE_FLAGS = (
    CLONE_NEWNS,
    CLONE_NEWCGROUP,
    CLONE_NEWUTS,
    CLONE_NEWIPC,
    CLONE_NEWUSER,
    CLONE_NEWPID,
    CLONE_NEWNET,
)
UNSHARE_NAMESPACE_FLAGS = (*CLONE_NAMESPACE_FLAGS, CLONE_NEWTIME)

AF_PACKET = 17
AF_ALG = 38
AF_VSOCK = 40

# personality() values Docker allows: PER_LINUX, PER_LINUX32, UNAME26,
# PER_LINUX32|UNAME26, and 0xffffffff (query the current persona).
PERSONALITY_ALLOWED = (0x0, 0x0008, 0x20000, 0x20008, 0xFFFFFFFF)

DEFAULT_PROFILE = Profile(
    name="default",
    rules=(
        Rule(
            (
                "mount",
                "umount",
                "umount2",
                "pivot_root",
                "chroot",
                "open_tree",
                "move_mount",
                "fsopen",
                "fsconfig",
                "fsmount",
                "fspick",
                "mount_setattr",
                "swapon",
                "swapoff",
                "quotactl",
                "quotactl_fd",
            ),
            comment="mounts and the filesystem tree (CAP_SYS_ADMIN/CAP_SYS_CHROOT in Docker)",
        ),
        Rule(
            ("open_by_handle_at", "name_to_handle_at"),
            comment="file handles bypass path checks (Docker gates open_by_handle_at)",
        ),
        Rule(
            ("setns", "sethostname", "setdomainname"),
            comment="joining namespaces; the hostname is set before the filter is loaded",
        ),
        Rule(
            ("unshare",),
            when=any_bit_set(0, UNSHARE_NAMESPACE_FLAGS),
            comment="no new namespaces of any kind (incl. user); unshare(0)/CLONE_FS/... stay allowed",
        ),
        Rule(
            ("clone",),
            when=any_bit_set(0, CLONE_NAMESPACE_FLAGS),
            comment="clone flags are argument 0 on x86_64 and aarch64 (not on s390)",
        ),
        Rule(
            ("clone3",),
            errno=errno.ENOSYS,
            comment="flags live in memory BPF cannot read: ENOSYS makes glibc fall back to clone()",
        ),
        Rule(
            (
                "ptrace",
                "process_vm_readv",
                "process_vm_writev",
                "process_madvise",
                "kcmp",
                "pidfd_getfd",
            ),
            comment="reaching into other processes (Docker gates these on CAP_SYS_PTRACE)",
        ),
        Rule(
            (
                "init_module",
                "finit_module",
                "delete_module",
                "create_module",
                "query_module",
                "get_kernel_syms",
                "kexec_load",
                "kexec_file_load",
                "reboot",
            ),
            comment="kernel modules and reboot",
        ),
        Rule(
            (
                "bpf",
                "perf_event_open",
                "userfaultfd",
                "fanotify_init",
                "lookup_dcookie",
                "syslog",
                "acct",
                "vhangup",
                "io_uring_setup",
                "io_uring_enter",
                "io_uring_register",
            ),
            comment="large or privileged kernel attack surface (io_uring: as Docker since 2023)",
        ),
        Rule(
            ("keyctl", "add_key", "request_key"),
            comment="the kernel keyring is not namespaced",
        ),
        Rule(
            ("iopl", "ioperm", "vm86", "vm86old"),
            comment="raw hardware access",
        ),
        Rule(
            (
                "settimeofday",
                "stime",
                "clock_settime",
                "clock_settime64",
                "adjtimex",
                "clock_adjtime",
                "clock_adjtime64",
            ),
            comment="the clock is shared with the host (Docker allows read-only adjtimex)",
        ),
        Rule(
            (
                "mbind",
                "set_mempolicy",
                "get_mempolicy",
                "set_mempolicy_home_node",
                "migrate_pages",
                "move_pages",
            ),
            comment="NUMA placement (Docker gates these on CAP_SYS_NICE)",
        ),
        Rule(
            (
                "uselib",
                "nfsservctl",
                "_sysctl",
                "sysfs",
                "ustat",
                "afs_syscall",
                "getpmsg",
                "putpmsg",
                "security",
                "tuxcall",
                "vserver",
            ),
            comment="obsolete or unimplemented (Docker denies them by omission)",
        ),
        Rule(
            ("socket",),
            when=int_arg_in(0, (AF_PACKET, AF_ALG, AF_VSOCK)),
            comment="raw link-layer, kernel crypto and vsock sockets; AF_NETLINK stays allowed",
        ),
        Rule(
            ("personality",),
            when=u32_arg_not_in(0, PERSONALITY_ALLOWED),
            comment="only the personas Docker allows (e.g. no ADDR_NO_RANDOMIZE, READ_IMPLIES_EXEC)",
        ),
    ),
)

PROFILES: dict[str, Profile] = {DEFAULT_PROFILE.name: DEFAULT_PROFILE}


def get_profile(name: str) -> Profile:
    """The profile a `SandboxSpec.seccomp` name refers to."""
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(
            f"unknown seccomp profile {name!r} (known: {', '.join(sorted(PROFILES))})"
        ) from None
