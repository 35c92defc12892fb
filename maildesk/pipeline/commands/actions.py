"""What each command does to the ticket.
"""

from __future__ import annotations

from ...desk import escalation, kb, kbsearch, lifecycle, resolution, routing, sla
from ...desk.conversation import history, requester_words
from ...store import Task, Ticket
from ...vocab import ACTIVE
from ..messages import attribution
from .readers import CommandError

# --- what each command does ----------------------------------------------------------


def _run_assign(ctx, tech):
    t = ctx.ticket
    lifecycle.assign(ctx.rt, t, tech.email, ctx.now, ctx.sender, "#assign", ctx.inbound)
    if tech.email != ctx.sender:
        ctx.send("assigned", tech.email, rcpt_name=tech.display_name, ticket=t,
                 context={"by": ctx.sender, "words": requester_words(t)})


def _run_group(ctx, group):
    t = ctx.ticket
    lifecycle.set_group(t, group, ctx.now, ctx.sender, "#group", ctx.inbound)
    tech = ctx.cfg.technician(t.assignee)
    if t.assignee and (tech is None or group not in tech.groups):
        chosen, how = routing.pick_assignee(ctx.rt, group, ctx.now)
        lifecycle.assign(ctx.rt, t, chosen.email if chosen else None, ctx.now, ctx.sender, how, ctx.inbound)
        for rcpt in ([chosen.email] if chosen else [m.email for m in ctx.cfg.members(group)]):
            if rcpt != ctx.sender:
                ctx.send("assigned", rcpt, ticket=t, context={"by": ctx.sender, "words": requester_words(t)})


def _run_status(ctx, status):
    t = ctx.ticket
    was = t.status
    try:
        lifecycle.change_status(ctx.rt, t, status, ctx.now, ctx.sender, "#status", ctx.inbound)
    except lifecycle.NotAllowed as e:
        raise CommandError(str(e)) from None
    if status == "on-hold" and was != "on-hold":
        # the requester hears of it whatever mail the technician answered; the
        # technician's own words go with it only when the reply is for the requester
        text = "" if ctx.internal else ctx.body
        ctx.body = ""  # said in the on-hold mail: not relayed a second time
        ctx.send("on_hold", t.requester, rcpt_name=t.requester_name, ticket=t, from_name=_name(ctx) if text else None,
                 context={"text": text, "by": _name(ctx) if text else ""})


def _run_priority(ctx, priority):
    t = ctx.ticket
    old = t.priority
    t.priority, t.priority_set = priority, True
    ctx.event("priority", f"{old} -> {priority} (set by #priority; the matrix no longer applies)")
    _recompute_sla(ctx)


def _run_level(which):
    def run(ctx, level):
        t = ctx.ticket
        old = getattr(t, which)
        setattr(t, which, level)
        detail = f"{which} {old} -> {level} (#{which})"
        if not t.priority_set:
            new = ctx.cfg.priority.matrix[t.impact][t.urgency]
            if new != t.priority:
                detail += f"; priority {t.priority} -> {new} (matrix: impact {t.impact} x urgency {t.urgency})"
                t.priority = new
        ctx.event("priority", detail)
        _recompute_sla(ctx)

    return run


def _recompute_sla(ctx):
    sla.retarget(ctx.rt, ctx.ticket, ctx.now, ctx.sender, "changed by " + ctx.sender, ctx.inbound)


def _run_category(ctx, name):
    t = ctx.ticket
    old = t.category
    t.category = name
    ctx.event("category", f"{old} -> {name} (#category)")
    _recompute_sla(ctx)


def _run_resolve(ctx, code):
    text = ctx.body
    if ctx.internal:
        # a #note, or a reply to a staff-only mail: the requester hears of the resolution
        # in the template's words; the technician's stay on the ticket as the internal note
        text = ""
    else:
        ctx.body = ""  # the rest of the mail is the resolution, sent by the resolution mail
    resolution.resolve_ticket(ctx.rt, ctx.ticket, code, text, ctx.now, ctx.sender, ctx.inbound, by_name=_name(ctx))


def _run_note(ctx, _):
    ctx.internal = True


def _run_public(ctx, _):
    """Decided before the block runs (stage.apply): only as the first line."""


def _run_task(ctx, value):
    title, tech = value
    t = ctx.ticket
    n = (Task.select(Task.number).where(Task.ticket == t).order_by(Task.number.desc()).scalar() or 0) + 1
    task = Task.create(ticket=t, number=n, title=title, assignee=tech.email if tech else None, created_at=ctx.now)
    ctx.event("task-added", f"task {n}: {title}" + (f" (for {tech.display_name})" if tech else ""))
    if tech and tech.email != ctx.sender:
        ctx.send("task_assigned", tech.email, rcpt_name=tech.display_name, ticket=t,
                 context={"task": task, "by": ctx.sender, "words": requester_words(t)})


def _run_done(ctx, task):
    task.done, task.done_at = True, ctx.now
    task.save()
    ctx.event("task-done", f"task {task.number} done: {task.title}")


def _run_escalate(ctx, group):
    escalation.escalate(ctx.rt, ctx.ticket, ctx.now, ctx.sender, "#escalate", to_group=group, inbound=ctx.inbound)


