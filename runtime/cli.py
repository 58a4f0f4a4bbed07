"""The `firelet` command: serve, invoke, check."""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import sys
from pathlib import Path
from urllib.parse import quote

from runtime.errors import ConfigError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="firelet", description="Local Lambda-style sandbox runtime"
    )
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the host: Invoke API + sandboxed functions")
    serve.add_argument("--config", "-c", default="firelet.toml", help="path to firelet.toml")

    invoke = commands.add_parser("invoke", help="invoke a function through the Invoke API")
    invoke.add_argument("function", help="function name, name:qualifier or ARN")
    payload = invoke.add_mutually_exclusive_group()
    payload.add_argument("--payload", "-p", help="JSON payload (default: {})")
    payload.add_argument(
        "--payload-file", "-f", type=Path, help="read the payload from a file ('-' = stdin)"
    )
    invoke.add_argument(
        "--endpoint",
        "-e",
        default=os.environ.get("FIRELET_ENDPOINT", "http://127.0.0.1:9000"),
        help="Invoke API address (default: $FIRELET_ENDPOINT or http://127.0.0.1:9000)",
    )
    invoke.add_argument(
        "--timeout", type=float, default=960.0, help="seconds to wait for the response"
    )
    invoke.add_argument(
        "--log",
        action="store_true",
        help="ask for LogType=Tail and print the invocation's log (last 4 KB) to stderr",
    )

    check = commands.add_parser(
        "check", help="probe the kernel features firelet uses and say what is missing"
    )
    check.add_argument("--json", action="store_true", help="print a JSON list instead of a table")

    args = parser.parse_args(argv)
    if args.command == "serve":
        return _serve(args.config)
    if args.command == "check":
        return _check(args.json)
    return _invoke(args)


def _check(as_json: bool) -> int:
    from sandbox import features

    found = features.probe()
    if os.geteuid() != 0:
        found = features.for_rootless(found)
    missing = features.missing_required(found)
    if as_json:
        print(json.dumps([f.as_dict() for f in found], indent=2))
    else:
        print(features.format_table(found))
        off = features.optional_off(found)
        if missing:
            print(f"\nmissing required: {', '.join(f.name for f in missing)}")
        else:
            print(f"\nall {sum(f.required for f in found)} required features are present", end="")
            print(f"; optional off: {', '.join(f.name for f in off)}" if off else "")
    return 1 if missing else 0


def _kernel_features_ok() -> bool:
    """Refuse to serve without a required feature; name the optional ones that are off."""
    from sandbox import features

    found = features.probe()
    if os.geteuid() != 0:
        found = features.for_rootless(found)
    missing = features.missing_required(found)
    if missing:
        lines = ["firelet: cannot serve: required kernel features are missing:"]
        for f in missing:
            lines.append(f"  - {f.name}: {f.detail}")
            lines.append(f"    remedy: {f.remedy}")
        lines.append("run `firelet check` for the full list")
        print("\n".join(lines), file=sys.stderr)
        return False
    off = features.optional_off(found)
    if off:
        print(
            "firelet: optional kernel features off: "
            + "; ".join(f"{f.name} ({f.detail})" for f in off)
            + " (see `firelet check`)",
            file=sys.stderr,
        )
    return True


def _serve(config_path: str) -> int:
    from runtime import config as config_module
    from runtime.daemon import serve

    try:
        config = config_module.load(config_path)
    except ConfigError as exc:
        print(f"firelet: config error: {exc}", file=sys.stderr)
        return 2
    if not _kernel_features_ok():
        return 2
    return serve(config)


def _invoke(args: argparse.Namespace) -> int:
    if args.payload_file is not None:
        try:
            body = (
                sys.stdin.buffer.read()
                if str(args.payload_file) == "-"
                else args.payload_file.read_bytes()
            )
        except OSError as exc:
            print(f"firelet: cannot read {args.payload_file}: {exc.strerror}", file=sys.stderr)
            return 2
    else:
        body = (args.payload if args.payload is not None else "{}").encode()
    endpoint = args.endpoint.removeprefix("http://").rstrip("/")
    host, _, port = endpoint.partition(":")
    conn = http.client.HTTPConnection(host, int(port or 80), timeout=args.timeout)
    path = f"/2015-03-31/functions/{quote(args.function, safe='')}/invocations"
    try:
        headers = {"Content-Type": "application/json"}
        if args.log:
            headers["X-Amz-Log-Type"] = "Tail"
        conn.request("POST", path, body=body, headers=headers)
        response = conn.getresponse()
        data = response.read()
    except OSError as exc:
        print(f"firelet: cannot reach the Invoke API at {args.endpoint}: {exc}", file=sys.stderr)
        return 1
    finally:
        conn.close()
    if response.status >= 300:
        code = response.getheader("x-amzn-ErrorType", str(response.status))
        print(f"firelet: {code}: {data.decode(errors='replace')}", file=sys.stderr)
        return 1
    log_result = response.getheader("X-Amz-Log-Result")
    if log_result:
        sys.stderr.write(base64.b64decode(log_result).decode(errors="replace"))
        sys.stderr.flush()
    sys.stdout.buffer.write(data)
    if not data.endswith(b"\n"):
        sys.stdout.buffer.write(b"\n")
    sys.stdout.flush()
    function_error = response.getheader("X-Amz-Function-Error")
    if function_error:
        print(f"firelet: function error ({function_error})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
