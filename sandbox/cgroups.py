"""Per-sandbox cgroups through the kernel's cgroupfs, v2 and v1 alike.

`detect()` finds, per controller, which hierarchy serves it: a controller
enabled on the cgroup2 mount is used there, otherwise its v1 mount is used.
So a pure v2 host uses one tree, a v1 host one tree per controller, and a
hybrid host (memory, cpu, pids on v1; cgroup.kill on the unified mount)
mixes them. `SandboxCgroup` creates one leaf per sandbox in every hierarchy
it needs, sets the limits, attaches a process, reads the accounting back and
removes everything on teardown.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import time
from dataclasses import dataclass, field
from typing import Final

from sandbox.errors import SandboxSetupError
from sandbox.spec import CgroupLimits

CONTROLLERS: Final = ("memory", "pids", "cpu", "cpuacct", "freezer")
BASE_NAME: Final = "firelet"


@dataclass(frozen=True, slots=True)
class CgroupLayout:
    """Where each controller lives on this host."""

    unified: str | None  # the cgroup2 mount point, if any
    unified_controllers: frozenset[str]
    v1: dict[str, str] = field(default_factory=dict)  # controller -> v1 mount point
    # This process's own cgroup per hierarchy key ("v2" or a v1 controller).
    own: dict[str, str] = field(default_factory=dict)

    def hierarchies(self) -> dict[str, str]:
        """Hierarchy key -> mount point, for every hierarchy a sandbox gets a
        leaf in. Co-mounted v1 controllers (cpu,cpuacct) share a mount point."""
        out = {"v2": self.unified} if self.unified is not None else {}
        for controller in CONTROLLERS:
            if self.version_of(controller) == "v1":
                out[controller] = self.v1[controller]
        return out

    def version_of(self, controller: str) -> str | None:
        if controller in self.unified_controllers:
            return "v2"
        if controller in self.v1:
            return "v1"
        # cpu time on v2 comes with the cpu controller (cpu.stat is always there).
        if controller == "cpuacct" and self.unified is not None:
            return "v2"
        return None

    @property
    def has_kill(self) -> bool:
        return self.unified is not None and os.path.exists(
            os.path.join(self.unified, "cgroup.kill")
        )


def _unescape(field: str) -> str:
    """Undo the octal escapes (\\040 for a space) of /proc/self/mounts."""
    if "\\" not in field:
        return field
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


# Options of a v1 cgroup mount that are not controller names.
_GENERIC_MOUNT_OPTIONS: Final = frozenset(
    {
        "rw",
        "ro",
        "nosuid",
        "suid",
        "nodev",
        "dev",
        "noexec",
        "exec",
        "relatime",
        "norelatime",
        "noatime",
        "strictatime",
        "nodiratime",
        "lazytime",
        "sync",
        "async",
        "dirsync",
        "mand",
        "nomand",
        "xattr",
        "noprefix",
        "clone_children",
        "cpuset_v2_mode",
        "none",
        "all",
        "nsdelegate",
        "favordynmods",
        "memory_localevents",
        "memory_recursiveprot",
        "memory_hugetlb_accounting",
        "pids_localevents",
    }
)


def parse_cgroup_mounts(mounts_text: str) -> tuple[str | None, dict[str, str]]:
    """From /proc/self/mounts: the first cgroup2 mount point, and each v1
    controller's mount point (every one mounted, not only those we use)."""
    unified: str | None = None
    v1: dict[str, str] = {}
    for line in mounts_text.splitlines():
        fields = line.split()
        if len(fields) < 4:
            continue
        target, fstype, options = _unescape(fields[1]), fields[2], fields[3].split(",")
        if fstype == "cgroup2" and unified is None:
            unified = target
        elif fstype == "cgroup":
            for option in options:
                if option not in _GENERIC_MOUNT_OPTIONS and "=" not in option:
                    v1.setdefault(option, target)
    return unified, v1


def detect(
    mounts_file: str = "/proc/self/mounts", cgroup_file: str = "/proc/self/cgroup"
) -> CgroupLayout:
    with open(mounts_file) as f:
        unified, v1 = parse_cgroup_mounts(f.read())
    enabled: frozenset[str] = frozenset()
    if unified is not None:
        with contextlib.suppress(OSError), open(os.path.join(unified, "cgroup.controllers")) as f:
            enabled = frozenset(f.read().split())
    own: dict[str, str] = {}
    with contextlib.suppress(OSError), open(cgroup_file) as f:
        for line in f:
            _id, controllers, path = line.rstrip("\n").split(":", 2)
            if not controllers:
                own["v2"] = path
            for controller in controllers.split(","):
                own[controller] = path
    return CgroupLayout(unified, enabled, v1, own)


def host_subtrees(layout: CgroupLayout, tag: str, nest: bool) -> dict[str, str]:
    """Hierarchy key -> the directory that holds one host's sandbox cgroups.

    With `nest`, it sits below the host's own cgroup (`<own>/firelet/<tag>`):
    the right place under systemd (Delegate=yes) or any other manager that
    delegated a subtree to us. Otherwise below the hierarchy's root.
    """
    out = {}
    for key, mountpoint in layout.hierarchies().items():
        own = layout.own.get(key, "/") if nest else "/"
        out[key] = os.path.normpath(os.path.join(mountpoint, own.lstrip("/"), BASE_NAME, tag))
    return out


