"""`make demo`: start a host with the example functions, invoke each, stop.

python -m runtime.demo examples/firelet.toml
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from runtime import config as config_module
from runtime.cli import main as cli_main
from runtime.errors import ConfigError


def main(argv: list[str]) -> int:
    config_path = Path(argv[0] if argv else "examples/firelet.toml")
    try:
        config = config_module.load(config_path)
    except ConfigError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 2
    endpoint = f"http://{config.server.host}:{config.server.port}"
    host = subprocess.Popen(
        [sys.executable, "-m", "runtime.cli", "serve", "--config", str(config_path)],
        stderr=subprocess.PIPE,
    )
    try:
        assert host.stderr is not None
        line = host.stderr.readline().decode()
        sys.stderr.write(line)
        if "listening on" not in line:
            sys.stderr.write(host.stderr.read().decode())
            print("demo: the host did not start", file=sys.stderr)
            return 1
        status = 0
        for name in config.functions:
            payload = json.dumps({"name": "Firelet", "demo": name})
            print(f"$ firelet invoke {name} --payload '{payload}'", flush=True)
            started = time.perf_counter()
            status |= cli_main(["invoke", name, "--payload", payload, "--endpoint", endpoint])
            print(
                f"  ({(time.perf_counter() - started) * 1000:.1f} ms, cold start included)",
                flush=True,
            )
        return status
    finally:
        host.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            _, err = host.communicate(timeout=10)
            sys.stderr.write(err.decode(errors="replace"))
        if host.poll() is None:
            host.kill()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
