"""The real awslambdaric, unmodified, in a real sandbox, driven by boto3."""

from __future__ import annotations

import json

import pytest

APP = """
import os, time

COLD = {"started": time.time()}


def handler(event, context):
    if event.get("raise"):
        raise ValueError("boom from the handler")
    if event.get("sleep"):
        time.sleep(event["sleep"])
    first = context.get_remaining_time_in_millis()
    time.sleep(0.05)
    return {
        "aws_request_id": context.aws_request_id,
        "function_name": context.function_name,
        "function_version": context.function_version,
        "memory_limit_in_mb": context.memory_limit_in_mb,
        "invoked_function_arn": context.invoked_function_arn,
        "log_group_name": context.log_group_name,
        "remaining_first": first,
        "remaining_second": context.get_remaining_time_in_millis(),
        "event": event,
        "cold_started": COLD["started"],
        "greeting": os.environ.get("GREETING"),
    }
"""


@pytest.fixture
def ric_host(start_host, ric_function):
    code = ric_function("ric", APP)
    return start_host(
        {
            "ric": {
                "code": str(code),
                "handler": "app.handler",
                "memory_mb": 256,
                "timeout_s": 5,
                "environment": {"GREETING": "hi"},
            }
        }
    )


def test_awslambdaric_returns_handler_value_with_correct_context(ric_host):
    client = ric_host.client()
    result = client.invoke(FunctionName="ric", Payload=json.dumps({"k": "v"}).encode())
    assert result["StatusCode"] == 200
    assert "FunctionError" not in result
    body = json.loads(result["Payload"].read())
    assert body["event"] == {"k": "v"}
    assert body["aws_request_id"] == result["ResponseMetadata"]["RequestId"]
    assert body["function_name"] == "ric"
    assert body["function_version"] == "$LATEST"
    assert body["memory_limit_in_mb"] == "256"
    assert body["invoked_function_arn"] == "arn:aws:lambda:us-east-1:000000000000:function:ric"
    assert body["log_group_name"] == "/aws/lambda/ric"
    assert body["greeting"] == "hi"
    # get_remaining_time_in_millis counts down from timeout_s.
    assert 4000 < body["remaining_first"] <= 5000
    assert body["remaining_second"] <= body["remaining_first"] - 40


def test_awslambdaric_handles_sequential_invokes_in_one_warm_environment(ric_host):
    client = ric_host.client()
    bodies = [
        json.loads(
            client.invoke(FunctionName="ric", Payload=json.dumps({"n": n}).encode())[
                "Payload"
            ].read()
        )
        for n in range(3)
    ]
    assert [b["event"]["n"] for b in bodies] == [0, 1, 2]
    assert len({b["aws_request_id"] for b in bodies}) == 3
    # Same module-level state: one warm environment served all three.
    assert len({b["cold_started"] for b in bodies}) == 1
    ric_host.wait_for_log(r"(?s)(REPORT RequestId.*){3}")
    assert ric_host.logs().count("Init Duration") == 1


def test_awslambdaric_invoked_arn_carries_the_qualifier_the_caller_used(ric_host):
    client = ric_host.client()
    result = client.invoke(FunctionName="ric", Qualifier="$LATEST", Payload=b"{}")
    body = json.loads(result["Payload"].read())
    assert (
        body["invoked_function_arn"] == "arn:aws:lambda:us-east-1:000000000000:function:ric:$LATEST"
    )


def test_awslambdaric_handler_exception_is_unhandled_function_error(ric_host):
    client = ric_host.client()
    result = client.invoke(FunctionName="ric", Payload=b'{"raise": true}')
    assert result["StatusCode"] == 200
    assert result["FunctionError"] == "Unhandled"
    error = json.loads(result["Payload"].read())
    assert error["errorType"] == "ValueError"
    assert error["errorMessage"] == "boom from the handler"
    # The environment survives a handled error.
    ok = client.invoke(FunctionName="ric", Payload=b"{}")
    assert "FunctionError" not in ok


def test_awslambdaric_timeout_kills_environment_and_next_invoke_reinitialises(
    start_host, ric_function
):
    code = ric_function("slow", APP)
    host = start_host({"slow": {"code": str(code), "handler": "app.handler", "timeout_s": 1}})
    client = host.client()
    first = json.loads(client.invoke(FunctionName="slow", Payload=b"{}")["Payload"].read())
    result = client.invoke(FunctionName="slow", Payload=b'{"sleep": 30}')
    assert result["FunctionError"] == "Unhandled"
    error = json.loads(result["Payload"].read())
    request_id = result["ResponseMetadata"]["RequestId"]
    assert error == {
        "errorType": "Sandbox.Timedout",
        "errorMessage": f"RequestId: {request_id} Error: Task timed out after 1.00 seconds",
    }
    host.wait_for_log(rf"{request_id} Task timed out after 1\.00 seconds")
    after = json.loads(client.invoke(FunctionName="slow", Payload=b"{}")["Payload"].read())
    assert after["cold_started"] != first["cold_started"], "the next invoke must run a fresh init"
    host.wait_for_log(r"(?s)Init Duration.*Init Duration")


def test_awslambdaric_import_error_reaches_the_first_invoke(start_host, ric_function):
    code = ric_function("broken", "import module_that_does_not_exist\n")
    host = start_host({"broken": {"code": str(code), "handler": "app.handler"}})
    client = host.client()
    for _ in range(2):  # every invoke runs a fresh init and gets the init error
        result = client.invoke(FunctionName="broken", Payload=b"{}")
        assert result["FunctionError"] == "Unhandled"
        error = json.loads(result["Payload"].read())
        assert error["errorType"] == "Runtime.ImportModuleError"
        assert "module_that_does_not_exist" in error["errorMessage"]
    host.wait_for_log(
        r"\[broken\] INIT_REPORT Init Duration: \d+\.\d\d ms\tPhase: init\tStatus: error\tError Type: Runtime.ImportModuleError"
    )


def test_log_type_tail_returns_the_invocations_log_ending_with_report(start_host, ric_function):
    code = ric_function(
        "talker", 'def handler(event, context):\n    print("said", event["word"])\n    return 1\n'
    )
    host = start_host({"talker": {"code": str(code), "handler": "app.handler"}})
    client = host.client()
    import base64

    result = client.invoke(FunctionName="talker", Payload=b'{"word": "hello-tail"}', LogType="Tail")
    request_id = result["ResponseMetadata"]["RequestId"]
    log = base64.b64decode(result["LogResult"]).decode()
    assert len(log.encode()) <= 4096
    assert f"START RequestId: {request_id} Version: $LATEST" in log
    assert "said hello-tail" in log
    assert f"END RequestId: {request_id}" in log
    assert (
        log.rstrip("\n").splitlines()[-1].startswith(f"REPORT RequestId: {request_id}\tDuration: ")
    )
    plain = client.invoke(FunctionName="talker", Payload=b'{"word": "quiet"}')
    assert "LogResult" not in plain


def test_log_tail_is_capped_at_4096_bytes(start_host, ric_function):
    code = ric_function(
        "chatty",
        'def handler(event, context):\n    for i in range(500):\n        print("line", i, "x" * 40)\n    return 1\n',
    )
    host = start_host({"chatty": {"code": str(code), "handler": "app.handler", "memory_mb": 1024}})
    import base64

    result = host.client().invoke(FunctionName="chatty", Payload=b"{}", LogType="Tail")
    log = base64.b64decode(result["LogResult"])
    assert len(log) == 4096
    assert b"REPORT RequestId: " in log.splitlines()[-1]
