"""One desk per SQLite database: `maildesk run` holds an exclusive lock on a file
beside the database for as long as it runs, and a second `maildesk run` on the same
file is refused with a sentence that says so (SQLite serves one desk process,
docs/operations.md, scale-out; PostgreSQL takes any number, and no lock is taken there).

    lock = DeskLock.for_url(cfg.database.url)   # None for PostgreSQL
    lock.acquire()                              # raises AlreadyRunning
    ...
    lock.release()
    holder(cfg.database.url)                    # the pid of the desk that runs, or None

The lock is flock(2) on `<database>.lock`, which holds the desk's pid for people and
for `maildesk status`. The kernel drops it when the desk process ends, however it
ends: there is no stale lock to clean up after a crash. The forked fetch and send
processes close their copy, so a lingering child never keeps a new desk out.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from ..errors import MaildeskError

_held: set[int] = set()  # descriptors this process locked; a forked child closes its copies


class AlreadyRunning(MaildeskError):
    def __init__(self, path: Path, pid: int | None):
        self.path, self.pid = path, pid
        who = f"process {pid}" if pid else "another process"
        super().__init__(f"another maildesk run ({who}) already serves this database; "
                         f"stop it first (systemctl stop maildesk), or give this one its own database.url "
                         f"(lock: {path})")


def lock_path(url: str) -> Path | None:
    """The lock file of a SQLite database URL; None for an in-memory one or PostgreSQL."""
    if not url.startswith("sqlite:///"):
        return None
    path = url[len("sqlite:///"):]
    if not path or path == ":memory:":
        return None
    return Path(path + ".lock")


class DeskLock:
    def __init__(self, path: Path):
        self.path = path
        self.fd: int | None = None

    @classmethod
    def for_url(cls, url: str) -> DeskLock | None:
        path = lock_path(url)
        return cls(path) if path else None

    def acquire(self, patience: float = 1.0) -> DeskLock:
        """Take the lock, or raise AlreadyRunning. `patience`: how long to try again,
        for the instant `maildesk status` looks at it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        deadline = time.monotonic() + patience
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    pid = _read_pid(fd)
                    os.close(fd)
                    raise AlreadyRunning(self.path, pid) from None
                time.sleep(0.05)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd
        _held.add(fd)
        return self

    def release(self) -> None:
        if self.fd is not None:
            _held.discard(self.fd)
            os.close(self.fd)  # closing the last descriptor drops the lock
            self.fd = None


def holder(url: str) -> int | None:
    """The pid of the desk process that holds the database's lock, or None when no
    desk runs on it (or the database is not SQLite)."""
    path = lock_path(url)
    if path is None:
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_pid(fd) or -1
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _close_in_child() -> None:
    for fd in list(_held):
        try:
            os.close(fd)
        except OSError:
            pass
    _held.clear()


os.register_at_fork(after_in_child=_close_in_child)
