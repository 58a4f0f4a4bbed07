"""From a function's config to the SandboxSpec of one of its environments."""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path
from typing import Final

from runtime.config import FunctionConfig, ServerConfig
from sandbox.spec import (
    SANDBOX_GID,
    SANDBOX_UID,
    CgroupLimits,
    Dev,
    Dir,
    File,
    Mount,
    Proc,
    RoBind,
    SandboxSpec,
    Symlink,
    Tmpfs,
)

RUNTIME_API_PORT: Final = 9001
TASK_ROOT: Final = "/var/task"
RUNTIME_DIR: Final = "/var/runtime"
# Lambda: 1,769 MB of memory buys one full vCPU; CPU share scales linearly.
MB_PER_VCPU: Final = 1769
CPU_PERIOD_US: Final = 100_000
# Lambda's per-environment limit on processes and threads.
PIDS_MAX: Final = 1024

# Host system directories the rootfs exposes read-only. On a merged-/usr
# host the others are symlinks into /usr and are recreated as symlinks.
_SYSTEM_DIRS: Final = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# /etc entries taken from the host (read-only) because the dynamic linker and
# common tools need them; nothing with secrets (no shadow, no ssh, no sudoers).
_ETC_BINDS: Final = (
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/alternatives",
    "/etc/ssl/certs",
    "/etc/ca-certificates",
    "/etc/mime.types",
    "/etc/localtime",
)
_PASSWD: Final = (
    "root:x:0:0:root:/root:/sbin/nologin\n"
    f"sbx_user1051:x:{SANDBOX_UID}:{SANDBOX_GID}::/tmp:/sbin/nologin\n"
    "nobody:x:65534:65534:nobody:/:/sbin/nologin\n"
)
_GROUP: Final = f"root:x:0:\nsbx_user1051:x:{SANDBOX_GID}:\nnogroup:x:65534:\n"
_HOSTS: Final = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
_NSSWITCH: Final = "passwd: files\ngroup: files\nhosts: files\n"


def system_mounts() -> tuple[Mount, ...]:
    """Read-only system dirs and the minimal generated /etc."""
    items: list[Mount] = []
    for path in _SYSTEM_DIRS:
        if os.path.islink(path):
            items.append(Symlink(path, os.readlink(path)))
        elif os.path.isdir(path):
            items.append(RoBind(path, path))
    items += [RoBind(path, path, optional=True) for path in _ETC_BINDS]
    items += [
        File("/etc/passwd", _PASSWD),
        File("/etc/group", _GROUP),
        File("/etc/hosts", _HOSTS),
        File("/etc/hostname", "localhost\n"),
        File("/etc/resolv.conf", ""),
        File("/etc/nsswitch.conf", _NSSWITCH),
    ]
    return tuple(items)


def log_stream_name() -> str:
    return time.strftime("%Y/%m/%d/[$LATEST]", time.gmtime()) + secrets.token_hex(16)


def lambda_environment(
    function: FunctionConfig, server: ServerConfig
) -> tuple[tuple[str, str], ...]:
    """The bootstrap's environment, built from scratch (nothing of the host's).

    Merge order as in Lambda: user values < unreserved defaults the user may
    override (LANG, PATH, LD_LIBRARY_PATH) < reserved platform values.
    """
    env: dict[str, str] = {
        "LANG": "en_US.UTF-8",
        "PATH": "/usr/local/bin:/usr/bin/:/bin:/opt/bin",
        "LD_LIBRARY_PATH": (
            "/lib64:/usr/lib64:/var/runtime:/var/runtime/lib:/var/task:/var/task/lib:/opt/lib"
        ),
    }
    env.update(function.environment)
    env.update(
        {
            "_HANDLER": function.handler,
            "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{RUNTIME_API_PORT}",
            "AWS_REGION": server.region,
            "AWS_DEFAULT_REGION": server.region,
            "AWS_LAMBDA_FUNCTION_NAME": function.name,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(function.memory_mb),
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{function.name}",
            "AWS_LAMBDA_LOG_STREAM_NAME": log_stream_name(),
            "LAMBDA_TASK_ROOT": TASK_ROOT,
            "LAMBDA_RUNTIME_DIR": RUNTIME_DIR,
            "TZ": ":UTC",
        }
    )
    return tuple(env.items())


def cgroup_limits(function: FunctionConfig, server: ServerConfig) -> CgroupLimits:
    quota = None
    if server.cpu_quota == "proportional":
        quota = max(1000, CPU_PERIOD_US * function.memory_mb // MB_PER_VCPU)
    return CgroupLimits(
        memory_bytes=function.memory_mb * 1024 * 1024,
        swap_bytes=0,
        pids_max=PIDS_MAX,
        cpu_quota_us=quota,
        cpu_period_us=CPU_PERIOD_US,
    )


def function_spec(
    function: FunctionConfig,
    server: ServerConfig,
    system: tuple[Mount, ...],
    rootless: bool = False,
) -> SandboxSpec:
    """The sandbox of one environment of `function`.

    Rootless (the host is not root), the sandbox lives in the spawner's user
    namespace, where only uid 0 is mapped and cgroups are not ours to make:
    the bootstrap runs as that namespace's root (no capabilities) and without
    memory, pids or CPU limits.
    """
    mounts: tuple[Mount, ...] = (
        RoBind(str(Path(function.code)), TASK_ROOT),
        Dir(RUNTIME_DIR),
        Dir("/opt"),
        Tmpfs("/tmp", function.ephemeral_storage_mb * 1024 * 1024),
        Proc(),
        Dev(),
    )
    return SandboxSpec(
        argv=(f"{TASK_ROOT}/bootstrap",),
        env=lambda_environment(function, server),
        mounts=mounts,
        base=system,
        cwd=TASK_ROOT,
        hostname="localhost",
        listen_port=RUNTIME_API_PORT,
        cgroup=None if rootless else cgroup_limits(function, server),
        # Only the sandbox's (and spawner's) mount namespaces use this mount
        # point; rootless, it must be somewhere the user may create it.
        root_mountpoint=f"{server.state_dir}/mnt/root" if rootless else "/run/firelet/root",
        uid=0 if rootless else SANDBOX_UID,
        gid=0 if rootless else SANDBOX_GID,
        labels={"function": function.name},
    )
