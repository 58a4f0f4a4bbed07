"""Probe the kernel features Firelet uses (`firelet check`).

Each probe does the real thing where it can: namespaces are unshared, filters
loaded and file systems mounted, always in a forked child that has its own
mount namespace (made private first), so nothing reaches the host and the
calling process keeps its state. Cgroup probes create one empty test cgroup
per hierarchy and remove it again. The whole probe takes well under a second.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import os
import secrets
import select
import signal
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Final

from sandbox import linux
from sandbox.cgroups import parse_cgroup_mounts


@dataclass(frozen=True)
class Feature:
    """One kernel feature: whether it works here and what to do if not.

    `remedy` is always set: it says what the operator can do when the
    feature is missing (it is shown for features that are not ok).
    """

    name: str
    required: bool
    ok: bool
    detail: str
    remedy: str

    @property
    def status(self) -> str:
        if self.ok:
            return "ok"
        return "missing" if self.required else "optional-off"

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "required": self.required,
            "ok": self.ok,
            "status": self.status,
            "detail": self.detail,
            "remedy": self.remedy,
        }


# What rootless mode (host not root) needs instead: its own user namespace;
# root and cgroups are then out of reach and optional.
_ROOTLESS_OPTIONAL = frozenset({"root", "cgroup:memory", "cgroup:pids"})
_ROOTLESS_REQUIRED = frozenset({"userns:unprivileged", "namespace:user"})


def for_rootless(features: Iterable[Feature]) -> list[Feature]:
    """The same probe results, with the requirements of rootless mode."""
    out = []
    for feature in features:
        if feature.name in _ROOTLESS_OPTIONAL:
            feature = replace(feature, required=False)
        elif feature.name in _ROOTLESS_REQUIRED:
            feature = replace(feature, required=True)
        out.append(feature)
    return out


def missing_required(features: Iterable[Feature]) -> list[Feature]:
    """The required features that are not ok, in their original order."""
    return [f for f in features if f.required and not f.ok]


def optional_off(features: Iterable[Feature]) -> list[Feature]:
    """The optional features that are not ok, in their original order."""
    return [f for f in features if not f.required and not f.ok]


# --------------------------------------------------------------------------
# running a probe in a forked child

CLONE_NEWTIME: Final = 0x00000080
PR_GET_SECCOMP: Final = 21
PR_SET_SECCOMP: Final = 22
PR_GET_NO_NEW_PRIVS: Final = 39
SECCOMP_MODE_FILTER: Final = 2
_CHILD_TIMEOUT_S: Final = 5.0


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.errno is not None:
        name = errno.errorcode.get(exc.errno, str(exc.errno))
        text = exc.strerror or os.strerror(exc.errno)
        if exc.filename is not None:
            text = f"{text}: {exc.filename}"
        return f"{text} ({name})"
    return f"{type(exc).__name__}: {exc}"


def _in_child(
    fn: Callable[[], str], timeout: float = _CHILD_TIMEOUT_S, userns: bool = True
) -> tuple[bool, str]:
    """Run `fn` in a forked child; (True, its message) or (False, the error).

    The child never returns into the caller's code: it always leaves through
    os._exit, so no atexit handler, buffered output or finally block of the
    parent runs twice.
    """
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        code = 1
        try:
            os.close(read_end)
            try:
                if userns and os.geteuid() != 0:
                    # Rootless: probe the way the spawner works, from a user
                    # namespace of our own.
                    linux.enter_own_user_namespace()
                data = b"1" + fn().encode(errors="replace")
                code = 0
            except BaseException as exc:
                data = b"0" + _error_text(exc).encode(errors="replace")
            os.write(write_end, data[:4096])
        finally:
            os._exit(code)
    os.close(write_end)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    timed_out = False
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([read_end], [], [], left)[0]:
                timed_out = True
                break
            chunk = os.read(read_end, 4096)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(read_end)
        if timed_out:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
    if timed_out:
        return False, f"probe did not finish within {timeout:g} s"
    data = b"".join(chunks)
    if not data:
        if os.WIFSIGNALED(status):
            return False, f"probe child killed by {signal.Signals(os.WTERMSIG(status)).name}"
        return False, f"probe child exited with status {os.waitstatus_to_exitcode(status)}"
    return data[:1] == b"1", data[1:].decode(errors="replace")


def _private_mount_ns() -> None:
    """In a child: own mount namespace, with no propagation back to the host."""
    linux.unshare(linux.CLONE_NEWNS)
    linux.mount(None, "/", None, linux.MS_REC | linux.MS_PRIVATE, None)


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def _status_field(name: str) -> str | None:
    for line in (_read("/proc/self/status") or "").splitlines():
        key, _, value = line.partition(":")
        if key == name:
            return value.strip()
    return None


# --------------------------------------------------------------------------
# root


def _probe_root() -> Feature:
    euid = os.geteuid()
    return Feature(
        "root",
        True,
        euid == 0,
        f"euid {euid}",
        "run firelet as root (e.g. `sudo firelet serve`); rootless mode is planned but not built",
    )


# --------------------------------------------------------------------------
# namespaces

# name -> (flag, /proc/self/ns entry that changes, required, kernel option)
_NAMESPACES: Final = {
    "mount": (linux.CLONE_NEWNS, "mnt", True, ""),
    "pid": (linux.CLONE_NEWPID, "pid_for_children", True, "CONFIG_PID_NS"),
    "net": (linux.CLONE_NEWNET, "net", True, "CONFIG_NET_NS"),
    "uts": (linux.CLONE_NEWUTS, "uts", True, "CONFIG_UTS_NS"),
    "ipc": (linux.CLONE_NEWIPC, "ipc", True, "CONFIG_IPC_NS"),
    "cgroup": (linux.CLONE_NEWCGROUP, "cgroup", False, "CONFIG_CGROUPS, Linux >= 4.6"),
    "user": (linux.CLONE_NEWUSER, "user", False, "CONFIG_USER_NS"),
    "time": (CLONE_NEWTIME, "time_for_children", False, "CONFIG_TIME_NS, Linux >= 5.6"),
}

_NAMESPACE_EFFECT: Final = {
    "cgroup": "sandboxes would see the host's cgroup paths in /proc/self/cgroup",
    "user": "needed only for rootless mode and user-mapped sandboxes",
    "time": "sandboxes share the host's monotonic and boot-time clocks",
}


def _first_pid() -> str:
    if os.getpid() != 1:
        raise RuntimeError(f"the first child of the new pid namespace has pid {os.getpid()}")
    return "pid 1"


def _unshare_and_compare(flag: int, entry: str) -> str:
    link = f"/proc/self/ns/{entry}"
    try:
        before: str | None = os.readlink(link)
    except OSError:
        before = None  # an old kernel without this entry: unshare will say why
    linux.unshare(flag)
    if flag == linux.CLONE_NEWPID:
        # pid_for_children stays unreadable until the first child exists.
        ok, message = _in_child(_first_pid)
        if not ok:
            raise RuntimeError(message)
        return "unshare works (its first child is pid 1)"
    after = os.readlink(link)
    if before == after:
        raise RuntimeError(f"unshare returned 0 but {link} is still {before}")
    return f"unshare works ({entry}: {before} -> {after})"


def _probe_namespace(name: str) -> Feature:
    flag, entry, required, option = _NAMESPACES[name]
    ok, message = _in_child(lambda: _unshare_and_compare(flag, entry))
    kernel = "every kernel has them" if name == "mount" else f"use a kernel with {option}"
    remedy = (
        f"{kernel}; run as root, and inside a container run it privileged "
        "(CAP_SYS_ADMIN and no seccomp/AppArmor profile that blocks unshare)"
    )
    if not required:
        remedy += f"; without it {_NAMESPACE_EFFECT[name]}"
    return Feature(f"namespace:{name}", required, ok, message, remedy)


def _probe_unprivileged_userns() -> Feature:
    notes = []
    clone = _read("/proc/sys/kernel/unprivileged_userns_clone")
    if clone is not None:
        notes.append(f"kernel.unprivileged_userns_clone={clone.strip()}")
    limit = _read("/proc/sys/user/max_user_namespaces")
    if limit is not None:
        notes.append(f"user.max_user_namespaces={limit.strip()}")
    apparmor = _read("/proc/sys/kernel/apparmor_restrict_unprivileged_userns")
    if apparmor is not None:
        notes.append(f"kernel.apparmor_restrict_unprivileged_userns={apparmor.strip()}")
    sysctl_ok = (clone is None or clone.strip() == "1") and (
        limit is None or (limit.strip().isdigit() and int(limit) > 0)
    )

    def as_nobody() -> str:
        if os.geteuid() == 0:
            os.setgroups([])
            os.setresgid(65534, 65534, 65534)
            os.setresuid(65534, 65534, 65534)
        linux.unshare(linux.CLONE_NEWUSER)
        return f"uid {os.geteuid()} can unshare a user namespace"

    ok, message = _in_child(as_nobody, userns=False)
    return Feature(
        "userns:unprivileged",
        False,
        ok and sysctl_ok,
        "; ".join([message, *notes]),
        "sysctl -w kernel.unprivileged_userns_clone=1 (Debian/Ubuntu) and "
        "user.max_user_namespaces > 0; needed for rootless mode (host not root)",
    )


# --------------------------------------------------------------------------
# seccomp, no_new_privs, pidfd


class _SockFilter(ctypes.Structure):
    _fields_ = (
        ("code", ctypes.c_uint16),
        ("jt", ctypes.c_uint8),
        ("jf", ctypes.c_uint8),
        ("k", ctypes.c_uint32),
    )


class _SockFprog(ctypes.Structure):
    _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter)))


def _load_allow_all_filter() -> str:
    mode = linux.prctl(PR_GET_SECCOMP)
    linux.prctl(linux.PR_SET_NO_NEW_PRIVS, 1)
    program = (_SockFilter * 1)(_SockFilter(0x06, 0, 0, 0x7FFF0000))  # BPF_RET|BPF_K, ALLOW
    fprog = _SockFprog(1, program)
    linux.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(fprog))
    after = _status_field("Seccomp")
    if after != "2":
        raise RuntimeError(f"filter loaded but /proc/self/status says Seccomp: {after}")
    return f"PR_GET_SECCOMP={mode} here; a BPF filter loads (Seccomp: 2 in the child)"


def _probe_seccomp() -> Feature:
    remedy = (
        "use a kernel with CONFIG_SECCOMP and CONFIG_SECCOMP_FILTER (every distro kernel has them)"
    )
    if _status_field("Seccomp") is None:
        return Feature("seccomp", True, False, "no Seccomp field in /proc/self/status", remedy)
    ok, message = _in_child(_load_allow_all_filter)
    return Feature("seccomp", True, ok, message, remedy)


def _libseccomp_version(lib: ctypes.CDLL) -> str:
    class Version(ctypes.Structure):
        _fields_ = (
            ("major", ctypes.c_uint),
            ("minor", ctypes.c_uint),
            ("micro", ctypes.c_uint),
        )

    lib.seccomp_version.restype = ctypes.POINTER(Version)
    v = lib.seccomp_version().contents
    return f"{v.major}.{v.minor}.{v.micro}"


def _pyseccomp_filter_works() -> str:
    import pyseccomp  # loads libseccomp with ctypes; raises when it is missing

    version = _libseccomp_version(pyseccomp._libseccomp)
    filt = pyseccomp.SyscallFilter(pyseccomp.ALLOW)
    filt.add_rule(pyseccomp.ERRNO(errno.EPERM), "chdir")
    filt.load()
    try:
        os.chdir("/")
    except PermissionError:
        return f"pyseccomp {pyseccomp.__version__} on libseccomp {version}: a filter blocks chdir with EPERM"
    raise RuntimeError("pyseccomp loaded a filter but chdir was not blocked")


def _probe_libseccomp() -> Feature:
    remedy = (
        "install libseccomp (apt-get install libseccomp2 / dnf install libseccomp) "
        "and pyseccomp (pip install pyseccomp) into firelet's Python"
    )
    ok, message = _in_child(_pyseccomp_filter_works)
    if ok:
        return Feature("libseccomp", True, True, message, remedy)
    path = ctypes.util.find_library("seccomp")
    if path is None:
        return Feature(
            "libseccomp", True, False, f"{message}; find_library('seccomp') found nothing", remedy
        )
    try:
        version = _libseccomp_version(ctypes.CDLL(path))
    except (OSError, AttributeError) as exc:
        return Feature("libseccomp", True, False, f"{path}: {_error_text(exc)}", remedy)
    return Feature(
        "libseccomp",
        True,
        True,
        f"{path} {version} loads via ctypes (pyseccomp filter test failed: {message})",
        remedy,
    )


def _set_no_new_privs() -> str:
    linux.prctl(linux.PR_SET_NO_NEW_PRIVS, 1)
    value = linux.prctl(PR_GET_NO_NEW_PRIVS)
    status = _status_field("NoNewPrivs")
    if value != 1 or status not in (None, "1"):
        raise RuntimeError(f"PR_GET_NO_NEW_PRIVS={value}, NoNewPrivs: {status}")
    return "PR_SET_NO_NEW_PRIVS sticks (PR_GET_NO_NEW_PRIVS=1 in the child)"


def _probe_no_new_privs() -> Feature:
    ok, message = _in_child(_set_no_new_privs)
    return Feature("no_new_privs", True, ok, message, "use Linux >= 3.5 (PR_SET_NO_NEW_PRIVS)")


def _probe_pidfd() -> Feature:
    remedy = "use Linux >= 5.3 (pidfd_open) and Python >= 3.9"
    if not hasattr(os, "pidfd_open"):
        return Feature("pidfd", True, False, "this Python has no os.pidfd_open", remedy)
    try:
        fd = os.pidfd_open(os.getpid())
    except OSError as exc:
        return Feature("pidfd", True, False, f"pidfd_open: {_error_text(exc)}", remedy)
    try:
        signal.pidfd_send_signal(fd, 0)
    except OSError as exc:
        return Feature("pidfd", True, False, f"pidfd_send_signal: {_error_text(exc)}", remedy)
    finally:
        os.close(fd)
    return Feature("pidfd", True, True, "pidfd_open + pidfd_send_signal on own pid", remedy)


# --------------------------------------------------------------------------
# file systems


def _mount_small_tmpfs() -> str:
    _private_mount_ns()
    target = next(p for p in ("/tmp", "/mnt", "/run", "/") if os.path.isdir(p))
    linux.mount("tmpfs", target, "tmpfs", linux.MS_NOSUID | linux.MS_NODEV, "size=1m,mode=0700")
    st = os.statvfs(target)
    size = st.f_blocks * st.f_frsize
    if size != 1 << 20:
        raise RuntimeError(f"tmpfs size=1m gave {size} bytes")
    chunk = b"\0" * (256 << 10)
    with open(os.path.join(target, "fill"), "wb", buffering=0) as f:
        try:
            for _ in range(8):
                f.write(chunk)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                return "size-limited tmpfs mounts (ENOSPC at its 1 MiB limit)"
            raise
    raise RuntimeError("wrote 2 MiB into a 1 MiB tmpfs without ENOSPC")


def _probe_tmpfs() -> Feature:
    ok, message = _in_child(_mount_small_tmpfs)
    return Feature(
        "tmpfs",
        True,
        ok,
        message,
        "use a kernel with CONFIG_TMPFS; run as root, and inside a container allow mount (CAP_SYS_ADMIN)",
    )


def _mount_hidden_proc() -> str:
    if os.getpid() != 1:
        raise RuntimeError(f"expected pid 1 in the new pid namespace, got {os.getpid()}")
    flags = linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC
    option = "hidepid=invisible"
    try:
        linux.mount("proc", "/proc", "proc", flags, option)
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            raise
        option = "hidepid=2"  # kernels before 5.8 know only the number
        linux.mount("proc", "/proc", "proc", flags, option)
    options = ""
    for line in (_read("/proc/self/mounts") or "").splitlines():
        fields = line.split()
        if len(fields) >= 4 and fields[1] == "/proc" and fields[2] == "proc":
            options = fields[3]
    shown = next((o for o in options.split(",") if o.startswith("hidepid=")), "")
    if shown not in ("hidepid=invisible", "hidepid=2"):
        raise RuntimeError(f"mounted proc with {option} but its options are '{options}'")
    return f"fresh /proc in a new pid namespace accepts {option} (shown as {shown})"


def _hidepid_in_new_pid_ns() -> str:
    linux.unshare(linux.CLONE_NEWNS | linux.CLONE_NEWPID)
    linux.mount(None, "/", None, linux.MS_REC | linux.MS_PRIVATE, None)
    ok, message = _in_child(_mount_hidden_proc)
    if not ok:
        raise RuntimeError(message)
    return message


def _probe_hidepid() -> Feature:
    ok, message = _in_child(_hidepid_in_new_pid_ns)
    return Feature(
        "proc:hidepid",
        False,
        ok,
        message,
        "use Linux >= 5.8 for per-mount hidepid=invisible; without it a sandbox's /proc "
        "shows all processes of its own pid namespace (never the host's)",
    )


# --------------------------------------------------------------------------
# cgroups


@dataclass(frozen=True)
class CgroupLayout:
    """Where the cgroup hierarchies are mounted, read from /proc/self/mounts."""

    unified: str | None  # mount point of the (first) cgroup2 mount
    unified_controllers: frozenset[str]  # its cgroup.controllers
    unified_subtree: frozenset[str]  # its cgroup.subtree_control
    v1: dict[str, str]  # controller name -> v1 mount point
    known: dict[str, bool]  # /proc/cgroups: controller -> enabled


def cgroup_layout(mounts_text: str | None = None) -> CgroupLayout:
    if mounts_text is None:
        mounts_text = _read("/proc/self/mounts") or ""
    unified, v1 = parse_cgroup_mounts(mounts_text)
    controllers: frozenset[str] = frozenset()
    subtree: frozenset[str] = frozenset()
    if unified is not None:
        controllers = frozenset((_read(f"{unified}/cgroup.controllers") or "").split())
        subtree = frozenset((_read(f"{unified}/cgroup.subtree_control") or "").split())
    known: dict[str, bool] = {}
    for line in (_read("/proc/cgroups") or "").splitlines():
        if line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) >= 4:
            known[parts[0]] = parts[3] == "1"
    return CgroupLayout(unified, controllers, subtree, v1, known)


def _test_cgroup_files(parent: str) -> frozenset[str] | OSError:
    """Create an empty cgroup under `parent`, list its files, remove it."""
    path = os.path.join(parent, f"firelet-check-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        os.mkdir(path)
    except OSError as exc:
        exc.filename = path
        return exc
    try:
        files = frozenset(os.listdir(path))
    finally:
        try:
            os.rmdir(path)
        except OSError as exc:
            exc.filename = path
            return OSError(exc.errno, f"cannot remove the test cgroup: {exc.strerror}", path)
    return files


# feature name -> (v2 controller, v1 controller, file proving limits work, v1 / v2)
_CONTROLLERS: Final = {
    "memory": ("memory", "memory", "memory.limit_in_bytes", "memory.max"),
    "pids": ("pids", "pids", "pids.max", "pids.max"),
    "cpu": ("cpu", "cpu", "cpu.cfs_quota_us", "cpu.max"),
    "io": ("io", "blkio", "blkio.throttle.read_bps_device", "io.max"),
}
_REQUIRED_CONTROLLERS: Final = frozenset({"memory", "pids"})
_CONTROLLER_EFFECT: Final = {
    "memory": "memory_mb could not be enforced",
    "pids": "fork bombs could not be bounded",
    "cpu": "a spinning function is not throttled to its CPU share",
    "io": "disk bandwidth of a sandbox is not limited",
    "freezer": "teardown kills processes without freezing them first",
}


class _CgroupProbe:
    def __init__(self, layout: CgroupLayout) -> None:
        self.layout = layout
        self._files: dict[str, frozenset[str] | OSError] = {}

    def files(self, mount: str) -> frozenset[str] | OSError:
        if mount not in self._files:
            self._files[mount] = _test_cgroup_files(mount)
        return self._files[mount]

    def controller(self, name: str) -> Feature:
        v2_name, v1_name, v1_file, v2_file = _CONTROLLERS[name]
        required = name in _REQUIRED_CONTROLLERS
        layout = self.layout
        remedy = self._controller_remedy(name, v2_name, v1_name)
        feature = f"cgroup:{name}"
        if layout.unified is not None and v2_name in layout.unified_controllers:
            where = f"{layout.unified}/cgroup.controllers"
            if v2_name not in layout.unified_subtree:
                return Feature(
                    feature,
                    required,
                    True,
                    f"v2: listed in {where} (not yet enabled in cgroup.subtree_control)",
                    remedy,
                )
            files = self.files(layout.unified)
            if isinstance(files, OSError):
                return Feature(
                    feature,
                    required,
                    False,
                    f"v2: listed in {where} but a test cgroup fails: {_error_text(files)}",
                    remedy,
                )
            ok = v2_file in files
            seen = "present" if ok else "absent"
            return Feature(
                feature,
                required,
                ok,
                f"v2: listed in {where}; {v2_file} {seen} in a test cgroup",
                remedy,
            )
        if v1_name in layout.v1:
            mount = layout.v1[v1_name]
            files = self.files(mount)
            if isinstance(files, OSError):
                return Feature(
                    feature,
                    required,
                    False,
                    f"v1: hierarchy at {mount} but a test cgroup fails: {_error_text(files)}",
                    remedy,
                )
            ok = v1_file in files
            seen = "present" if ok else "absent"
            return Feature(
                feature,
                required,
                ok,
                f"v1: hierarchy at {mount}; {v1_file} {seen} in a test cgroup",
                remedy,
            )
        return Feature(feature, required, False, self._absent_detail(v2_name, v1_name), remedy)

    def _absent_detail(self, v2_name: str, v1_name: str) -> str:
        known = self.layout.known
        names = {v2_name, v1_name}
        if not names & known.keys():
            return f"the kernel has no {v1_name} controller (not in /proc/cgroups)"
        if not any(known.get(n) for n in names):
            return f"{v1_name} is disabled on the kernel command line (/proc/cgroups enabled=0)"
        where = self.layout.unified or "no cgroup2 mount"
        return f"not in the cgroup2 controllers ({where}) and no v1 hierarchy mounted for it"

    def _controller_remedy(self, name: str, v2_name: str, v1_name: str) -> str:
        text = (
            f"enable the {v2_name} controller: on cgroup v2 (Linux >= 4.5) it must be listed in "
            "cgroup.controllers of the cgroup2 mount (under systemd set Delegate=yes for "
            f"firelet's unit); on v1 mount it: mount -t cgroup -o {v1_name} cgroup "
            f"/sys/fs/cgroup/{v1_name}"
        )
        if name == "memory":
            text += "; remove cgroup_disable=memory / add cgroup_enable=memory on the kernel command line"
        text += "; firelet must be able to create cgroups there (root, or a delegated subtree)"
        if name not in _REQUIRED_CONTROLLERS:
            text += f"; without it {_CONTROLLER_EFFECT[name]}"
        return text

    def freezer(self) -> Feature:
        layout = self.layout
        remedy = (
            "use Linux >= 5.2 with a cgroup2 mount (cgroup.freeze), or mount the v1 freezer: "
            f"mount -t cgroup -o freezer cgroup /sys/fs/cgroup/freezer; without it "
            f"{_CONTROLLER_EFFECT['freezer']}"
        )
        problems = []
        if layout.unified is not None:
            files = self.files(layout.unified)
            if isinstance(files, OSError):
                problems.append(f"v2 test cgroup fails: {_error_text(files)}")
            elif "cgroup.freeze" in files:
                return Feature(
                    "cgroup:freezer",
                    False,
                    True,
                    f"v2: cgroup.freeze present in a test cgroup under {layout.unified}",
                    remedy,
                )
            else:
                problems.append(f"no cgroup.freeze under {layout.unified}")
        if "freezer" in layout.v1:
            mount = layout.v1["freezer"]
            files = self.files(mount)
            if isinstance(files, OSError):
                problems.append(f"v1 test cgroup fails: {_error_text(files)}")
            elif "freezer.state" in files:
                return Feature(
                    "cgroup:freezer",
                    False,
                    True,
                    f"v1: hierarchy at {mount}; freezer.state present in a test cgroup",
                    remedy,
                )
            else:
                problems.append(f"no freezer.state under {mount}")
        if not problems:
            problems.append("no cgroup2 mount and no v1 freezer hierarchy")
        return Feature("cgroup:freezer", False, False, "; ".join(problems), remedy)

    def kill(self) -> Feature:
        layout = self.layout
        remedy = (
            "use Linux >= 5.14 with a cgroup2 mount (hybrid hosts: mount -t cgroup2 none "
            "/sys/fs/cgroup/unified); without it teardown signals each process of the cgroup"
        )
        if layout.unified is None:
            return Feature("cgroup.kill", False, False, "no cgroup2 mount", remedy)
        files = self.files(layout.unified)
        if isinstance(files, OSError):
            return Feature(
                "cgroup.kill", False, False, f"test cgroup fails: {_error_text(files)}", remedy
            )
        ok = "cgroup.kill" in files
        seen = "present" if ok else "absent"
        return Feature(
            "cgroup.kill",
            False,
            ok,
            f"v2: cgroup.kill {seen} in a test cgroup under {layout.unified}",
            remedy,
        )

    def swap_accounting(self) -> Feature:
        layout = self.layout
        swap_total = None
        for line in (_read("/proc/meminfo") or "").splitlines():
            if line.startswith("SwapTotal:"):
                swap_total = line.split(":", 1)[1].strip()
        note = f"; host SwapTotal {swap_total}" if swap_total is not None else ""
        remedy = (
            "boot with swapaccount=1 (kernel with CONFIG_MEMCG_SWAP); without it memory "
            "limits do not cover swap (harmless on a host without swap)"
        )
        if layout.unified is not None and "memory" in layout.unified_controllers:
            if "memory" in layout.unified_subtree:
                files = self.files(layout.unified)
                if isinstance(files, OSError):
                    return Feature(
                        "swap-accounting",
                        False,
                        False,
                        f"v2 test cgroup fails: {_error_text(files)}",
                        remedy,
                    )
                ok = "memory.swap.max" in files
            else:
                own = self._own_v2_cgroup()
                ok = own is not None and os.path.exists(os.path.join(own, "memory.swap.max"))
            seen = "present" if ok else "absent"
            return Feature(
                "swap-accounting", False, ok, f"v2: memory.swap.max {seen}{note}", remedy
            )
        if "memory" in layout.v1:
            mount = layout.v1["memory"]
            files = self.files(mount)
            if isinstance(files, OSError):
                return Feature(
                    "swap-accounting",
                    False,
                    False,
                    f"v1 test cgroup fails: {_error_text(files)}",
                    remedy,
                )
            ok = "memory.memsw.limit_in_bytes" in files
            seen = "present" if ok else "absent"
            return Feature(
                "swap-accounting",
                False,
                ok,
                f"v1: memory.memsw.limit_in_bytes {seen}{note}",
                remedy,
            )
        return Feature("swap-accounting", False, False, "no memory controller", remedy)

    def _own_v2_cgroup(self) -> str | None:
        if self.layout.unified is None:
            return None
        for line in (_read("/proc/self/cgroup") or "").splitlines():
            if line.startswith("0::"):
                return self.layout.unified + line[3:].rstrip()
        return None


def _probe_cgroups() -> list[Feature]:
    probe = _CgroupProbe(cgroup_layout())
    features = [probe.controller(name) for name in _CONTROLLERS]
    features.append(probe.freezer())
    features.append(probe.kill())
    features.append(probe.swap_accounting())
    return features


# --------------------------------------------------------------------------


def probe() -> list[Feature]:
    """Probe every kernel feature Firelet uses; required ones first in each group."""
    features = [_probe_root()]
    features += [_probe_namespace(name) for name in _NAMESPACES]
    features.append(_probe_unprivileged_userns())
    features.append(_probe_seccomp())
    features.append(_probe_libseccomp())
    features.append(_probe_no_new_privs())
    features.append(_probe_pidfd())
    features.append(_probe_tmpfs())
    features.append(_probe_hidepid())
    features += _probe_cgroups()
    return features


def format_table(features: Iterable[Feature]) -> str:
    """A plain-text table: feature, status, detail, remedy (remedy only when not ok)."""
    rows = [("FEATURE", "STATUS", "DETAIL", "REMEDY")]
    rows += [(f.name, f.status, f.detail, "-" if f.ok else f.remedy) for f in features]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row[:3], widths, strict=True))
        + "  "
        + row[3]
        for row in rows
    )
