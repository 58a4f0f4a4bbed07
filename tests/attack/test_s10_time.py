"""S10: timeout_s is enforced even against a function that ignores SIGTERM;
the environment is killed and reset; the next invoke works."""

from __future__ import annotations

import time


def test_sleeping_past_timeout_while_ignoring_sigterm_is_killed(start_host, tmp_path, py_echo):
    from tests.attack.conftest import Attack, _probe_code

    code = _probe_code(tmp_path / "code", "hostile")
    victim = _probe_code(tmp_path / "code", "victim")
    host = start_host(
        {
            "hostile": {"code": str(code), "timeout_s": 1},
            "victim": {"code": str(victim)},
            "bystander": {"code": str(py_echo)},
        }
    )
    attack = Attack(host, {"hostile": code, "victim": victim})
    started = time.monotonic()
    failed, error = attack.run(
        """
import signal, subprocess, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
subprocess.Popen(["/bin/sh", "-c", "trap '' TERM; sleep 60"])
time.sleep(60)
"""
    )
    elapsed = time.monotonic() - started
    assert failed
    assert error["errorType"] == "Sandbox.Timedout"
    assert "Task timed out after 1.00 seconds" in error["errorMessage"]
    assert elapsed < 10
    # Fresh environment: the module-level state of the old runtime is gone.
    assert attack.result("result = 'fresh'") == "fresh"
    attack.assert_healthy()