def _run_major(ctx, _):
    t = ctx.ticket
    if t.is_major:
        raise CommandError(f"{ctx.ref} is already a major incident")
    t.is_major = True
    old = t.priority
    t.priority, t.priority_set = "critical", True
    ctx.event("major", f"declared a major incident; priority {old} -> critical")
    _recompute_sla(ctx)
    for im in ctx.cfg.roles.incident_managers:
        ctx.send("major_declared", im, ticket=t, context={"by": ctx.sender})


def _run_link(ctx, parent):
    t = ctx.ticket
    t.parent = parent
    ctx.event("linked", f"child of major incident {ctx.rt.ref(parent)}; its own SLA clock is held while that is worked")
    ctx.event("linked", f"{ctx.ref} linked as a child", ticket=parent)
    # telling the requester that the wider incident is being worked is the first response
    sla.record_first_response(ctx.rt, t, ctx.now, f"link to major incident {ctx.rt.ref(parent)}", ctx.sender,
                              ctx.inbound)
    sla.refresh(ctx.rt, t)
    ctx.send("linked", t.requester, rcpt_name=t.requester_name, ticket=t,
             context={"parent": parent, "parent_ref": ctx.rt.ref(parent)})


def _run_history(ctx, _):
    """The conversation so far, internal notes included, to the technician alone."""
    ctx.send("history", ctx.sender, rcpt_name=ctx.sender_name, ticket=ctx.ticket,
             context={"entries": history(ctx.ticket)})


def _run_cc(ctx, addr):
    lifecycle.add_participant(ctx.ticket, addr, "cc")
    ctx.event("cc-added", f"{addr} added as a participant")


def _run_close(ctx, _):
    t = ctx.ticket
    if t.status == "resolved":
        resolution.close_ticket(ctx.rt, t, ctx.now, ctx.sender, "confirmed by #close", ctx.inbound)
    else:
        lifecycle.change_status(ctx.rt, t, "cancelled", ctx.now, ctx.sender, "withdrawn with #close", ctx.inbound)
        t.closed_at = ctx.now
        if t.assignee:
            ctx.send("withdrawn", t.assignee, ticket=t, context={"by": ctx.sender})
        ctx.send("cancelled", t.requester, rcpt_name=t.requester_name, ticket=t, context={"by": ctx.sender})


def _run_reopen(ctx, _):
    resolution.reopen_ticket(ctx.rt, ctx.ticket, ctx.now, ctx.sender, "#reopen", ctx.inbound, by=attribution(ctx))


def _name(ctx) -> str:
    """The technician's configured name; never a display name taken from the mail."""
    tech = ctx.cfg.technician(ctx.sender)
    return tech.display_name if tech else ctx.sender


def _run_kb(ctx, value):
    what = value[0]
    if what == "search":
        _send_kb_search(ctx, value[1], ticket=ctx.ticket)
    elif what == "retire":
        kb.retire(ctx.rt, value[1], ctx.now, ctx.sender, ctx.ticket, ctx.inbound)
    else:
        _, title, text, resolving = value
        article = kb.publish(ctx.rt, ctx.ticket, title, text, ctx.now, ctx.sender, ctx.inbound)
        ctx.decide(f"{kb.ref(article.id)} version {article.version} published from {ctx.ref}")
        if not resolving:
            ctx.body = ""  # the text was for the knowledge base, not for the requester


SEARCH_RESULTS = 5


def _send_kb_search(ctx, words: str, ticket: Ticket | None = None, thread=None) -> None:
    """The best articles and resolved tickets for WORDS, in a staff-only mail to the sender."""
    articles = kbsearch.search_articles(ctx.rt, words, "", SEARCH_RESULTS)
    tickets = kbsearch.search_tickets(ctx.rt, words, "", SEARCH_RESULTS)
    ctx.decide(f"#kb search {words[:80]!r}: {len(articles)} article(s), {len(tickets)} resolved ticket(s)")
    ctx.send("kb_search", ctx.sender, rcpt_name=ctx.sender_name, ticket=ticket, thread=thread, context={
        "query": words,
        "articles": [{"ref": kb.ref(m.id), "title": m.title, "text": kb.excerpt(m.text), "score": m.score}
                     for m in articles],
        "tickets": [{"ref": ctx.rt.ref(m.id), "subject": m.title, "resolution": kb.excerpt(m.text), "score": m.score}
                    for m in tickets],
    })


def status_entry(rt, t: Ticket) -> dict:
    """What `#status` tells about one ticket: its state, who has it, when it is due."""
    tech = rt.cfg.technician(t.assignee)
    return {
        "ref": rt.ref(t), "subject": t.subject, "status": t.status, "priority": t.priority, "group": t.group,
        "assignee": tech.display_name if tech else None, "created_at": t.created_at,
        "response_due": t.response_due, "first_response_at": t.first_response_at,
        "resolution_due": t.resolution_due, "resolved_at": t.resolved_at, "closed_at": t.closed_at,
        "on_hold": t.status == "on-hold", "active": t.status in ACTIVE,
    }


def _run_status_query(ctx, _):
    ctx.send("status", ctx.sender, rcpt_name=ctx.sender_name, ticket=ctx.ticket,
             context={"tickets": [status_entry(ctx.rt, ctx.ticket)], "one": True})
