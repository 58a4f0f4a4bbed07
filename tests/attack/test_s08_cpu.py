"""S8: CPU is capped in proportion to memory (1,769 MB = one vCPU); spinning
functions do not starve the host's event loop or another function."""

from __future__ import annotations

import threading
import time

SPIN = """
import time
end = time.monotonic() + 6
while time.monotonic() < end:
    pass
result = "spun"
"""


def test_spinning_functions_do_not_starve_another_function(start_host, tmp_path, py_echo):
    from tests.attack.conftest import _probe_code

    spinners = {f"spin{i}": _probe_code(tmp_path / "code", f"spin{i}") for i in range(3)}
    host = start_host(
        {
            **{
                name: {"code": str(code), "memory_mb": 1769, "timeout_s": 20}
                for name, code in spinners.items()
            },
            "bystander": {"code": str(py_echo), "memory_mb": 128},
        }
    )
    import json

    assert host.invoke("bystander", b"{}")[0] == 200  # warm
    threads = [
        threading.Thread(
            target=host.invoke,
            args=(name, json.dumps({"code": SPIN}).encode()),
            kwargs={"timeout": 30},
        )
        for name in spinners
    ]
    for thread in threads:
        thread.start()
    time.sleep(1.0)  # the spinners are at full tilt
    latencies = []
    while any(thread.is_alive() for thread in threads) and len(latencies) < 200:
        started = time.perf_counter()
        status, _, body = host.invoke("bystander", b'{"n": 1}')
        latencies.append(time.perf_counter() - started)
        assert (status, body) == (200, b'{"n": 1}')
    for thread in threads:
        thread.join(30)
    latencies.sort()
    # Generous bound on a 2-vCPU machine with three one-vCPU spinners: the
    # bystander keeps answering in well under a second at p90.
    assert len(latencies) >= 10
    assert latencies[int(len(latencies) * 0.9)] < 0.5, latencies[-5:]


def test_cpu_quota_throttles_a_small_function(attack):
    # 128 MB buys 128/1769 of a vCPU: one second of spinning gets ~0.07 s of CPU.
    result = attack.result(
        """
import time
wall_end = time.monotonic() + 1.0
cpu_start = time.process_time()
while time.monotonic() < wall_end:
    pass
result = time.process_time() - cpu_start
""",
        "victim",
    )
    assert result < 0.25, f"a 128 MB function got {result:.2f} s of CPU in 1 s"
    attack.assert_healthy()
