"""Warm invoke latency: N sequential invokes through one keep-alive connection.

Starts a real `firelet serve` (root needed) with two functions, a stdlib
Python runtime on one keep-alive connection and the real awslambdaric, warms
each up, then times N invokes per function with a raw-socket client that
sends prebuilt request bytes (so the client costs little). The floor, a
Python loopback TCP round trip, is measured in the same run, interleaved.
Prints one JSON document and writes it to benchmarks/results/.

    python benchmarks/warm_invoke.py [--count 1000] [--plot]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
ECHO_BOOTSTRAP = ROOT / "tests" / "functions" / "py_echo_bootstrap"
RIC_APP = "def handler(event, context):\n    return event\n"


def percentile(sorted_values: list[float], q: float) -> float:
    index = min(len(sorted_values) - 1, max(0, round(q / 100 * (len(sorted_values) - 1))))
    return sorted_values[index]


def summarise(samples_us: list[float]) -> dict[str, float]:
    values = sorted(samples_us)
    return {
        "count": len(values),
        "p50_us": round(percentile(values, 50), 1),
        "p90_us": round(percentile(values, 90), 1),
        "p99_us": round(percentile(values, 99), 1),
        "max_us": round(values[-1], 1),
        "mean_us": round(sum(values) / len(values), 1),
    }


class KeepAliveClient:
    """Sends one prebuilt request and reads one Content-Length response."""

    def __init__(self, port: int, request: bytes) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.request = request
        self.buffer = b""

    def round_trip(self) -> bytes:
        self.sock.sendall(self.request)
        buffer = self.buffer
        while b"\r\n\r\n" not in buffer:
            buffer += self.sock.recv(65536)
        head, _, rest = buffer.partition(b"\r\n\r\n")
        match = re.search(rb"(?i)content-length: *(\d+)", head)
        length = int(match.group(1)) if match else 0
        while len(rest) < length:
            rest += self.sock.recv(65536)
        self.buffer = rest[length:]
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"unexpected response: {head[:200]!r}")
        return rest[:length]


def invoke_request(function: str, payload: bytes) -> bytes:
    return (
        b"POST /2015-03-31/functions/%s/invocations HTTP/1.1\r\nHost: bench\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (function.encode(), len(payload), payload)
    )


class LoopbackEcho:
    """The floor: one TCP round trip to a blocking echo server in another
    process (as the host is), both in Python."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.pid = os.fork()
        if self.pid == 0:
            conn, _ = self.server.accept()
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            while data := conn.recv(65536):
                conn.sendall(data)
            os._exit(0)
        self.server.close()
        self.client = socket.create_connection(("127.0.0.1", self.port))
        self.client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def round_trip(self) -> None:
        self.client.sendall(b"x" * 64)
        received = 0
        while received < 64:
            received += len(self.client.recv(65536))

    def close(self) -> None:
        self.client.close()
        os.waitpid(self.pid, 0)


