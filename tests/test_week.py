"""Issue 13's week at the desk, played end to end through the real Dovecot and SMTP sink
with `run --once --now`: incidents from several requesters, technicians' commands by
reply, clicks on one-click links, surveys, a major incident with three children, a
priority raise, an escalation, a five-day outage of the daemon, the weekly report to the
process owner. Every step asserts who received which mail, and that nobody else did;
at the end the KPIs of `report --json` are recomputed from `tickets show --json`."""

from __future__ import annotations

import datetime as dt
import json
import os

from tests.builders import mail, mailto_links, reply_to
from tests.test_life_rules import POLICIES

REQUESTERS = {"jane@example.org", "tom@example.org", "sam@example.org", "lisa@example.org",
              "ann@example.org", "ben@example.org", "cid@example.org", "uma@example.org"}


def at(day: int, hhmm: str) -> str:
    """A moment of the week: `day` of November/December 2026 (30 is Monday 30 November)."""
    month = 11 if day == 30 else 12
    return f"2026-{month:02d}-{day:02d}T{hhmm}:00+01:00"


class Week:
    """The desk and what it has sent so far: each step returns only the new mails."""

    def __init__(self, desk):
        self.desk, self.seen = desk, 0

    def step(self, now: str) -> list:
        self.desk.run(now=now)
        return self.new()

    def new(self) -> list:
        msgs = list(self.desk.smtp.messages)
        fresh, self.seen = msgs[self.seen:], len(msgs)
        if os.environ.get("WEEK_SHOW"):
            for m in fresh:
                print(f"  -> {sorted(m.rcpts)} {m.subject!r}")
        return fresh

    def write(self, raw: bytes, now: str) -> list:
        self.desk.deliver(raw)
        return self.step(now)

    def click(self, captured, label: str, frm: str, comment: str, now: str) -> list:
        subject = next(s for _, s, _ in mailto_links(captured.text) if label in s)
        return self.write(mail(frm, subject, comment + "\n\nJust send this mail; you can add a comment above this line."), now)


def got(mails) -> list[tuple[str, str]]:
    """(recipient, subject) of each mail, sorted: who received what."""
    return sorted((r, m.subject) for m in mails for r in m.rcpts)


