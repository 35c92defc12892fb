"""What several stages write: the conversation's rows and refusals. (No stage imports
another stage; what they share lives here.)
"""

from __future__ import annotations

from ..store import Message, Ticket, attachments
from .context import Context, Discard


def store_message(ctx: Context, t: Ticket, *, internal: bool, kind: str, body: str | None = None) -> Message:
    mail = ctx.mail
    msg = Message.create(
        ticket=t, inbound=ctx.inbound, direction="in", message_id=mail.message_id,
        from_addr=ctx.sender or ctx.inbound.from_addr, from_name=ctx.sender_name,
        to=", ".join(a.addr for a in mail.to if a.addr)[:2000], cc=", ".join(a.addr for a in mail.cc if a.addr)[:2000],
        subject=mail.subject, body=ctx.body if body is None else body, html=mail.html,
        internal=internal, kind=kind, created_at=ctx.now,
    )
    attachments.store_all(ctx.rt, msg, mail.attachments)
    if note := reply_to_note(ctx):
        ctx.event("reply-to", note, actor="desk", ticket=t)
    return msg


def reply_to_note(ctx: Context) -> str:
    """The Reply-To of a mail when it names someone other than its sender: shown to staff,
    never written to (docs/mail.md, Participants); "" when there is none or it is the sender."""
    others = list(dict.fromkeys(a.addr.lower() for a in ctx.mail.reply_to
                                if a.addr and a.addr.lower() != (ctx.sender or "").lower()))
    if not others:
        return ""
    return (f"Reply-To {', '.join(others[:5])}{' and more' if len(others) > 5 else ''} differs from the sender "
            f"{ctx.sender or 'of this mail'}; the desk writes only to the sender's stored address")


def attribution(ctx: Context) -> dict:
    """Who really wrote this mail, for a staff notice (docs/mail.md, Participants): the sender's
    address and whether the mail was verified, never a display name from the mail;
    the warning for mail that failed authentication at a trusted server; and a Reply-To
    that names someone else."""
    return {"author": ctx.sender or ctx.inbound.from_addr or "an ambiguous sender", "verified": ctx.verified,
            "verified_reason": ctx.verified_reason, "auth_warning": ctx.auth_warning,
            "reply_to_note": reply_to_note(ctx)}


def refuse(ctx: Context, problems: list[tuple[str, str]]) -> None:
    """Nothing changes; the mail is kept as an internal note; its sender is told why."""
    unauthenticated = ctx.is_staff and not ctx.authenticated
    kind = "unauthenticated" if unauthenticated else "refused"
    ctx.message = Message.create(
        ticket=ctx.ticket, inbound=ctx.inbound, direction="in", message_id=ctx.mail.message_id,
        from_addr=ctx.sender or ctx.inbound.from_addr, from_name=ctx.sender_name, subject=ctx.mail.subject,
        body=ctx.mail.text, internal=True, kind=kind, created_at=ctx.now,
    )
    summary = "; ".join(f"{line}: {p}" for line, p in problems if p not in ("ok", "not run"))
    ctx.event(kind, f"commands refused, nothing changed: {summary}"
              + ("; spoofed desk Message-ID" if ctx.spoofed_reference else ""),
              actor=ctx.sender or ctx.inbound.from_addr or "unknown")
    if ctx.sender:
        ctx.send(kind, ctx.sender, rcpt_name=ctx.sender_name, ticket=ctx.ticket,
                 context={"problems": problems, "auth_reason": ctx.auth_reason})
    raise Discard("refused", f"commands refused: {summary}")
