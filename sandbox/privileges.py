"""Dropping privileges just before exec: ids, capabilities, no_new_privs."""

from __future__ import annotations

import contextlib
import os

from sandbox import linux

# SECBIT_NOROOT | SECBIT_NOROOT_LOCKED | SECBIT_NO_SETUID_FIXUP |
# SECBIT_NO_SETUID_FIXUP_LOCKED | SECBIT_KEEP_CAPS_LOCKED |
# SECBIT_NO_CAP_AMBIENT_RAISE | SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED
_LOCKED_SECUREBITS = 0x01 | 0x02 | 0x04 | 0x08 | 0x20 | 0x40 | 0x80


def drop_bounding_set() -> None:
    """Remove every capability from the bounding set (needs CAP_SETPCAP)."""
    for cap in range(linux.last_capability() + 1):
        linux.prctl(linux.PR_CAPBSET_DROP, cap)


def lock_securebits() -> None:
    linux.prctl(linux.PR_SET_SECUREBITS, _LOCKED_SECUREBITS)


def become(uid: int, gid: int) -> None:
    """Switch to `uid`/`gid` for real, effective and saved ids, no groups."""
    # Rootless: in a user namespace with setgroups denied the supplementary
    # groups are unmapped (nogroup) and cannot be dropped.
    with contextlib.suppress(PermissionError):
        os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)


def clear_all_capabilities() -> None:
    """Empty the ambient, effective, permitted and inheritable sets."""
    linux.prctl(linux.PR_CAP_AMBIENT, linux.PR_CAP_AMBIENT_CLEAR_ALL)
    linux.clear_capabilities()


def no_new_privs() -> None:
    linux.prctl(linux.PR_SET_NO_NEW_PRIVS, 1)
