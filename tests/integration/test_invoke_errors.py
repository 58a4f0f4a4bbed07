"""Every Invoke error case, against real hosts and real sandboxes, via boto3."""

from __future__ import annotations

import json
import threading

import pytest
from botocore.exceptions import ClientError

from tests.conftest import write_function

# A sh runtime that dies mid-invoke in the way the event asks for.
CRASHER = r"""
#!/bin/sh
api="http://${AWS_LAMBDA_RUNTIME_API}/2018-06-01/runtime"
while true; do
    event=$(curl -sS -D /tmp/h "$api/invocation/next")
    id=$(sed -n 's/^[Ll]ambda-[Rr]untime-[Aa]ws-[Rr]equest-[Ii]d: *//p' /tmp/h | tr -d '\r')
    case "$event" in
        *exit1*) exit 1 ;;
        *exit0*) exit 0 ;;
        *kill9*) kill -9 $$ ;;
        *segv*) exec /usr/bin/python3 -S -c 'import ctypes; ctypes.string_at(0)' ;;
        *big*) head -c 7340032 /dev/zero | tr '\0' 'a' > /tmp/big
               curl -sS -o /tmp/reply -w '%{http_code}' -X POST --data-binary @/tmp/big "$api/invocation/$id/response" > /tmp/code
               echo "runtime got $(cat /tmp/code) $(cat /tmp/reply)" ;;
        *) curl -sS -o /dev/null -X POST --data-binary "$event" "$api/invocation/$id/response" ;;
    esac
done
"""


@pytest.fixture
def crash_host(start_host, tmp_path, echo_sh):
    code = write_function(tmp_path, "crasher", CRASHER)
    return start_host({"crasher": {"code": str(code)}, "echo": {"code": str(echo_sh)}})


def _error(result):
    assert result["StatusCode"] == 200
    assert result["FunctionError"] == "Unhandled"
    return json.loads(result["Payload"].read())


def test_unknown_function_is_404_resource_not_found(crash_host):
    client = crash_host.client()
    with pytest.raises(client.exceptions.ResourceNotFoundException) as caught:
        client.invoke(FunctionName="nope", Payload=b"{}")
    response = caught.value.response
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 404
    assert response["Error"]["Message"] == (
        "Function not found: arn:aws:lambda:us-east-1:000000000000:function:nope:$LATEST"
    )
    assert (
        response["ResponseMetadata"]["HTTPHeaders"]["x-amzn-errortype"]
        == "ResourceNotFoundException"
    )


def test_unknown_qualifier_is_404(crash_host):
    client = crash_host.client()
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.invoke(FunctionName="echo", Qualifier="prod", Payload=b"{}")


def test_invalid_function_name_is_400_validation_exception(crash_host):
    status, headers, body = crash_host.invoke("bad%20name!", b"{}")
    assert status == 400
    assert headers["x-amzn-errortype"] == "ValidationException"
    assert "failed to satisfy constraint" in json.loads(body)["message"]


def test_invalid_json_payload_is_400_invalid_request_content(crash_host):
    client = crash_host.client()
    with pytest.raises(client.exceptions.InvalidRequestContentException) as caught:
        client.invoke(FunctionName="echo", Payload=b"{not json")
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert caught.value.response["Error"]["Message"].startswith(
        "Could not parse request body into json: Could not parse payload into json:"
    )


def test_big_integers_are_valid_json(crash_host):
    result = crash_host.client().invoke(
        FunctionName="echo", Payload=b'{"n": 123456789012345678901234567890}'
    )
    assert "FunctionError" not in result
    assert result["Payload"].read() == b'{"n": 123456789012345678901234567890}'


def test_payload_over_6291456_bytes_is_413_request_entity_too_large(crash_host):
    client = crash_host.client()
    too_big = b'"' + b"a" * (6_291_457 - 2) + b'"'
    with pytest.raises(ClientError) as caught:
        client.invoke(FunctionName="echo", Payload=too_big)
    error = caught.value.response
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 413
    assert error["Error"]["Code"] == "RequestEntityTooLargeException"
    assert error["Error"]["Message"] == (
        "Request must be smaller than 6291456 bytes for the InvokeFunction operation"
    )


