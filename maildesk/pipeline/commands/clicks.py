"""One-click links: confirm, reject, survey ratings, "this solved it" (docs/mail.md, "One-click
links"; what each does is `links.judge_click`).

A click acts only when its From is the recipient the link was made for; any other
click, and a link of the old form (bound to no resolution), changes nothing and is
kept on the ticket for staff. Whatever the person writes above the prepared line is
kept on the ticket as a message and shown to the technician.
"""

from __future__ import annotations

from ...desk import kb, resolution, routing, survey
from ...desk.links import click_comment, judge_click
from ...store import Message, Survey
from ..context import Context, Discard
from ..messages import attribution, store_message


def _one_click(ctx: Context) -> None:
    token, t = ctx.token, ctx.ticket
    assert t is not None  # correlate found the ticket by its token
    comment = click_comment(ctx.mail.reply_text)
    if token.old or ctx.sender != ctx.token_rcpt:
        _refuse_click(ctx, comment)
    if token.action.startswith(kb.ACTION):
        _kb_solved(ctx, int(token.action[len(kb.ACTION):]), comment)
    sent = Survey.select(Survey.sent_at).where(Survey.ticket == t).scalar() if token.action.startswith("rate") else None
    verdict = judge_click(t, token, ctx.now, ctx.cfg.lifecycle.reopen_window.total, sent)
    ctx.message = store_message(ctx, t, internal=False, kind="click", body=comment)
    who = ctx.sender
    if verdict.act == "rate":
        survey.record_answer(ctx.rt, t, int(token.action[4:]), comment or None, ctx.now, who, "one-click link", ctx.inbound)
        _show_comment(ctx, comment)
        raise Discard("survey", verdict.why)
    if verdict.act == "close":
        resolution.close_ticket(ctx.rt, t, ctx.now, who, "confirmed fixed by the requester (one-click link)", ctx.inbound)
        _show_comment(ctx, comment)
        raise Discard("confirmed", verdict.why)
    if verdict.act == "reopen":
        resolution.reopen_ticket(ctx.rt, t, ctx.now, who, "the requester says it is not fixed (one-click link)",
                                 ctx.inbound, body=comment, by=attribution(ctx))  # the notice carries the comment
        raise Discard("reopened", verdict.why)
    ctx.event("click-ignored", f"'{token.action}' link of {who}: nothing changed: {verdict.why}")
    _show_comment(ctx, comment)
    raise Discard("ignored", f"'{token.action}' link: {verdict.why}")


def _kb_solved(ctx: Context, number: int, comment: str) -> None:
    """"This solved it": the requester resolves the ticket with an offered article
    (closure code self-service); a stale or foreign offer changes nothing."""
    assert ctx.ticket is not None
    ctx.message = store_message(ctx, ctx.ticket, internal=False, kind="click", body=comment)
    try:
        kb.take(ctx.rt, ctx.ticket, number, ctx.sender, ctx.now, ctx.inbound)
    except kb.NotTaken as e:
        raise Discard("ignored", f"'this solved it' link: {e}; nothing changed") from None
    raise Discard("self-service", f"the requester resolved {ctx.ref} with {kb.ref(number)} (one-click link)")


def _refuse_click(ctx: Context, comment: str) -> None:
    """Someone else's link, or an old one: nothing changes; staff see it on the ticket."""
    token, t = ctx.token, ctx.ticket
    if token.old:
        why = (f"a '{token.action}' link in the old form, bound to no resolution (made before an upgrade): "
               "nothing changed; the requester may reply or use the links of a newer mail")
    else:
        why = (f"a '{token.action}' link made for {ctx.token_rcpt} was sent by "
               f"{ctx.sender or 'an ambiguous sender'}: nothing changed")
    ctx.message = Message.create(
        ticket=t, inbound=ctx.inbound, direction="in", message_id=ctx.mail.message_id,
        from_addr=ctx.sender or ctx.inbound.from_addr, from_name="", subject=ctx.mail.subject,
        body=comment, internal=True, kind="click-refused", created_at=ctx.now,
    )
    ctx.event("click-refused", why, actor=ctx.sender or ctx.inbound.from_addr or "unknown")
    raise Discard("ignored", why)


def _show_comment(ctx: Context, comment: str) -> None:
    if not comment or ctx.ticket is None:
        return
    for rcpt in routing.staff_recipients(ctx.rt, ctx.ticket):
        ctx.send("requester_reply", rcpt, ticket=ctx.ticket, from_name=ctx.sender,
                 context={"message": ctx.message, "body": comment, **attribution(ctx)})