def _write(path: str, value: str, step: str) -> None:
    try:
        fd = os.open(path, os.O_WRONLY)
        try:
            os.write(fd, value.encode())
        finally:
            os.close(fd)
    except OSError as exc:
        raise SandboxSetupError(step, exc.errno or 0, f"{path}: {exc.strerror}") from None


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


class SandboxCgroup:
    """The cgroups of one sandbox (one leaf directory per hierarchy)."""

    def __init__(self, layout: CgroupLayout, subtrees: dict[str, str], name: str) -> None:
        self.layout = layout
        self.subtrees = subtrees  # from host_subtrees(): one per hierarchy
        self.name = name
        # hierarchy key ("v2" or a v1 controller) -> leaf directory
        self.dirs: dict[str, str] = {}

    # --------------------------------------------------------------- create
    @classmethod
    def create(
        cls, layout: CgroupLayout, subtrees: dict[str, str], name: str, limits: CgroupLimits
    ) -> SandboxCgroup:
        group = cls(layout, subtrees, name)
        try:
            group._create(limits)
        except BaseException:
            group.destroy()
            raise
        return group

    def _leaf(self, key: str) -> str:
        subtree = self.subtrees[key]
        leaf = os.path.join(subtree, self.name)
        if leaf in self.dirs.values():  # co-mounted with a hierarchy done already
            self.dirs[key] = leaf
            return leaf
        if not os.path.isdir(subtree):
            os.makedirs(subtree, 0o755, exist_ok=True)
        if key == "v2":
            # Controllers must be enabled on every level from the subtree's
            # anchor (our own cgroup, or the root) down to the leaf's parent.
            anchor = os.path.dirname(os.path.dirname(subtree))
            for level in (anchor, os.path.dirname(subtree), subtree):
                self._enable_v2_controllers(level)
        try:
            os.mkdir(leaf, 0o755)
        except OSError as exc:
            raise SandboxSetupError(
                f"create cgroup {leaf}", exc.errno or 0, exc.strerror or ""
            ) from None
        self.dirs[key] = leaf
        return leaf

    def _enable_v2_controllers(self, parent: str) -> None:
        wanted = [c for c in ("memory", "pids", "cpu") if c in self.layout.unified_controllers]
        if not wanted:
            return
        with contextlib.suppress(OSError):
            current = _read(os.path.join(parent, "cgroup.subtree_control")).split()
            missing = [c for c in wanted if c not in current]
            if missing:
                _write(
                    os.path.join(parent, "cgroup.subtree_control"),
                    " ".join(f"+{c}" for c in missing),
                    "enable cgroup v2 controllers",
                )

    def _create(self, limits: CgroupLimits) -> None:
        for key in self.subtrees:
            self._leaf(key)
        self._set_memory(limits)
        self._set_pids(limits)
        # The CPU quota is applied by `limit_cpu()` once the bootstrap has
        # exec'd: the sandbox's own setup should not run at 7% of a CPU.

    def _set_memory(self, limits: CgroupLimits) -> None:
        if limits.memory_bytes is None:
            return
        version = self.layout.version_of("memory")
        if version == "v2":
            leaf = self.dirs["v2"]
            _write(f"{leaf}/memory.max", str(limits.memory_bytes), "set memory.max")
            if os.path.exists(f"{leaf}/memory.swap.max"):
                _write(f"{leaf}/memory.swap.max", str(limits.swap_bytes), "set memory.swap.max")
        elif version == "v1":
            leaf = self.dirs["memory"]
            _write(
                f"{leaf}/memory.limit_in_bytes",
                str(limits.memory_bytes),
                "set memory.limit_in_bytes",
            )
            if os.path.exists(f"{leaf}/memory.memsw.limit_in_bytes"):
                _write(
                    f"{leaf}/memory.memsw.limit_in_bytes",
                    str(limits.memory_bytes + limits.swap_bytes),
                    "set memory.memsw.limit_in_bytes",
                )
        else:
            raise SandboxSetupError("set memory limit", errno.ENOENT, "no memory cgroup controller")

    def _set_pids(self, limits: CgroupLimits) -> None:
        if limits.pids_max is None:
            return
        version = self.layout.version_of("pids")
        if version is None:
            raise SandboxSetupError("set pids limit", errno.ENOENT, "no pids cgroup controller")
        leaf = self.dirs["v2" if version == "v2" else "pids"]
        _write(f"{leaf}/pids.max", str(limits.pids_max), "set pids.max")

    def limit_cpu(self, limits: CgroupLimits) -> None:
        if limits.cpu_quota_us is None:
            return
        version = self.layout.version_of("cpu")
        if version == "v2":
            _write(
                f"{self.dirs['v2']}/cpu.max",
                f"{limits.cpu_quota_us} {limits.cpu_period_us}",
                "set cpu.max",
            )
        elif version == "v1":
            leaf = self.dirs["cpu"]
            _write(f"{leaf}/cpu.cfs_period_us", str(limits.cpu_period_us), "set cpu.cfs_period_us")
            _write(f"{leaf}/cpu.cfs_quota_us", str(limits.cpu_quota_us), "set cpu.cfs_quota_us")
        # No cpu controller: the quota is best effort; `firelet check` says so.

    # --------------------------------------------------------------- attach
    def attach_self(self) -> None:
        """Move the calling process into every leaf (children inherit)."""
        pid = str(os.getpid())
        for leaf in self.dirs.values():
            _write(f"{leaf}/cgroup.procs", pid, f"join cgroup {leaf}")

    # ------------------------------------------------------------ accounting
    def memory_peak_path(self) -> str | None:
        version = self.layout.version_of("memory")
        if version == "v2":
            path = f"{self.dirs['v2']}/memory.peak"
            return path if os.path.exists(path) else None
        if version == "v1":
            return f"{self.dirs['memory']}/memory.max_usage_in_bytes"
        return None

    def stats(self) -> dict[str, int]:
        """OOM kills, peak memory and cpu time, read before teardown."""
        out = {"oom_kills": 0, "max_memory_bytes": 0, "cpu_ns": 0}
        with contextlib.suppress(OSError, ValueError):
            version = self.layout.version_of("memory")
            if version == "v2":
                events = _read(f"{self.dirs['v2']}/memory.events")
                out["oom_kills"] = _field(events, "oom_kill")
            elif version == "v1":
                out["oom_kills"] = _field(
                    _read(f"{self.dirs['memory']}/memory.oom_control"), "oom_kill"
                )
        with contextlib.suppress(OSError, ValueError):
            path = self.memory_peak_path()
            if path is not None:
                out["max_memory_bytes"] = int(_read(path))
        with contextlib.suppress(OSError, ValueError):
            if "cpuacct" in self.dirs:
                out["cpu_ns"] = int(_read(f"{self.dirs['cpuacct']}/cpuacct.usage"))
            elif "v2" in self.dirs:
                out["cpu_ns"] = _field(_read(f"{self.dirs['v2']}/cpu.stat"), "usage_usec") * 1000
        return out

    # -------------------------------------------------------------- destroy
    def kill_all(self) -> None:
        """SIGKILL every process left in the sandbox's cgroups."""
        if "v2" in self.dirs and os.path.exists(f"{self.dirs['v2']}/cgroup.kill"):
            with contextlib.suppress(OSError):
                _write(f"{self.dirs['v2']}/cgroup.kill", "1", "cgroup.kill")
        for leaf in self.dirs.values():
            with contextlib.suppress(OSError):
                for line in _read(f"{leaf}/cgroup.procs").split():
                    with contextlib.suppress(ProcessLookupError, ValueError):
                        os.kill(int(line), signal.SIGKILL)

    def destroy(self, attempts: int = 50) -> bool:
        """Kill what is left and remove every leaf. True when all are gone."""
        self.kill_all()
        if "memory" in self.dirs:
            # Without this, removed v1 memory cgroups linger as dying cgroups.
            with contextlib.suppress(OSError, SandboxSetupError):
                _write(f"{self.dirs['memory']}/memory.force_empty", "0", "force_empty")
        for _ in range(attempts):
            for key, leaf in list(self.dirs.items()):
                try:
                    os.rmdir(leaf)
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    if exc.errno != errno.EBUSY:
                        raise
                    continue
                del self.dirs[key]
            if not self.dirs:
                return True
            if attempts > 1:
                self.kill_all()
                time.sleep(0.001)
        return False