def test_payload_of_exactly_6291456_bytes_is_accepted_and_echoed_intact(start_host, py_echo):
    host = start_host({"echo": {"code": str(py_echo)}})
    payload = b'"' + b"a" * (6_291_456 - 2) + b'"'
    status, headers, body = host.invoke("echo", payload)
    assert status == 200
    assert "x-amz-function-error" not in headers
    assert body == payload


def test_response_over_6291556_bytes_is_function_response_size_too_large(crash_host):
    client = crash_host.client()
    error = _error(client.invoke(FunctionName="crasher", Payload=b'"big"'))
    assert error == {
        "errorMessage": "Response payload size exceeded maximum allowed payload size (6291556 bytes).",
        "errorType": "Function.ResponseSizeTooLarge",
    }
    crash_host.wait_for_log(r"runtime got 413 .*RequestEntityTooLarge")
    # The environment is not reset: the same runtime takes the next event.
    after = client.invoke(FunctionName="crasher", Payload=b'"ok"')
    assert after["Payload"].read() == b'"ok"'
    assert crash_host.logs().count("Init Duration") == 1


def test_bootstrap_exit_mid_invoke_is_runtime_exit_error_and_next_invoke_reinitialises(crash_host):
    client = crash_host.client()
    result = client.invoke(FunctionName="crasher", Payload=b'"exit1"')
    request_id = result["ResponseMetadata"]["RequestId"]
    assert _error(result) == {
        "errorType": "Runtime.ExitError",
        "errorMessage": f"RequestId: {request_id} Error: Runtime exited with error: exit status 1",
    }
    after = client.invoke(FunctionName="crasher", Payload=b'"fine"')
    assert after["Payload"].read() == b'"fine"'
    crash_host.wait_for_log(r"(?s)Init Duration.*Init Duration")


def test_bootstrap_killing_itself_is_signal_killed(crash_host):
    result = crash_host.client().invoke(FunctionName="crasher", Payload=b'"kill9"')
    request_id = result["ResponseMetadata"]["RequestId"]
    assert _error(result) == {
        "errorType": "Runtime.ExitError",
        "errorMessage": f"RequestId: {request_id} Error: Runtime exited with error: signal: killed",
    }


def test_bootstrap_killed_by_signal_names_the_signal(crash_host):
    result = crash_host.client().invoke(FunctionName="crasher", Payload=b'"segv"')
    request_id = result["ResponseMetadata"]["RequestId"]
    assert _error(result)["errorMessage"] == (
        f"RequestId: {request_id} Error: Runtime exited with error: signal: segmentation fault"
    )


def test_bootstrap_exit_zero_mid_invoke_is_exited_without_reason(crash_host):
    result = crash_host.client().invoke(FunctionName="crasher", Payload=b'"exit0"')
    request_id = result["ResponseMetadata"]["RequestId"]
    assert _error(result) == {
        "errorType": "Runtime.ExitError",
        "errorMessage": f"RequestId: {request_id} Error: Runtime exited without providing a reason",
    }


def test_bootstrap_that_exits_during_init_fails_the_first_invoke(start_host, tmp_path):
    code = write_function(tmp_path, "dies", "#!/bin/sh\necho dying at init\nexit 3\n")
    host = start_host({"dies": {"code": str(code)}})
    result = host.client().invoke(FunctionName="dies", Payload=b"{}")
    request_id = result["ResponseMetadata"]["RequestId"]
    assert _error(result) == {
        "errorType": "Runtime.ExitError",
        "errorMessage": f"RequestId: {request_id} Error: Runtime exited with error: exit status 3",
    }
    host.wait_for_log(r"\[dies\] INIT dying at init")
    host.wait_for_log(
        r"\[dies\] INIT_REPORT Init Duration: [\d.]+ ms\tPhase: init\tStatus: error\tError Type: Runtime.ExitError"
    )


