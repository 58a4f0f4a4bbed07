"""firelet.toml: parsed and validated once, into immutable typed configs.

Every problem is reported as one ConfigError naming the file, the function
(when there is one) and the key, e.g.

    firelet.toml: [functions.echo] memory_mb: must be an integer from 128 to 10240, got 64
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

from runtime.errors import ConfigError

DEFAULT_LISTEN: Final = "127.0.0.1:9000"
FUNCTION_NAME: Final = re.compile(r"^[A-Za-z0-9_-]{1,64}\Z")
ENV_NAME: Final = re.compile(r"^[A-Za-z][A-Za-z0-9_]*\Z")
RUNTIMES: Final = ("provided", "provided.al2", "provided.al2023")
# Keys Lambda sets itself; a function may not override them.
RESERVED_ENV: Final = frozenset(
    {
        "_HANDLER",
        "_X_AMZN_TRACE_ID",
        "AWS_DEFAULT_REGION",
        "AWS_REGION",
        "AWS_EXECUTION_ENV",
        "AWS_LAMBDA_FUNCTION_NAME",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
        "AWS_LAMBDA_FUNCTION_VERSION",
        "AWS_LAMBDA_INITIALIZATION_TYPE",
        "AWS_LAMBDA_LOG_GROUP_NAME",
        "AWS_LAMBDA_LOG_STREAM_NAME",
        "AWS_ACCESS_KEY",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_LAMBDA_RUNTIME_API",
        "LAMBDA_TASK_ROOT",
        "LAMBDA_RUNTIME_DIR",
    }
)
ENV_MAX_BYTES: Final = 4096


@dataclass(frozen=True, slots=True)
class FunctionConfig:
    name: str
    code: Path
    runtime: str = "provided"
    handler: str = "handler"
    memory_mb: int = 128
    timeout_s: int = 3
    ephemeral_storage_mb: int = 512
    environment: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    max_queue: int = 1000


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 9000
    state_dir: Path = Path("/var/lib/firelet")
    region: str = "us-east-1"
    account_id: str = "000000000000"
    # "proportional": CPU quota scales with memory as in Lambda (1,769 MB =
    # one vCPU); "none": no CPU quota (faster cold starts, less faithful).
    cpu_quota: str = "proportional"
    # "auto": sandbox cgroups nest below the host's own cgroup (a systemd
    # unit with Delegate=yes, a container); "root": below each hierarchy root.
    cgroup_parent: str = "auto"
    # How long a runtime may take to reach its first /next (Lambda: 10 s);
    # past it, init is retried once within the function's timeout.
    init_timeout_s: int = 10


@dataclass(frozen=True, slots=True)
class Config:
    path: Path
    server: ServerConfig
    functions: Mapping[str, FunctionConfig]


class _Where:
    """Builds error messages that say where a value came from."""

    def __init__(self, path: Path, section: str) -> None:
        self.path = path
        self.section = section

    def error(self, key: str | None, message: str) -> ConfigError:
        where = f"{self.path}: [{self.section}]"
        if key is not None:
            where += f" {key}"
        return ConfigError(f"{where}: {message}")


def load(path: str | os.PathLike[str]) -> Config:
    """Read and validate a firelet.toml."""
    config_path = Path(path)
    try:
        raw = config_path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{config_path}: cannot read: {exc.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{config_path}: not valid TOML: {exc}") from None
    return parse(data, config_path)


def parse(data: Mapping[str, Any], config_path: Path) -> Config:
    base = config_path.resolve().parent
    unknown = set(data) - {"server", "functions"}
    if unknown:
        raise ConfigError(
            f"{config_path}: unknown top-level key '{sorted(unknown)[0]}' "
            "(expected [server] and [functions.NAME])"
        )
    server = _server(data.get("server", {}), _Where(config_path, "server"), base)
    functions_raw = data.get("functions", {})
    if not isinstance(functions_raw, dict):
        raise ConfigError(f"{config_path}: 'functions' must be a table of [functions.NAME]")
    functions: dict[str, FunctionConfig] = {}
    for name, table in functions_raw.items():
        where = _Where(config_path, f"functions.{name}")
        if not FUNCTION_NAME.match(name):
            raise where.error(None, "function names are 1-64 of A-Z a-z 0-9 _ -")
        if not isinstance(table, dict):
            raise where.error(None, "must be a table")
        functions[name] = _function(name, table, where, base)
    return Config(config_path, server, MappingProxyType(functions))


def _take(table: Mapping[str, Any], where: _Where, allowed: Mapping[str, type]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in table.items():
        expected = allowed.get(key)
        if expected is None:
            raise where.error(key, f"unknown key (allowed: {', '.join(sorted(allowed))})")
        # bool is an int in Python; TOML keeps them apart, so do we.
        if expected is int and (isinstance(value, bool) or not isinstance(value, int)):
            raise where.error(key, f"must be an integer, got {_describe(value)}")
        if not isinstance(value, expected):
            raise where.error(key, f"must be a {_type_name(expected)}, got {_describe(value)}")
        out[key] = value
    return out


def _server(table: Any, where: _Where, base: Path) -> ServerConfig:
    if not isinstance(table, dict):
        raise where.error(None, "must be a table")
    values = _take(
        table,
        where,
        {
            "listen": str,
            "state_dir": str,
            "region": str,
            "account_id": str,
            "cpu_quota": str,
            "cgroup_parent": str,
            "init_timeout_s": int,
        },
    )
    host, port = _listen(values.get("listen", DEFAULT_LISTEN), where)
    state_dir = base / values["state_dir"] if "state_dir" in values else Path("/var/lib/firelet")
    account = values.get("account_id", "000000000000")
    if not re.fullmatch(r"[0-9]{12}", account):
        raise where.error("account_id", f"must be 12 digits, got {account!r}")
    region = values.get("region", "us-east-1")
    if not re.fullmatch(r"[a-z]{2}(-[a-z]+)+-[0-9]", region):
        raise where.error("region", f"must look like us-east-1, got {region!r}")
    cpu_quota = values.get("cpu_quota", "proportional")
    if cpu_quota not in ("proportional", "none"):
        raise where.error("cpu_quota", f"must be 'proportional' or 'none', got {cpu_quota!r}")
    cgroup_parent = values.get("cgroup_parent", "auto")
    if cgroup_parent not in ("auto", "root"):
        raise where.error("cgroup_parent", f"must be 'auto' or 'root', got {cgroup_parent!r}")
    init_timeout = values.get("init_timeout_s", 10)
    _range(where, "init_timeout_s", init_timeout, 1, 900)
    return ServerConfig(
        host, port, state_dir, region, account, cpu_quota, cgroup_parent, init_timeout
    )


def _listen(value: str, where: _Where) -> tuple[str, int]:
    host, sep, port_text = value.rpartition(":")
    # ASCII digits only: str.isdigit() also accepts "²", which int() rejects.
    if not sep or not host or not re.fullmatch(r"[0-9]{1,5}", port_text) or int(port_text) > 65535:
        raise where.error("listen", f"must be HOST:PORT, got {value!r}")
    return host.strip("[]"), int(port_text)


def _function(name: str, table: Mapping[str, Any], where: _Where, base: Path) -> FunctionConfig:
    values = _take(
        table,
        where,
        {
            "code": str,
            "runtime": str,
            "handler": str,
            "memory_mb": int,
            "timeout_s": int,
            "ephemeral_storage_mb": int,
            "environment": dict,
            "max_queue": int,
        },
    )
    if "code" not in values:
        raise where.error("code", "is required (the function's code directory)")
    code = (base / values["code"]).resolve()
    if not code.is_dir():
        raise where.error("code", f"directory {code} does not exist")
    runtime = values.get("runtime", "provided")
    if runtime not in RUNTIMES:
        raise where.error("runtime", f"must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    bootstrap = code / "bootstrap"
    if not bootstrap.is_file():
        raise where.error("code", f"{bootstrap} does not exist (runtime '{runtime}' runs it)")
    if not os.access(bootstrap, os.X_OK):
        raise where.error("code", f"{bootstrap} is not executable (chmod +x it)")
    memory = values.get("memory_mb", 128)
    _range(where, "memory_mb", memory, 128, 10240)
    timeout = values.get("timeout_s", 3)
    _range(where, "timeout_s", timeout, 1, 900)
    storage = values.get("ephemeral_storage_mb", 512)
    _range(where, "ephemeral_storage_mb", storage, 512, 10240)
    max_queue = values.get("max_queue", 1000)
    _range(where, "max_queue", max_queue, 0, 1_000_000)
    environment = _environment(values.get("environment", {}), where)
    handler = values.get("handler", "handler")
    if not handler or len(handler) > 128:
        raise where.error("handler", "must be 1-128 characters")
    return FunctionConfig(
        name=name,
        code=code,
        runtime=runtime,
        handler=handler,
        memory_mb=memory,
        timeout_s=timeout,
        ephemeral_storage_mb=storage,
        environment=MappingProxyType(environment),
        max_queue=max_queue,
    )


def _environment(table: Mapping[str, Any], where: _Where) -> dict[str, str]:
    env: dict[str, str] = {}
    for key, value in table.items():
        label = f"environment.{key}"
        if not ENV_NAME.match(key):
            raise where.error(label, "names start with a letter and hold only A-Z a-z 0-9 _")
        if key in RESERVED_ENV:
            raise where.error(label, "is reserved by Lambda and set by Firelet")
        if not isinstance(value, str):
            raise where.error(label, f"must be a string, got {_describe(value)}")
        if "\0" in value:
            raise where.error(label, "must not contain NUL")
        env[key] = value
    size = sum(len(k.encode()) + len(v.encode()) for k, v in env.items())
    if size > ENV_MAX_BYTES:
        raise where.error("environment", f"is {size} bytes; Lambda's limit is {ENV_MAX_BYTES}")
    return env


def _range(where: _Where, key: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise where.error(key, f"must be an integer from {low} to {high}, got {value}")


def _type_name(expected: type) -> str:
    return {str: "string", int: "integer", dict: "table", bool: "boolean"}.get(
        expected, expected.__name__
    )


def _describe(value: Any) -> str:
    kind = {
        str: "string",
        int: "integer",
        float: "float",
        bool: "boolean",
        dict: "table",
        list: "array",
    }
    return f"{kind.get(type(value), type(value).__name__)} {value!r}"
