"""A real invoke end to end: boto3 -> Invoke API -> sandboxed bootstrap -> back."""

from __future__ import annotations

import json


def test_boto3_invokes_shell_bootstrap_and_gets_payload_back(start_host, echo_sh):
    host = start_host({"echo": {"code": str(echo_sh)}})
    result = host.client().invoke(FunctionName="echo", Payload=b'{"a": 1}')
    assert result["StatusCode"] == 200
    assert "FunctionError" not in result
    assert json.loads(result["Payload"].read()) == {"a": 1}
    assert result["ExecutedVersion"] == "$LATEST"


def test_boto3_invokes_stdlib_python_bootstrap(start_host, stdlib_function):
    host = start_host({"std": {"code": str(stdlib_function), "timeout_s": 4}})
    client = host.client()
    for n in range(3):
        result = client.invoke(FunctionName="std", Payload=json.dumps({"n": n}).encode())
        body = json.loads(result["Payload"].read())
        assert result["StatusCode"] == 200
        assert body["event"] == {"n": n}
        assert (
            body["headers"]["lambda-runtime-aws-request-id"]
            == result["ResponseMetadata"]["RequestId"]
        )
