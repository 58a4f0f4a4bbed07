"""`firelet check`: the kernel feature probes (real probes on this machine)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sandbox import features
from sandbox.features import Feature

ROOT = Path(__file__).resolve().parents[2]

# The features the brief and the design name; the probe must report each.
EXPECTED_REQUIRED = {
    "root",
    "namespace:mount",
    "namespace:pid",
    "namespace:net",
    "namespace:uts",
    "namespace:ipc",
    "seccomp",
    "libseccomp",
    "no_new_privs",
    "pidfd",
    "tmpfs",
    "cgroup:memory",
    "cgroup:pids",
}
EXPECTED_OPTIONAL = {
    "namespace:cgroup",
    "namespace:user",
    "namespace:time",
    "userns:unprivileged",
    "proc:hidepid",
    "cgroup:cpu",
    "cgroup:io",
    "cgroup:freezer",
    "cgroup.kill",
    "swap-accounting",
}


@pytest.fixture(scope="module")
def probed() -> list[Feature]:
    return features.probe()


def _by_name(found: list[Feature]) -> dict[str, Feature]:
    return {f.name: f for f in found}


def _cgroup_mounts() -> tuple[str | None, dict[str, str]]:
    """The test's own reading of /proc/self/mounts: (cgroup2 mount, v1 controller -> mount)."""
    unified = None
    v1: dict[str, str] = {}
    for line in Path("/proc/self/mounts").read_text().splitlines():
        _, target, fstype, options, *_ = line.split()
        if fstype == "cgroup2" and unified is None:
            unified = target
        elif fstype == "cgroup":
            for option in options.split(","):
                v1.setdefault(option, target)
    return unified, v1


def test_every_required_feature_is_present_on_this_machine(probed: list[Feature]) -> None:
    missing = features.missing_required(probed)
    assert missing == [], "\n".join(f"{f.name}: {f.detail}" for f in missing)


def test_probe_reports_each_feature_once_with_the_right_requirement(
    probed: list[Feature],
) -> None:
    names = [f.name for f in probed]
    assert len(names) == len(set(names))
    assert {f.name for f in probed if f.required} == EXPECTED_REQUIRED
    assert {f.name for f in probed if not f.required} == EXPECTED_OPTIONAL


def test_every_feature_has_a_remedy_and_a_detail(probed: list[Feature]) -> None:
    for f in probed:
        assert f.remedy.strip(), f.name
        assert f.detail.strip(), f.name
        assert f.status == ("ok" if f.ok else "missing" if f.required else "optional-off")


def test_namespaces_really_unshare(probed: list[Feature]) -> None:
    by_name = _by_name(probed)
    # kernel-facts.md: all eight namespace types unshare on these machines.
    for ns in ("mount", "pid", "net", "uts", "ipc", "cgroup", "user", "time"):
        f = by_name[f"namespace:{ns}"]
        assert f.ok, f"{f.name}: {f.detail}"
        assert "unshare works" in f.detail
    # The pid probe checks that the first child in the new namespace is pid 1.
    assert "pid 1" in by_name["namespace:pid"].detail


def test_cgroup_versions_match_proc_self_mounts(probed: list[Feature]) -> None:
    unified, v1 = _cgroup_mounts()
    unified_controllers = (
        set(Path(unified, "cgroup.controllers").read_text().split()) if unified else set()
    )
    by_name = _by_name(probed)
    checked = 0
    for feature, v2_name, v1_name in (
        ("cgroup:memory", "memory", "memory"),
        ("cgroup:pids", "pids", "pids"),
        ("cgroup:cpu", "cpu", "cpu"),
        ("cgroup:io", "io", "blkio"),
    ):
        detail = by_name[feature].detail
        if v2_name in unified_controllers:
            assert detail.startswith("v2:"), f"{feature}: {detail}"
            assert unified is not None and unified in detail
            checked += 1
        elif v1_name in v1:
            assert detail.startswith("v1:"), f"{feature}: {detail}"
            assert v1[v1_name] in detail
            checked += 1
        else:
            assert not by_name[feature].ok, f"{feature}: {detail}"
    # memory and pids are required and present here, so both were cross-checked.
    assert checked >= 2
    # cgroup.freeze exists in every non-root cgroup2 group since Linux 5.2.
    freezer = by_name["cgroup:freezer"].detail
    assert freezer.startswith("v2:" if unified else "v1:"), freezer
    kill = by_name["cgroup.kill"]
    assert kill.ok == (unified is not None), kill.detail


