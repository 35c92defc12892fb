"""Which inbound mail was written by a machine, and what a bounce is about.

The desk never answers automatic mail (docs/mail.md, automatic mail; RFC 3834 section 2). This module
decides, from one parsed message, whether a mail is automatic and of which kind, and for bounces
which outgoing mail and which recipient they report. It is pure: no database, no network, no
clock. It works on the ``compat32`` message tree that the parse stage builds once::

    import email, email.policy
    from maildesk.mailin import automatic

    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    verdict = automatic.classify(msg, desk_addresses=["helpdesk@example.test"])
    if verdict is None:
        ...                                   # a person wrote it: thread it, acknowledge it
    elif verdict.kind in ("bounce", "delay"):
        verp = verp.verp_pattern("{local}+bounce-{id}@{domain}", "helpdesk", "example.test")
        info = automatic.bounce_info(msg, verp=verp)
        # info.verp_ids name the outbox rows; info.original_message_ids the stored Message-IDs;
        # info.recipients the addresses that failed (or were only delayed: info.action).
        automatic.verp_addresses(msg, verp)   # ((outbox id, signature or ""), ...) to verify
    elif verdict.kind == "complaint":
        automatic.complaint_recipients(msg)   # who pressed "this is spam"
    log.info("automatic kind=%s reason=%s", verdict.kind, verdict.reason)

``classify`` runs the steps of ``STEPS`` in order and the first that recognises the mail wins,
so the most specific kind is reported: a delivery report that also carries ``Auto-Submitted``
and mailing-list headers is a "bounce", not "auto-generated" or "list".

``is_out_of_office`` is separate: it says whether an automatic reply announces that the person
is away, which the desk uses to mark a technician absent.

Costs: mail that a person wrote takes about 0.1 ms (header checks only; addresses are parsed
only when a cheap search says they may matter). Only mail that looks like a bounce (sender is
a mailer daemon, subject is a failure notice, ``multipart/report``, ``Return-Path: <>``,
``X-Failed-Recipients``) is handed to ``flufl.bounce``, and then only a trimmed copy whose
attachments and returned original have no body: its heuristics read every line of every part
and take seconds on a bounce that returns a large attachment. A bounce costs 0.5 to 10 ms,
and ``bounce_info`` does that work again.
"""

from .bounces import complaint_recipients, verp_addresses
from .steps import bounce_info, classify, classify_for_desk, is_out_of_office
from .view import KINDS, BounceInfo, Verdict

__all__ = ["KINDS", "BounceInfo", "Verdict", "bounce_info", "classify", "classify_for_desk", "complaint_recipients",
           "is_out_of_office", "verp_addresses"]
