"""S3: own network namespace with only loopback; no way to the host's Invoke
API, other host ports, or outside addresses; no raw or packet sockets."""

from __future__ import annotations

import socket


def test_host_ports_and_outside_addresses_are_unreachable(attack):
    with socket.create_server(("127.0.0.1", 0)) as decoy:
        decoy_port = decoy.getsockname()[1]
        result = attack.result(
            f"""
import errno, os, socket
def connect(host, port):
    s = socket.socket()
    s.settimeout(2)
    try:
        s.connect((host, port))
        return "connected"
    except OSError as exc:
        return errno.errorcode.get(exc.errno, str(exc))
    finally:
        s.close()
result = {{
    "invoke_api": connect("127.0.0.1", {attack.host.port}),
    "decoy": connect("127.0.0.1", {decoy_port}),
    "metadata": connect("169.254.169.254", 80),
    "outside": connect("192.0.2.1", 443),
    "interfaces": sorted(os.listdir("/sys/class/net")) if os.path.isdir("/sys/class/net") else [],
}}
"""
        )
    assert result["invoke_api"] == "ECONNREFUSED"
    assert result["decoy"] == "ECONNREFUSED"
    assert result["metadata"] in ("ENETUNREACH", "EHOSTUNREACH")
    assert result["outside"] in ("ENETUNREACH", "EHOSTUNREACH")
    attack.assert_healthy()


def test_raw_and_packet_sockets_are_refused(attack):
    result = attack.result(
        """
import errno, socket
def make(*args):
    try:
        socket.socket(*args).close()
        return "created"
    except OSError as exc:
        return errno.errorcode.get(exc.errno, str(exc))
result = {
    "raw_icmp": make(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP),
    "raw_tcp": make(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP),
    "packet": make(17, socket.SOCK_RAW, 0),
    "alg": make(38, socket.SOCK_SEQPACKET, 0),
    "vsock": make(40, socket.SOCK_STREAM, 0),
    "tcp": make(socket.AF_INET, socket.SOCK_STREAM),
}
"""
    )
    for kind in ("raw_icmp", "raw_tcp", "packet", "alg", "vsock"):
        assert result[kind] in ("EPERM", "EACCES", "EAFNOSUPPORT"), (kind, result[kind])
    assert result["tcp"] == "created"
    attack.assert_healthy()


def test_other_environments_runtime_api_is_unreachable(attack):
    # Both sandboxes have their Runtime API at 127.0.0.1:9001, each in its own
    # netns: the hostile one only ever reaches its own (which knows nothing of
    # the victim's request ids).
    attack.result("result = 1", "victim")
    result = attack.result(
        """
import http.client, json
conn = http.client.HTTPConnection("127.0.0.1", 9001, timeout=3)
conn.request("POST", "/2018-06-01/runtime/invocation/00000000-0000-0000-0000-000000000000/response", body=b"{}")
response = conn.getresponse()
result = [response.status, json.loads(response.read())["errorType"]]
"""
    )
    assert result == [400, "InvalidRequestID"]
    attack.assert_healthy()
