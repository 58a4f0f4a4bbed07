"""S1: the function sees only its rootfs; code and system dirs are read-only;
no host secrets (/root, /etc/shadow, host /tmp, state_dir, other functions' code)."""

from __future__ import annotations

READ = """
import errno, os
def attempt(path):
    try:
        with open(path, "rb") as f:
            return "read:" + f.read(64).decode(errors="replace")
    except OSError as exc:
        return errno.errorcode.get(exc.errno, str(exc.errno))
def listing(path):
    try:
        return sorted(os.listdir(path))
    except OSError as exc:
        return errno.errorcode.get(exc.errno, str(exc.errno))
"""


def test_host_secrets_and_other_functions_are_not_reachable(attack):
    victim_code = attack.codes["victim"]
    state_dir = attack.host.workdir / "state"
    result = attack.result(
        READ
        + f"""
result = {{
    "shadow": attempt("/etc/shadow"),
    "root": listing("/root"),
    "host_tmp_config": attempt({str(attack.host.config)!r}),
    "state_dir": listing({str(state_dir)!r}),
    "victim_code": attempt({str(victim_code / "secret.txt")!r}),
    "own_code": attempt("/var/task/secret.txt"),
    "proc1_root": listing("/proc/1/root"),
    "proc1_environ": attempt("/proc/1/environ"),
    "dotdot": attempt("/var/task/../../../../etc/shadow"),
    "home_dirs": listing("/home"),
}}
"""
    )
    assert result["shadow"] == "ENOENT"
    assert result["root"] == "ENOENT"
    assert result["host_tmp_config"] == "ENOENT"
    assert result["state_dir"] == "ENOENT"
    assert result["victim_code"] == "ENOENT"
    assert result["own_code"] == "read:code of hostile\n"
    assert result["proc1_root"] in ("ENOENT", "EACCES")  # init is hidden (hidepid)
    assert result["proc1_environ"] in ("ENOENT", "EACCES")
    assert result["dotdot"] == "ENOENT"
    assert result["home_dirs"] == "ENOENT"
    attack.assert_healthy()


def test_symlink_tricks_stay_inside_the_sandbox_root(attack):
    result = attack.result(
        READ
        + """
os.symlink("/../../../../etc/shadow", "/tmp/to-shadow")
os.symlink("/proc/self/root/../../../etc/shadow", "/tmp/via-proc")
result = {"a": attempt("/tmp/to-shadow"), "b": attempt("/tmp/via-proc"),
          "cwd_of_self": os.readlink("/proc/self/cwd"), "root_of_self": os.readlink("/proc/self/root")}
"""
    )
    assert result["a"] == "ENOENT"
    assert result["b"] == "ENOENT"
    assert result["cwd_of_self"] == "/var/task"
    assert result["root_of_self"] == "/"
    attack.assert_healthy()


def test_code_and_system_directories_are_read_only(attack):
    result = attack.result(
        """
import errno, os
def write(path):
    try:
        with open(path, "w") as f:
            f.write("owned")
        return "written"
    except OSError as exc:
        return errno.errorcode[exc.errno]
def chmod(path):
    try:
        os.chmod(path, 0o777)
        return "changed"
    except OSError as exc:
        return errno.errorcode[exc.errno]
result = {p: write(p) for p in ("/var/task/bootstrap", "/var/task/new", "/usr/bin/evil", "/bin/evil",
                                "/etc/passwd", "/lib/evil", "/evil", "/proc/sys/kernel/hostname")}
result["chmod_bootstrap"] = chmod("/var/task/bootstrap")
"""
    )
    for path, outcome in result.items():
        assert outcome in ("EROFS", "EACCES", "EPERM"), (path, outcome)
    attack.assert_healthy()


def test_each_function_has_its_own_tmp(attack):
    attack.result("open('/tmp/hostile-marker', 'w').write('x')")
    seen = attack.result("import os\nresult = sorted(os.listdir('/tmp'))", "victim")
    assert "hostile-marker" not in seen
    attack.assert_healthy()