def remove_subtrees(subtrees: dict[str, str]) -> None:
    """Remove a host's (now empty) subtrees from every hierarchy."""
    for path in set(subtrees.values()):
        with contextlib.suppress(OSError):
            os.rmdir(path)


def prune_stale(layout: CgroupLayout, subtrees: dict[str, str]) -> int:
    """Remove subtrees left beside ours by host processes that no longer
    exist (a crash, a SIGKILL): kill what is in them and rmdir. Returns how
    many went."""
    removed = 0
    for root in {os.path.dirname(path) for path in subtrees.values()}:
        with contextlib.suppress(OSError):
            for entry in os.listdir(root):
                if not (entry.startswith("h") and entry[1:].isdigit()):
                    continue
                if os.path.exists(f"/proc/{entry[1:]}"):
                    continue
                subtree = os.path.join(root, entry)
                for leaf in os.listdir(subtree):
                    path = os.path.join(subtree, leaf)
                    if os.path.isdir(path):
                        stale = SandboxCgroup(layout, {}, leaf)
                        stale.dirs = {"stale": path}
                        stale.destroy(attempts=5)
                with contextlib.suppress(OSError):
                    os.rmdir(subtree)
                    removed += 1
    return removed


def _field(text: str, name: str) -> int:
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == name:
            return int(value)
    return 0
