"""S9: /tmp is limited to ephemeral_storage_mb; output sizes are limited
(6 MB response, a bounded log per invocation)."""

from __future__ import annotations

import json
import os


def test_filling_tmp_stops_at_its_size(attack):
    result = attack.result(
        """
import errno, os
written, error = 0, None
chunk = b"x" * (1 << 20)
with open("/tmp/fill", "wb") as f:
    try:
        for _ in range(600):             # bounded: just past 512 MB
            f.write(chunk)
            f.flush()
            written += len(chunk)
    except OSError as exc:
        error = errno.errorcode[exc.errno]
os.unlink("/tmp/fill")
result = {"written_mb": written >> 20, "error": error}
"""
    )
    assert result["error"] == "ENOSPC"
    assert 500 <= result["written_mb"] <= 512
    attack.assert_healthy()


def test_printing_a_gigabyte_is_cut_and_does_not_fill_the_host_log(start_host, tmp_path, py_echo):
    from tests.attack.conftest import _probe_code

    code = _probe_code(tmp_path / "code", "printer")
    host = start_host(
        {
            "printer": {"code": str(code), "memory_mb": 1769, "timeout_s": 60},
            "bystander": {"code": str(py_echo)},
        }
    )
    snippet = """
import os
line = b"y" * 1023 + b"\\n"
block = line * 1024                      # 1 MiB
for _ in range(1024):                    # 1 GiB in all
    os.write(1, block)
result = "printed"
"""
    status, headers, body = host.invoke(
        "printer", json.dumps({"code": snippet}).encode(), timeout=120
    )
    assert (status, json.loads(body)) == (200, "printed")
    host.wait_for_log(r"the rest is dropped")
    assert os.path.getsize(host.log_path) < 64 * 1024 * 1024
    assert host.invoke("bystander", b"[1]")[2] == b"[1]"


def test_returning_seven_megabytes_is_response_size_too_large(attack):
    failed, error = attack.run("result = 'z' * (7 << 20)")
    assert failed
    assert error["errorType"] == "Function.ResponseSizeTooLarge"
    assert attack.result("result = 'small'") == "small"  # same environment, still fine
    attack.assert_healthy()