def test_cgroup_layout_parses_a_pure_v2_host(tmp_path: Path) -> None:
    (tmp_path / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    (tmp_path / "cgroup.subtree_control").write_text("")
    mounts = (
        f"proc /proc proc rw 0 0\ncgroup2 {tmp_path} cgroup2 rw,nosuid,nodev,noexec,relatime 0 0\n"
    )
    layout = features.cgroup_layout(mounts)
    assert layout.unified == str(tmp_path)
    assert layout.unified_controllers == {"cpuset", "cpu", "io", "memory", "pids"}
    assert layout.v1 == {}
    # Available but not enabled for children: ok, nothing created.
    memory = features._CgroupProbe(layout).controller("memory")
    assert memory.ok, memory.detail
    assert memory.detail.startswith("v2:") and "not yet enabled" in memory.detail
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "cgroup.controllers",
        "cgroup.subtree_control",
    ]
    # Enabled: a test cgroup is made (here a plain directory without memory.max,
    # so the limit file is reported absent) and removed again.
    (tmp_path / "cgroup.subtree_control").write_text("memory pids\n")
    probe = features._CgroupProbe(features.cgroup_layout(mounts))
    memory = probe.controller("memory")
    assert not memory.ok
    assert memory.detail.startswith("v2:") and "memory.max absent" in memory.detail
    assert probe.kill().detail.startswith("v2: cgroup.kill absent")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "cgroup.controllers",
        "cgroup.subtree_control",
    ]


def test_cgroup_layout_parses_hybrid_v1_mounts() -> None:
    mounts = (
        "cgroup /sys/fs/cgroup/cpu,cpuacct cgroup rw,nosuid,cpu,cpuacct 0 0\n"
        "cgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0\n"
        "cgroup /sys/fs/cgroup/systemd cgroup rw,xattr,name=systemd 0 0\n"
    )
    layout = features.cgroup_layout(mounts)
    assert layout.unified is None
    assert layout.v1["cpu"] == "/sys/fs/cgroup/cpu,cpuacct"
    assert layout.v1["cpuacct"] == "/sys/fs/cgroup/cpu,cpuacct"
    assert layout.v1["memory"] == "/sys/fs/cgroup/memory"
    assert set(layout.v1) == {"cpu", "cpuacct", "memory"}  # no nosuid, xattr, name=systemd


def test_missing_required_selects_exactly_required_and_not_ok() -> None:
    def f(name: str, required: bool, ok: bool) -> Feature:
        return Feature(name, required, ok, "detail", "remedy")

    given = [
        f("a", True, True),
        f("b", True, False),
        f("c", False, False),
        f("d", False, True),
        f("e", True, False),
    ]
    assert [x.name for x in features.missing_required(given)] == ["b", "e"]
    assert [x.name for x in features.optional_off(given)] == ["c"]
    assert [x.status for x in given] == ["ok", "missing", "optional-off", "ok", "missing"]
    assert features.missing_required([]) == []


def test_probe_is_fast_and_leaves_the_host_unchanged() -> None:
    mounts_before = Path("/proc/self/mounts").read_text()
    unified, v1 = _cgroup_mounts()
    cgroup_dirs = {m for m in [unified, *v1.values()] if m}
    listing_before = {m: sorted(os.listdir(m)) for m in cgroup_dirs}
    ns_before = {n: os.readlink(f"/proc/self/ns/{n}") for n in os.listdir("/proc/self/ns")}
    status_before = {
        line.split(":")[0]: line
        for line in Path("/proc/self/status").read_text().splitlines()
        if line.startswith(("Seccomp", "NoNewPrivs"))
    }

    start = time.perf_counter()
    features.probe()
    elapsed = time.perf_counter() - start

    assert Path("/proc/self/mounts").read_text() == mounts_before
    assert {m: sorted(os.listdir(m)) for m in cgroup_dirs} == listing_before
    assert {n: os.readlink(f"/proc/self/ns/{n}") for n in os.listdir("/proc/self/ns")} == ns_before
    status_after = {
        line.split(":")[0]: line
        for line in Path("/proc/self/status").read_text().splitlines()
        if line.startswith(("Seccomp", "NoNewPrivs"))
    }
    assert status_after == status_before
    assert elapsed < 1.0, f"probe took {elapsed:.3f} s"


def _run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runtime.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_cli_check_prints_a_table_and_exits_0() -> None:
    result = _run_cli("check")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["FEATURE", "STATUS", "DETAIL", "REMEDY"]
    for name in EXPECTED_REQUIRED | EXPECTED_OPTIONAL:
        row = next((line for line in lines if line.split() and line.split()[0] == name), None)
        assert row is not None, f"{name} not in:\n{result.stdout}"
        assert row.split()[1] in ("ok", "optional-off"), row
    assert "required features are present" in result.stdout


