"""One-click links: `mailto:` links to the desk whose subject carries a signed token
(mail scanners that follow web links cannot trigger them). Used by the resolution
mail (confirm, reject) and the survey (ratings).
"""

from __future__ import annotations

import urllib.parse
from typing import TYPE_CHECKING

from .. import signing
from ..store import Ticket

if TYPE_CHECKING:
    from ..service.runtime import Runtime


def mailto(rt: Runtime, action: str, ticket: Ticket, rcpt: str, label: str) -> str:
    """A one-click link: a mail to the desk whose subject carries a signed token."""
    token = signing.make_token(rt.key, action, ticket.id, rcpt)
    subject = f"{rt.tag(ticket)} {label} ({token})"
    body = "Just send this mail; you can add a comment above this line."
    address = rt.cfg.address_of(ticket.mailbox)  # the mailbox of the ticket, which the desk reads
    return f"mailto:{address}?subject={urllib.parse.quote(subject)}&body={urllib.parse.quote(body)}"
