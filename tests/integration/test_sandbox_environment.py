"""What a bootstrap sees from inside its sandbox: environment, files, network."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT, probe


@pytest.fixture
def probe_host(start_host, probe_function, monkeypatch):
    # A host secret that must never reach a sandbox.
    monkeypatch.setenv("FIRELET_TEST_HOST_SECRET", "s3cr3t")
    return start_host(
        {
            "probe": {
                "code": str(probe_function),
                "handler": "probe.handler",
                "memory_mb": 512,
                "timeout_s": 10,
                "environment": {"USER_VAR": "user-value", "LANG": "C.UTF-8"},
            }
        }
    )


def test_lambda_environment_variables_are_set(probe_host):
    env = probe(probe_host, "probe", "result = dict(os.environ)")
    assert env["AWS_LAMBDA_RUNTIME_API"] == "127.0.0.1:9001"
    assert env["_HANDLER"] == "probe.handler"
    assert env["AWS_REGION"] == env["AWS_DEFAULT_REGION"] == "us-east-1"
    assert env["AWS_LAMBDA_FUNCTION_NAME"] == "probe"
    assert env["AWS_LAMBDA_FUNCTION_VERSION"] == "$LATEST"
    assert env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "512"
    assert env["AWS_LAMBDA_LOG_GROUP_NAME"] == "/aws/lambda/probe"
    assert env["AWS_LAMBDA_LOG_STREAM_NAME"]
    assert env["AWS_LAMBDA_INITIALIZATION_TYPE"] == "on-demand"
    assert env["LAMBDA_TASK_ROOT"] == "/var/task"
    assert env["LAMBDA_RUNTIME_DIR"] == "/var/runtime"
    assert env["TZ"] == ":UTC"
    assert env["PATH"].startswith("/usr/local/bin:/usr/bin/:/bin")
    assert "/var/task" in env["LD_LIBRARY_PATH"]
    assert "AWS_EXECUTION_ENV" not in env  # not set for provided runtimes
    # User values arrive; user may override LANG (an unreserved default).
    assert env["USER_VAR"] == "user-value"
    assert env["LANG"] == "C.UTF-8"


def test_no_host_environment_variable_leaks_in(probe_host):
    env = probe(probe_host, "probe", "result = dict(os.environ)")
    assert "FIRELET_TEST_HOST_SECRET" not in env
    for host_only in ("HOME", "PWD", "VIRTUAL_ENV", "PYTEST_CURRENT_TEST", "SSH_AUTH_SOCK"):
        assert host_only not in env, host_only


def test_only_stdio_fds_are_open_at_start(probe_host):
    # Besides stdio, the only fd is the runtime's own socket to the Runtime API.
    fds = probe(
        probe_host,
        "probe",
        """
        result = {}
        for fd in os.listdir("/proc/self/fd"):
            try:
                result[fd] = os.readlink(f"/proc/self/fd/{fd}")
            except FileNotFoundError:  # the fd listdir itself used
                pass
        """,
    )
    targets = {int(fd): target for fd, target in fds.items()}
    assert targets[0] == "/dev/null"
    assert targets[1].startswith("pipe:") and targets[1] == targets[2]
    others = {fd: t for fd, t in targets.items() if fd > 2}
    assert all(t.startswith("socket:") or t.startswith("/proc/") for t in others.values()), others


def test_process_identity_hostname_and_cwd(probe_host):
    facts = probe(
        probe_host,
        "probe",
        """
        import os, socket
        status = dict(line.split(":\\t", 1) for line in open("/proc/self/status").read().splitlines() if ":\\t" in line)
        result = {
            "uid": os.getuid(), "gid": os.getgid(), "euid": os.geteuid(), "pid": os.getpid(),
            "cwd": os.getcwd(), "hostname": socket.gethostname(),
            "caps": [status[k].strip() for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")],
            "no_new_privs": status["NoNewPrivs"].strip(),
            "pids": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
        }
        """,
    )
    assert (facts["uid"], facts["gid"], facts["euid"]) == (993, 990, 993)
    assert facts["pid"] == 2, "the bootstrap is the first child of its namespace's init"
    assert facts["cwd"] == "/var/task"
    assert facts["hostname"] == "localhost"
    assert facts["caps"] == ["0000000000000000"] * 5
    assert facts["no_new_privs"] == "1"
    assert facts["pids"] == [2], "only the bootstrap itself is visible (hidepid hides the init)"


def test_filesystem_layout_and_read_only_paths(probe_host):
    facts = probe(
        probe_host,
        "probe",
        """
        import errno, os
        def write(path):
            try:
                with open(path, "w") as f:
                    f.write("x")
                return "ok"
            except OSError as exc:
                return errno.errorcode[exc.errno]
        result = {
            "task": write("/var/task/new-file"),
            "usr": write("/usr/new-file"),
            "root": write("/new-file"),
            "etc": write("/etc/new-file"),
            "opt": write("/opt/new-file"),
            "runtime": write("/var/runtime/new-file"),
            "tmp": write("/tmp/new-file"),
            "bootstrap_visible": os.path.exists("/var/task/bootstrap"),
            "shadow": os.path.exists("/etc/shadow"),
            "root_home": os.path.exists("/root"),
            "tmp_size": os.statvfs("/tmp").f_blocks * os.statvfs("/tmp").f_frsize,
            "etc": sorted(os.listdir("/etc")),
        }
        """,
    )
    for path in ("task", "usr", "root", "opt", "runtime"):
        assert facts[path] in ("EROFS", "EACCES"), (path, facts[path])
    assert facts["tmp"] == "ok"
    assert facts["bootstrap_visible"] is True
    assert facts["shadow"] is False
    assert facts["root_home"] is False
    assert facts["tmp_size"] == 512 * 1024 * 1024
    assert "shadow" not in facts["etc"] and "passwd" in facts["etc"]


def test_tmp_persists_across_warm_invokes(probe_host):
    probe(probe_host, "probe", "open('/tmp/marker', 'w').write('kept')")
    assert probe(probe_host, "probe", "result = open('/tmp/marker').read()") == "kept"


def test_network_is_only_loopback_and_host_invoke_api_is_unreachable(probe_host):
    facts = probe(
        probe_host,
        "probe",
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
            "host_api": connect("127.0.0.1", {probe_host.port}),
            "outside": connect("10.0.0.1", 80),
            "interfaces": sorted(os.listdir("/sys/class/net")) if os.path.isdir("/sys/class/net") else None,
        }}
        """,
    )
    assert facts["host_api"] == "ECONNREFUSED"
    assert facts["outside"] in ("ENETUNREACH", "EHOSTUNREACH")


