"""Fixtures that start real `firelet serve` processes with real sandboxes."""

from __future__ import annotations

import http.client
import json
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
FUNCTIONS = Path(__file__).resolve().parent / "functions"
AWSLAMBDARIC = "awslambdaric==4.2.2"


def write_function(
    base: Path, name: str, bootstrap: str, files: Mapping[str, str] | None = None
) -> Path:
    """A code directory with an executable `bootstrap` (text is dedented)."""
    code = base / name
    code.mkdir(parents=True, exist_ok=True)
    path = code / "bootstrap"
    path.write_text(textwrap.dedent(bootstrap).lstrip())
    path.chmod(0o755)
    for rel, content in (files or {}).items():
        (code / rel).write_text(textwrap.dedent(content).lstrip())
    code.chmod(0o755)
    return code


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


class FireletHost:
    """One real `firelet serve` process on a free loopback port."""

    def __init__(
        self,
        workdir: Path,
        functions: Mapping[str, Mapping[str, Any]],
        server: Mapping[str, Any] | None = None,
    ) -> None:
        self.workdir = workdir
        self.config = workdir / "firelet.toml"
        lines = ["[server]", 'listen = "127.0.0.1:0"', 'state_dir = "state"']
        lines += [f"{key} = {_toml_value(value)}" for key, value in (server or {}).items()]
        lines.append("")
        for name, table in functions.items():
            lines.append(f"[functions.{name}]")
            lines += [f"{key} = {_toml_value(value)}" for key, value in table.items()]
            lines.append("")
        self.config.write_text("\n".join(lines))
        self.log_path = workdir / "host.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0

    def start(
        self,
        timeout: float = 20.0,
        python: tuple[str, ...] = (sys.executable,),
        env: Mapping[str, str] | None = None,
    ) -> FireletHost:
        log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self._log_file = log
        self.process = subprocess.Popen(
            [*python, "-m", "runtime.cli", "serve", "--config", str(self.config)],
            stdout=log,
            stderr=log,
            cwd=ROOT,
            env=env,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = re.search(
                rb"listening on http://127\.0\.0\.1:(\d+)", self.log_path.read_bytes()
            )
            if match:
                self.port = int(match.group(1))
                return self
            if self.process.poll() is not None:
                raise RuntimeError(f"firelet serve exited:\n{self.logs()}")
            time.sleep(0.02)
        raise RuntimeError(f"firelet serve did not start:\n{self.logs()}")

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def logs(self) -> str:
        return self.log_path.read_bytes().decode(errors="replace")

    def wait_for_log(self, pattern: str, timeout: float = 10.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = re.search(pattern, self.logs())
            if match:
                return match
            time.sleep(0.02)
        raise AssertionError(f"log never matched {pattern!r}:\n{self.logs()}")

    def client(self, read_timeout: float = 30.0) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client(
            "lambda",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id="test",
            aws_secret_access_key="test",
            config=Config(
                retries={"max_attempts": 1, "mode": "standard"}, read_timeout=read_timeout
            ),
        )

    def post(
        self,
        path: str,
        body: bytes = b"",
        headers: Mapping[str, str] | None = None,
        timeout: float = 30.0,
    ) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request("POST", path, body=body, headers=dict(headers or {}))
            response = conn.getresponse()
            return (
                response.status,
                {k.lower(): v for k, v in response.getheaders()},
                response.read(),
            )
        finally:
            conn.close()

    def invoke(
        self, name: str, body: bytes = b"{}", **headers: str
    ) -> tuple[int, dict[str, str], bytes]:
        return self.post(f"/2015-03-31/functions/{name}/invocations", body, headers)

    def stop(self) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log_file.close()
        return self.process.returncode


@pytest.fixture
def start_host(tmp_path: Path) -> Iterator[Any]:
    """start_host({"name": {"code": dir, ...}}) -> a started FireletHost."""
    hosts: list[FireletHost] = []

    def start(
        functions: Mapping[str, Mapping[str, Any]], server: Mapping[str, Any] | None = None
    ) -> FireletHost:
        workdir = tmp_path / f"host{len(hosts)}"
        workdir.mkdir()
        host = FireletHost(workdir, functions, server)
        hosts.append(host)
        return host.start()

    yield start
    for host in hosts:
        host.stop()


@pytest.fixture(scope="session")
def ric_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """awslambdaric and its dependencies, installed once per session."""
    site = tmp_path_factory.mktemp("awslambdaric")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-compile",
            "--target",
            str(site),
            AWSLAMBDARIC,
        ],
        check=True,
    )
    return site


@pytest.fixture
def ric_function(tmp_path: Path, ric_site: Path) -> Any:
    """ric_function("name", app_source) -> a code dir running real awslambdaric."""

    def make(name: str, app: str) -> Path:
        code = write_function(
            tmp_path / "code",
            name,
            '#!/bin/sh\nexec /usr/bin/python3 -m awslambdaric "$_HANDLER"\n',
            {"app.py": app},
        )
        for entry in ric_site.iterdir():
            target = code / entry.name
            if not target.exists():
                _copy(entry, target)
        return code

    return make


def _copy(source: Path, target: Path) -> None:
    import shutil

    if source.is_dir():
        shutil.copytree(source, target)
    else:
        shutil.copy2(source, target)


def function_from(base: Path, name: str, bootstrap: str) -> Path:
    """A code dir `base/name` holding tests/functions/<bootstrap> as its bootstrap."""
    code = base / name
    code.mkdir(parents=True)
    (code / "bootstrap").write_bytes((FUNCTIONS / bootstrap).read_bytes())
    (code / "bootstrap").chmod(0o755)
    return code


@pytest.fixture
def stdlib_function(tmp_path: Path) -> Path:
    return function_from(tmp_path / "code", "stdlib", "py_stdlib_bootstrap")


@pytest.fixture
def probe_function(tmp_path: Path) -> Path:
    """A function that runs the Python snippet in event["code"] (see probe_bootstrap)."""
    return function_from(tmp_path / "code", "probe", "probe_bootstrap")


@pytest.fixture
def py_echo(tmp_path: Path) -> Path:
    return function_from(tmp_path / "code", "py-echo", "py_echo_bootstrap")


def probe(host: FireletHost, function: str, code: str) -> Any:
    """Run `code` inside the function's sandbox; returns its `result`."""
    status, headers, body = host.invoke(
        function, json.dumps({"code": textwrap.dedent(code)}).encode()
    )
    assert status == 200, body
    assert "x-amz-function-error" not in headers, body
    return json.loads(body)


@pytest.fixture
def echo_sh() -> Path:
    return ROOT / "examples" / "echo-sh"
