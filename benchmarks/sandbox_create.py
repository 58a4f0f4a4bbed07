"""Sandbox creation: spec -> exec of the bootstrap, and sandboxes per second.

Uses the real spawner with a function-like spec (namespaces, rootfs, cgroups,
privilege drop, seccomp when enabled). `spawn()` returns once the bootstrap
has exec'd, so its latency is "spec -> exec". Sustained rate counts full
cycles: create, exec `/bin/true`, exit, reap, cgroup removal. The floor,
fork+exec of `/bin/true` with no isolation, is measured in the same run.

    python benchmarks/sandbox_create.py [--count 500] [--plot]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.warm_invoke import RESULTS, git_revision, summarise  # noqa: E402
from runtime import sandboxes  # noqa: E402
from runtime.config import FunctionConfig, ServerConfig  # noqa: E402
from sandbox.spawner import Spawner  # noqa: E402


def make_spec(code: Path, cgroups: bool) -> object:
    function = FunctionConfig(name="bench", code=code, memory_mb=128)
    spec = sandboxes.function_spec(function, ServerConfig(), sandboxes.system_mounts())
    from dataclasses import replace

    return replace(spec, argv=("/bin/true",), cgroup=spec.cgroup if cgroups else None)


async def measure(spawner: Spawner, spec: object, count: int) -> tuple[list[float], float]:
    latencies = []
    started = time.perf_counter()
    for _ in range(count):
        t0 = time.perf_counter_ns()
        process = await spawner.spawn(spec)  # type: ignore[arg-type]
        latencies.append((time.perf_counter_ns() - t0) / 1000)
        await process.exited
        process.close()
        os.close(process.log_fd)
    return latencies, count / (time.perf_counter() - started)


async def measure_concurrent(spawner: Spawner, spec: object, count: int, concurrency: int) -> float:
    """Sandboxes per second with `concurrency` full cycles in flight."""
    remaining = count

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            process = await spawner.spawn(spec)  # type: ignore[arg-type]
            await process.exited
            process.close()
            os.close(process.log_fd)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return count / (time.perf_counter() - started)


def floor(count: int) -> list[float]:
    latencies = []
    for _ in range(count):
        t0 = time.perf_counter_ns()
        subprocess.run(["/bin/true"], check=True)
        latencies.append((time.perf_counter_ns() - t0) / 1000)
    return latencies


def cgroup2_options() -> str:
    """favordynmods on the cgroup2 mount changes the cost of joining a cgroup."""
    with open("/proc/self/mounts") as f:
        for line in f:
            fields = line.split()
            if fields[2] == "cgroup2":
                return f"{fields[1]} {fields[3]}"
    return "none"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--plot", action="store_true")
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("needs root (namespaces, mounts, cgroups)", file=sys.stderr)
        return 2
    code = Path("/tmp/firelet-bench-code")
    code.mkdir(exist_ok=True)
    spawner = Spawner.start()
    try:
        results = asyncio.run(_run(spawner, code, args.count))
    finally:
        spawner.close()
    floor_samples = floor(min(args.count, 200))
    results["floor_fork_exec_true"] = {"latency": summarise(floor_samples)}
    document = {
        "benchmark": "sandbox_create",
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "revision": git_revision(),
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "cgroup2_mount": cgroup2_options(),
        },
        "parameters": {
            "count": args.count,
            "spec": "function spec: mount/pid/net/uts/ipc namespaces, rootfs, uid 993, caps dropped; "
            "with_cgroups adds memory+swap, pids, cpu limits",
            "latency": "spawn() call: spec sent -> bootstrap exec'd",
            "rate": "full cycles (create, exec /bin/true, exit, reap, cgroup removal), "
            "one at a time and with 4 in flight",
        },
        "results": results,
    }
    text = json.dumps(document, indent=2)
    print(text)
    if not args.no_save:
        RESULTS.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        (RESULTS / f"sandbox_create-{stamp}.json").write_text(text + "\n")
    return 0


async def _run(spawner: Spawner, code: Path, count: int) -> dict[str, object]:
    out: dict[str, object] = {}
    for label, cgroups in (("without_cgroups", False), ("with_cgroups", True)):
        spec = make_spec(code, cgroups)
        await measure(spawner, spec, 20)  # warm up
        latencies, rate = await measure(spawner, spec, count)
        concurrent = await measure_concurrent(spawner, spec, count, 4)
        out[label] = {
            "latency": summarise(latencies),
            "sandboxes_per_second": round(rate, 1),
            "sandboxes_per_second_4_in_flight": round(concurrent, 1),
        }
    return out


if __name__ == "__main__":
    sys.exit(main())