def test_bootstrap_output_reaches_host_log_with_request_id(start_host, stdlib_function):
    host = start_host({"std": {"code": str(stdlib_function)}})
    status, headers, _ = host.invoke("std", b'{"x": 1}')
    assert status == 200
    request_id = headers["x-amzn-requestid"]
    host.wait_for_log(rf"\[std\] {request_id} stdlib runtime got {request_id}")
    host.wait_for_log(rf"\[std\] START RequestId: {request_id} Version: \$LATEST")
    host.wait_for_log(rf"\[std\] END RequestId: {request_id}")
    host.wait_for_log(
        rf"\[std\] REPORT RequestId: {request_id}\tDuration: \d+\.\d\d ms\tBilled Duration: \d+ ms\t"
        r"Memory Size: 128 MB\tMax Memory Used: [1-9]\d* MB\tInit Duration: \d+\.\d\d ms\t"
    )


def test_stdlib_runtime_sees_every_next_header(start_host, stdlib_function):
    host = start_host({"std": {"code": str(stdlib_function), "timeout_s": 7}})
    import base64
    import json
    import time

    context = base64.b64encode(b'{"custom": {"k": "v"}}').decode()
    before = int(time.time() * 1000)
    status, headers, body = host.invoke("std", b'{"x": 1}', **{"X-Amz-Client-Context": context})
    seen = json.loads(body)["headers"]
    assert seen["lambda-runtime-aws-request-id"] == headers["x-amzn-requestid"]
    deadline = int(seen["lambda-runtime-deadline-ms"])
    assert before + 7000 - 50 <= deadline <= int(time.time() * 1000) + 7000
    assert (
        seen["lambda-runtime-invoked-function-arn"]
        == "arn:aws:lambda:us-east-1:000000000000:function:std"
    )
    assert seen["lambda-runtime-client-context"] == '{"custom": {"k": "v"}}'
    assert "lambda-runtime-cognito-identity" not in seen
    assert seen["content-type"] == "application/json"
    import re

    assert re.fullmatch(
        r"Root=1-[0-9a-f]{8}-[0-9a-f]{24};Parent=[0-9a-f]{16};Sampled=[01]",
        seen["lambda-runtime-trace-id"],
    )


def test_cli_invoke_prints_the_response(start_host, echo_sh, tmp_path):
    host = start_host({"echo": {"code": str(echo_sh)}})
    cli = [sys.executable, "-m", "runtime.cli", "invoke", "echo", "--endpoint", host.endpoint]
    out = subprocess.run([*cli, "--payload", '{"a":1}'], capture_output=True, cwd=ROOT, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout == b'{"a":1}\n'
    payload_file = tmp_path / "event.json"
    payload_file.write_bytes(b'{"from": "file"}')
    out = subprocess.run(
        [*cli, "--payload-file", str(payload_file)], capture_output=True, cwd=ROOT, timeout=30
    )
    assert out.stdout == b'{"from": "file"}\n'
    with_log = subprocess.run(
        [*cli, "--payload", "[1]", "--log"], capture_output=True, cwd=ROOT, timeout=30
    )
    assert with_log.stdout == b"[1]\n"
    assert b"START RequestId: " in with_log.stderr and b"REPORT RequestId: " in with_log.stderr
    missing = subprocess.run(
        [sys.executable, "-m", "runtime.cli", "invoke", "nope", "--endpoint", host.endpoint],
        capture_output=True,
        cwd=ROOT,
        timeout=30,
    )
    assert missing.returncode == 1
    assert b"ResourceNotFoundException" in missing.stderr


def test_host_environment_is_not_inherited_by_default(probe_host):
    # Guard against a regression where os.environ is passed instead of the spec.
    assert os.environ.get("FIRELET_TEST_HOST_SECRET") == "s3cr3t"
    env = probe(probe_host, "probe", "result = sorted(os.environ)")
    assert "FIRELET_TEST_HOST_SECRET" not in env
