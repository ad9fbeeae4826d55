"""deploy/: the unit file, and the install/upgrade/rollback/uninstall scripts run in a scratch root.

Nothing here touches the real system: every script runs with DESTDIR=<tmp>, users are created
in <tmp>/etc/passwd through the shadow tools' --prefix, systemctl is a fake that logs its
arguments (or not called at all), and a fixture checks that /etc/passwd, /etc/group, /opt/edgegw
and the real unit directory are unchanged afterwards. The package installed is a tiny fake
wheel (built here, installed offline) whose `edgegw` answers `version`, `config validate` and
`status` as the real one does.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
UNIT = DEPLOY / "edgegw.service"
SCRIPTS = sorted(DEPLOY.glob("*.sh"))

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="deploy targets Linux")


# ---------------------------------------------------------------------------- the real system
WATCHED = [Path("/etc/passwd"), Path("/etc/group"), Path("/etc/shadow"), Path("/etc/gshadow"),
           Path("/etc/systemd/system/edgegw.service"), Path("/opt/edgegw"),
           Path("/usr/local/bin/edgegw"), Path("/etc/edgegw"), Path("/var/lib/edgegw")]


def _fingerprint() -> dict[str, str]:
    out = {}
    for p in WATCHED:
        if p.is_file() and os.access(p, os.R_OK):
            out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
        else:
            out[str(p)] = "present" if p.exists() or p.is_symlink() else "absent"
    return out


@pytest.fixture(autouse=True)
def real_system_untouched() -> Iterator[None]:
    before = _fingerprint()
    yield
    assert _fingerprint() == before, "a deploy test changed the real system"


# ------------------------------------------------------------------------------- the unit file
def unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", "[")):
            continue
        key, _, value = line.partition("=")
        settings.setdefault(key, []).append(value)
    return settings


def test_unit_runs_the_agent_as_a_notify_service_with_a_watchdog() -> None:
    s = unit_settings()
    assert s["Type"] == ["notify"]
    assert s["ExecStart"] == [
        "/opt/edgegw/current/bin/edgegw run --config /etc/edgegw/config.yaml --no-log-samples"]
    assert 10 <= int(s["WatchdogSec"][0]) <= 60
    assert s["Restart"] == ["on-failure"] and s["RestartPreventExitStatus"] == ["2"]
    assert s["User"] == ["edgegw"] and s["SupplementaryGroups"] == ["gpio dialout"]
    assert s["StandardOutput"] == ["journal"] and s["StandardError"] == ["journal"]


def test_unit_is_hardened_but_keeps_serial_and_gpio() -> None:
    s = unit_settings()
    assert s["ProtectSystem"] == ["strict"]
    assert s["ReadWritePaths"] == ["/var/lib/edgegw"]          # the state dir, nothing else
    assert s["StateDirectory"] == ["edgegw"] and s["RuntimeDirectory"] == ["edgegw"]
    assert s["RuntimeDirectoryMode"] == ["0750"] and s["StateDirectoryMode"] == ["0700"]
    for key in ("NoNewPrivileges", "PrivateTmp", "ProtectHome", "ProtectKernelTunables",
                "ProtectKernelModules", "ProtectKernelLogs", "ProtectControlGroups"):
        assert s[key] == ["yes"], key
    assert set(s["RestrictAddressFamilies"][0].split()) <= {
        "AF_INET", "AF_INET6", "AF_UNIX", "AF_NETLINK"}
    # PrivateDevices would hide the serial ports; PrivateUsers would unmap gpio/dialout
    assert "PrivateDevices" not in s and "PrivateUsers" not in s
    assert s["DevicePolicy"] == ["closed"]
    allowed = " ".join(s["DeviceAllow"])
    for dev in ("char-ttyUSB", "char-ttyAMA", "char-ttyACM", "char-gpiochip"):
        assert f"{dev} rw" in allowed
    # journald only: no log files of our own to rotate
    assert "LogsDirectory" not in s
    assert not any(v.startswith(("file:", "append:")) for v in s["StandardOutput"])


def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed (Debian package systemd)")
    # verify checks that ExecStart's program exists: point it at a stand-in
    fake = tmp_path / "edgegw"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    unit = tmp_path / "edgegw.service"
    unit.write_text(UNIT.read_text().replace("/opt/edgegw/current/bin/edgegw", str(fake)))
    out = subprocess.run([tool, "verify", str(unit)], capture_output=True, text=True,
                         timeout=60)
    complaints = [line for line in (out.stdout + out.stderr).splitlines()
                  if "edgegw.service" in line]
    assert out.returncode == 0 and complaints == [], out.stdout + out.stderr


def test_scripts_pass_shellcheck() -> None:
    tool = shutil.which("shellcheck")
    if tool is None:
        pytest.skip("shellcheck is not installed (apt-get install shellcheck)")
    out = subprocess.run([tool, "-x", *map(str, SCRIPTS), str(DEPLOY / "lib.sh")],
                         capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stdout


def test_scripts_are_executable_and_strict() -> None:
    for script in SCRIPTS:
        if script.name == "lib.sh":
            continue
        assert script.stat().st_mode & stat.S_IXUSR, script
        assert script.read_text().startswith("#!/usr/bin/env bash\n"), script
    assert "set -euo pipefail" in (DEPLOY / "lib.sh").read_text()


# -------------------------------------------------------------------------- scratch installs
FAKE_MAIN = '''\
import os, sys
VERSION = {version!r}
HEALTHY = {healthy!r}
def main():
    args = sys.argv[1:]
    if args[:1] == ["version"]:
        print(VERSION)
        return 0
    if args[:2] == ["config", "validate"]:
        path = args[args.index("--config") + 1]
        if "INVALID" in open(path).read():
            print(path + ": line 1: gateway.id: invalid", file=sys.stderr)
            return 2
        return 0
    if args[:1] == ["status"]:
        return 0 if HEALTHY else 1
    return 0
'''


def fake_wheel(directory: Path, version: str, *, healthy: bool = True) -> Path:
    """A minimal edgegw wheel (pure Python, no dependencies) with an `edgegw` script."""
    dist = f"edgegw-{version}.dist-info"
    files = {
        "edgegw_fake.py": FAKE_MAIN.format(version=version, healthy=healthy),
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: edgegw\nVersion: {version}\n",
        f"{dist}/WHEEL": ("Wheel-Version: 1.0\nGenerator: edgegw-tests\nRoot-Is-Purelib: true\n"
                          "Tag: py3-none-any\n"),
        f"{dist}/entry_points.txt": "[console_scripts]\nedgegw = edgegw_fake:main\n",
    }
    record = []
    for name, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=")
        record.append(f"{name},sha256={digest.decode()},{len(text.encode())}")
    record.append(f"{dist}/RECORD,,")
    files[f"{dist}/RECORD"] = "\n".join(record) + "\n"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"edgegw-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        for name, text in files.items():
            z.writestr(name, text)
    return path


# `restart` fails when the file fail_flag names the version `current` points at, or "*"
FAKE_SYSTEMCTL = '''#!/bin/sh
echo "$*" >> "{log}"
case "$1" in
    is-active) echo active ;;
    show) echo 0 ;;
    restart)
        v=$(basename "$(readlink "{root}/opt/edgegw/current")")
        f=$(cat "{fail_flag}" 2>/dev/null)
        [ "$f" != "*" ] && [ "$f" != "$v" ] ;;
esac
'''


class Scratch:
    """A scratch root with a seeded /etc/passwd, a fake systemctl, and the scripts' env."""

    def __init__(self, base: Path) -> None:
        self.root = base / "root"
        (self.root / "etc").mkdir(parents=True)
        (self.root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
        (self.root / "etc/group").write_text("root:x:0:\n")
        self.wheels = base / "wheels"
        self.log = base / "systemctl.log"
        self.fail_flag = base / "restart-fails"
        self.systemctl = base / "systemctl"
        self.systemctl.write_text(FAKE_SYSTEMCTL.format(log=self.log, fail_flag=self.fail_flag,
                                                       root=self.root))
        self.systemctl.chmod(0o755)
        self.env = {
            "PATH": os.environ["PATH"], "HOME": str(base), "LANG": "C.UTF-8",
            "DESTDIR": str(self.root), "SYSTEMCTL": str(self.systemctl),
            "PYTHON": sys.executable, "PIP_ARGS": "--no-index --no-deps",
            "EDGEGW_SETTLE": "0", "EDGEGW_HEALTH_TRIES": "2", "EDGEGW_HEALTH_WAIT": "0",
            "PIP_NO_CACHE_DIR": "1", "EDGEGW_VENV_ARGS": "--without-pip",
        }

    def run(self, script: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["bash", str(DEPLOY / script), *args], env={**self.env, **env},
                              capture_output=True, text=True, timeout=120)

    def p(self, path: str) -> Path:
        return self.root / path.lstrip("/")

    def link(self, name: str) -> str | None:
        link = self.p(f"/opt/edgegw/{name}")
        return os.readlink(link) if link.is_symlink() else None

    def uid(self, user: str) -> int:
        for line in self.p("/etc/passwd").read_text().splitlines():
            fields = line.split(":")
            if fields[0] == user:
                return int(fields[2])
        raise KeyError(user)

    def calls(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []


needs_root = pytest.mark.skipif(os.geteuid() != 0,
                                reason="user creation in a scratch root needs root")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


@needs_root
def test_install_lays_out_a_scratch_root(tmp_path: Path) -> None:
    sc = Scratch(tmp_path)
    wheel = fake_wheel(sc.wheels, "0.1.0")
    config = tmp_path / "site.yaml"
    config.write_text("gateway: {id: gw-1}\n")
    (tmp_path / "etc-extra").mkdir()
    out = sc.run("install.sh", "--wheel", str(wheel), "--config", str(config),
                 NO_SYSTEMD="1")
    assert out.returncode == 0, out.stderr
    assert "created system user edgegw" in out.stdout

    # the user, in the scratch root's passwd and groups only
    uid = sc.uid("edgegw")
    groups = sc.p("/etc/group").read_text()
    assert "gpio:x:" in groups and "dialout:x:" in groups
    for g in ("gpio", "dialout"):
        line = next(x for x in groups.splitlines() if x.startswith(f"{g}:"))
        assert line.split(":")[3].split(",") == ["edgegw"]
    passwd = sc.p("/etc/passwd").read_text()
    assert ":/var/lib/edgegw:/usr/sbin/nologin" in passwd

    # the version, its virtualenv and the links
    assert sc.link("current") == "0.1.0" and sc.link("previous") is None
    venv = sc.p("/opt/edgegw/0.1.0")
    assert (venv / "bin/edgegw").stat().st_mode & stat.S_IXUSR
    assert subprocess.run([str(sc.p("/opt/edgegw/current/bin/edgegw")), "version"],
                          capture_output=True, text=True).stdout.strip() == "0.1.0"
    for f in ("install.sh", "upgrade.sh", "rollback.sh", "uninstall.sh", "lib.sh",
              "edgegw.service"):
        assert (venv / "deploy" / f).is_file(), f
    assert mode(venv / "deploy/rollback.sh") == 0o755
    assert os.readlink(sc.p("/usr/local/bin/edgegw")) == "/opt/edgegw/current/bin/edgegw"

    # config: root:edgegw 0750 / 0640; state: edgegw 0750; the unit
    etc = sc.p("/etc/edgegw")
    assert mode(etc) == 0o750 and etc.stat().st_uid == 0
    assert (sc.p("/etc/edgegw/config.yaml").read_text() == "gateway: {id: gw-1}\n")
    assert mode(sc.p("/etc/edgegw/config.yaml")) == 0o640
    state = sc.p("/var/lib/edgegw")
    assert mode(state) == 0o700 and state.stat().st_uid == uid
    unit = sc.p("/etc/systemd/system/edgegw.service")
    assert unit.read_text() == UNIT.read_text() and mode(unit) == 0o644
    assert sc.calls() == []                                # NO_SYSTEMD: never called

    # provisioning adds identity files as root: --fix-permissions hands keys to the service
    key = sc.p("/etc/edgegw/gateway.key")
    key.write_text("-----BEGIN PRIVATE KEY-----\n")
    key.chmod(0o644)
    sc.p("/etc/edgegw/gateway.crt").write_text("cert")
    sc.p("/etc/edgegw/mqtt-password").write_text("pw")
    out = sc.run("install.sh", "--fix-permissions", NO_SYSTEMD="1")
    assert out.returncode == 0, out.stderr
    assert mode(key) == 0o600 and key.stat().st_uid == uid
    assert mode(sc.p("/etc/edgegw/mqtt-password")) == 0o600
    assert mode(sc.p("/etc/edgegw/gateway.crt")) == 0o640
    assert sc.p("/etc/edgegw/gateway.crt").stat().st_uid == 0

    # installing again is refused: that is upgrade.sh's job
    again = sc.run("install.sh", "--wheel", str(wheel), NO_SYSTEMD="1")
    assert again.returncode == 2 and "use upgrade.sh" in again.stderr


def test_install_without_user_creation_as_any_user(tmp_path: Path) -> None:
    sc = Scratch(tmp_path)
    wheel = fake_wheel(sc.wheels, "0.1.0")
    # the production path: a venv with its own pip (the other tests save time --without-pip)
    out = sc.run("install.sh", "--wheel", str(wheel), "--no-user", "--no-systemctl",
                 EDGEGW_VENV_ARGS="")
    assert out.returncode == 0, out.stderr
    assert "not creating user edgegw" in out.stderr
    assert sc.p("/opt/edgegw/0.1.0/bin/pip").exists()
    assert sc.link("current") == "0.1.0"
    assert sc.p("/etc/passwd").read_text() == "root:x:0:0:root:/root:/bin/bash\n"
    assert mode(sc.p("/etc/edgegw")) == 0o750


def test_an_invalid_config_stops_the_install(tmp_path: Path) -> None:
    sc = Scratch(tmp_path)
    wheel = fake_wheel(sc.wheels, "0.1.0")
    config = tmp_path / "bad.yaml"
    config.write_text("INVALID\n")
    out = sc.run("install.sh", "--wheel", str(wheel), "--config", str(config), "--no-user",
                 NO_SYSTEMD="1")
    assert out.returncode == 2
    assert "not valid for edgegw 0.1.0" in out.stderr and "gateway.id: invalid" in out.stderr
    assert sc.link("current") is None and not sc.p("/opt/edgegw/0.1.0").exists()


@needs_root
def test_upgrade_rollback_and_uninstall_in_a_scratch_root(tmp_path: Path) -> None:
    sc = Scratch(tmp_path)
    config = tmp_path / "site.yaml"
    config.write_text("gateway: {id: gw-1}\n")
    out = sc.run("install.sh", "--wheel", str(fake_wheel(sc.wheels / "a", "0.1.0")),
                 "--config", str(config))
    assert out.returncode == 0, out.stderr
    assert sc.calls()[:3] == ["daemon-reload", "enable edgegw", "daemon-reload"]
    assert "restart edgegw" in sc.calls()
    assert "edgegw 0.1.0 is running" in out.stdout
    # what upgrades must keep: config, identity, the store
    sc.p("/etc/edgegw/gateway.key").write_text("key")
    sc.p("/var/lib/edgegw/store.db").write_bytes(b"SQLite format 3\0" + b"x" * 100)
    kept = {p: sc.p(p).read_bytes() for p in
            ("/etc/edgegw/config.yaml", "/etc/edgegw/gateway.key", "/var/lib/edgegw/store.db")}

    # 1. a new version that starts but fails its health check: rolled back, and said so
    bad = fake_wheel(sc.wheels / "b", "0.2.0", healthy=False)
    out = sc.run("upgrade.sh", "--wheel", str(bad))
    assert out.returncode == 1, out.stdout + out.stderr
    assert "edgegw 0.2.0 failed its health check" in out.stderr
    assert "ROLLED BACK: edgegw 0.2.0 failed" in out.stdout
    assert "0.1.0 is running again" in out.stdout
    assert sc.link("current") == "0.1.0" and sc.link("previous") is None
    assert not sc.p("/opt/edgegw/0.2.0").exists()           # the failed one is gone

    # 2. a restart that fails outright (READY never came): rolled back as well
    sc.fail_flag.write_text("0.2.0")
    out = sc.run("upgrade.sh", "--wheel", str(fake_wheel(sc.wheels / "c", "0.2.0")))
    assert out.returncode == 1, out.stdout + out.stderr
    assert "edgegw 0.2.0 did not start (systemctl restart failed)" in out.stderr
    assert "ROLLED BACK" in out.stdout and sc.link("current") == "0.1.0"
    # ... and when the old version will not start again either, exit 3 says "act now"
    sc.fail_flag.write_text("*")
    out = sc.run("upgrade.sh", "--wheel", str(fake_wheel(sc.wheels / "c", "0.2.0")))
    assert out.returncode == 3 and "ROLLBACK FAILED" in out.stdout
    assert sc.link("current") == "0.1.0"
    sc.fail_flag.unlink()

    # 3. a good upgrade: current -> 0.2.0, previous -> 0.1.0, data untouched
    good = fake_wheel(sc.wheels / "d", "0.2.0")
    out = sc.run("upgrade.sh", "--wheel", str(good))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "edgegw upgraded 0.1.0 -> 0.2.0" in out.stdout
    assert sc.link("current") == "0.2.0" and sc.link("previous") == "0.1.0"
    assert {p: sc.p(p).read_bytes() for p in kept} == kept
    assert mode(sc.p("/etc/edgegw/gateway.key")) == 0o600

    # 4. a health check given by EDGEGW_HEALTH_CMD, failing only for the new version
    check = tmp_path / "check.sh"
    check.write_text('#!/bin/sh\n[ "$EDGEGW_CHECK_VERSION" != 0.3.0 ]\n')
    check.chmod(0o755)
    out = sc.run("upgrade.sh", "--wheel", str(fake_wheel(sc.wheels / "e", "0.3.0")),
                 EDGEGW_HEALTH_CMD=str(check))
    assert out.returncode == 1 and "ROLLED BACK" in out.stdout
    assert sc.link("current") == "0.2.0" and sc.link("previous") == "0.1.0"

    # 5. an upgrade the config does not validate with: refused before any switch
    sc.p("/etc/edgegw/config.yaml").write_text("INVALID\n")
    restarts = sc.calls().count("restart edgegw")
    out = sc.run("upgrade.sh", "--wheel", str(fake_wheel(sc.wheels / "f", "0.4.0")))
    assert out.returncode == 1 and "does not accept" in out.stderr
    assert sc.link("current") == "0.2.0" and sc.calls().count("restart edgegw") == restarts
    sc.p("/etc/edgegw/config.yaml").write_bytes(kept["/etc/edgegw/config.yaml"])

    # 6. the manual rollback swaps current and previous
    out = sc.run("rollback.sh")
    assert out.returncode == 0, out.stdout + out.stderr
    assert sc.link("current") == "0.1.0" and sc.link("previous") == "0.2.0"
    assert "ROLLED BACK to edgegw 0.1.0" in out.stdout

    # 7. uninstall keeps config, identity, store and user; --purge removes them
    out = sc.run("uninstall.sh")
    assert out.returncode == 0, out.stderr
    assert "disable --now edgegw" in sc.calls()
    assert not sc.p("/opt/edgegw").exists() and not sc.p("/usr/local/bin/edgegw").is_symlink()
    assert not sc.p("/etc/systemd/system/edgegw.service").exists()
    assert {p: sc.p(p).read_bytes() for p in kept} == kept
    assert sc.uid("edgegw") > 0
    out = sc.run("uninstall.sh", "--purge")
    assert out.returncode == 2 and "--yes" in out.stderr      # no terminal: asks for --yes
    out = sc.run("uninstall.sh", "--purge", "--yes")
    assert out.returncode == 0, out.stderr
    assert not sc.p("/etc/edgegw").exists() and not sc.p("/var/lib/edgegw").exists()
    with pytest.raises(KeyError):
        sc.uid("edgegw")


@pytest.mark.parametrize("script", ["install.sh", "upgrade.sh", "rollback.sh", "uninstall.sh"])
def test_scripts_refuse_the_real_root_as_destdir(tmp_path: Path, script: str) -> None:
    # run as an unprivileged user when we are root: should the guard ever break, the script
    # still cannot touch the real system
    user = {"user": 65534, "group": 65534, "extra_groups": []} if os.geteuid() == 0 else {}
    base = Path(tempfile.mkdtemp(prefix="egw-"))       # reachable by that user, unlike tmp_path
    base.chmod(0o755)
    # the scripts run from a readable copy: the checkout may sit in a directory that user
    # cannot enter (a 0700 mktemp -d, root's home)
    scripts = base / "deploy"
    shutil.copytree(DEPLOY, scripts)
    for f in (scripts, *scripts.iterdir()):
        f.chmod(0o755 if f.is_dir() else 0o644)
    link = base / "looks-like-a-scratch-root"
    link.symlink_to("/")
    request_cleanup = [base]
    for destdir in ("/", "//", str(link)):
        env = {"PATH": os.environ["PATH"], "DESTDIR": destdir, "NO_SYSTEMD": "1",
               "EDGEGW_NO_USER": "1", "PYTHON": "/bin/false"}
        out = subprocess.run(["bash", str(scripts / script), "--no-systemctl"], env=env,
                             capture_output=True, text=True, timeout=30, cwd="/",
                             **user)  # type: ignore[call-overload]
        assert out.returncode == 2, (destdir, out.stdout, out.stderr)
        assert "is the real root" in out.stderr
    for d in request_cleanup:
        shutil.rmtree(d)


@pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(),
                    reason="needs git and a git checkout to clone")
def test_the_deploy_tests_pass_from_a_clone_in_a_private_directory() -> None:
    """A newcomer's clone under a 0700 directory (mktemp -d, root's home) passes too."""
    private = Path(tempfile.mkdtemp(prefix="egw-private-"))    # mode 0700
    try:
        assert stat.S_IMODE(private.stat().st_mode) == 0o700
        clone = private / "p"
        subprocess.run(["git", "clone", "-q", "--no-hardlinks", str(ROOT), str(clone)],
                       check=True, capture_output=True, timeout=120)
        # the working tree as it is now (uncommitted changes too): the test is of this tree
        for rel in ("tests/test_deploy.py", "tests/conftest.py", "deploy"):
            src, dst = ROOT / rel, clone / rel
            if src.is_dir():
                shutil.rmtree(dst, ignore_errors=True)
                shutil.copytree(src, dst)
            else:
                shutil.copy2(src, dst)
        out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                              "tests/test_deploy.py", "-k", "refuse_the_real_root"],
                             cwd=clone, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
        assert "4 passed" in out.stdout
    finally:
        shutil.rmtree(private, ignore_errors=True)
