"""S7: a bounded fork loop hits the environment's pids limit, not the host's."""

from __future__ import annotations


def test_fork_loop_stops_at_the_pids_limit(attack):
    result = attack.result(
        """
import errno, os, time
children, failure = [], None
for _ in range(1500):                    # bounded: more than the 1024 limit
    try:
        pid = os.fork()
    except OSError as exc:
        failure = errno.errorcode[exc.errno]
        break
    if pid == 0:
        time.sleep(20)
        os._exit(0)
    children.append(pid)
count = len(children)
for pid in children:
    os.kill(pid, 9)
for pid in children:
    os.waitpid(pid, 0)
result = {"forked": count, "failure": failure}
"""
    )
    assert result["failure"] == "EAGAIN"
    assert 900 <= result["forked"] < 1024
    # The host itself can still fork (it just ran a test step) and serve.
    attack.assert_healthy()
