"""S6: memory is capped at memory_mb; exceeding it kills the environment and
the invoke reports an out-of-memory error; the host is unaffected."""

from __future__ import annotations

import re


def _host_rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))


def test_allocating_twice_memory_mb_is_oom_killed_and_environment_resets(attack):
    host_pid = attack.host.process.pid
    before = _host_rss_kb(host_pid)
    attack.result("import time\nresult = 1")  # warm
    failed, error = attack.run(
        """
blocks = []
for _ in range(2048):                     # 2 x 1024 MB in 1 MiB pages, touched
    blocks.append(bytearray(1 << 20))
result = len(blocks)
"""
    )
    assert failed
    assert error["errorType"] == "Runtime.OutOfMemory"
    assert error["errorMessage"].endswith("Runtime exited with error: signal: killed")
    attack.host.wait_for_log(r"Status: error\tError Type: Runtime.OutOfMemory")
    # The next invoke runs in a fresh environment and works.
    assert attack.result("result = 'alive'") == "alive"
    attack.assert_healthy()
    assert _host_rss_kb(host_pid) - before < 64 * 1024, "the host did not absorb the allocation"


def test_memory_under_the_limit_works_and_is_reported(attack):
    assert attack.result("block = bytearray(100 << 20)\nresult = len(block)") == 100 << 20
    match = attack.host.wait_for_log(r"\[hostile\] REPORT .*Max Memory Used: (\d+) MB")
    assert 100 <= int(match.group(1)) <= 1024
    attack.assert_healthy()
