"""One-click links: `mailto:` links to the desk whose subject carries a signed token
(mail scanners that follow web links cannot trigger them). Used by the resolution
mail (confirm, reject) and the survey (ratings).

A link is made for one recipient (the requester: docs/mail.md, "One-click
links") and bound to the resolution it answers, `about` = the ticket's
`reopen_count` when it was resolved: a reopening makes every older link stale.
`judge_click` decides, without I/O, what a click by its own recipient does:

    confirm   closes while that resolution stands (the ticket resolved, not reopened since)
    reject    reopens while it stands and the reopen window is open; after the window
              it opens a follow-up ticket; once a newer resolution exists, nothing
    rating    valid for RATING_VALID after the survey was sent
"""

from __future__ import annotations

import datetime as dt
import urllib.parse
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .. import signing
from ..store import Ticket

if TYPE_CHECKING:
    from ..service.runtime import Runtime


RATING_VALID = dt.timedelta(days=30)
# the body a link's mail starts with; what the person writes above it is their comment
MAILTO_BODY = "Just send this mail; you can add a comment above this line."


def resolution_of(ticket: Ticket) -> str:
    """What a link made now is bound to: the ticket's current resolution."""
    return str(ticket.reopen_count or 0)


def mailto(rt: Runtime, action: str, ticket: Ticket, rcpt: str, label: str) -> str:
    """A one-click link for `rcpt` alone: a mail to the desk whose subject carries a
    token signed for `rcpt` and bound to the ticket's current resolution."""
    token = signing.make_token(rt.key, action, ticket.id, rcpt, resolution_of(ticket))
    subject = f"{rt.tag(ticket)} {label} ({token})"
    address = rt.cfg.address_of(ticket.mailbox)  # the mailbox of the ticket, which the desk reads
    return (f"mailto:{address}?subject={urllib.parse.quote(subject)}"
            f"&body={urllib.parse.quote(MAILTO_BODY)}")


def click_comment(text: str) -> str:
    """What the person wrote in a link's mail: the text above the prepared line."""
    head, found, _ = (text or "").partition(MAILTO_BODY)
    return head.strip() if found else (text or "").strip()


@dataclass(frozen=True)
class ClickVerdict:
    act: str  # close | reopen | follow-up | rate | nothing
    why: str


def judge_click(ticket: Ticket, token: signing.Token, now: dt.datetime, reopen_window: dt.timedelta,
                survey_sent_at: dt.datetime | None) -> ClickVerdict:
    """What a valid click by the link's own recipient does (pure: the caller reads the
    survey's sending time)."""
    action, status = token.action, ticket.status
    stands = token.about == resolution_of(ticket)
    if action.startswith("rate"):
        if survey_sent_at is None:
            return ClickVerdict("nothing", "no survey was sent for this ticket")
        if now - survey_sent_at > RATING_VALID:
            return ClickVerdict("nothing", f"the rating link expired (valid {RATING_VALID.days} days after the survey)")
        return ClickVerdict("rate", f"rating {action[4:]} by link")
    if not stands:
        return ClickVerdict("nothing", "the resolution this link answers no longer stands "
                                       "(the ticket was reopened since)")
    if action == "fixed":
        if status != "resolved":
            return ClickVerdict("nothing", f"the ticket is {status}: nothing to confirm")
        return ClickVerdict("close", "the requester confirmed the resolution")
    if status not in ("resolved", "closed"):
        return ClickVerdict("nothing", f"the ticket is {status}: nothing to reject")
    since = ticket.resolved_at or ticket.closed_at
    if since is not None and now - since <= reopen_window:
        return ClickVerdict("reopen", "the requester says it is not fixed")
    return ClickVerdict("follow-up", "the requester says it is not fixed, after the reopen window")
