"""S11: bad HTTP from the bootstrap gets a 4xx and never crashes the host;
host environment variables and fds never leak into sandboxes."""

from __future__ import annotations


def test_fuzzing_the_runtime_api_from_inside_gets_4xx_and_the_host_survives(attack):
    result = attack.result(
        """
import json, os, random, socket
def raw(data, read=True):
    s = socket.create_connection(("127.0.0.1", 9001), timeout=3)
    try:
        s.sendall(data)
        if not read:
            return None
        reply = b""
        while b"\\r\\n" not in reply:
            chunk = s.recv(4096)
            if not chunk:
                break
            reply += chunk
        return reply.split(b" ", 2)[1].decode() if reply else "closed"
    except OSError as exc:
        return type(exc).__name__
    finally:
        s.close()
rid = headers["Lambda-Runtime-Aws-Request-Id"]
base = "/2018-06-01/runtime/invocation/"
random.seed(7)
outcome = {
    "garbage": raw(b"\\x00\\xff\\x10 GARBAGE \\r\\n\\r\\n"),
    "huge_header": raw(b"GET /x HTTP/1.1\\r\\nX: " + b"a" * 200_000 + b"\\r\\n\\r\\n"),
    "many_headers": raw(b"GET /x HTTP/1.1\\r\\n" + b"X: y\\r\\n" * 500 + b"\\r\\n"),
    "bad_chunk": raw(b"POST " + (base + rid + "/response").encode() + b" HTTP/1.1\\r\\nTransfer-Encoding: chunked\\r\\n\\r\\nZZZ\\r\\n"),
    "wrong_id": raw(b"POST " + (base + "not-a-request/response").encode() + b" HTTP/1.1\\r\\nContent-Length: 2\\r\\n\\r\\n{}"),
    "unknown_path": raw(b"GET /2018-06-01/whatever HTTP/1.1\\r\\n\\r\\n"),
    "upgrade": raw(b"GET / HTTP/1.1\\r\\nConnection: Upgrade\\r\\nUpgrade: websocket\\r\\n\\r\\n"),
    "huge_body_declared": raw(b"POST " + (base + "x/error").encode() + b" HTTP/1.1\\r\\nContent-Length: 99999999999\\r\\n\\r\\n", read=False),
}
for _ in range(200):                       # bounded random junk
    raw(bytes(random.getrandbits(8) for _ in range(random.randint(1, 300))), read=False)
# slowloris: many half-open requests, left hanging
hanging = [socket.create_connection(("127.0.0.1", 9001)) for _ in range(50)]
for s in hanging:
    s.sendall(b"GET /2018-06-01/runtime/invocation/next HTTP/1.1\\r\\nX-Slow: ")
result = outcome
"""
    )
    assert result["garbage"] == "400"
    assert result["huge_header"] in ("431", "ConnectionResetError", "BrokenPipeError")
    assert result["many_headers"] == "431"
    assert result["bad_chunk"] == "400"
    assert result["wrong_id"] == "400"
    assert result["unknown_path"] == "404"
    assert result["upgrade"] == "400"
    # The same environment still answers its own invocations correctly.
    assert attack.result("result = 'still serving'") == "still serving"
    attack.assert_healthy()


def test_double_and_late_responses_are_rejected(attack):
    result = attack.result(
        """
import http.client, json
rid = headers["Lambda-Runtime-Aws-Request-Id"]
conn = http.client.HTTPConnection("127.0.0.1", 9001, timeout=3)
def post(path, body=b"{}"):
    conn.request("POST", path, body=body)
    r = conn.getresponse()
    return [r.status, json.loads(r.read())]
first = post(f"/2018-06-01/runtime/invocation/{rid}/response", b'"from the first post"')
second = post(f"/2018-06-01/runtime/invocation/{rid}/response", b'"second"')
error_after = post(f"/2018-06-01/runtime/invocation/{rid}/error")
# The caller was answered by the first post; report what the rest got.
print("later posts:", first[0], second[0], second[1]["errorType"], error_after[0], error_after[1]["errorType"], flush=True)
result = "never delivered: the invocation was already answered"
"""
    )
    # The first response wins; the second /response and the /error after it
    # are refused with 403, and so is the probe's own final post.
    assert result == "from the first post"
    attack.host.wait_for_log(
        r"later posts: 202 403 InvalidStateTransition 403 InvalidStateTransition"
    )
    attack.assert_healthy()


def test_host_environment_and_fds_do_not_leak(attack):
    result = attack.result(
        """
import os
fds = {}
for fd in os.listdir("/proc/self/fd"):
    try:
        fds[fd] = os.readlink(f"/proc/self/fd/{fd}")
    except FileNotFoundError:
        pass
result = {"env": sorted(os.environ), "fds": fds}
"""
    )
    assert not [
        name
        for name in result["env"]
        if name.startswith(("PYTEST", "VIRTUAL_ENV", "HOME", "SSH", "SUDO"))
    ]
    for fd, target in result["fds"].items():
        if int(fd) > 2:
            assert target.startswith(("socket:", "/proc/")), (fd, target)
    attack.assert_healthy()


def test_connection_flood_on_the_runtime_api_is_capped(attack):
    result = attack.result(
        """
import socket, time
opened, refused = [], 0
for _ in range(300):                       # bounded
    try:
        s = socket.create_connection(("127.0.0.1", 9001), timeout=2)
        opened.append(s)
    except OSError:
        refused += 1
time.sleep(0.3)
alive = 0
for s in opened:                           # the host closes what is over its cap
    s.setblocking(False)
    try:
        alive += 1 if s.recv(1) != b"" else 0
    except BlockingIOError:
        alive += 1
    except OSError:
        pass
result = {"alive": alive}
"""
    )
    assert result["alive"] <= 32
    assert attack.result("result = 'still serving'") == "still serving"
    attack.assert_healthy()
