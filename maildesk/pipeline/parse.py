"""Stage 1: raw bytes to a parsed mail, within the limits of `[limits]`.

Parsing is most of the CPU a message costs (PERF-NOTES), so the mail process does
it once, right after the fetch and outside any transaction (`summarize`), and
stores a summary beside the bytes; this stage then only loads the summary. The
MIME tree is parsed again only for the rare mail that needs it (bounces and other
reports). A message without a summary is parsed here.
"""

from __future__ import annotations

import json
import logging

from .. import attachments
from ..automatic import Verdict
from ..mime import MailRejected, ParsedMail, parse_mail
from .context import Context, Reject

log = logging.getLogger(__name__)


def summarize(rt, raw: bytes) -> str | None:
    """In the mail process: parse, classify, store attachment contents; the summary
    as JSON, or None to leave the parsing to the desk process."""
    from .screen import classify_tree

    if len(raw) > rt.cfg.limits.max_message_bytes:
        return None
    try:
        mail = parse_mail(raw, rt.cfg.limits)
        verdict = classify_tree(rt.cfg, mail.msg)
        attachments.write_contents(rt, mail.attachments)
    except MailRejected as e:
        return json.dumps({"rejected": str(e)})
    except Exception:  # noqa: BLE001 - the desk process parses it again and quarantines it with the error
        log.exception("could not summarize a message; the desk process will parse it")
        return None
    summary = mail.summary()
    summary["automatic"] = [verdict.kind, verdict.reason] if verdict else None
    return json.dumps(summary, ensure_ascii=False, separators=(",", ":"))


def read(ctx: Context) -> None:
    limit = ctx.cfg.limits.max_message_bytes
    size = len(ctx.raw)
    if size > limit:
        raise Reject(f"message is {size:,} bytes, over limits.max_message_bytes ({limit:,})", tell_sender=True)
    summary = json.loads(ctx.summary) if ctx.summary else None
    if summary and "rejected" in summary:
        raise Reject(summary["rejected"])
    if summary:
        ctx.mail = mail = ParsedMail.from_summary(summary, ctx.raw)
        ctx.verdict = Verdict(*summary["automatic"]) if summary["automatic"] else None
    else:
        try:
            ctx.mail = mail = parse_mail(ctx.raw, ctx.cfg.limits)
        except MailRejected as e:
            raise Reject(str(e)) from None
    ib = ctx.inbound
    ib.message_id = mail.message_id
    ib.subject = mail.subject[:500]
    ib.from_addr = ", ".join(a.addr or a.name for a in mail.from_) if mail.from_ else ""
    if mail.sender is not None:
        ctx.sender = mail.sender.addr
        ctx.sender_name = mail.sender.name
    ctx.decide(
        f"parsed: from {ib.from_addr or '(none)'}, subject {mail.subject[:80]!r}, "
        f"{len(mail.attachments)} attachment(s), {size:,} bytes"
        + (f"; sender ambiguous: {mail.sender_problem}" if mail.sender_problem else "")
    )