def start_host(
    workdir: Path, memory_mb: int, cpu_quota: str
) -> tuple[subprocess.Popen[bytes], int]:
    echo = workdir / "echo"
    echo.mkdir()
    shutil.copy(ECHO_BOOTSTRAP, echo / "bootstrap")
    ric = workdir / "ric"
    ric.mkdir()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-compile",
            "--target",
            str(ric),
            "awslambdaric==4.2.2",
        ],
        check=True,
    )
    (ric / "app.py").write_text(RIC_APP)
    (ric / "bootstrap").write_text('#!/bin/sh\nexec /usr/bin/python3 -m awslambdaric "$_HANDLER"\n')
    (ric / "bootstrap").chmod(0o755)
    config = workdir / "firelet.toml"
    config.write_text(
        f'[server]\nlisten = "127.0.0.1:0"\nstate_dir = "state"\ncpu_quota = "{cpu_quota}"\n\n'
        f'[functions.echo]\ncode = "echo"\ntimeout_s = 30\nmemory_mb = {memory_mb}\n\n'
        f'[functions.ric]\ncode = "ric"\nhandler = "app.handler"\ntimeout_s = 30\nmemory_mb = {memory_mb}\n'
    )
    log = open(workdir / "host.log", "wb")  # noqa: SIM115 - lives as long as the host
    host = subprocess.Popen(
        [sys.executable, "-m", "runtime.cli", "serve", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=log,
        cwd=ROOT,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        match = re.search(
            rb"listening on http://127\.0\.0\.1:(\d+)", (workdir / "host.log").read_bytes()
        )
        if match:
            return host, int(match.group(1))
        time.sleep(0.02)
    host.kill()
    raise RuntimeError((workdir / "host.log").read_text())


def git_revision() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=ROOT,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument(
        "--plot", action="store_true", help="also write a latency CDF PNG (needs matplotlib)"
    )
    parser.add_argument("--no-save", action="store_true")
    parser.add_argument(
        "--memory-mb",
        type=int,
        default=1769,
        help="function memory; 1769 = one full vCPU under Lambda's proportional CPU (default)",
    )
    parser.add_argument("--cpu-quota", choices=("proportional", "none"), default="proportional")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="firelet-bench-"))
    host, port = start_host(workdir, args.memory_mb, args.cpu_quota)
    try:
        payload = b'{"bench": true}'
        floor = LoopbackEcho()
        clients = {
            "stdlib_keepalive_runtime": KeepAliveClient(port, invoke_request("echo", payload)),
            "awslambdaric": KeepAliveClient(port, invoke_request("ric", payload)),
        }
        for client in clients.values():
            for _ in range(args.warmup):
                assert client.round_trip() == payload
        samples: dict[str, list[float]] = {name: [] for name in clients}
        samples["floor_python_tcp_round_trip"] = []
        clock = time.perf_counter_ns
        started = time.perf_counter()
        for _ in range(args.count):
            # Interleaved A/B/floor, so machine noise hits all three alike.
            for name, client in clients.items():
                t0 = clock()
                client.round_trip()
                samples[name].append((clock() - t0) / 1000)
            t0 = clock()
            floor.round_trip()
            samples["floor_python_tcp_round_trip"].append((clock() - t0) / 1000)
        elapsed = time.perf_counter() - started
        floor.close()
    finally:
        host.send_signal(signal.SIGTERM)
        try:
            host.wait(timeout=10)
        except subprocess.TimeoutExpired:
            host.kill()
        shutil.rmtree(workdir, ignore_errors=True)

    results = {name: summarise(values) for name, values in samples.items()}
    floor_p50 = results["floor_python_tcp_round_trip"]["p50_us"]
    for name in clients:
        results[name]["p50_over_floor"] = round(results[name]["p50_us"] / floor_p50, 2)
    document = {
        "benchmark": "warm_invoke",
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "revision": git_revision(),
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
        },
        "parameters": {
            "count": args.count,
            "warmup": args.warmup,
            "payload_bytes": len(payload),
            "memory_mb": args.memory_mb,
            "cpu_quota": args.cpu_quota,
            "client": "raw socket, one keep-alive connection per function, prebuilt request",
            "path": "client -> Invoke API -> router -> sandboxed runtime /next -> /response -> client",
        },
        "results": results,
        "wall_seconds": round(elapsed, 2),
    }
    text = json.dumps(document, indent=2)
    print(text)
    if not args.no_save:
        RESULTS.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        (RESULTS / f"warm_invoke-{stamp}.json").write_text(text + "\n")
        if args.plot:
            plot(samples, RESULTS / f"warm_invoke-{stamp}.png")
    return 0


def plot(samples: dict[str, list[float]], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed; no plot written", file=sys.stderr)
        return
    figure, axis = plt.subplots(figsize=(8, 5))
    for name, values in samples.items():
        ordered = sorted(values)
        axis.plot(ordered, [i / len(ordered) for i in range(len(ordered))], label=name)
    axis.set_xscale("log")
    axis.set_xlabel("round trip (us)")
    axis.set_ylabel("fraction of invokes")
    axis.set_title("Firelet warm invoke latency (CDF)")
    axis.legend()
    figure.savefig(path, dpi=120, bbox_inches="tight")


if __name__ == "__main__":
    sys.exit(main())
