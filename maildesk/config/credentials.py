"""Secrets that live in files: `password_file`, `secret_file`, `oauth2_*_file`
(docs/configuration.md, Secrets).

An absolute path is read as it is. A relative one names a systemd credential: inside
the service it is read from `$CREDENTIALS_DIRECTORY` (where the unit's
`LoadCredential=` put it), in a shell from `desk.credentials_dir` (by default
/etc/maildesk/credentials, the files the unit loads), so the same config works in
both places:

    base = credentials_dir(data.get("desk"))        # from the raw TOML table
    read_secret(resolve("imap", base), "imap.password_file")

Only regular files are read, and without waiting: a FIFO or a device where a secret
belongs is an error, not a `check-config` that hangs.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

DEFAULT_CREDENTIALS_DIR = Path("/etc/maildesk/credentials")
MAX_SECRET_BYTES = 64 * 1024  # a password, a key or a token; more is not a secret file


class SecretFileError(ValueError):
    """A secret file that cannot be used; the message says why and what to fix."""


def credentials_dir(desk_table: object = None) -> tuple[Path, str]:
    """Where relative `*_file` names are looked up, and where that setting came from:
    `$CREDENTIALS_DIRECTORY` (systemd sets it inside the service), else
    `desk.credentials_dir`, else the default."""
    env = os.environ.get("CREDENTIALS_DIRECTORY")
    if env:
        return Path(env), "$CREDENTIALS_DIRECTORY"
    configured = desk_table.get("credentials_dir") if isinstance(desk_table, dict) else None
    if isinstance(configured, str) and configured.strip():
        return Path(configured).expanduser(), f"desk.credentials_dir = {configured}"
    return DEFAULT_CREDENTIALS_DIR, f"desk.credentials_dir, by default {DEFAULT_CREDENTIALS_DIR}"


def resolve(name: str, base: Path) -> Path:
    """The file a `*_file` value names: an absolute path as it is (environment
    variables expanded), a credential name below `base`."""
    path = Path(os.path.expandvars(name))
    if path.is_absolute():
        return path
    if not name.strip() or len(path.parts) != 1 or name in (".", ".."):
        raise SecretFileError(f'"{name}" is neither an absolute path nor a credential name such as "imap"')
    return base / path


def read_secret(path: Path) -> str:
    """The stripped text of the regular file at `path`. Opened without blocking, so
    that a FIFO cannot make the caller wait for a writer."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise SecretFileError(f"cannot read {path}: {e.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise SecretFileError(f"{path} is not a regular file (a secret must be a plain file)")
        data = os.read(fd, MAX_SECRET_BYTES + 1)
    except OSError as e:
        raise SecretFileError(f"cannot read {path}: {e.strerror}") from None
    finally:
        os.close(fd)
    if len(data) > MAX_SECRET_BYTES:
        raise SecretFileError(f"{path} is larger than {MAX_SECRET_BYTES // 1024} KiB: not a secret file")
    try:
        return data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise SecretFileError(f"{path} is not UTF-8 text") from None


def secret_from(table: object, path: str, errors: list[str], base: tuple[Path, str], key: str = "password",
                read: bool = True) -> str | None:
    """`key = "..."` or `key_file = "NAME or /PATH"` from a raw TOML table; both keys
    are taken out of it. With `read=False` the file is not read (commands that only
    read the database need no mail-server secret) and None is returned."""
    if not isinstance(table, dict):
        return None
    inline, file_value = table.pop(key, None), table.pop(f"{key}_file", None)
    if inline is not None and file_value is not None:
        errors.append(f"{path}.{key}_file: give either {key} or {key}_file, not both")
        return None
    if inline is not None:
        if not isinstance(inline, str):
            errors.append(f"{path}.{key}: expected a string")
            return None
        return inline
    if file_value is None:
        return None
    if not isinstance(file_value, str):
        errors.append(f"{path}.{key}_file: expected a string")
        return None
    directory, origin = base
    try:
        target = resolve(file_value, directory)
        if not read:
            return None
        return read_secret(target)
    except SecretFileError as e:
        hint = "" if Path(os.path.expandvars(file_value)).is_absolute() else f" (a relative name is read from {origin})"
        errors.append(f"{path}.{key}_file: {e}{hint}")
    return None


__all__ = ["DEFAULT_CREDENTIALS_DIR", "SecretFileError", "credentials_dir", "read_secret", "resolve", "secret_from"]
