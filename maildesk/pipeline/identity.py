"""Stage 5: who wrote this, what are they to the ticket, and can we believe it.

A sender counts as authenticated (docs/security.md; guarantee 5) when both hold:

- the mail passed authentication (mailin/authentication.py): the topmost
  `Authentication-Results` field, read raw, is from one of
  `security.trusted_authserv_ids` and says `dmarc=pass` with `header.from` equal to
  the From domain, or `dkim=pass` with a `header.d` in the From domain's
  organizational domain; or Microsoft 365's own signals count
  (`security.microsoft365`); or `security.trust_sender_address = true` (an internal
  relay that already vouches for From);
- the mail answers a desk mail that was sent to this very sender: its
  `In-Reply-To`/`References` carry a desk Message-ID whose HMAC is valid for the
  sender. A desk-domain id with a bad signature is a spoof.

A requester-side mail is *verified* (docs/mail.md, "Who a sender is") when any
one holds: the first point above, a valid one-click link made for this sender, or a
desk Message-ID signed for this sender among the ids it cites. Closing a ticket and
adding participants need a verified mail.

A mail with more than one From address, or none, has no sender at all here.
"""

from __future__ import annotations

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
    if s:
        ctx.domain_authenticated, ctx.domain_auth_reason = domain_authentication(ctx)
        ctx.auth_warning = auth_warning(ctx)
    if t is None:
        # a new mail cites no desk mail: its sender's domain authentication is all
        # there is (what #for and the limits of automatic replies go by)
        if s:
            ctx.authenticated, ctx.auth_reason = domain_authentication(ctx)
        return
    ctx.authenticated, ctx.auth_reason = check_sender(ctx)
    ctx.verified, ctx.verified_reason = verify(ctx)
    ctx.decide(f"sender {s or '(ambiguous)'} is {ctx.role}{' (staff)' if ctx.is_staff and ctx.role != 'staff' else ''}; "
               f"{'authenticated' if ctx.authenticated else 'not authenticated'}: {ctx.auth_reason}"
               + ("" if ctx.is_staff else f"; {'verified' if ctx.verified else 'not verified'}: {ctx.verified_reason}"))


def check_sender(ctx: Context) -> tuple[bool, str]:
    mail, s = ctx.mail, ctx.sender
    if not s:
        return False, f"the sender is ambiguous ({mail.sender_problem})"
    ok, why = ctx.domain_authenticated, ctx.domain_auth_reason
    if not ok:
        return False, why
    signed, sig_why = signed_reference(ctx)
    if not signed and ctx.is_staff and ctx.how.startswith("subject tag") and not ctx.spoofed_reference \
            and not ctx.mail.in_reply_to and not ctx.mail.references:
        # staff may address a ticket by its tag in a new mail (an incident manager told to
        # #link a ticket he was never mailed about); its commands run on its sender's
        # domain authentication alone (docs/mail.md, Commands)
        return True, f"{why}; a new mail from staff that names the ticket by its subject tag"
    if not signed:
        return False, sig_why
    return True, f"{why}; {sig_why}"


def verify(ctx: Context) -> tuple[bool, str]:
    """Whether a requester-side mail is verified, and why (see the module docstring)."""
    if not ctx.sender:
        return False, f"the sender is ambiguous ({ctx.mail.sender_problem})"
    if ctx.domain_authenticated:
        return True, ctx.domain_auth_reason
    signed, why = signed_reference(ctx)
    if signed:
        return True, why
    return False, f"{ctx.domain_auth_reason}; {why}"


def auth_warning(ctx: Context) -> str:
    """What staff should be told about a requester-side mail that failed
    authentication, when the desk has trusted servers to ask; "" otherwise."""
    if not ctx.cfg.security.trusted_authserv_ids or ctx.domain_authenticated or not ctx.sender:
        return ""
    return f"this mail failed authentication: {ctx.domain_auth_reason}"


def domain_authentication(ctx: Context) -> tuple[bool, str]:
    """The mail passed authentication (mailin/authentication.py): only the topmost
    Authentication-Results counts, read raw, from a trusted server."""
    result = ctx.passed_authentication()
    return result.passed, result.reason


def signed_reference(ctx: Context) -> tuple[bool, str]:
    if ctx.token and not ctx.token.old and ctx.sender == ctx.token_rcpt:
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
