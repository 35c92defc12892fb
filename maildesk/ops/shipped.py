"""What the package carries for the admin: the commented example configuration and
the hardened systemd unit (`maildesk example-config`, `maildesk systemd-unit`).

One source of truth: `config/maildesk.example.toml`, `maildesk.service` and
`README.md` at the top of the project are the files; the wheel carries copies of
them in `maildesk/data/` (pyproject.toml, hatch `force-include`). A checkout reads
the sources themselves.

The unit is printed for this installation: `@MAILDESK@` becomes the path of this
install's `maildesk` command and `@DOCUMENTATION@` the README shipped beside it, so
`ExecStart=` and `Documentation=` name files that exist.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent
# name in maildesk/data/ (the wheel) -> its source in a checkout
SOURCES = {
    "maildesk.example.toml": PACKAGE.parent / "config" / "maildesk.example.toml",
    "maildesk.service": PACKAGE.parent / "maildesk.service",
    "README.md": PACKAGE.parent / "README.md",
}
# ProtectHome=yes hides these from the service
HIDDEN_FROM_THE_SERVICE = ("/home/", "/root/", "/run/user/")


def shipped_file(name: str) -> Path:
    """The copy in the wheel, or the source in a checkout."""
    for candidate in (PACKAGE / "data" / name, SOURCES[name]):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{name} is missing from this maildesk installation (reinstall the package)")


def example_config() -> str:
    return shipped_file("maildesk.example.toml").read_text(encoding="utf-8")


def maildesk_command() -> str:
    """This installation's `maildesk`: beside the Python that runs us (a venv's bin/),
    else on PATH."""
    beside = Path(sys.executable).parent / "maildesk"
    if beside.is_file():
        return str(beside)
    found = shutil.which("maildesk")
    return str(Path(found).resolve()) if found else "/usr/local/bin/maildesk"


def systemd_unit() -> str:
    command = maildesk_command()
    if command.startswith(HIDDEN_FROM_THE_SERVICE):
        print(f"maildesk: warning: {command} is under a home directory, which the unit's ProtectHome=yes hides "
              "from the service; install maildesk elsewhere (e.g. python3 -m venv /opt/maildesk)", file=sys.stderr)
    text = shipped_file("maildesk.service").read_text(encoding="utf-8")
    return (text.replace("@MAILDESK@", command)
            .replace("@DOCUMENTATION@", shipped_file("README.md").resolve().as_uri()))
