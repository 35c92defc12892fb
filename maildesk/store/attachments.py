"""Attachment contents, stored once by content hash.

`attachments.store = "files"` (default) keeps them under the state directory as
`attachments/ab/abcdef...` (SHA-256); `"database"` keeps them in the `Blob` table;
`"none"` records only name, type and size. The same file sent twice is stored once.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from .schema import Blob
from .sql import write

if TYPE_CHECKING:
    from ..service.runtime import Runtime


def path_for(rt: Runtime, sha256: str) -> Path:
    return rt.cfg.attachment_dir() / sha256[:2] / sha256


def write_contents(rt: Runtime, parts) -> None:
    """Store the contents of `parts` (idempotent: by content hash) and drop them from
    memory; whoever reads a message ahead of its processing does this (pipeline/parse.py)."""
    mode = rt.cfg.attachments.store
    for part in parts:
        if part.data is None:
            continue
        if mode == "files":
            _write_file(path_for(rt, part.sha256), part.data)
        elif mode == "database":
            Blob.insert(sha256=part.sha256, data=part.data).on_conflict_ignore().execute()
        part.data = None


def store_all(rt: Runtime, message, parts) -> None:
    """Record the attachments of a stored message (and their contents, if not yet)."""
    if not parts:
        return
    write_contents(rt, parts)
    # nothing reads them back at once: on PostgreSQL they go with the next statement
    write('INSERT INTO "attachment" ("message_id", "filename", "content_type", "size", "sha256") VALUES '
          + ", ".join(["(?, ?, ?, ?, ?)"] * len(parts)),
          [v for p in parts for v in (message.id, p.filename, p.content_type[:200], p.size, p.sha256)])


# the directories this process made or found (attachments/ab): most files go into one
# that exists, and asking costs a system call a file
_made: set[Path] = set()


def _write_file(path: Path, data: bytes) -> None:
    """Write a file whole or not at all: into a name of this process's own in the same
    directory (one writer a process), then renamed into place."""
    if path.exists():
        return  # same content, same name: deduplicated
    parent = path.parent
    tmp = parent / f".tmp-{os.getpid()}-{path.name}"
    if parent not in _made:
        parent.mkdir(parents=True, exist_ok=True)
        _made.add(parent)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    except FileNotFoundError:  # the directory went away since (an admin's cleaning): made again
        _made.discard(parent)
        parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def read(rt: Runtime, sha256: str) -> bytes | None:
    path = path_for(rt, sha256)
    if path.exists():
        return path.read_bytes()
    blob = Blob.get_or_none(Blob.sha256 == sha256)
    return bytes(blob.data) if blob else None
