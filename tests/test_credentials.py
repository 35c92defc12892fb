"""Secrets from files (DESIGN.md section 3): a relative `*_file` names a systemd
credential, read from $CREDENTIALS_DIRECTORY inside the service and from
desk.credentials_dir in a shell; the commands that only read the database need no
IMAP or SMTP secret at all."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from maildesk.config import ConfigError, parse_config
from tests.conftest import ROOT, mail

BASE = {"desk": {"address": "helpdesk@example.test"}, "imap": {"host": "i", "username": "u", "password": "p"},
        "smtp": {"host": "s"}}


def _secrets_in(directory, **files):
    directory.mkdir(parents=True, exist_ok=True)
    for name, value in files.items():
        (directory / name).write_text(value + "\n")
        os.chmod(directory / name, 0o600)
    return directory


def _by_name(desk, credentials_dir):
    """The desk's config as the README writes it: credential names, no passwords."""
    desk.write_config(desk={"credentials_dir": str(credentials_dir)},
                      imap={"password": None, "password_file": "imap"},
                      smtp={"username": "helpdesk", "password_file": "smtp"},
                      security={"secret": None, "secret_file": "secret"})


@pytest.fixture(autouse=True)
def _outside_the_service(monkeypatch):
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)


def test_in_a_shell_relative_names_are_read_from_desk_credentials_dir(desk, tmp_path):
    _by_name(desk, _secrets_in(tmp_path / "credentials", imap="secret", smtp="smtp-pass", secret="s" * 40))
    code, out, err = desk.cli("check-config")
    assert code == 0, err
    desk.deliver(mail("jane@example.org", "Printer jam", "Tray 2."))
    desk.run()  # the IMAP login used the password from the credentials directory
    assert len(desk.tickets()) == 1
    assert [m.auth_login for m in desk.sent(to="jane@example.org")] == ["helpdesk"]


def test_inside_the_service_relative_names_are_read_from_credentials_directory(desk, tmp_path, monkeypatch):
    _by_name(desk, _secrets_in(tmp_path / "shell", imap="wrong", smtp="x", secret="x" * 40))
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(_secrets_in(tmp_path / "run", imap="secret", smtp="x",
                                                                 secret="y" * 40)))
    desk.deliver(mail("jane@example.org", "Printer jam", "Tray 2."))
    desk.run()
    assert len(desk.tickets()) == 1


def test_an_absolute_path_is_read_as_it_is(tmp_path):
    _secrets_in(tmp_path, pw="from-the-file")
    cfg = parse_config({**BASE, "imap": {"host": "i", "username": "u", "password_file": str(tmp_path / "pw")}})
    assert cfg.imap.password == "from-the-file"


def test_a_missing_credential_names_its_key_the_file_and_where_names_are_looked_up(tmp_path):
    with pytest.raises(ConfigError) as e:
        parse_config({**BASE, "desk": {"address": "helpdesk@example.test", "credentials_dir": str(tmp_path)},
                      "imap": {"host": "i", "username": "u", "password_file": "imap"}})
    [problem] = e.value.problems
    assert problem.startswith("imap.password_file: cannot read ")
    assert str(tmp_path / "imap") in problem and "desk.credentials_dir" in problem


@pytest.mark.parametrize("name", ["../../etc/shadow", "sub/imap", ".."])
def test_a_credential_name_that_walks_out_of_the_directory_is_refused(tmp_path, name):
    with pytest.raises(ConfigError) as e:
        parse_config({**BASE, "desk": {"address": "helpdesk@example.test", "credentials_dir": str(tmp_path)},
                      "imap": {"host": "i", "username": "u", "password_file": name}})
    assert e.value.problems[0].startswith("imap.password_file: ")
    assert "neither an absolute path nor a credential name" in e.value.problems[0]


def test_a_fifo_as_password_file_is_refused_at_once_instead_of_hanging(tmp_path):
    fifo = tmp_path / "imap"
    os.mkfifo(fifo)
    config = tmp_path / "maildesk.toml"
    config.write_text(f'[desk]\naddress = "helpdesk@example.test"\ncredentials_dir = "{tmp_path}"\n'
                      '[imap]\nhost = "i"\nusername = "u"\npassword_file = "imap"\n[smtp]\nhost = "s"\n')
    done = subprocess.run([sys.executable, "-m", "maildesk", "--config", str(config), "check-config"],
                          capture_output=True, text=True, timeout=30, cwd=ROOT,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert done.returncode == 2
    assert "imap.password_file:" in done.stderr and "not a regular file" in done.stderr


def test_a_directory_as_secret_file_is_refused(tmp_path):
    with pytest.raises(ConfigError) as e:
        parse_config({**BASE, "security": {"secret_file": str(tmp_path)}})
    assert e.value.problems == [f"security.secret_file: {tmp_path} is not a regular file (a secret must be a plain file)"]


def test_commands_that_only_read_the_database_need_no_imap_or_smtp_secret(desk, tmp_path):
    desk.deliver(mail("jane@example.org", "Printer jam", "Tray 2."))
    desk.run()
    # root's shell on a host where only the service holds the mail passwords
    _by_name(desk, _secrets_in(tmp_path / "credentials", secret="s" * 40))
    mid = desk.inbound()[0]["message_id"]
    for args in (["tickets", "list"], ["tickets", "show", "INC-1", "--json"], ["inbound", "list", "--json"],
                 ["outbox", "list"], ["why", mid], ["report", "--json"], ["status", "--json"]):
        code, out, err = desk.cli(*args)
        assert code == 0, (args, err)
    assert json.loads(desk.cli("tickets", "list", "--json")[1])[0]["subject"] == "Printer jam"
    code, out, err = desk.cli("check-config")  # the commands that talk to the servers still need them
    assert code == 2 and "imap.password_file: cannot read" in err and "smtp.password_file: cannot read" in err


def test_oauth2_needs_a_token_endpoint_with_its_client_or_a_static_token():
    def problems(**imap):
        with pytest.raises(ConfigError) as e:
            parse_config({**BASE, "imap": {"host": "i", "username": "u", "auth": "oauth2", **imap}})
        return e.value.problems

    assert problems()[0].startswith("imap.oauth2_token_url: required")
    assert problems(oauth2_token_url="https://login.example/token")[0].startswith("imap.oauth2_client_id: required")
    assert problems(oauth2_token_url="https://login.example/token",
                    oauth2_client_id="desk")[0].startswith("imap.oauth2_refresh_token_file: required")
    assert problems(oauth2_token_url="https://login.example/token", oauth2_client_id="desk",
                    oauth2_scope="https://outlook.office365.com/.default")[0].startswith(
        "imap.oauth2_client_secret_file: required")
    assert problems(oauth2_token_url="ftp://x")[0].startswith('imap.oauth2_token_url: "ftp://x" is not an http')
    cfg = parse_config({**BASE, "imap": {"host": "i", "username": "u", "auth": "oauth2",
                                         "oauth2_token_url": "https://login.example/token", "oauth2_client_id": "desk",
                                         "oauth2_client_secret": "cs", "oauth2_scope": "imap"}})
    assert (cfg.imap.oauth2_client_secret, cfg.imap.oauth2_scope) == ("cs", "imap")


def test_smtp_oauth2_needs_the_account_name():
    with pytest.raises(ConfigError) as e:
        parse_config({**BASE, "smtp": {"host": "s", "auth": "oauth2", "oauth2_token": "t"}})
    assert e.value.problems[0].startswith("smtp.username: required when smtp.auth = \"oauth2\"")