def test_bootstrap_removed_after_start_is_runtime_invalid_entrypoint(start_host, tmp_path):
    code = write_function(tmp_path, "gone", "#!/bin/sh\nexit 0\n")
    host = start_host({"gone": {"code": str(code)}})
    (code / "bootstrap").unlink()
    error = _error(host.client().invoke(FunctionName="gone", Payload=b"{}"))
    assert error["errorType"] == "Runtime.InvalidEntrypoint"


def test_concurrent_invokes_queue_and_never_mix_responses(crash_host):
    client = crash_host.client()
    results: dict[int, bytes] = {}
    errors: list[BaseException] = []

    def call(n: int) -> None:
        try:
            payload = json.dumps({"n": n, "pad": "x" * n}).encode()
            results[n] = client.invoke(FunctionName="echo", Payload=payload)["Payload"].read()
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=call, args=(n,)) for n in range(24)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    assert {n: json.loads(body) for n, body in results.items()} == {
        n: {"n": n, "pad": "x" * n} for n in range(24)
    }


def test_full_queue_is_429_too_many_requests(start_host, tmp_path):
    slow = write_function(
        tmp_path,
        "slow",
        r"""
        #!/bin/sh
        api="http://${AWS_LAMBDA_RUNTIME_API}/2018-06-01/runtime"
        while true; do
            curl -sS -D /tmp/h -o /dev/null "$api/invocation/next"
            id=$(sed -n 's/^[Ll]ambda-[Rr]untime-[Aa]ws-[Rr]equest-[Ii]d: *//p' /tmp/h | tr -d '\r')
            sleep 1
            curl -sS -o /dev/null -X POST --data-binary '"done"' "$api/invocation/$id/response"
        done
        """,
    )
    host = start_host({"slow": {"code": str(slow), "max_queue": 1, "timeout_s": 10}})
    outcomes: list[int] = []

    def call() -> None:
        status, _, _ = host.invoke("slow", b"{}")
        outcomes.append(status)

    threads = [threading.Thread(target=call) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert 429 in outcomes
    assert 200 in outcomes
    # Once the queue has drained the function takes invokes again.
    status, _, body = host.invoke("slow", b"{}")
    assert (status, body) == (200, b'"done"')


def test_dry_run_is_204_and_does_not_run_the_function(crash_host):
    result = crash_host.client().invoke(FunctionName="echo", InvocationType="DryRun", Payload=b"{}")
    assert result["StatusCode"] == 204
    assert "START RequestId" not in crash_host.logs()


def test_event_invoke_is_202_and_runs_the_function(crash_host):
    result = crash_host.client().invoke(
        FunctionName="echo", InvocationType="Event", Payload=b'{"e": 1}'
    )
    assert result["StatusCode"] == 202
    assert result["Payload"].read() == b""
    crash_host.wait_for_log(r"\[echo\] END RequestId: " + result["ResponseMetadata"]["RequestId"])


def test_unknown_invocation_type_is_400(crash_host):
    status, headers, _ = crash_host.invoke("echo", b"{}", **{"X-Amz-Invocation-Type": "Sometimes"})
    assert status == 400
    assert headers["x-amzn-errortype"] == "InvalidParameterValueException"


@pytest.mark.parametrize(
    "name",
    [
        "echo",
        "echo:$LATEST",
        "000000000000:function:echo",
        "arn:aws:lambda:us-east-1:000000000000:function:echo",
        "arn:aws:lambda:us-east-1:000000000000:function:echo:$LATEST",
    ],
)
def test_every_function_name_form_resolves(crash_host, name):
    result = crash_host.client().invoke(FunctionName=name, Payload=b'{"form": 1}')
    assert result["Payload"].read() == b'{"form": 1}'


def test_unknown_path_is_404_unknown_operation(crash_host):
    status, headers, _ = crash_host.post("/2015-03-31/nothing-here")
    assert status == 404
    assert headers["x-amzn-errortype"] == "UnknownOperationException"


def test_malformed_http_gets_400_and_host_keeps_serving(crash_host):
    import socket

    with socket.create_connection(("127.0.0.1", crash_host.port), timeout=5) as sock:
        sock.sendall(b"THIS IS NOT HTTP\r\n\r\n")
        reply = sock.recv(4096)
    assert reply.startswith(b"HTTP/1.1 400 ")
    result = crash_host.client().invoke(FunctionName="echo", Payload=b"{}")
    assert result["StatusCode"] == 200


def test_host_shutdown_sends_sigterm_to_the_runtime_and_exits_cleanly(start_host, tmp_path):
    code = write_function(
        tmp_path,
        "graceful",
        r"""
        #!/bin/sh
        trap 'echo "runtime got SIGTERM"; exit 0' TERM
        api="http://${AWS_LAMBDA_RUNTIME_API}/2018-06-01/runtime"
        while true; do
            curl -sS -D /tmp/h -o /tmp/event "$api/invocation/next" &
            wait $!
            id=$(sed -n 's/^[Ll]ambda-[Rr]untime-[Aa]ws-[Rr]equest-[Ii]d: *//p' /tmp/h | tr -d '\r')
            curl -sS -o /dev/null -X POST --data-binary @/tmp/event "$api/invocation/$id/response"
        done
        """,
    )
    host = start_host({"graceful": {"code": str(code)}})
    assert host.invoke("graceful", b'"warm"')[2] == b'"warm"'
    assert host.stop() == 0
    assert "runtime got SIGTERM" in host.logs()
    assert "firelet: SIGTERM, shutting down" in host.logs()


SLOW_INIT = r"""
#!/bin/sh
sleep {delay}
api="http://${{AWS_LAMBDA_RUNTIME_API}}/2018-06-01/runtime"
while true; do
    curl -sS -D /tmp/h -o /tmp/event "$api/invocation/next"
    id=$(sed -n 's/^[Ll]ambda-[Rr]untime-[Aa]ws-[Rr]equest-[Ii]d: *//p' /tmp/h | tr -d '\r')
    curl -sS -o /dev/null -X POST --data-binary @/tmp/event "$api/invocation/$id/response"
done
"""


def test_init_over_its_limit_is_retried_within_the_function_timeout(start_host, tmp_path):
    # Init takes 2 s; the init limit is 1 s: the first environment is given
    # up, the invoke is not failed, and the retry (bounded by timeout_s = 5)
    # completes it.
    code = write_function(tmp_path, "slowinit", SLOW_INIT.format(delay=2))
    host = start_host({"slowinit": {"code": str(code), "timeout_s": 5}}, {"init_timeout_s": 1})
    status, headers, body = host.invoke("slowinit", b'"patience"', timeout=30)
    assert (status, body) == (200, b'"patience"')
    assert "x-amz-function-error" not in headers
    host.wait_for_log(r"INIT_REPORT Init Duration: [\d.]+ ms\tPhase: init\tStatus: timeout")


def test_init_that_never_finishes_fails_the_invoke_after_the_retry(start_host, tmp_path):
    code = write_function(tmp_path, "stuck", SLOW_INIT.format(delay=60))
    host = start_host({"stuck": {"code": str(code), "timeout_s": 1}}, {"init_timeout_s": 1})
    status, headers, body = host.invoke("stuck", b"{}", timeout=30)
    request_id = headers["x-amzn-requestid"]
    assert headers["x-amz-function-error"] == "Unhandled"
    assert json.loads(body) == {
        "errorType": "Sandbox.Timedout",
        "errorMessage": f"RequestId: {request_id} Error: Task timed out after 1.00 seconds",
    }
    host.wait_for_log(r"INIT_REPORT Init Duration: [\d.]+ ms\tPhase: invoke\tStatus: timeout")


def test_event_payload_over_1_mib_is_413(crash_host):
    payload = b'"' + b"e" * (1_048_577 - 2) + b'"'
    status, headers, body = crash_host.invoke("echo", payload, **{"X-Amz-Invocation-Type": "Event"})
    assert status == 413
    assert headers["x-amzn-errortype"] == "RequestEntityTooLargeException"
    assert json.loads(body)["message"] == (
        "1048577 byte payload is too large for the Event invocation type (limit 1048576 bytes)"
    )
