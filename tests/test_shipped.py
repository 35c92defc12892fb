"""What the wheel carries for an admin: `maildesk example-config` and `maildesk
systemd-unit` print, from a wheel installed in a fresh venv, the files whose sources
are config/maildesk.example.toml and maildesk.service, and the unit names files that
exist."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from maildesk.config import ConfigError, parse_config
from tests.conftest import ROOT


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """maildesk built as a wheel and installed, alone, into a fresh venv: its bin/."""
    tmp = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp / "dist"), str(ROOT)],
                   check=True, capture_output=True, timeout=300)
    [wheel] = (tmp / "dist").glob("maildesk-*.whl")
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q",
                    "--no-deps", str(wheel)], check=True, capture_output=True, timeout=300)
    return venv / "bin"


def _run(bin_dir: Path, *args: str) -> subprocess.CompletedProcess:
    # from another directory, so that nothing of the checkout is found by accident
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MAILDESK_CONFIG")}
    return subprocess.run([str(bin_dir / "maildesk"), *args], capture_output=True, text=True, timeout=60,
                          cwd="/", env=env)


def test_the_wheel_prints_the_example_config_of_the_project(installed):
    done = _run(installed, "example-config")
    assert done.returncode == 0, done.stderr
    assert done.stdout == (ROOT / "config" / "maildesk.example.toml").read_text()


def test_the_wheel_prints_the_unit_of_the_project_with_its_own_paths(installed):
    done = _run(installed, "systemd-unit")
    assert done.returncode == 0, done.stderr
    source = (ROOT / "maildesk.service").read_text()
    assert "@MAILDESK@" not in done.stdout and "@DOCUMENTATION@" not in done.stdout
    lines = dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line and not line.startswith("#"))
    command = str(installed / "maildesk")
    assert lines["ExecStart"] == f"{command} run" and lines["ExecStartPre"] == f"{command} init"
    docs = Path(lines["Documentation"].removeprefix("file://"))
    assert lines["Documentation"].startswith("file:///") and docs.is_file()
    assert docs.read_text() == (ROOT / "README.md").read_text()
    assert done.stdout == source.replace("@MAILDESK@", command).replace("@DOCUMENTATION@", docs.as_uri())


def test_the_units_credentials_are_the_ones_the_example_config_names():
    unit = (ROOT / "maildesk.service").read_text()
    loaded = {line.split("=", 1)[1].split(":", 1)[0] for line in unit.splitlines() if line.startswith("LoadCredential=")}
    example = tomllib.loads((ROOT / "config" / "maildesk.example.toml").read_text())
    named = {example["imap"]["password_file"], example["smtp"]["password_file"]}
    assert named <= loaded
    for line in unit.splitlines():
        if line.startswith("LoadCredential="):
            name, path = line.split("=", 1)[1].split(":", 1)
            assert path == f"/etc/maildesk/credentials/{name}"  # desk.credentials_dir's default


def test_the_example_config_is_valid_once_its_credentials_exist(tmp_path, monkeypatch):
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    data = tomllib.loads((ROOT / "config" / "maildesk.example.toml").read_text())
    with pytest.raises(ConfigError) as e:
        parse_config(data)
    assert sorted(p.split(":")[0] for p in e.value.problems) == ["imap.password_file", "smtp.password_file"]
    for name in ("imap", "smtp"):
        (tmp_path / name).write_text("pw\n")
    data = tomllib.loads((ROOT / "config" / "maildesk.example.toml").read_text())
    assert parse_config(data).imap.password == "pw"