def test_cli_check_json_is_a_list_of_features() -> None:
    result = _run_cli("check", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    data = json.loads(result.stdout)
    assert isinstance(data, list)
    assert {item["name"] for item in data} == EXPECTED_REQUIRED | EXPECTED_OPTIONAL
    for item in data:
        assert set(item) == {"name", "required", "ok", "status", "detail", "remedy"}
        assert isinstance(item["required"], bool) and isinstance(item["ok"], bool)
        assert item["status"] in ("ok", "missing", "optional-off")
        assert item["remedy"]
    assert not [i for i in data if i["required"] and not i["ok"]]


def test_probe_as_an_unprivileged_user_is_rootless_ready() -> None:
    def probe_as_nobody() -> str:
        os.setgroups([])
        os.setresgid(65534, 65534, 65534)
        os.setresuid(65534, 65534, 65534)
        found = features.probe()
        rootless_missing = [f.name for f in features.missing_required(features.for_rootless(found))]
        return json.dumps(
            {"status": {f.name: f.status for f in found}, "rootless": rootless_missing}
        )

    ok, message = features._in_child(probe_as_nobody, timeout=10)
    assert ok, message
    report = json.loads(message)
    status = report["status"]
    # Without root: no cgroup directories of our own, and root itself missing.
    for name in ("root", "cgroup:memory", "cgroup:pids"):
        assert status[name] == "missing", (name, status)
    assert status["cgroup:cpu"] == "optional-off"
    # Namespaces, mounts and filters work from a user namespace of our own,
    # the way the rootless spawner works.
    for name in (
        "namespace:mount",
        "namespace:net",
        "namespace:pid",
        "tmpfs",
        "seccomp",
        "no_new_privs",
    ):
        assert status[name] == "ok", (name, status)
    assert status["pidfd"] == "ok"
    assert report["rootless"] == []


MISSING_ROOT = Feature("root", True, False, "euid 1000", "run firelet as root (test remedy)")
OFF_TIME = Feature("namespace:time", False, False, "EINVAL", "use Linux >= 5.6")
OK_PIDFD = Feature("pidfd", True, True, "works", "use Linux >= 5.3")


def test_cli_check_exits_1_and_shows_the_remedy_when_a_required_feature_is_missing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from runtime import cli

    monkeypatch.setattr(features, "probe", lambda: [OK_PIDFD, MISSING_ROOT, OFF_TIME])
    assert cli.main(["check"]) == 1
    out = capsys.readouterr().out
    rows = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    assert rows["root"].split()[1] == "missing"
    assert "run firelet as root (test remedy)" in rows["root"]
    assert rows["namespace:time"].split()[1] == "optional-off"
    assert rows["pidfd"].split()[1] == "ok"
    assert "missing required: root" in out

    assert cli.main(["check", "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert [d["status"] for d in data] == ["ok", "missing", "optional-off"]


def _write_config(tmp_path: Path) -> Path:
    config = tmp_path / "firelet.toml"
    config.write_text('[server]\nlisten = "127.0.0.1:0"\nstate_dir = "state"\n')
    return config


def test_cli_serve_refuses_to_start_without_a_required_feature(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    import runtime.daemon
    from runtime import cli

    served = []
    monkeypatch.setattr(runtime.daemon, "serve", lambda config: served.append(config) or 0)
    monkeypatch.setattr(features, "probe", lambda: [OK_PIDFD, MISSING_ROOT, OFF_TIME])
    assert cli.main(["serve", "--config", str(_write_config(tmp_path))]) == 2
    err = capsys.readouterr().err
    assert "required kernel features are missing" in err
    assert "root: euid 1000" in err
    assert "remedy: run firelet as root (test remedy)" in err
    assert "pidfd" not in err
    assert served == []


def test_cli_serve_names_optional_features_that_are_off_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    import runtime.daemon
    from runtime import cli

    served = []
    monkeypatch.setattr(runtime.daemon, "serve", lambda config: served.append(config) or 0)
    monkeypatch.setattr(features, "probe", lambda: [OK_PIDFD, OFF_TIME])
    assert cli.main(["serve", "--config", str(_write_config(tmp_path))]) == 0
    err_lines = capsys.readouterr().err.splitlines()
    assert len(err_lines) == 1
    assert "optional kernel features off" in err_lines[0]
    assert "namespace:time" in err_lines[0] and "pidfd" not in err_lines[0]
    assert len(served) == 1
