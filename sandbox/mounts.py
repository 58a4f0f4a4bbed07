"""Mount steps: build a fresh root from a spec, pivot into it, seal it.

`plan(spec)` is pure: it turns the spec into a list of named steps. The
child applies them in order inside its new mount and pid namespaces; the
first failure names its step (bubblewrap style).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from sandbox import linux
from sandbox.spec import Dev, Dir, File, Proc, RoBind, SandboxSpec, Symlink, Tmpfs

_NOSUID_NODEV = linux.MS_NOSUID | linux.MS_NODEV
_DEVICES = ("null", "zero", "full", "random", "urandom")


@dataclass(frozen=True, slots=True)
class Step:
    name: str
    apply: Callable[[], None]


def plan(spec: SandboxSpec, template: str | None = None) -> list[Step]:
    """The ordered mount steps for `spec`, ending inside the new root.

    With a `template` (the spec's `base` built once by the spawner, see
    `build_template`), the root is a recursive bind of it and only the
    per-sandbox mounts are made here; without one, the base is applied too.
    """
    root = spec.root_mountpoint
    steps = [
        Step(
            "make / private",
            lambda: linux.mount(None, "/", None, linux.MS_REC | linux.MS_PRIVATE, None),
        ),
        Step(f"mkdir {root}", lambda: _mkdir(root)),
    ]
    if template is not None:
        steps.append(
            Step(
                f"bind the system root {template}",
                lambda: linux.mount(template, root, None, linux.MS_BIND | linux.MS_REC, None),
            )
        )
        items = spec.mounts
    else:
        steps.append(Step(f"tmpfs root at {root}", lambda: _root_tmpfs(root, spec.root_size_bytes)))
        items = spec.base + spec.mounts
    steps += [_step_for(item, root, spec) for item in items]
    steps.append(Step("pivot_root", lambda: _pivot(root)))
    # Per-mount read-only (MS_BIND): the template's tmpfs stays writable for
    # the spawner, this sandbox's view of it does not.
    steps.append(
        Step(
            "remount / read-only",
            lambda: linux.mount(
                None,
                "/",
                None,
                linux.MS_REMOUNT | linux.MS_BIND | linux.MS_RDONLY | _NOSUID_NODEV,
                None,
            ),
        )
    )
    steps.append(Step(f"chdir {spec.cwd}", lambda: os.chdir(spec.cwd)))
    return steps


def build_template(spec: SandboxSpec, path: str) -> None:
    """Build `spec.base` at `path` (in the spawner's private mount namespace),
    with the mount points every per-sandbox mount needs already made, so that
    sandboxes never write into the shared template."""
    _mkdir(path)
    _root_tmpfs(path, spec.root_size_bytes)
    for item in spec.base:
        step = _step_for(item, path, spec)
        try:
            step.apply()
        except OSError as exc:
            raise OSError(exc.errno, f"template step '{step.name}': {exc.strerror}") from None
    for item in spec.mounts:
        target = getattr(item, "target", None) or getattr(item, "path", None)
        if isinstance(item, (RoBind, Tmpfs, Proc, Dev, Dir)) and target:
            _mkdir(path + target)


def _root_tmpfs(root: str, size: int) -> None:
    linux.mount("tmpfs", root, "tmpfs", _NOSUID_NODEV, f"size={size},mode=0755")


def _step_for(item: object, root: str, spec: SandboxSpec) -> Step:
    if isinstance(item, RoBind):
        return Step(
            f"bind {item.source} -> {item.target} (read-only)", lambda: _ro_bind(root, item)
        )
    if isinstance(item, Tmpfs):
        return Step(f"tmpfs {item.target}", lambda: _tmpfs(root, item, spec))
    if isinstance(item, Symlink):
        return Step(f"symlink {item.link} -> {item.target}", lambda: _symlink(root, item))
    if isinstance(item, File):
        return Step(f"write {item.path}", lambda: _file(root, item))
    if isinstance(item, Dir):
        return Step(f"mkdir {item.path}", lambda: _mkdir(root + item.path, item.mode))
    if isinstance(item, Proc):
        return Step(f"proc at {item.target}", lambda: _proc(root, item))
    if isinstance(item, Dev):
        return Step(f"minimal /dev at {item.target}", lambda: _dev(root, item))
    raise TypeError(f"unknown mount item {item!r}")


def _mkdir(path: str, mode: int = 0o755) -> None:
    os.makedirs(path, mode=mode, exist_ok=True)


def _ro_bind(root: str, item: RoBind) -> None:
    if item.optional and not os.path.exists(item.source):
        return
    target = root + item.target
    if os.path.isdir(item.source):
        _mkdir(target)
    else:
        _mkdir(os.path.dirname(target))
        with open(target, "a"):
            pass
    linux.mount(item.source, target, None, linux.MS_BIND | linux.MS_REC, None)
    # A bind mount ignores MS_RDONLY on the first call; a remount applies it.
    # The source's own flags are kept: in a user namespace they are locked,
    # and a remount that dropped one (noexec, an atime mode) would be refused.
    flags = linux.MS_REMOUNT | linux.MS_BIND | linux.MS_RDONLY | _NOSUID_NODEV
    linux.mount(None, target, None, flags | _kept_flags(target), None)


# statvfs f_flag bits and the mount flags that keep them.
_STATVFS_TO_MS = (
    (os.ST_NOEXEC, linux.MS_NOEXEC),
    (os.ST_NOATIME, 1024),  # MS_NOATIME
    (os.ST_NODIRATIME, 2048),  # MS_NODIRATIME
    (os.ST_RELATIME, 1 << 21),  # MS_RELATIME
)


def _kept_flags(path: str) -> int:
    flags = os.statvfs(path).f_flag
    return sum(ms for st, ms in _STATVFS_TO_MS if flags & st)


def _tmpfs(root: str, item: Tmpfs, spec: SandboxSpec) -> None:
    target = root + item.target
    _mkdir(target)
    linux.mount(
        "tmpfs",
        target,
        "tmpfs",
        _NOSUID_NODEV,
        f"size={item.size_bytes},mode={item.mode:o},uid={spec.uid},gid={spec.gid}",
    )


def _symlink(root: str, item: Symlink) -> None:
    path = root + item.link
    _mkdir(os.path.dirname(path))
    os.symlink(item.target, path)


def _file(root: str, item: File) -> None:
    path = root + item.path
    _mkdir(os.path.dirname(path))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, item.mode)
    try:
        os.write(fd, item.content.encode())
    finally:
        os.close(fd)


def _proc(root: str, item: Proc) -> None:
    target = root + item.target
    _mkdir(target)
    flags = _NOSUID_NODEV | linux.MS_NOEXEC
    try:
        linux.mount("proc", target, "proc", flags, "hidepid=invisible")
    except OSError:
        # Kernels before 5.8 only know the numeric form.
        linux.mount("proc", target, "proc", flags, "hidepid=2")


def _dev(root: str, item: Dev) -> None:
    target = root + item.target
    _mkdir(target)
    linux.mount("tmpfs", target, "tmpfs", linux.MS_NOSUID | linux.MS_NOEXEC, "size=64k,mode=0755")
    for name in _DEVICES:
        node = f"{target}/{name}"
        with open(node, "a"):
            pass
        linux.mount(f"/dev/{name}", node, None, linux.MS_BIND, None)
    for name, dest in (
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ):
        os.symlink(dest, f"{target}/{name}")
    _mkdir(f"{target}/shm", 0o1777)
    linux.mount("tmpfs", f"{target}/shm", "tmpfs", _NOSUID_NODEV, "size=16m,mode=1777")
    linux.mount(
        None,
        target,
        None,
        linux.MS_REMOUNT | linux.MS_RDONLY | linux.MS_NOSUID | linux.MS_NOEXEC,
        "size=64k,mode=0755",
    )


def _pivot(root: str) -> None:
    os.chdir(root)
    # pivot_root(".", ".") stacks the old root under the new one; detaching
    # it leaves nothing of the host's tree reachable.
    linux.pivot_root(".", ".")
    linux.umount2(".", linux.MNT_DETACH)
    os.chdir("/")
