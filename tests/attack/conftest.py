"""Attack tests: a hostile function in a real sandbox, a victim and a bystander.

Every attack runs only inside the sandbox under test and is bounded in count,
memory and time by the sandbox itself (cgroup limits, timeouts) and by the
snippet. After each attack the test checks that the host and the other
functions still work.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import FireletHost, function_from


def _probe_code(base: Path, name: str) -> Path:
    code = function_from(base, name, "probe_bootstrap")
    (code / "secret.txt").write_text(f"code of {name}\n")
    return code


class Attack:
    """A host with a hostile function, a victim function and a bystander."""

    def __init__(self, host: FireletHost, codes: dict[str, Path]) -> None:
        self.host = host
        self.codes = codes

    def run(self, code: str, function: str = "hostile") -> tuple[bool, Any]:
        """Run a snippet in `function`; returns (function_error?, result or error doc)."""
        status, headers, body = self.host.invoke(
            function, json.dumps({"code": textwrap.dedent(code)}).encode()
        )
        assert status == 200, body
        return "x-amz-function-error" in headers, json.loads(body)

    def result(self, code: str, function: str = "hostile") -> Any:
        failed, value = self.run(code, function)
        assert not failed, value
        return value

    def assert_healthy(self) -> None:
        """The host answers, the bystander and the victim still work."""
        status, headers, body = self.host.invoke("bystander", b'{"still": "here"}')
        assert (status, body) == (200, b'{"still": "here"}'), body
        assert "x-amz-function-error" not in headers
        assert self.result("result = 6 * 7", "victim") == 42
        assert self.host.process is not None and self.host.process.poll() is None


@pytest.fixture
def attack(start_host, tmp_path, py_echo) -> Attack:
    codes = {name: _probe_code(tmp_path / "code", name) for name in ("hostile", "victim")}
    host = start_host(
        {
            # 1 GB: enough CPU share (1024/1769 of a vCPU) for the bounded
            # attacks to finish quickly, and more memory than /tmp holds.
            "hostile": {"code": str(codes["hostile"]), "memory_mb": 1024, "timeout_s": 20},
            "victim": {"code": str(codes["victim"]), "memory_mb": 128, "timeout_s": 8},
            "bystander": {"code": str(py_echo), "memory_mb": 128, "timeout_s": 8},
        }
    )
    return Attack(host, codes)
