"""One-click links: confirm, reject, survey ratings, "this solved it".
"""

from __future__ import annotations

from ...desk import kb, lifecycle, resolution, survey
from ..context import Context, Discard


def _one_click(ctx: Context) -> None:
    action, _ = ctx.token
    t = ctx.ticket
    who = ctx.sender
    if action.startswith("rate"):
        survey.record_answer(ctx.rt, t, int(action[4:]), None, ctx.now, who, "one-click link", ctx.inbound)
        raise Discard("survey", f"survey rating {action[4:]} by link")
    if action.startswith(kb.ACTION):
        number = int(action[len(kb.ACTION):])
        try:
            kb.take(ctx.rt, t, number, who, ctx.now, ctx.inbound)
        except kb.NotTaken as e:
            raise Discard("ignored", f"'this solved it' link: {e}; nothing changed") from None
        raise Discard("self-service", f"the requester resolved {ctx.ref} with {kb.ref(number)} (one-click link)")
    if action == "fixed":
        if t.status == "resolved":
            resolution.close_ticket(ctx.rt, t, ctx.now, who, "confirmed fixed by the requester (one-click link)", ctx.inbound)
            raise Discard("confirmed", "the requester confirmed the resolution")
        ctx.decide(f"'fixed' link on a {t.status} ticket: nothing to confirm")
        raise Discard("ignored", f"'fixed' link, but {ctx.ref} is {t.status}")
    if action == "notfixed":
        if t.status in ("resolved", "closed") and lifecycle.within_reopen_window(ctx.rt, t, ctx.now):
            resolution.reopen_ticket(ctx.rt, t, ctx.now, who, "the requester says it is not fixed (one-click link)", ctx.inbound)
            raise Discard("reopened", "the requester rejected the resolution")
        raise Discard("ignored", f"'not fixed' link, but {ctx.ref} is {t.status}"
                      + (" and past the reopen window" if t.status in ("resolved", "closed") else ""))
