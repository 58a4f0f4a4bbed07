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
