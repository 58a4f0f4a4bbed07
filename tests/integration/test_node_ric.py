"""The real Node.js runtime interface client (npm aws-lambda-ric), unmodified,
handles sequential invocations in a sandbox (checklist 61)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

NODE_RIC = "aws-lambda-ric@3.3.0"

HANDLER = """
let coldStart = Date.now();
export const handler = async (event, context) => ({
  event,
  requestId: context.awsRequestId,
  functionName: context.functionName,
  memoryLimitInMB: context.memoryLimitInMB,
  invokedFunctionArn: context.invokedFunctionArn,
  remaining: context.getRemainingTimeInMillis(),
  coldStart,
});
"""


@pytest.fixture(scope="session")
def node_ric_code(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A code dir with aws-lambda-ric built by npm (its native part too)."""
    code = tmp_path_factory.mktemp("node-ric")
    subprocess.run(
        ["npm", "install", "--no-audit", "--no-fund", "--prefix", str(code), NODE_RIC],
        check=True,
        capture_output=True,
        timeout=600,
    )
    (code / "index.mjs").write_text(HANDLER)
    bootstrap = code / "bootstrap"
    bootstrap.write_text(
        '#!/bin/sh\nexec /usr/bin/node /var/task/node_modules/aws-lambda-ric/bin/index.mjs "$_HANDLER"\n'
    )
    bootstrap.chmod(0o755)
    code.chmod(0o755)
    return code


def test_node_aws_lambda_ric_handles_three_sequential_invokes(start_host, node_ric_code):
    host = start_host(
        {
            "node": {
                "code": str(node_ric_code),
                "handler": "index.handler",
                "memory_mb": 1024,
                "timeout_s": 10,
            }
        }
    )
    client = host.client()
    bodies = []
    for n in range(3):
        result = client.invoke(FunctionName="node", Payload=json.dumps({"n": n}).encode())
        assert result["StatusCode"] == 200
        assert "FunctionError" not in result, result["Payload"].read()
        body = json.loads(result["Payload"].read())
        assert body["requestId"] == result["ResponseMetadata"]["RequestId"]
        bodies.append(body)
    assert [b["event"] for b in bodies] == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert {b["functionName"] for b in bodies} == {"node"}
    assert {str(b["memoryLimitInMB"]) for b in bodies} == {"1024"}
    assert bodies[0]["invokedFunctionArn"] == "arn:aws:lambda:us-east-1:000000000000:function:node"
    assert all(0 < b["remaining"] <= 10_000 for b in bodies)
    assert len({b["coldStart"] for b in bodies}) == 1, "one warm environment served all three"
