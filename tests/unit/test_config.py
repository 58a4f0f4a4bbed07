"""runtime/config.py: loading and validating firelet.toml, and `firelet serve` on bad configs."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

from runtime import config as config_module
from runtime.config import Config, FunctionConfig, load
from runtime.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def make_code(base: Path, name: str = "fn", mode: int | None = 0o755) -> Path:
    """A real code directory; `mode=None` leaves out the bootstrap."""
    code = base / name
    code.mkdir(parents=True, exist_ok=True)
    if mode is not None:
        bootstrap = code / "bootstrap"
        bootstrap.write_text("#!/bin/sh\nexit 0\n")
        bootstrap.chmod(mode)
    return code


def write_config(base: Path, text: str, name: str = "firelet.toml") -> Path:
    path = base / name
    path.write_text(text)
    return path


def function_config(tmp_path: Path, extra: str = "", name: str = "echo") -> Path:
    """A config with one function whose code directory is valid, plus `extra` lines."""
    make_code(tmp_path)
    return write_config(tmp_path, f'[functions.{name}]\ncode = "fn"\n{extra}\n')


def load_error(path: Path) -> str:
    with pytest.raises(ConfigError) as info:
        load(path)
    return str(info.value)


def assert_names(message: str, path: Path, section: str, key: str | None) -> None:
    assert str(path) in message, message
    assert f"[{section}]" in message, message
    if key is not None:
        assert key in message, message
    assert "\n" not in message, message


# --- a valid config ----------------------------------------------------------


def test_minimal_config_gets_lambda_defaults(tmp_path: Path) -> None:
    path = function_config(tmp_path)

    config = load(path)

    assert isinstance(config, Config)
    assert config.path == path
    assert config.server.host == "127.0.0.1"
    assert config.server.port == 9000
    assert config.server.region == "us-east-1"
    assert config.server.account_id == "000000000000"
    assert list(config.functions) == ["echo"]
    fn = config.functions["echo"]
    assert isinstance(fn, FunctionConfig)
    assert fn.name == "echo"
    assert fn.memory_mb == 128
    assert fn.timeout_s == 3
    assert fn.ephemeral_storage_mb == 512
    assert fn.runtime == "provided"
    assert fn.handler == "handler"
    assert dict(fn.environment) == {}


def test_full_config_keeps_every_value(tmp_path: Path) -> None:
    make_code(tmp_path, "hello")
    path = write_config(
        tmp_path,
        """
        [server]
        listen = "0.0.0.0:8123"
        region = "eu-west-2"
        account_id = "123456789012"

        [functions.hello]
        code = "hello"
        runtime = "provided.al2023"
        handler = "app.handler"
        memory_mb = 256
        timeout_s = 10
        ephemeral_storage_mb = 1024
        max_queue = 5
        environment = { GREETING = "Hello", EMPTY = "" }
        """,
    )

    config = load(path)

    assert (config.server.host, config.server.port) == ("0.0.0.0", 8123)
    assert config.server.region == "eu-west-2"
    assert config.server.account_id == "123456789012"
    fn = config.functions["hello"]
    assert fn.runtime == "provided.al2023"
    assert fn.handler == "app.handler"
    assert (fn.memory_mb, fn.timeout_s, fn.ephemeral_storage_mb, fn.max_queue) == (
        256,
        10,
        1024,
        5,
    )
    assert dict(fn.environment) == {"GREETING": "Hello", "EMPTY": ""}


def test_code_path_is_resolved_relative_to_the_config_file_not_the_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf_dir = tmp_path / "conf"
    make_code(conf_dir / "functions", "echo")
    path = write_config(conf_dir, '[functions.echo]\ncode = "functions/echo"\n')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)

    fn = load(os.path.relpath(path, elsewhere)).functions["echo"]

    assert fn.code.is_absolute()
    assert fn.code == (conf_dir / "functions" / "echo").resolve()


def test_code_path_with_dotdot_is_resolved(tmp_path: Path) -> None:
    make_code(tmp_path, "shared")
    conf_dir = tmp_path / "conf"
    conf_dir.mkdir()
    path = write_config(conf_dir, '[functions.echo]\ncode = "../shared"\n')

    assert load(path).functions["echo"].code == (tmp_path / "shared").resolve()


def test_state_dir_is_relative_to_the_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf_dir = tmp_path / "conf"
    conf_dir.mkdir()
    path = write_config(conf_dir, '[server]\nstate_dir = ".firelet-state"\n')
    monkeypatch.chdir(tmp_path)

    config = load(Path("conf") / "firelet.toml")

    assert config.server.state_dir == conf_dir.resolve() / ".firelet-state"
    assert config.server.state_dir.is_absolute()
    assert path.exists()


def test_absolute_state_dir_is_kept(tmp_path: Path) -> None:
    path = write_config(tmp_path, f'[server]\nstate_dir = "{tmp_path / "abs-state"}"\n')

    assert load(path).server.state_dir == tmp_path / "abs-state"


def test_state_dir_defaults_to_var_lib_firelet(tmp_path: Path) -> None:
    path = write_config(tmp_path, "")

    config = load(path)

    assert config.server.state_dir == Path("/var/lib/firelet")
    assert dict(config.functions) == {}


def test_ipv6_listen_address_is_accepted(tmp_path: Path) -> None:
    path = write_config(tmp_path, '[server]\nlisten = "[::1]:9001"\n')

    server = load(path).server

    assert (server.host, server.port) == ("::1", 9001)


def test_several_functions_load_in_file_order(tmp_path: Path) -> None:
    make_code(tmp_path, "a")
    make_code(tmp_path, "b")
    path = write_config(
        tmp_path,
        '[functions.zeta]\ncode = "a"\n\n[functions.alpha_1-x]\ncode = "b"\nmemory_mb = 512\n',
    )

    functions = load(path).functions

    assert list(functions) == ["zeta", "alpha_1-x"]
    assert functions["zeta"].code == (tmp_path / "a").resolve()
    assert functions["alpha_1-x"].memory_mb == 512


# --- boundary values accepted ------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("memory_mb", 128),
        ("memory_mb", 10240),
        ("timeout_s", 1),
        ("timeout_s", 900),
        ("ephemeral_storage_mb", 512),
        ("ephemeral_storage_mb", 10240),
    ],
)
def test_boundary_values_are_accepted(tmp_path: Path, key: str, value: int) -> None:
    path = function_config(tmp_path, f"{key} = {value}")

    assert getattr(load(path).functions["echo"], key) == value


def test_environment_of_exactly_4096_bytes_is_accepted(tmp_path: Path) -> None:
    value = "x" * (4096 - len("BIG"))
    path = function_config(tmp_path, f'environment = {{ BIG = "{value}" }}')

    assert load(path).functions["echo"].environment["BIG"] == value


# --- function errors: file, [functions.NAME] and key are named ---------------


def test_missing_code_key_is_an_error(tmp_path: Path) -> None:
    path = write_config(tmp_path, "[functions.echo]\nmemory_mb = 256\n")

    message = load_error(path)

    assert_names(message, path, "functions.echo", "code")
    assert "required" in message


def test_missing_code_directory_is_an_error(tmp_path: Path) -> None:
    path = write_config(tmp_path, '[functions.echo]\ncode = "nope"\n')

    message = load_error(path)

    assert_names(message, path, "functions.echo", "code")
    assert "does not exist" in message
    assert str(tmp_path.resolve() / "nope") in message


def test_code_that_is_a_file_not_a_directory_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "fn").write_text("not a directory")
    path = write_config(tmp_path, '[functions.echo]\ncode = "fn"\n')

    assert_names(load_error(path), path, "functions.echo", "code")


def test_code_directory_without_bootstrap_is_an_error(tmp_path: Path) -> None:
    make_code(tmp_path, mode=None)
    path = write_config(tmp_path, '[functions.echo]\ncode = "fn"\n')

    message = load_error(path)

    assert_names(message, path, "functions.echo", "code")
    assert "bootstrap" in message
    assert "does not exist" in message


def test_bootstrap_that_is_a_directory_is_an_error(tmp_path: Path) -> None:
    (make_code(tmp_path, mode=None) / "bootstrap").mkdir()
    path = write_config(tmp_path, '[functions.echo]\ncode = "fn"\n')

    message = load_error(path)

    assert_names(message, path, "functions.echo", "code")
    assert "bootstrap" in message


def test_bootstrap_not_executable_is_an_error(tmp_path: Path) -> None:
    # Even root needs at least one x bit for os.access(X_OK) on a regular file.
    make_code(tmp_path, mode=0o644)
    path = write_config(tmp_path, '[functions.echo]\ncode = "fn"\n')

    message = load_error(path)

    assert_names(message, path, "functions.echo", "code")
    assert "not executable" in message


def test_unknown_key_in_a_function_is_an_error(tmp_path: Path) -> None:
    path = function_config(tmp_path, "memory = 256")

    message = load_error(path)

    assert_names(message, path, "functions.echo", "memory")
    assert "unknown key" in message
    assert "memory_mb" in message  # the allowed keys are listed


@pytest.mark.parametrize(
    ("line", "key", "described"),
    [
        ('memory_mb = "128"', "memory_mb", "string '128'"),
        ("timeout_s = 1.5", "timeout_s", "float 1.5"),
        ("memory_mb = true", "memory_mb", "boolean True"),
        ("max_queue = [1]", "max_queue", "array [1]"),
        ("code = 42", "code", "integer 42"),
        ('environment = "A=b"', "environment", "string 'A=b'"),
    ],
)
def test_wrong_type_is_an_error(tmp_path: Path, line: str, key: str, described: str) -> None:
    make_code(tmp_path)
    body = "" if key == "code" else 'code = "fn"\n'
    path = write_config(tmp_path, f"[functions.echo]\n{body}{line}\n")

    message = load_error(path)

    assert_names(message, path, "functions.echo", key)
    assert "must be a" in message
    assert described in message


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("memory_mb", 127),
        ("memory_mb", 10241),
        ("memory_mb", 0),
        ("timeout_s", 0),
        ("timeout_s", 901),
        ("timeout_s", -1),
        ("ephemeral_storage_mb", 100),
        ("ephemeral_storage_mb", 511),
        ("ephemeral_storage_mb", 10241),
        ("max_queue", -1),
    ],
)
def test_out_of_range_value_is_an_error(tmp_path: Path, key: str, value: int) -> None:
    path = function_config(tmp_path, f"{key} = {value}")

    message = load_error(path)

    assert_names(message, path, "functions.echo", key)
    assert f"got {value}" in message


def test_unsupported_runtime_is_an_error(tmp_path: Path) -> None:
    path = function_config(tmp_path, 'runtime = "python3.12"')

    message = load_error(path)

    assert_names(message, path, "functions.echo", "runtime")
    assert "python3.12" in message
    assert "provided.al2023" in message


@pytest.mark.parametrize("name", ["AWS_REGION", "AWS_LAMBDA_RUNTIME_API", "_HANDLER"])
def test_reserved_environment_variable_is_an_error(tmp_path: Path, name: str) -> None:
    path = function_config(tmp_path, f'environment = {{ {name} = "x" }}')

    message = load_error(path)

    assert_names(message, path, "functions.echo", f"environment.{name}")
    assert "reserved" in message


@pytest.mark.parametrize(("value", "described"), [("1", "integer 1"), ("true", "boolean True")])
def test_environment_value_that_is_not_a_string_is_an_error(
    tmp_path: Path, value: str, described: str
) -> None:
    path = function_config(tmp_path, f"environment = {{ PORT = {value} }}")

    message = load_error(path)

    assert_names(message, path, "functions.echo", "environment.PORT")
    assert described in message


@pytest.mark.parametrize("name", ["1ABC", "MY-VAR", "A B", "FOO\\n", "É"])
def test_invalid_environment_variable_name_is_an_error(tmp_path: Path, name: str) -> None:
    # `name` is a TOML basic-string escape: "FOO\n" is FOO plus a newline.
    path = function_config(tmp_path, f'environment = {{ "{name}" = "x" }}')

    message = load_error(path)

    assert str(path) in message
    assert "[functions.echo]" in message
    assert "environment." in message


def test_environment_value_with_nul_is_an_error(tmp_path: Path) -> None:
    path = function_config(tmp_path, 'environment = { A = "x\\u0000y" }')

    message = load_error(path)

    assert_names(message, path, "functions.echo", "environment.A")
    assert "NUL" in message


def test_environment_over_4096_bytes_total_is_an_error(tmp_path: Path) -> None:
    # Each pair alone is small; together they pass Lambda's 4 KB limit.
    pairs = ", ".join(f'VAR{i} = "{"v" * 1000}"' for i in range(5))
    path = function_config(tmp_path, f"environment = {{ {pairs} }}")

    message = load_error(path)

    assert_names(message, path, "functions.echo", "environment")
    assert "4096" in message


def test_environment_one_byte_over_4096_is_an_error(tmp_path: Path) -> None:
    value = "x" * (4097 - len("BIG"))
    path = function_config(tmp_path, f'environment = {{ BIG = "{value}" }}')

    message = load_error(path)

    assert_names(message, path, "functions.echo", "environment")
    assert "4097 bytes" in message


def test_environment_size_counts_utf8_bytes_not_characters(tmp_path: Path) -> None:
    value = "é" * 2048  # 4096 bytes but only 2048 characters; with "AB": 4098 bytes
    path = function_config(tmp_path, f'environment = {{ AB = "{value}" }}')

    assert_names(load_error(path), path, "functions.echo", "environment")


@pytest.mark.parametrize(
    "name",
    ["has space", "dot.ted", "x" * 65, "", "caf\\u00e9", "echo\\n", "slash/name"],
)
def test_invalid_function_name_is_an_error(tmp_path: Path, name: str) -> None:
    make_code(tmp_path)
    path = write_config(tmp_path, f'[functions."{name}"]\ncode = "fn"\n')

    message = load_error(path)

    assert str(path) in message
    assert "[functions." in message
    assert "function names" in message


def test_function_name_of_64_characters_is_accepted(tmp_path: Path) -> None:
    name = "f" * 64
    path = function_config(tmp_path, name=name)

    assert list(load(path).functions) == [name]


def test_function_that_is_not_a_table_is_an_error(tmp_path: Path) -> None:
    path = write_config(tmp_path, '[functions]\necho = "fn"\n')

    message = load_error(path)

    assert_names(message, path, "functions.echo", None)
    assert "table" in message


def test_functions_that_is_not_a_table_is_an_error(tmp_path: Path) -> None:
    path = write_config(tmp_path, 'functions = ["echo"]\n')

    message = load_error(path)

    assert str(path) in message
    assert "functions" in message


def test_empty_handler_is_an_error(tmp_path: Path) -> None:
    path = function_config(tmp_path, 'handler = ""')

    assert_names(load_error(path), path, "functions.echo", "handler")


def test_error_names_the_function_it_is_about(tmp_path: Path) -> None:
    make_code(tmp_path)
    path = write_config(
        tmp_path,
        '[functions.good]\ncode = "fn"\n\n[functions.bad]\ncode = "fn"\ntimeout_s = 0\n',
    )

    message = load_error(path)

    assert_names(message, path, "functions.bad", "timeout_s")
    assert "[functions.good]" not in message


# --- server and top-level errors ---------------------------------------------


def test_unknown_key_in_server_is_an_error(tmp_path: Path) -> None:
    path = write_config(tmp_path, '[server]\nport = 9000\nlisten = "127.0.0.1:9000"\n')

    message = load_error(path)

    assert_names(message, path, "server", "port")
    assert "unknown key" in message
    assert "listen" in message  # the allowed keys are listed


def test_unknown_top_level_key_is_an_error(tmp_path: Path) -> None:
    path = function_config(tmp_path, "\n[funtions.typo]\ncode = 'fn'")

    message = load_error(path)

    assert str(path) in message
    assert "funtions" in message
    assert "top-level" in message


def test_server_that_is_not_a_table_is_an_error(tmp_path: Path) -> None:
    path = write_config(tmp_path, 'server = "127.0.0.1:9000"\n')

    assert_names(load_error(path), path, "server", None)


@pytest.mark.parametrize(
    "listen",
    [
        "nohost",
        "1.2.3.4:99999",
        "1.2.3.4:65536",
        ":9000",
        "1.2.3.4:",
        "1.2.3.4:-1",
        "1.2.3.4:http",
        "1.2.3.4:²",  # str.isdigit() is True, int() refuses it
        "1.2.3.4:" + "9" * 5000,  # int() refuses more than 4300 digits
    ],
)
def test_bad_listen_address_is_an_error(tmp_path: Path, listen: str) -> None:
    path = write_config(tmp_path, f'[server]\nlisten = "{listen}"\n')

    message = load_error(path)

    assert_names(message, path, "server", "listen")
    assert "HOST:PORT" in message


def test_listen_port_65535_is_accepted(tmp_path: Path) -> None:
    path = write_config(tmp_path, '[server]\nlisten = "localhost:65535"\n')

    server = load(path).server

    assert (server.host, server.port) == ("localhost", 65535)


def test_listen_with_wrong_type_is_an_error(tmp_path: Path) -> None:
    path = write_config(tmp_path, "[server]\nlisten = 9000\n")

    message = load_error(path)

    assert_names(message, path, "server", "listen")
    assert "must be a string" in message


@pytest.mark.parametrize(
    "account", ["12345678901", "1234567890123", "12345678901a", "", "\u0661" * 12]
)
def test_account_id_that_is_not_12_digits_is_an_error(tmp_path: Path, account: str) -> None:
    path = write_config(tmp_path, f'[server]\naccount_id = "{account}"\n')

    message = load_error(path)

    assert_names(message, path, "server", "account_id")
    assert "12 digits" in message


def test_account_id_as_integer_is_an_error(tmp_path: Path) -> None:
    path = write_config(tmp_path, "[server]\naccount_id = 123456789012\n")

    assert_names(load_error(path), path, "server", "account_id")


@pytest.mark.parametrize("region", ["useast1", "US-EAST-1", "us-east-", "us-east-\u0661"])
def test_bad_region_is_an_error(tmp_path: Path, region: str) -> None:
    path = write_config(tmp_path, f'[server]\nregion = "{region}"\n')

    assert_names(load_error(path), path, "server", "region")


# --- the file itself ---------------------------------------------------------


def test_invalid_toml_is_an_error(tmp_path: Path) -> None:
    path = write_config(tmp_path, "[functions.echo\ncode = 'fn'\n")

    message = load_error(path)

    assert str(path) in message
    assert "not valid TOML" in message
    assert "line 1" in message


def test_duplicate_function_table_is_an_error(tmp_path: Path) -> None:
    path = function_config(tmp_path, "\n[functions.echo]\ncode = 'fn'")

    message = load_error(path)

    assert str(path) in message
    assert "not valid TOML" in message


def test_config_that_is_not_utf8_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "firelet.toml"
    path.write_bytes(b'[server]\nregion = "\xff"\n')

    message = load_error(path)

    assert str(path) in message
    assert "not valid TOML" in message


def test_missing_config_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "missing.toml"

    message = load_error(path)

    assert str(path) in message
    assert "cannot read" in message
    assert "No such file" in message


def test_config_path_that_is_a_directory_is_an_error(tmp_path: Path) -> None:
    message = load_error(tmp_path)

    assert str(tmp_path) in message
    assert "cannot read" in message


# --- immutability ------------------------------------------------------------


def test_configs_are_frozen(tmp_path: Path) -> None:
    config = load(function_config(tmp_path, 'environment = { A = "1" }'))
    fn = config.functions["echo"]

    with pytest.raises(dataclasses.FrozenInstanceError):
        fn.memory_mb = 4096  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.server.port = 1  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.functions = {}  # type: ignore[misc]
    assert fn.memory_mb == 128
    assert config.server.port == 9000


def test_environment_mapping_cannot_be_modified(tmp_path: Path) -> None:
    fn = load(function_config(tmp_path, 'environment = { A = "1" }')).functions["echo"]

    with pytest.raises(TypeError):
        fn.environment["A"] = "2"  # type: ignore[index]
    with pytest.raises(TypeError):
        fn.environment["B"] = "3"  # type: ignore[index]
    with pytest.raises(TypeError):
        del fn.environment["A"]  # type: ignore[attr-defined]
    assert not hasattr(fn.environment, "clear")
    assert dict(fn.environment) == {"A": "1"}


def test_functions_mapping_cannot_be_modified(tmp_path: Path) -> None:
    config = load(function_config(tmp_path))

    with pytest.raises(TypeError):
        config.functions["other"] = config.functions["echo"]  # type: ignore[index]
    assert list(config.functions) == ["echo"]


def test_default_environment_is_immutable_too() -> None:
    fn = FunctionConfig(name="x", code=Path("/"))

    with pytest.raises(TypeError):
        fn.environment["A"] = "1"  # type: ignore[index]
    assert dict(fn.environment) == {}


def test_parse_accepts_an_already_decoded_document(tmp_path: Path) -> None:
    make_code(tmp_path)
    path = tmp_path / "firelet.toml"

    config = config_module.parse({"functions": {"echo": {"code": "fn"}}}, path)

    assert config.functions["echo"].code == (tmp_path / "fn").resolve()


# --- the CLI -----------------------------------------------------------------


def run_serve(config: Path | str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runtime.cli", "serve", "--config", str(config)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_cli_serve_with_bad_config_prints_one_line_and_exits_2(tmp_path: Path) -> None:
    path = function_config(tmp_path, "memory_mb = 64")

    result = run_serve(path)

    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert line.startswith("firelet: config error:")
    assert str(path) in line
    assert "[functions.echo]" in line
    assert "memory_mb" in line
    assert "Traceback" not in result.stderr


def test_cli_serve_with_bad_listen_digits_is_a_config_error_not_a_traceback(
    tmp_path: Path,
) -> None:
    path = write_config(tmp_path, '[server]\nlisten = "127.0.0.1:²"\n')

    result = run_serve(path)

    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("firelet: config error:"), result.stderr
    assert "Traceback" not in result.stderr
    assert "[server] listen" in result.stderr


def test_cli_serve_with_missing_config_file_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "nope" / "firelet.toml"

    result = run_serve(path)

    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("firelet: config error:")
    assert str(path) in lines[0]
    assert "cannot read" in lines[0]
