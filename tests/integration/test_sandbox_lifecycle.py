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


def _subtrees(layout: cgroups.CgroupLayout, spawner: Spawner) -> dict[str, str]:
    return cgroups.host_subtrees(layout, f"h{spawner.pid}", nest=True)


def _leaves(subtrees: dict[str, str]) -> list[str]:
    found: set[str] = set()
    for path in subtrees.values():
        if os.path.isdir(path):
            found |= {
                os.path.join(path, e)
                for e in os.listdir(path)
                if os.path.isdir(os.path.join(path, e))
            }
    return sorted(found)


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
    subtrees = _subtrees(layout, spawner)
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
        while _leaves(subtrees) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _leaves(subtrees) == []
        assert len(os.listdir("/proc/self/fd")) == host_fds
        assert len(os.listdir(f"/proc/{spawner.pid}/fd")) == spawner_fds
        assert _zombies_of(spawner.pid) == 0
        # Removed v1 memory cgroups must not pile up as dying cgroups.
        assert _memory_cgroups() - memory_cgroups < 50
    finally:
        spawner.close()
    assert not any(os.path.exists(path) for path in subtrees.values())
    # The spawner's shared system root is gone with it too.
    parent = os.path.dirname(spec.root_mountpoint)
    assert [e for e in os.listdir(parent) if e.startswith(f"template-{spawner.pid}-")] == []


def test_sandbox_limits_are_set_in_its_cgroups(tmp_path):
    layout = cgroups.detect()
    spawner = Spawner.start()
    spec = _spec(tmp_path, ("/bin/sleep", "30"))

    async def check() -> dict[str, str]:
        process = await spawner.spawn(spec)
        values = {}
        for leaf in _leaves(_subtrees(layout, spawner)):
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
            values[f"procs:{leaf}"] = str(len(procs))
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
    procs = {key: count for key, count in values.items() if key.startswith("procs:")}
    assert len(procs) >= 2 and set(procs.values()) == {"2"}, values


def test_sandbox_cgroups_nest_below_the_hosts_own_cgroup(tmp_path):
    # As under systemd with Delegate=yes: the host runs in a cgroup of its own
    # (here one the test makes in the memory and pids hierarchies) and its
    # sandboxes' cgroups go below it.
    layout = cgroups.detect()
    made = []
    for key in ("memory", "pids"):
        if layout.version_of(key) == "v1":
            made.append(os.path.join(layout.v1[key], f"firelet-test-{os.getpid()}"))
    assert made, "this test needs v1 memory/pids hierarchies, as on these machines"
    for path in made:
        os.makedirs(path, exist_ok=True)

    def enter() -> None:
        for path in made:
            with open(os.path.join(path, "cgroup.procs"), "w") as f:
                f.write(str(os.getpid()))

    import subprocess
    import sys

    probe = (
        "import asyncio, os, sys; from pathlib import Path\n"
        "sys.path.insert(0, sys.argv[1])\n"
        "from tests.integration.test_sandbox_lifecycle import _spec\n"
        "from sandbox.spawner import Spawner\n"
        "sp = Spawner.start()\n"
        "async def main():\n"
        "    p = await sp.spawn(_spec(Path(sys.argv[2]), ('/bin/sleep', '30')))\n"
        "    print(open(f'/proc/{p.pid}/cgroup').read(), flush=True)\n"
        "    p.kill(); await p.exited; p.close()\n"
        "asyncio.run(main()); sp.close()\n"
    )
    try:
        out = subprocess.run(
            [sys.executable, "-c", probe, str(Path(__file__).parents[2]), str(tmp_path)],
            preexec_fn=enter,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
    finally:
        for path in made:
            for _ in range(100):
                try:
                    os.rmdir(path)
                    break
                except OSError:
                    time.sleep(0.02)
    lines = dict(line.split(":", 2)[1:] for line in out.splitlines() if line.count(":") >= 2)
    for key in ("memory", "pids"):
        assert lines[key].startswith(f"/firelet-test-{os.getpid()}/firelet/h"), (key, lines[key])
