"""SandboxSpec: an immutable, declarative description of one sandbox.

The spec says *what* the sandbox is; `sandbox.mounts.plan()` and the
spawner's child stages turn it into ordered setup steps. Specs cross the
spawner's unix socket as plain JSON (`to_wire` / `from_wire`), so every
field is a plain value.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

# Lambda runs functions as sbx_user1051 (uid 993, gid 990).
SANDBOX_UID: Final = 993
SANDBOX_GID: Final = 990

DEFAULT_NAMESPACES: Final = frozenset({"mount", "pid", "net", "uts", "ipc"})


@dataclass(frozen=True, slots=True)
class RoBind:
    """Bind `source` from the host read-only at `target`."""

    source: str
    target: str
    optional: bool = False


@dataclass(frozen=True, slots=True)
class Tmpfs:
    """A fresh tmpfs of `size_bytes` at `target`, owned by the sandbox user."""

    target: str
    size_bytes: int
    mode: int = 0o1777


@dataclass(frozen=True, slots=True)
class Symlink:
    link: str
    target: str


@dataclass(frozen=True, slots=True)
class File:
    """A small file generated into the (read-only) root, e.g. /etc/passwd."""

    path: str
    content: str
    mode: int = 0o644


@dataclass(frozen=True, slots=True)
class Dir:
    """An empty directory in the root (mount points such as /opt)."""

    path: str
    mode: int = 0o755


@dataclass(frozen=True, slots=True)
class Proc:
    target: str = "/proc"


@dataclass(frozen=True, slots=True)
class Dev:
    """A minimal /dev: null, zero, full, random, urandom, fd links, shm."""

    target: str = "/dev"


@dataclass(frozen=True, slots=True)
class CgroupLimits:
    """Resource limits of one sandbox; None means "not limited"."""

    memory_bytes: int | None = None
    swap_bytes: int = 0
    pids_max: int | None = None
    cpu_quota_us: int | None = None
    cpu_period_us: int = 100_000


@dataclass(frozen=True, slots=True)
class Rlimits:
    """setrlimit values applied to the bootstrap (soft = hard)."""

    nofile: int = 1024
    core: int = 0
    nproc: int | None = None
    fsize: int | None = None


Mount = RoBind | Tmpfs | Symlink | File | Dir | Proc | Dev

_MOUNT_TYPES: Final = {cls.__name__: cls for cls in (RoBind, Tmpfs, Symlink, File, Dir, Proc, Dev)}


@dataclass(frozen=True, slots=True)
class SandboxSpec:
    """Everything needed to build and start one sandbox."""

    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    # Per-sandbox mounts, applied on top of `base`. Only mount points (RoBind,
    # Tmpfs, Proc, Dev, Dir): files and links belong in `base`.
    mounts: tuple[Mount, ...]
    # The system part of the root, the same for many sandboxes: the spawner
    # builds it once and each sandbox binds it (see sandbox.mounts).
    base: tuple[Mount, ...] = ()
    cwd: str = "/var/task"
    hostname: str = "firelet"
    namespaces: frozenset[str] = DEFAULT_NAMESPACES
    uid: int = SANDBOX_UID
    gid: int = SANDBOX_GID
    # The Runtime API listener made inside the sandbox's network namespace
    # and handed to the host; `None` for sandboxes without one.
    listen_port: int | None = 9001
    # Where the root tmpfs is mounted before pivot_root (only the sandbox's
    # own mount namespace sees it).
    root_mountpoint: str = "/run/firelet/root"
    root_size_bytes: int = 1 << 20
    # Resource limits (cgroups); None runs the sandbox in the spawner's cgroup.
    cgroup: CgroupLimits | None = None
    rlimits: Rlimits = Rlimits()
    # Name of a seccomp profile (sandbox.seccomp_profile); None loads none.
    seccomp: str | None = "default"
    labels: dict[str, str] = field(default_factory=dict)

    def to_wire(self) -> dict[str, Any]:
        return {
            "argv": list(self.argv),
            "env": [list(pair) for pair in self.env],
            "mounts": [_mount_to_wire(m) for m in self.mounts],
            "base": [_mount_to_wire(m) for m in self.base],
            "cwd": self.cwd,
            "hostname": self.hostname,
            "namespaces": sorted(self.namespaces),
            "uid": self.uid,
            "gid": self.gid,
            "listen_port": self.listen_port,
            "root_mountpoint": self.root_mountpoint,
            "root_size_bytes": self.root_size_bytes,
            "cgroup": _fields(self.cgroup) if self.cgroup is not None else None,
            "rlimits": _fields(self.rlimits),
            "seccomp": self.seccomp,
            "labels": dict(self.labels),
        }

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> SandboxSpec:
        return cls(
            argv=tuple(data["argv"]),
            env=tuple((k, v) for k, v in data["env"]),
            mounts=tuple(_mount_from_wire(m) for m in data["mounts"]),
            base=tuple(_mount_from_wire(m) for m in data["base"]),
            cwd=data["cwd"],
            hostname=data["hostname"],
            namespaces=frozenset(data["namespaces"]),
            uid=data["uid"],
            gid=data["gid"],
            listen_port=data["listen_port"],
            root_mountpoint=data["root_mountpoint"],
            root_size_bytes=data["root_size_bytes"],
            cgroup=CgroupLimits(**data["cgroup"]) if data["cgroup"] is not None else None,
            rlimits=Rlimits(**data["rlimits"]),
            seccomp=data["seccomp"],
            labels=dict(data["labels"]),
        )


def _fields(value: Any) -> dict[str, Any]:
    return {name: getattr(value, name) for name in value.__slots__}


def _mount_to_wire(mount: Mount) -> dict[str, Any]:
    fields = _fields(mount)
    fields["kind"] = type(mount).__name__
    return fields


def _mount_from_wire(data: dict[str, Any]) -> Mount:
    data = dict(data)
    kind = _MOUNT_TYPES[data.pop("kind")]
    return kind(**data)
