"""Stage 1: raw bytes to a parsed mail, within the limits of `[limits]`.

Parsing is most of the CPU a message costs (bench/ingest.py --profile), so it happens once and
outside any transaction: the fetch process reads a batch ahead while the desk is
busy and stores a summary beside the bytes (`summarize`); an idle desk reads the
batch ahead itself before it opens its transaction (`read_ahead`). This stage then
only picks up the reading. The MIME tree is parsed again only for the rare mail
that needs it (bounces and other reports).
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..mailin import automatic
from ..mailin.automatic import Verdict
from ..mailin.mime.mail import MailRejected, ParsedMail
from ..mailin.mime.reader import parse_mail
from ..store import attachments
from .context import Context, Reject, read_raw

if TYPE_CHECKING:
    from ..service.runtime import Runtime

log = logging.getLogger(__name__)


@dataclass
class Reading:
    """A message read ahead of its processing: parsed, classified, its attachments
    stored; or the reason it cannot be read."""

    mail: ParsedMail | None = None
    verdict: Verdict | None = None
    rejected: str | None = None

    def to_json(self) -> str:
        if self.rejected is not None:
            return json.dumps({"rejected": self.rejected})
        assert self.mail is not None  # a reading not rejected holds its mail
        summary = self.mail.summary()
        summary["automatic"] = [self.verdict.kind, self.verdict.reason] if self.verdict else None
        return json.dumps(summary, ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str, raw: bytes | Callable[[], bytes]) -> Reading:
        """`raw`: the bytes, or how to read them when the MIME tree is asked for."""
        summary = json.loads(text)
        if "rejected" in summary:
            return cls(rejected=summary["rejected"])
        verdict = Verdict(*summary["automatic"]) if summary["automatic"] else None
        return cls(ParsedMail.from_summary(summary, raw), verdict)


def read_ahead(rt: Runtime, raw: bytes) -> Reading | None:
    """Parse, classify and store the attachment contents of one message, outside any
    transaction; None leaves it to `read` (too large, or the parser broke)."""

    if len(raw) > rt.cfg.limits.max_message_bytes:
        return None
    try:
        mail = parse_mail(raw, rt.cfg.limits)
        verdict = automatic.classify_for_desk(rt.cfg.desk, mail.tree(), rt.key, rt.cfg.desk_addresses)
        attachments.write_contents(rt, mail.attachments)
    except MailRejected as e:
        return Reading(rejected=str(e))
    except Exception:  # noqa: BLE001 - read() parses it again and quarantines it with the error
        log.exception("could not read a message ahead; it is parsed again when processed")
        return None
    return Reading(mail, verdict)


def summarize(rt: Runtime, raw: bytes) -> tuple[str | None, str | None]:
    """In the fetch process: the reading as JSON, to store beside the bytes, and the
    Message-ID, stored on the inbound row at once (store.claims.claim_pending)."""
    reading = read_ahead(rt, raw)
    if reading is None:
        return None, None
    return reading.to_json(), reading.mail.message_id if reading.mail is not None else None


def read(ctx: Context) -> None:
    limit = ctx.cfg.limits.max_message_bytes
    # the bytes, if not read yet, read when asked for (by a partial: a bound method of the
    # context, kept by its mail, would make each a reference cycle for the collector)
    raw = ctx.raw if ctx.raw is not None else functools.partial(read_raw, ctx.inbound.id)
    reading = ctx.reading or (Reading.from_json(ctx.summary, raw) if ctx.summary else None)
    size = reading.mail.size if reading and reading.mail is not None else len(ctx.raw_bytes())
    if size > limit:
        raise Reject(f"message is {size:,} bytes, over limits.max_message_bytes ({limit:,})", tell_sender=True)
    if reading and reading.rejected is not None:
        raise Reject(reading.rejected)
    if reading and reading.mail is not None:
        ctx.mail = mail = reading.mail
        ctx.verdict = reading.verdict
    else:
        try:
            ctx.mail = mail = parse_mail(ctx.raw_bytes(), ctx.cfg.limits)
        except MailRejected as e:
            raise Reject(str(e)) from None
    ib = ctx.inbound
    # as the fetch stored them, most often: only what differs is written again (a
    # Message-ID rewritten, even to itself, moves its index entry: on a big database a
    # random page)
    for name, value in (("message_id", mail.message_id), ("subject", mail.subject[:500]),
                        ("from_addr", ", ".join(a.addr or a.name for a in mail.from_) if mail.from_ else "")):
        if getattr(ib, name) != value:
            setattr(ib, name, value)
    if mail.sender is not None:
        ctx.sender = mail.sender.addr
        ctx.sender_name = mail.sender.name
    ctx.decide(
        f"parsed: from {ib.from_addr or '(none)'}, subject {mail.subject[:80]!r}, "
        f"{len(mail.attachments)} attachment(s), {size:,} bytes"
        + (f"; sender ambiguous: {mail.sender_problem}" if mail.sender_problem else "")
    )
