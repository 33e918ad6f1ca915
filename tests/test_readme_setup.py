"""The README's set-up: exactly two one-line commands, and the first one's system part works for a
sudo user and for root on a machine without sudo (run here against stub `apt-get` and `sudo`)."""

from __future__ import annotations

import re
import subprocess

from support import REPO

SETUP = re.compile(r"^## Set up.*?(?=^## )", re.S | re.M)
BLOCK = re.compile(r"^```sh\n(.*?)\n```", re.S | re.M)


def setup_commands() -> list[str]:
    section = SETUP.search((REPO / "README.md").read_text(encoding="utf-8"))
    assert section, "README has no '## Set up' section"
    return BLOCK.findall(section.group(0))


def test_two_one_line_commands() -> None:
    commands = setup_commands()
    assert len(commands) == 2 and all("\n" not in c for c in commands), commands
    assert commands[1] == "bash .ci/run"
    assert "monitor run --demo" in commands[0]


def _system_part(command: str) -> str:
    """Everything before the virtual environment is made: the apt-get steps."""
    return command.split(" && python3 -m venv", 1)[0]


def _run(tmp_path, with_sudo: bool) -> list[str]:
    bin_dir = tmp_path / ("with-sudo" if with_sudo else "root")
    bin_dir.mkdir()
    log = tmp_path / f"{bin_dir.name}.log"
    (bin_dir / "apt-get").write_text(f'#!/bin/sh\necho "apt-get $*" >> {log}\n')
    if with_sudo:
        (bin_dir / "sudo").write_text(f'#!/bin/sh\necho "sudo" >> {log}\nexec "$@"\n')
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    # PATH holds the stubs only: no real sudo, whatever this machine has
    proc = subprocess.run(
        ["/bin/bash", "-c", _system_part(setup_commands()[0])],
        env={"PATH": str(bin_dir)},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return log.read_text().splitlines()


def test_root_without_sudo(tmp_path) -> None:
    calls = _run(tmp_path, with_sudo=False)
    assert calls[0] == "apt-get update -qq" and calls[-1].startswith("apt-get install -y "), calls
    assert "python3-venv" in calls[-1].split()


def test_a_sudo_user(tmp_path) -> None:
    calls = _run(tmp_path, with_sudo=True)
    assert calls == ["sudo", "apt-get update -qq", "sudo", "apt-get install -y python3-venv"], calls
