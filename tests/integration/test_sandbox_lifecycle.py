"""Sandboxes from the spawner: limits applied, teardown complete, nothing leaks."""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import replace
from pathlib import Path

from runtime import sandboxes
from runtime.config import FunctionConfig, ServerConfig
from sandbox import cgroups
from sandbox.spawner import Spawner
from sandbox.spec import SandboxSpec


def _spec(code: Path, argv: tuple[str, ...] = ("/bin/true",)) -> SandboxSpec:
    function = FunctionConfig(name="cycle", code=code, memory_mb=128)
    spec = sandboxes.function_spec(function, ServerConfig(), sandboxes.system_mounts())
    return replace(spec, argv=argv)


def _memory_cgroups() -> int:
    with open("/proc/cgroups") as f:
        for line in f:
            fields = line.split()
            if fields[0] == "memory":
                return int(fields[2])
    return 0


def _leaves(layout: cgroups.CgroupLayout, base: str) -> list[str]:
    found = []
    for mountpoint in {layout.unified, *layout.v1.values()} - {None}:
        path = os.path.join(mountpoint, base)
        if os.path.isdir(path):
            found += [
                os.path.join(path, e)
                for e in os.listdir(path)
                if os.path.isdir(os.path.join(path, e))
            ]
    return found


def _zombies_of(pid: int) -> int:
    count = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] == "Z" and int(fields[1]) == pid:
            count += 1
    return count


def test_thousand_create_destroy_cycles_leak_nothing(tmp_path):
    layout = cgroups.detect()
    spawner = Spawner.start()
    base = f"{cgroups.BASE_NAME}/h{spawner.pid}"
    spec = _spec(tmp_path)

    async def cycles(count: int) -> list[int]:
        statuses = []
        for _ in range(count):
            process = await spawner.spawn(spec)
            ended = await process.exited
            statuses.append(ended.status)
            process.close()
            os.close(process.log_fd)
        return statuses

    try:
        asyncio.run(cycles(20))  # warm: first-time allocations are not leaks
        host_fds = len(os.listdir("/proc/self/fd"))
        spawner_fds = len(os.listdir(f"/proc/{spawner.pid}/fd"))
        memory_cgroups = _memory_cgroups()
        statuses = asyncio.run(cycles(1000))
        assert statuses == [0] * 1000
        deadline = time.monotonic() + 5
        while _leaves(layout, base) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _leaves(layout, base) == []
        assert len(os.listdir("/proc/self/fd")) == host_fds
        assert len(os.listdir(f"/proc/{spawner.pid}/fd")) == spawner_fds
        assert _zombies_of(spawner.pid) == 0
        # Removed v1 memory cgroups must not pile up as dying cgroups.
        assert _memory_cgroups() - memory_cgroups < 50
    finally:
        spawner.close()
    assert _leaves(layout, base) == []
    assert all(
        not os.path.exists(os.path.join(m, base))
        for m in {layout.unified, *layout.v1.values()} - {None}
    )


def test_sandbox_limits_are_set_in_its_cgroups(tmp_path):
    layout = cgroups.detect()
    spawner = Spawner.start()
    spec = _spec(tmp_path, ("/bin/sleep", "30"))

    async def check() -> dict[str, str]:
        process = await spawner.spawn(spec)
        base = f"{cgroups.BASE_NAME}/h{spawner.pid}"
        values = {}
        for leaf in _leaves(layout, base):
            for name in (
                "memory.limit_in_bytes",
                "memory.memsw.limit_in_bytes",
                "pids.max",
                "cpu.cfs_quota_us",
                "memory.max",
                "memory.swap.max",
                "cpu.max",
            ):
                path = os.path.join(leaf, name)
                if os.path.exists(path):
                    values[name] = Path(path).read_text().strip()
            procs = Path(leaf, "cgroup.procs").read_text().split()
            values[f"procs:{leaf.split('/')[3]}"] = str(len(procs))
        process.kill()
        await process.exited
        process.close()
        os.close(process.log_fd)
        return values

    try:
        values = asyncio.run(check())
    finally:
        spawner.close()
    memory = str(128 * 1024 * 1024)
    if layout.version_of("memory") == "v1":
        assert values["memory.limit_in_bytes"] == memory
        assert values["memory.memsw.limit_in_bytes"] == memory  # swap 0
        assert values["cpu.cfs_quota_us"] == str(100_000 * 128 // 1769)
    else:
        assert values["memory.max"] == memory
        assert values["memory.swap.max"] == "0"
        assert values["cpu.max"] == f"{100_000 * 128 // 1769} 100000"
    assert values["pids.max"] == "1024"
    # The init and the bootstrap are both inside every hierarchy.
    assert all(count == "2" for key, count in values.items() if key.startswith("procs:")), values
