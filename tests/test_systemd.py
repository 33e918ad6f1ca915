"""The systemd unit: `systemd-analyze verify` accepts it, `systemd-analyze security` rates its
exposure at most 2.0, and it has what the daemon relies on (notify + watchdog, restart, reload,
GPU devices, the Redis credential)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from support import REPO

UNIT = REPO / "systemd" / "monitor.service"
EXEC = "/opt/monitor/.venv/bin/monitor"


@pytest.fixture(autouse=True)
def _systemd_analyze_installed() -> None:
    # Not a skip: .ci/run installs Debian's systemd package, so its absence is a failure.
    assert shutil.which("systemd-analyze"), "systemd-analyze missing (apt-get install systemd; .ci/run does)"


def directives(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")) and "=" in line:
            key, value = line.split("=", 1)
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def test_unit_verifies(tmp_path: Path) -> None:
    # verify checks that ExecStart's binary exists and is executable; the venv is not installed
    # here, so a copy of the unit points at a stub executable (everything else unchanged).
    stub = tmp_path / "bin" / "monitor"
    stub.parent.mkdir()
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    text = UNIT.read_text()
    assert EXEC in text
    copy = tmp_path / "monitor.service"
    copy.write_text(text.replace(EXEC, str(stub)))
    proc = subprocess.run(
        ["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # Unknown keys or bad values are only warnings (exit 0): there must be none.
    problems = [ln for ln in (proc.stdout + proc.stderr).splitlines() if "monitor.service" in ln]
    assert not problems, "\n".join(problems)


def test_unit_exposure_at_most_2() -> None:
    proc = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", "--no-pager", str(UNIT)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=UNIT.parent,
    )
    m = re.search(r"Overall exposure level for monitor\.service:\s*([0-9.]+)", proc.stdout)
    assert m, proc.stdout + proc.stderr
    assert float(m.group(1)) <= 2.0, proc.stdout


def test_unit_has_what_the_daemon_needs() -> None:
    d = directives(UNIT.read_text())
    one = {k: v[-1] for k, v in d.items()}
    assert one["Type"] == "notify" and one["NotifyAccess"] == "main"
    assert re.fullmatch(r"\d+s?", one["WatchdogSec"])
    assert one["Restart"] == "on-failure"
    assert re.fullmatch(r"/bin/kill -HUP \$MAINPID", one["ExecReload"])
    assert one["ExecStart"].startswith(EXEC + " run ")
    assert one["LoadCredential"] == "redis-password:/etc/monitor/redis-password"
    allowed = " ".join(d["DeviceAllow"])
    assert "char-nvidia-frontend rw" in allowed and "char-nvidia-uvm rw" in allowed  # /dev/nvidia*
    assert "char-drm rw" in allowed  # /dev/dri/*
    assert one["DevicePolicy"] == "closed" and one["PrivateDevices"] == "no"
    assert set(one["SupplementaryGroups"].split()) == {"video", "render"}
    for key in ("StateDirectory", "LogsDirectory", "CacheDirectory", "ConfigurationDirectory"):
        assert one[key] == "monitor"
    assert one["DynamicUser"] == "yes" and one["NoNewPrivileges"] == "yes" and one["ProtectSystem"] == "strict"
    assert one["CapabilityBoundingSet"] == "" and one["UMask"] == "0077"


def test_redis_password_from_systemd_credential(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from monitor.config import load_settings
    from monitor.config.secrets import with_systemd_credentials as _with_credentials

    (tmp_path / "redis-password").write_text("s3cret\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    settings = _with_credentials(load_settings(None, redis={"url": "redis://127.0.0.1:6379/0"}))
    assert settings.redis.password_file == tmp_path / "redis-password"
    # A password the config gives wins; no credential file: nothing changes.
    given = load_settings(None, redis={"url": "redis://127.0.0.1:6379/0", "password": "x"})
    assert _with_credentials(given).redis.password_file is None
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path / "none"))
    assert _with_credentials(load_settings(None)).redis.password_file is None


ROLE_UNITS = {"monitor-gate.service": "monitor-gate.service", "monitor-describe@.service": "monitor-describe@0.service"}


@pytest.mark.parametrize("name", sorted(ROLE_UNITS))
def test_role_units_verify_and_are_hardened(name: str, tmp_path: Path) -> None:
    """The scale-out units: verified (the template as an instance), exposure at most 2.0."""
    unit = REPO / "systemd" / name
    stub = tmp_path / "bin" / "monitor"
    stub.parent.mkdir()
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    copy = tmp_path / ROLE_UNITS[name]
    copy.write_text(unit.read_text().replace(EXEC, str(stub)))
    proc = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not [ln for ln in (proc.stdout + proc.stderr).splitlines() if ROLE_UNITS[name] in ln]
    sec = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", "--no-pager", str(copy)],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    m = re.search(r"Overall exposure level for \S+:\s*([0-9.]+)", sec.stdout)
    assert m and float(m.group(1)) <= 2.0, sec.stdout + sec.stderr
    one = {k: v[-1] for k, v in directives(unit.read_text()).items()}
    assert one["Type"] == "notify" and one["Restart"] == "on-failure" and one["DynamicUser"] == "yes"
    assert one["LoadCredential"] == "redis-password:/etc/monitor/redis-password"
    assert re.fullmatch(r"\d+s", one["WatchdogSec"])  # both ping it (tests/test_notify.py)
    if name == "monitor-gate.service":
        assert one["ExecStart"] == EXEC + " run --role gate --config /etc/monitor/monitor.yaml --quiet"
        assert one["PrivateDevices"] == "yes"  # no GPU on a gate node
    else:
        assert one["ExecStart"].startswith(EXEC + " describe-worker --config /etc/monitor/monitor.yaml --name %H")
        assert "CUDA_VISIBLE_DEVICES=%i" in directives(unit.read_text())["Environment"]  # one GPU each
        assert "char-nvidia-frontend rw" in " ".join(directives(unit.read_text())["DeviceAllow"])
