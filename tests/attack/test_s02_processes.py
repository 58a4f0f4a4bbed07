"""S2: own pid namespace; the function cannot see or signal host processes
or other sandboxes' processes."""

from __future__ import annotations

import os


def test_host_processes_are_invisible_and_unsignalable(attack):
    host_pid = attack.host.process.pid
    result = attack.result(
        f"""
import errno, os, signal
def kill(pid, sig):
    try:
        os.kill(pid, sig)
        return "sent"
    except OSError as exc:
        return errno.errorcode[exc.errno]
result = {{
    "visible": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
    "host": kill({host_pid}, signal.SIGKILL),
    "test_runner": kill({os.getpid()}, signal.SIGKILL),
    "init": kill(1, signal.SIGKILL),
}}
"""
    )
    assert result["visible"] == [2], "only the bootstrap itself is visible"
    assert result["host"] == "ESRCH"
    assert result["test_runner"] == "ESRCH"
    assert result["init"] in ("EPERM", "sent")  # pid 1 of a namespace ignores SIGKILL from inside
    attack.assert_healthy()


def test_kill_minus_one_only_reaches_the_sandbox(attack):
    # kill(-1) signals every process the caller may signal, except itself.
    failed, _ = attack.run(
        """
import os, signal, subprocess
child = subprocess.Popen(["/bin/sleep", "30"])
os.kill(-1, signal.SIGKILL)
result = child.wait(timeout=5)
"""
    )
    assert not failed
    attack.assert_healthy()


def test_ptrace_of_any_process_fails(attack):
    result = attack.result(
        """
import ctypes, errno, os
libc = ctypes.CDLL(None, use_errno=True)
PTRACE_ATTACH = 16
outcome = {}
for pid in (1, 2):
    rc = libc.ptrace(PTRACE_ATTACH, pid, None, None)
    outcome[pid] = "attached" if rc == 0 else errno.errorcode[ctypes.get_errno()]
result = outcome
"""
    )
    assert all(value != "attached" for value in result.values()), result
    attack.assert_healthy()
