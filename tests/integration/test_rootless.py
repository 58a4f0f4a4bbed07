"""Rootless mode: the host runs as an unprivileged user; sandboxes live in a
user namespace of the spawner's (no cgroups: nothing delegated to that user)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import FUNCTIONS, FireletHost, probe

NOBODY = 65534
HOST_DEPENDENCIES = (
    "anyio",
    "uvloop",
    "httptools",
    "orjson",
    "pyseccomp",
    "idna",
    "typing_extensions",
)


def _copy_modules(target: Path, names: tuple[str, ...]) -> None:
    target.mkdir()
    for name in names:
        spec = importlib.util.find_spec(name)
        assert spec is not None and spec.origin is not None, name
        origin = Path(spec.origin)
        if origin.name == "__init__.py":
            shutil.copytree(
                origin.parent, target / name, ignore=shutil.ignore_patterns("__pycache__")
            )
        else:
            shutil.copy(origin, target / origin.name)
    for path in [target, *target.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)


@pytest.fixture
def rootless_host() -> Iterator[FireletHost]:
    # Everything the unprivileged host reads must be reachable by it: pytest's
    # tmp_path is private to root, so use a directory of its own.
    workdir = Path(tempfile.mkdtemp(prefix="firelet-rootless-"))
    code = workdir / "probe"
    code.mkdir()
    shutil.copy(FUNCTIONS / "probe_bootstrap", code / "bootstrap")
    for path in (workdir, code, code / "bootstrap"):
        path.chmod(0o755)
    os.chown(workdir, NOBODY, NOBODY)
    host = FireletHost(workdir, {"probe": {"code": str(code)}})
    os.chown(host.config, NOBODY, NOBODY)
    # The venv's interpreter (and maybe this checkout) sit where nobody may
    # not look; the system interpreter (same minor version, as for Python
    # functions) runs the host from a copy of Firelet and what it imports.
    lib = workdir / "lib"
    _copy_modules(lib, ("rapi", "sandbox", "runtime", *HOST_DEPENDENCIES))
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(lib)}
    drop = (
        "setpriv",
        f"--reuid={NOBODY}",
        f"--regid={NOBODY}",
        "--clear-groups",
        "--inh-caps=-all",
    )
    try:
        yield host.start(python=(*drop, "--bounding-set=-all", "/usr/bin/python3"), env=env)
    finally:
        host.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def test_unprivileged_host_runs_sandboxed_functions(rootless_host):
    assert rootless_host.process is not None
    with open(f"/proc/{rootless_host.process.pid}/status") as f:
        uids = next(line for line in f if line.startswith("Uid:")).split()[1:]
    assert uids == [str(NOBODY)] * 4, "the host itself is not root"
    assert "rootless mode" in rootless_host.logs()
    facts = probe(
        rootless_host,
        "probe",
        f"""
        import errno, socket
        status = dict(l.split(":\\t", 1) for l in open("/proc/self/status").read().splitlines() if ":\\t" in l)
        def attempt(fn):
            try:
                fn()
                return "ok"
            except OSError as exc:
                return errno.errorcode[exc.errno]
        s = socket.socket()
        s.settimeout(2)
        result = {{
            "uid_map": open("/proc/self/uid_map").read().split(),
            "uid": os.getuid(),
            "caps": [status[k].strip() for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")],
            "no_new_privs": status["NoNewPrivs"].strip(),
            "seccomp": status["Seccomp"].strip(),
            "write_task": attempt(lambda: open("/var/task/x", "w")),
            "write_tmp": attempt(lambda: open("/tmp/x", "w").write("ok")),
            "host_api": attempt(lambda: s.connect(("127.0.0.1", {rootless_host.port}))),
            "pids": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
        }}
        """,
    )
    assert facts["uid_map"] == ["0", str(NOBODY), "1"], "root inside is nobody outside"
    assert facts["uid"] == 0
    assert facts["caps"] == ["0000000000000000"] * 5
    assert facts["no_new_privs"] == "1"
    assert facts["seccomp"] == "2"
    assert facts["write_task"] in ("EROFS", "EACCES")
    assert facts["write_tmp"] == "ok"
    assert facts["host_api"] == "ECONNREFUSED"
    assert facts["pids"] == [2]