def test_a_week_at_the_desk(desk):
    desk.write_config(
        sla=POLICIES,
        business_hours={"holidays_country": "DE", "holidays": ["2026-12-03"]},  # Thursday: a local holiday
        roles={"incident_managers": ["im@example.test"], "process_owners": ["owner@example.test"]},
        reports={"weekly": "mon 08:00"},
    )
    w = Week(desk)
    A, B, C, IM = "alice@example.test", "bob@example.test", "carol@example.test", "im@example.test"
    # --- Monday 30 November: three requesters write in ---
    assert got(w.write(mail("Jane Doe <jane@example.org>", "Printer jam", "The printer in room 4 is jammed."),
                       at(30, "09:00"))) == [(A, "[INC-1] Assigned to you: Printer jam"),
                                             ("jane@example.org", "[INC-1] Printer jam")]
    assert got(w.write(mail("Tom <tom@example.org>", "Laptop does not boot", "Black screen since this morning."),
                       at(30, "09:05"))) == [(B, "[INC-2] Assigned to you: Laptop does not boot"),
                                             ("tom@example.org", "[INC-2] Laptop does not boot")]
    assert got(w.write(mail("Sam <sam@example.org>", "Laptop screen flickers", "The screen flickers every minute."),
                       at(30, "09:06"))) == [(A, "[INC-3] Assigned to you: Laptop screen flickers"),
                                             ("sam@example.org", "[INC-3] Laptop screen flickers")]
    n1 = desk.sent(to=A, subject_has="[INC-1]")[-1]
    n2 = desk.sent(to=B, subject_has="[INC-2]")[-1]
    assert got(w.write(reply_to(n1, A, "#status in-progress\nI will be with you within the hour."), at(30, "09:20"))) == [
        ("jane@example.org", "Re: [INC-1] Printer jam")]
    assert got(w.write(reply_to(n2, B, "#status in-progress\nPlease bring it to room 12."), at(30, "09:30"))) == [
        ("tom@example.org", "Re: [INC-2] Laptop does not boot")]
    assert w.write(reply_to(n1, A, "#task Replace the drum\n#note\nThe drum is worn."), at(30, "09:40")) == []
    # nobody answers sam: the reminder at 75% of the response target, then the escalation
    (reminder,) = w.step(at(30, "09:55"))
    assert got([reminder]) == [(A, "[INC-3] Reminder: response due Mon 30 Nov 2026 10:06 CET")]
    assert "The screen flickers every minute." in reminder.text
    escalated = w.step(at(30, "10:10"))
    assert got(escalated) == [(A, "[INC-3] Escalated: Laptop screen flickers"),
                              (C, "[INC-3] Escalated to you: Laptop screen flickers")]
    esc3 = next(m for m in escalated if C in m.rcpts)
    assert "The screen flickers every minute." in esc3.text
    # the wrap-up in one mail: the task done, then the resolution
    (res1,) = w.write(reply_to(n1, A, "#done 1\n#resolve fixed\nNew drum fitted."), at(30, "10:30"))
    assert got([res1]) == [("jane@example.org", "Re: [INC-1] Resolved: Printer jam")]
    assert "New drum fitted." in res1.text
    (survey1,) = w.click(res1, "Yes, it is fixed", "jane@example.org", "", at(30, "10:45"))
    assert got([survey1]) == [("jane@example.org", "[INC-1] How did we do? Printer jam")]
    assert got(w.click(survey1, "Rating 5", "jane@example.org", "Quick and friendly.", at(30, "11:00"))) == [
        (A, "Re: [INC-1] Printer jam"), ("jane@example.org", "Re: [INC-1] Thank you for your rating")]
    # the hierarchical level of INC-3's response target: the manager of the group that missed it
    # a priority raise on an old ticket: its resolution target (now 11:05) is missed at the change, silently
    assert got(w.write(reply_to(n2, B, "#priority high\n#note\nThe CEO's assistant: raise it."), at(30, "11:10"))) == [
        (IM, "[INC-3] ESCALATION: response target 1h 4m late: Laptop screen flickers"),
        ("lead@example.test", "[INC-3] ESCALATION: response target 1h 4m late: Laptop screen flickers")]
    assert w.step(at(30, "11:11")) == []
    t2 = desk.ticket("INC-2")
    assert t2["priority"] == "high" and t2["assignee"] == B and t2["resolution_due"] == at(30, "11:05")
    assert any(e["kind"] == "sla-missed" and "resolution target missed at the change" in e["detail"] for e in t2["events"])
    esc3 = desk.sent(to=C, subject_has="[INC-3]")[-1]
    assert got(w.write(reply_to(esc3, C, "#resolve workaround\nUse the docking station's screen until the new panel comes."),
                       at(30, "11:30"))) == [("sam@example.org", "Re: [INC-3] Resolved: Laptop screen flickers")]
    assert w.write(reply_to(n2, B, "#note\nOrdered a new SSD."), at(30, "12:00")) == []
    assert got(w.write(reply_to(n2, B, "#resolve fixed\nNew SSD fitted, your files are back."), at(30, "12:30"))) == [
        ("tom@example.org", "Re: [INC-2] Resolved: Laptop does not boot")]
    assert w.step(at(30, "17:00")) == []
    # --- Tuesday 1 December: the mail server is down, a major incident with three children ---
    assert got(w.write(mail("Lisa <lisa@example.org>", "Mail is down", "Mail is down for everyone in our office."),
                       at(1, "09:00"))) == [(B, "[INC-4] Assigned to you: Mail is down"),
                                          ("lisa@example.org", "[INC-4] Mail is down")]
    assert desk.ticket("INC-4")["priority"] == "critical"
    n4 = desk.sent(to=B, subject_has="[INC-4]")[-1]
    assert got(w.write(reply_to(n4, B, "#major\n#status in-progress\nWe are on it."), at(1, "09:05"))) == [
        (IM, "[INC-4] MAJOR INCIDENT: Mail is down"), ("lisa@example.org", "Re: [INC-4] Mail is down")]
    for who in ("ann", "ben", "cid"):
        desk.deliver(mail(f"{who.title()} <{who}@example.org>", "cannot send mail",
                          f"Outlook says the server is unavailable. ({who}'s desk)"))
    assert got(w.step(at(1, "09:10"))) == [
        (A, "[INC-5] Assigned to you: cannot send mail"), (A, "[INC-7] Assigned to you: cannot send mail"),
        ("ann@example.org", "[INC-5] cannot send mail"), ("ben@example.org", "[INC-6] cannot send mail"),
        (B, "[INC-6] Assigned to you: cannot send mail"), ("cid@example.org", "[INC-7] cannot send mail")]
    # the incident manager links by subject tag in a new mail; bob by replying to his notice
    assert got(w.write(mail(IM, "[INC-5] cannot send mail", "#link INC-4"), at(1, "09:15"))) == [
        ("ann@example.org", "[INC-5] Part of a wider incident: cannot send mail")]
    n6 = desk.sent(to=B, subject_has="[INC-6]")[-1]
    assert got(w.write(reply_to(n6, B, "#link INC-4"), at(1, "09:16"))) == [
        ("ben@example.org", "[INC-6] Part of a wider incident: cannot send mail")]
    assert got(w.write(mail(IM, "[INC-7] cannot send mail", "#link INC-4"), at(1, "09:17"))) == [
        ("cid@example.org", "[INC-7] Part of a wider incident: cannot send mail")]
    assert [desk.ticket(f"INC-{n}")["parent"] for n in (5, 6, 7)] == ["INC-4"] * 3
    assert w.step(at(1, "11:00")) == []  # the children's own targets (10:10) are held: no reminder, no escalation
    resolved = w.write(reply_to(n4, B, "#resolve fixed\nThe mail server is back."), at(1, "11:30"))
    assert got(resolved) == [("ann@example.org", "Re: [INC-5] Resolved: cannot send mail"),
                             ("ben@example.org", "Re: [INC-6] Resolved: cannot send mail"),
                             ("cid@example.org", "Re: [INC-7] Resolved: cannot send mail"),
                             ("lisa@example.org", "Re: [INC-4] Resolved: Mail is down")]
    res = {m.rcpts[0].split("@")[0]: m for m in resolved}
    tokens = {who: {s for _, s, _ in mailto_links(m.text)} for who, m in res.items()}
    for who, m in res.items():  # each their own conversation and their own links
        others = [o for o in res if o != who]
        assert not any(f"{o}@example.org" in m.text or f"({o}'s desk)" in m.text for o in others), who
        assert tokens[who] and not any(tokens[who] & tokens[o] for o in others), who
    (survey5,) = w.click(res["ann"], "Yes, it is fixed", "ann@example.org", "", at(1, "11:45"))
    assert got([survey5]) == [("ann@example.org", "[INC-5] How did we do? cannot send mail")]
    assert w.write(reply_to(survey5, "ann@example.org", "Great service, very quick!"), at(1, "12:00")) == []
    (reopened,) = w.click(res["ben"], "No, it is not fixed", "ben@example.org", "Still cannot send from my phone.",
                          at(1, "12:05"))
    assert got([reopened]) == [(B, "[INC-6] Reopened: cannot send mail")]
    assert "Still cannot send from my phone." in reopened.text
    assert got(w.click(res["lisa"], "Yes, it is fixed", "lisa@example.org", "", at(1, "12:10"))) == [
        (IM, "[INC-4] Post-incident review: Mail is down"), ("lisa@example.org", "[INC-4] How did we do? Mail is down")]
    t6 = desk.ticket("INC-6")
    assert t6["status"] == "open" and t6["reopen_count"] == 1
    assert any("Still cannot send from my phone." in (m["body"] or "") for m in t6["messages"])
    assert got(w.write(reply_to(n6, B, "#resolve workaround\nRemove the account from the phone and add it again."),
                       at(1, "13:00"))) == [("ben@example.org", "Re: [INC-6] Resolved: cannot send mail")]
    # --- Wednesday 2 December; Thursday is a holiday; the daemon is down from Wednesday to Monday ---
    assert got(w.write(mail("Uma <uma@example.org>", "VPN is slow", "The VPN drops every few minutes."), at(2, "10:00"))) == [
        (C, "[INC-8] Assigned to you: VPN is slow"), ("uma@example.org", "[INC-8] VPN is slow")]
    t8 = desk.ticket("INC-8")
    assert (t8["response_due"], t8["resolution_due"]) == (at(2, "11:00"), at(4, "10:00"))  # 8 business hours
    back = w.step(at(7, "10:30"))  # five days later: only the latest mark of each target
    assert got(back) == sorted([  # carol holds INC-8 and nobody else is in network: no "escalated to you"
        (IM, "[INC-8] ESCALATION: resolution target 3d 30m late: VPN is slow"),
        (IM, "[INC-8] ESCALATION: response target 4d 23h 30m late: VPN is slow"),
        ("ben@example.org", "[INC-6] How did we do? cannot send mail"),
        ("cid@example.org", "[INC-7] How did we do? cannot send mail"),
        ("netlead@example.test", "[INC-8] ESCALATION: resolution target 3d 30m late: VPN is slow"),
        ("netlead@example.test", "[INC-8] ESCALATION: response target 4d 23h 30m late: VPN is slow"),
        ("owner@example.test", "KPI report, week of 30 Nov 2026"),
        ("sam@example.org", "[INC-3] How did we do? Laptop screen flickers"),
        ("tom@example.org", "[INC-2] How did we do? Laptop does not boot")])
    assert not [m for m in back if "Reminder" in m.subject]
    report_mail = next(m for m in back if "owner@example.test" in m.rcpts)
    assert "Tickets opened 8" in report_mail.text
    html = report_mail.message.get_body(preferencelist=("html",)).get_content()
    assert "<table" in html and "Tickets opened 8" in html
    assert w.step(at(7, "11:00")) == []

    # --- nobody got what was not theirs ---
    mine = {t["requester"]: set() for t in desk.tickets()}
    for t in desk.tickets():
        mine[t["requester"]].add(t["ref"])
    for m in desk.smtp.messages:
        for r in m.rcpts:
            if r in REQUESTERS:
                assert all(word not in m.subject for word in ("Assigned", "Reminder", "Escalat", "ESCALATION", "MAJOR",
                                                               "review", "KPI", "Reopened")), (r, m.subject)
                assert any(f"[{ref}]" in m.subject for ref in mine[r]), (r, m.subject)
                for note in ("The drum is worn.", "Ordered a new SSD.", "raise it"):  # notes stay with staff
                    assert note not in m.text, (r, m.subject)
    assert {r for m in desk.smtp.messages for r in m.rcpts} == REQUESTERS | {
        A, B, C, IM, "lead@example.test", "netlead@example.test", "owner@example.test"}
    if os.environ.get("WEEK_SHOW"):
        for m in (reminder, esc3, res["ann"]):
            print(f"\n===== To: {', '.join(m.rcpts)}\nSubject: {m.subject}\n\n{m.text}")

    # --- the report, recomputed from the tickets ---
    now = at(7, "11:00")
    report = json.loads(desk.cli("report", "--since", "2026-11-30", "--until", "2026-12-06", "--now", now, "--json")[1])
    check_report(desk, report, now)


