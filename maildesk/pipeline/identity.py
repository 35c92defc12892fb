"""Stage 5: who wrote this, what are they to the ticket, and can we believe it.

A sender counts as authenticated (DESIGN section 4; guarantee 5) when both hold:

- the topmost `Authentication-Results` header whose authserv-id is in
  `security.trusted_authserv_ids` says `dmarc=pass`, or `dkim=pass` with a
  `header.d` aligned to the From domain; or `security.trust_sender_address = true`
  (an internal relay that already vouches for From);
- the mail answers a desk mail that was sent to this very sender: its
  `In-Reply-To`/`References` carry a desk Message-ID whose HMAC is valid for the
  sender. A desk-domain id with a bad signature is a spoof.

A mail with more than one From address, or none, has no sender at all here.
"""

from __future__ import annotations

import authres

from .. import signing
from ..desk.lifecycle import is_participant
from ..store import Outbox
from .context import Context


def authenticate(ctx: Context) -> None:
    cfg, t, s = ctx.cfg, ctx.ticket, ctx.sender
    ctx.is_staff = bool(s) and cfg.is_staff(s)
    if not s:
        ctx.role = "stranger"
    elif t is not None and s == t.requester:
        ctx.role = "requester"
    elif ctx.is_staff:
        ctx.role = "staff"
    elif t is not None and is_participant(t, s):
        ctx.role = "participant"
    else:
        ctx.role = "stranger"
    if t is None:
        if s and not ctx.automatic:  # what the acknowledgement may offer depends on it (kb, DESIGN section 8)
            ctx.passed_authentication, why = domain_authentication(ctx)
            ctx.decide(f"sender {s} {'passed' if ctx.passed_authentication else 'did not pass'} authentication: {why}")
        return
    ctx.authenticated, ctx.auth_reason = check_sender(ctx)
    ctx.decide(f"sender {s or '(ambiguous)'} is {ctx.role}{' (staff)' if ctx.is_staff and ctx.role != 'staff' else ''}; "
               f"{'authenticated' if ctx.authenticated else 'not authenticated'}: {ctx.auth_reason}")


def check_sender(ctx: Context) -> tuple[bool, str]:
    mail, s = ctx.mail, ctx.sender
    if not s:
        return False, f"the sender is ambiguous ({mail.sender_problem})"
    ok, why = domain_authentication(ctx)
    if not ok:
        return False, why
    signed, sig_why = signed_reference(ctx)
    if not signed:
        return False, sig_why
    return True, f"{why}; {sig_why}"


def domain_authentication(ctx: Context) -> tuple[bool, str]:
    sec = ctx.cfg.security
    if sec.trust_sender_address:
        return True, "security.trust_sender_address is on"
    trusted = {a.lower() for a in sec.trusted_authserv_ids}
    if not trusted:
        return False, "no Authentication-Results can count: security.trusted_authserv_ids is empty"
    from_domain = ctx.sender.rsplit("@", 1)[-1]
    for value in ctx.mail.headers("Authentication-Results"):
        try:
            header = authres.AuthenticationResultsHeader.parse("Authentication-Results: " + value)
        except Exception:  # authres raises several parse error types; a header it cannot read does not count
            continue
        if (header.authserv_id or "").lower() not in trusted:
            continue
        # RFC 8601 5: only the topmost header of a trusted server counts
        for r in header.results:
            if r.method == "dmarc" and r.result == "pass":
                return True, f"dmarc=pass from {header.authserv_id}"
        for r in header.results:
            if r.method == "dkim" and r.result == "pass":
                d = next((p.value for p in r.properties if p.type == "header" and p.name == "d"), "") or ""
                if _aligned(from_domain, d.lower()):
                    return True, f"dkim=pass header.d={d} from {header.authserv_id}"
        summary = ", ".join(f"{r.method}={r.result}" for r in header.results) or "no results"
        return False, f"Authentication-Results from {header.authserv_id} do not pass ({summary})"
    return False, "no Authentication-Results header from a trusted server (security.trusted_authserv_ids)"


def _aligned(from_domain: str, d: str) -> bool:
    """DMARC relaxed alignment, approximated: one domain is the other or a subdomain of it."""
    if not d:
        return False
    return from_domain == d or from_domain.endswith("." + d) or d.endswith("." + from_domain)


def signed_reference(ctx: Context) -> tuple[bool, str]:
    if ctx.token:
        return True, "signed one-click token"
    domain = ctx.cfg.desk.domain
    ids = [i for i in ctx.mail.in_reply_to + ctx.mail.references if signing.is_desk_id(i, domain)]
    for mid in ids:
        if signing.verify_message_id(ctx.rt.key, mid, ctx.sender, domain) is not None:
            return True, f"answers desk mail <{mid}> sent to {ctx.sender}"
    for mid in ids:
        if not Outbox.select().where(Outbox.message_id == mid).exists():
            ctx.spoofed_reference = True
            return False, f"<{mid}> claims to be desk mail but its signature is wrong (spoofed)"
    if ids:
        return False, f"the desk mail it answers was not sent to {ctx.sender}"
    return False, "it answers no desk mail sent to this sender"
