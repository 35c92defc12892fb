"""What a running desk holds once: the config, the signing key, compiled templates,
the calendars. Built by `Runtime.start(cfg)` after the database is open, and handed
to every stage and job.
"""

from __future__ import annotations

import datetime as dt
import functools
import os
from typing import TYPE_CHECKING

from .. import store
from ..businesstime import Calendar, calendar_for
from ..config import Config

if TYPE_CHECKING:
    from ..mailout.render import Templates
    from ..store import Ticket


class Runtime:
    """A plain class, not a dataclass: a dataclass is made by generated code compiled at
    import, a millisecond or two of every command's start (config/record.py says why
    that counts)."""

    def __init__(self, cfg: Config, key: bytes) -> None:
        self.cfg = cfg
        self.key = key
        self._calendars: dict[str, Calendar] = {}
        # lookups a cycle makes again and again (suppressed addresses, staff state,
        # automatic-reply counts); emptied at the start of each cycle
        self.memo: dict = {}
        # this desk process, host:pid, as it signs what it processed (inbound.worker)
        self.worker: str = store.workers.worker_id(os.getpid())

    def begin_cycle(self) -> None:
        self.memo.clear()

    def warm_up(self, now: dt.datetime) -> None:
        """Load what the first ticket would otherwise wait for: the templates (jinja2),
        and the holiday tables of the year of `now` (the cycle's clock: `run --once
        --now` works in that year)."""
        self.templates  # noqa: B018 - a cached property: made here, once
        for name in {p.calendar for p in self.cfg.sla}:
            self.calendar(name).is_open(now)

    @classmethod
    def start(cls, cfg: Config) -> Runtime:
        return cls(cfg=cfg, key=signing_key(cfg))

    @functools.cached_property
    def templates(self) -> Templates:
        """Made when first asked for (the desk asks in `warm_up`): a command that renders
        no mail (`tickets list`, `status`, `why`) loads no jinja2."""
        from ..mailout.render import Templates

        return Templates(self.cfg.desk.templates_dir)

    def calendar(self, name: str) -> Calendar:
        if name not in self._calendars:
            self._calendars[name] = calendar_for(self.cfg, name)
        return self._calendars[name]

    def ref(self, ticket: Ticket | int) -> str:
        """INC-42, of a ticket or of its id."""
        return f"{self.cfg.desk.ticket_prefix}-{ticket.id if hasattr(ticket, 'id') else ticket}"

    def tag(self, ticket: Ticket | int) -> str:
        return f"[{self.ref(ticket)}]"


def signing_key(cfg: Config) -> bytes:
    """`security.secret_file` if given; else a random secret made once and kept in
    the database, so that signed ids stay valid across restarts."""
    if cfg.secret_bytes:
        return cfg.secret_bytes
    value = store.get_setting("secret")
    if value is None:
        import secrets  # once in a desk's life: not for every command

        # the first of several processes starting at once (the desk and its mail
        # processes; on PostgreSQL other desk hosts) stores it; the others read that one
        with store.write_transaction():
            store.execute('INSERT INTO "setting" ("key", "value") VALUES (?, ?) ON CONFLICT ("key") DO NOTHING',
                          ("secret", secrets.token_hex(32)))
        value = store.get_setting("secret")
        assert value is not None  # stored just now, by this process or another
    return value.encode()