def check_report(desk, report: dict, now: str) -> None:
    """The KPIs of `report` that follow from ticket fields, recomputed from `tickets show --json`."""
    when = dt.datetime.fromisoformat
    tickets = [desk.ticket(t["ref"]) for t in desk.tickets()]
    tickets = [t for t in tickets if when(at(30, "00:00")) <= when(t["created_at"]) < when(at(7, "00:00"))]
    resolved = [t for t in tickets if t["resolved_at"] or t["status"] in ("resolved", "closed")]
    active = ("new", "open", "in-progress", "on-hold")

    def compliance(done: str, due: str) -> float | None:
        met = missed = 0
        for t in tickets:
            if t[due] is None:
                continue
            if t[done] is not None:
                met, missed = met + (when(t[done]) <= when(t[due])), missed + (when(t[done]) > when(t[due]))
            else:
                missed += when(now) > when(t[due]) and t["status"] in active
        return round(met / (met + missed), 3) if met + missed else None

    assert report["opened"] == len(tickets) == 8
    assert report["resolved"] == len(resolved) == 7
    assert report["closed"] == sum(t["status"] == "closed" for t in tickets) == 7
    o = report["overall"]
    assert o["tickets"] == 8
    assert o["sla_response_compliance"] == compliance("first_response_at", "response_due")
    assert o["sla_resolution_compliance"] == compliance("resolved_at", "resolution_due")
    assert o["reopen_rate"] == round(sum(t["reopen_count"] > 0 for t in tickets) / len(resolved), 3)
    surveyed = [t for t in tickets if t.get("survey")]
    assert o["surveys_sent"] == len(surveyed)
    rated = [t["survey"]["rating"] for t in surveyed if t["survey"]["rating"] is not None]
    assert o["survey_response_rate"] == round(len(rated) / len(surveyed), 3)
    assert o["survey_mean_rating"] == round(sum(rated) / len(rated), 2) == 5.0
