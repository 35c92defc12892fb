"""maildesk.mailin.automatic: which mail is automatic, of what kind, and what a bounce is about."""

import csv
import email
import email.policy
import statistics
import textwrap
import time
from collections import Counter
from email.message import Message

import pytest

from maildesk.mailin.automatic import (
    KINDS,
    BounceInfo,
    Verdict,
    bounce_info,
    classify,
    complaint_recipients,
    is_out_of_office,
)
from maildesk.verp import verp_address, verp_pattern

DESK = ("helpdesk@example.test",)
TEMPLATE = "{local}+bounce-{id}@{domain}"
VERP = verp_pattern(TEMPLATE, "helpdesk", "example.test")


def parse(text: str) -> Message:
    return email.message_from_bytes(textwrap.dedent(text).lstrip().encode(),
                                    policy=email.policy.compat32)


def verdict_of(text: str, **kwargs) -> Verdict | None:
    kwargs.setdefault("desk_addresses", DESK)
    return classify(parse(text), **kwargs)


PERSON = """\
    From: Alice Example <alice@example.net>
    To: IT Service Desk <helpdesk@example.test>
    Subject: Printer on floor 3 is jammed
    Message-ID: <p1@example.net>
    Date: Mon, 2 Mar 2026 09:00:00 +0100
    {extra}

    Hello, the printer on floor 3 has been jammed since this morning.

    Alice
    """


PERSONAL_SUBJECT = "Printer on floor 3 is jammed"
AUTOMATIC_REPLY = "Automatic reply: [INC-42] Printer on floor 3"  # Outlook's subject


def person(extra: str = "", subject: str = PERSONAL_SUBJECT) -> str:
    text = PERSON.replace(PERSONAL_SUBJECT, subject)
    return text.replace("    {extra}\n", "".join(f"    {line}\n" for line in extra.splitlines()))


# The desk's outgoing mail, as a mail server returns it.
ORIGINAL = """\
    Return-Path: <helpdesk+bounce-42@example.test>
    From: IT Service Desk <helpdesk@example.test>
    To: bob@example.net
    Subject: [INC-42] Printer on floor 3
    Message-ID: <inc42.1@example.test>
    Auto-Submitted: auto-replied

    Your request INC-42 has been received.
    """


def dsn(action: str = "failed", status: str = "5.1.1", *, recipients: str | None = None,
        envelope: str = "Delivered-To: helpdesk+bounce-42@example.test",
        to: str = "helpdesk+bounce-42@example.test", headers: str = "",
        subject: str = "Undelivered Mail Returned to Sender", original: str = ORIGINAL) -> str:
    """An RFC 3464 report from Postfix about the desk's mail to bob@example.net."""
    if recipients is None:
        recipients = ("Final-Recipient: rfc822; bob@example.net\n"
                      "Original-Recipient: rfc822;bob@example.net\n"
                      f"Action: {action}\nStatus: {status}\n"
                      f"Diagnostic-Code: smtp; 550 {status} user unknown\n")
    head = ["Return-Path: <>", envelope,
            "From: Mail Delivery System <MAILER-DAEMON@mx.example.net>",
            f"To: {to}", f"Subject: {subject}", "Message-ID: <dsn1@mx.example.net>",
            "Auto-Submitted: auto-replied", *headers.splitlines(), "MIME-Version: 1.0",
            'Content-Type: multipart/report; report-type=delivery-status; boundary="R"']
    return "\n".join(head) + f"""

--R
Content-Description: Notification
Content-Type: text/plain

This is the mail system at host mx.example.net.

<bob@example.net>: host mail.example.net said: 550 5.1.1 user unknown

--R
Content-Description: Delivery report
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.net

{recipients}
--R
Content-Description: Undelivered Message
Content-Type: message/rfc822

{textwrap.dedent(original)}
--R--
"""


# --- mail that a person wrote -------------------------------------------------------------------


@pytest.mark.parametrize("extra, subject", [
    ("", "Printer on floor 3 is jammed"),
    # Outlook puts X-Auto-Response-Suppress on mail that people write.
    ("X-Auto-Response-Suppress: All\nThread-Index: AdQ1b2c3", "Printer on floor 3 is jammed"),
    ("Auto-Submitted: no", "Printer on floor 3 is jammed"),
    # a person reporting a mail problem in the subject
    ("", "Mail delivery failed when I write to our partner"),
    ("", "Undeliverable emails to customers"),
    # an out-of-office subject counts only with Outlook's headers
    ("", "Out of Office: [INC-42] Printer on floor 3"),
], ids=["plain", "outlook-suppress-header", "auto-submitted-no", "mail-problem-subject", "undeliverable-subject",
        "out-of-office-subject-alone"])
def test_mail_a_person_wrote_gets_no_verdict(extra, subject):
    assert verdict_of(person(extra, subject=subject)) is None


def test_forwarded_bounce_from_a_person_is_not_automatic():
    forwarded = textwrap.indent(dsn(), "    ")
    text = f"""\
    From: Alice Example <alice@example.net>
    To: helpdesk@example.test
    Subject: Fwd: Undelivered Mail Returned to Sender
    MIME-Version: 1.0
    Content-Type: multipart/mixed; boundary="F"

    --F
    Content-Type: text/plain

    I keep getting this when I write to Bob, can you help?

    --F
    Content-Type: message/rfc822

{forwarded}
    --F--
    """
    assert verdict_of(text) is None


# --- delivery status notifications and other bounces ---------------------------------------------


@pytest.mark.parametrize("action, status, subject, kind", [
    ("failed", "5.1.1", "Undelivered Mail Returned to Sender", "bounce"),
    ("delayed", "4.4.1", "Delayed Mail (still being retried)", "delay"),  # a delay, not a bounce
    # success reports are auto-generated, not bounces
    ("delivered", "2.0.0", "Successful Mail Delivery Report", "auto-generated"),
    ("relayed", "2.0.0", "Successful Mail Delivery Report", "auto-generated"),
    ("expanded", "2.0.0", "Successful Mail Delivery Report", "auto-generated"),
])
def test_a_dsn_gets_the_verdict_of_its_action_and_bounce_info_only_when_it_failed_or_is_delayed(
        action, status, subject, kind):
    assert verdict_of(dsn(action, status, subject=subject)) == Verdict(
        kind, f"delivery status notification (RFC 3464), action {action}")
    info = bounce_info(parse(dsn(action, status)), verp=VERP)
    assert (info and info.action) == {"bounce": "failed", "delay": "delayed"}.get(kind)


def test_dsn_with_a_failed_and_a_delayed_recipient_is_a_bounce_for_the_failed_one():
    recipients = ("Final-Recipient: rfc822; carol@example.net\nAction: delayed\nStatus: 4.4.1\n\n"
                  "Final-Recipient: rfc822; bob@example.net\nAction: failed\nStatus: 5.1.1\n")
    msg = parse(dsn(recipients=recipients))
    assert classify(msg, desk_addresses=DESK).kind == "bounce"
    assert bounce_info(msg, verp=VERP).recipients == ("bob@example.net",)


def test_dsn_is_a_bounce_even_when_it_carries_auto_submitted_and_list_headers():
    headers = "Precedence: bulk\nList-Id: <users.lists.example.org>"
    assert verdict_of(dsn(headers=headers)).kind == "bounce"


def test_dsn_without_action_uses_the_class_of_the_status_code():
    for status, kind in (("5.1.1", "bounce"), ("4.2.2", "delay")):
        recipients = f"Final-Recipient: rfc822; bob@example.net\nStatus: {status}\n"
        assert verdict_of(dsn(recipients=recipients)).kind == kind


def test_dsn_with_unfolded_diagnostic_lines_is_still_read():
    # Some servers continue Diagnostic-Code on unindented lines, which compat32 takes for a body.
    recipients = ("Diagnostic-Code: smtp; 550-Please turn on SMTP Authentication\n"
                  "550-relay.example.net [192.0.2.1]:25 is not permitted to\n"
                  "550 relay through this server\n"
                  "Status: 5.7.1\nAction: failed\nFinal-Recipient: rfc822; bob@example.net\n")
    info = bounce_info(parse(dsn(recipients=recipients)), verp=VERP)
    assert info.action == "failed" and info.recipients == ("bob@example.net",)
    assert info.diagnostic.startswith("5.7.1 550-Please turn on SMTP Authentication 550-relay")


QMAIL_BOUNCE = """\
    From: MAILER-DAEMON@mx.example.net
    To: helpdesk+bounce-42@example.test
    Subject: failure notice

    Hi. This is the qmail-send program at mx.example.net.
    I'm afraid I wasn't able to deliver your message to the following addresses.
    This is a permanent error; I've given up. Sorry it didn't work out.

    <bob@example.net>:
    Sorry, no mailbox here by that name. (#5.1.1)

    --- Below this line is a copy of the message.

    Return-Path: <helpdesk+bounce-42@example.test>
    From: IT Service Desk <helpdesk@example.test>
    To: bob@example.net
    Subject: [INC-42] Printer on floor 3
    Message-ID: <inc42.1@example.test>

    Your request INC-42 has been received.
    """


def test_qmail_bounce_without_dsn_is_found_by_flufl_bounce():
    assert verdict_of(QMAIL_BOUNCE) == Verdict("bounce", "bounce found by flufl.bounce")
    info = bounce_info(parse(QMAIL_BOUNCE), verp=VERP)
    assert info.recipients == ("bob@example.net",)
    # The original is quoted inline: its Message-ID and envelope sender are read from the text.
    assert info.original_message_ids == ("inc42.1@example.test",)
    assert info.verp_ids == (42,)
    assert info.diagnostic == "Sorry, no mailbox here by that name. (#5.1.1)"


EXIM_BOUNCE = """\
    Return-Path: <>
    Envelope-To: helpdesk+bounce-7@example.test
    From: Mail Delivery System <Mailer-Daemon@mx.example.net>
    To: helpdesk+bounce-7@example.test
    Subject: Mail delivery failed: returning message to sender
    X-Failed-Recipients: Carol@Example.net
    Auto-Submitted: auto-replied

    This message was created automatically by mail delivery software.

    A message that you sent could not be delivered to one or more of its
    recipients. This is a permanent error. The following address(es) failed:

      carol@example.net
        SMTP error from remote mail server after RCPT TO:<carol@example.net>:
        550 5.1.1 User unknown
    """


def test_exim_bounce_names_the_x_failed_recipients():
    assert verdict_of(EXIM_BOUNCE) == Verdict("bounce", "X-Failed-Recipients header (Exim)")
    info = bounce_info(parse(EXIM_BOUNCE), verp=VERP)
    assert info == BounceInfo(action="failed", recipients=("carol@example.net",),
                              original_message_ids=(), verp_ids=(7,),
                              diagnostic="550 5.1.1 User unknown")


EXIM_DELAY = """\
    Return-Path: <>
    From: Mail Delivery System <Mailer-Daemon@mx.example.net>
    To: helpdesk+bounce-9@example.test
    Subject: Warning: message 1abcDE-0001xy-AB delayed 24 hours
    Auto-Submitted: auto-replied

    This message was created automatically by mail delivery software.
    A message that you sent has not yet been delivered to one or more of its
    recipients after more than 24 hours on the queue on mx.example.net.

      dave@example.net
        Delay reason: SMTP error from remote mail server after initial connection:
        host mail.example.net [192.0.2.1]: Connection timed out

    No action is required on your part. Delivery attempts will continue for
    some time, and this warning may be repeated at intervals if the message
    remains undelivered.
    """


def test_exim_delay_warning_is_a_delay_not_a_bounce():
    verdict = verdict_of(EXIM_DELAY)
    assert verdict.kind == "delay"
    assert "delay warning" in verdict.reason
    assert bounce_info(parse(EXIM_DELAY), verp=VERP).action == "delayed"


DELAY_TEXT = """\
    From: Mail Delivery Subsystem <mailer-daemon@googlemail.com>
    To: helpdesk+bounce-3@example.test
    Subject: {subject}

    Delivery to the following recipient has been delayed:

         erin@example.net

    Message will be retried for 2 more day(s)
    """
FAILURE_TEXT = """\
    From: postmaster@mx.example.net
    To: helpdesk+bounce-3@example.test
    Subject: {subject}

    Your message could not be sent.
    """


@pytest.mark.parametrize("text, subject, kind, reason", [
    (DELAY_TEXT, "Delivery Status Notification (Delay)", "delay", "delay warning"),
    (DELAY_TEXT, "Warning: could not send message for past 4 hours", "delay", "delay warning"),
    (DELAY_TEXT, "Delayed Mail (still being retried)", "delay", "delay warning"),
    (FAILURE_TEXT, "Undelivered Mail Returned to Sender", "bounce", "failure notice"),
    (FAILURE_TEXT, "Mail delivery failed", "bounce", "failure notice"),
    (FAILURE_TEXT, "Delivery Status Notification (Failure)", "bounce", "failure notice"),
    (FAILURE_TEXT, "Undeliverable: [INC-42] Printer on floor 3", "bounce", "failure notice"),
    (FAILURE_TEXT, "failure notice", "bounce", "failure notice"),
    (FAILURE_TEXT, "Returned mail: see transcript for details", "bounce", "failure notice"),
])
def test_delay_and_failure_subjects_from_a_mail_system_are_delays_and_bounces(text, subject, kind, reason):
    verdict = verdict_of(text.format(subject=subject))
    assert verdict.kind == kind
    assert verdict.reason.startswith(reason)


def test_bounce_with_8bit_from_or_without_from_is_classified_without_raising():
    raw_8bit = (b"From: Syst\xe8me <MAILER-DAEMON@mx.example.net>\nSubject: failure notice\n\n"
                b"Hi. This is the qmail-send program.\n")
    no_from = (b"Return-Path: <>\nSubject: Undeliverable: hello\n\n"
               b"Your message could not be delivered.\n")
    for raw in (raw_8bit, no_from):
        msg = email.message_from_bytes(raw, policy=email.policy.compat32)
        assert classify(msg, desk_addresses=DESK).kind == "bounce"
        assert bounce_info(msg, verp=VERP).action == "failed"


# --- reports that are not bounces ----------------------------------------------------------------


MDN = """\
    From: Bob Example <bob@example.net>
    To: helpdesk@example.test
    Subject: Read: [INC-42] Printer on floor 3
    MIME-Version: 1.0
    Content-Type: multipart/report; report-type=disposition-notification; boundary="M"

    --M
    Content-Type: text/plain

    Your message was displayed.

    --M
    Content-Type: message/disposition-notification

    Reporting-UA: bob-pc.example.net; Thunderbird
    Final-Recipient: rfc822; bob@example.net
    Original-Message-ID: <inc42.1@example.test>
    Disposition: manual-action/MDN-sent-manually; displayed

    --M--
    """


def test_read_receipt_is_an_mdn():
    assert verdict_of(MDN) == Verdict(
        "mdn", "disposition notification (RFC 8098): manual-action/MDN-sent-manually; displayed")


ARF = """\
    From: Feedback Loop <fbl@isp.example.com>
    To: abuse@example.test
    Subject: FW: [INC-42] Printer on floor 3
    MIME-Version: 1.0
    Content-Type: multipart/report; report-type=feedback-report; boundary="A"

    --A
    Content-Type: text/plain

    This is an email abuse report.

    --A
    Content-Type: message/feedback-report

    Feedback-Type: abuse
    User-Agent: FBL/1.0
    Version: 1
    {rcpt}
    --A
    Content-Type: message/rfc822

    From: IT Service Desk <helpdesk@example.test>
    To: Frank Example <frank@isp.example.com>
    Subject: [INC-42] Printer on floor 3

    Your request has been received.

    --A--
    """


def test_feedback_report_is_a_complaint_that_names_the_original_recipient():
    text = ARF.replace("{rcpt}", "Original-Rcpt-To: <Frank@isp.example.com>")
    assert verdict_of(text) == Verdict("complaint",
                                       "feedback report (RFC 5965 ARF), Feedback-Type: abuse")
    assert complaint_recipients(parse(text)) == ("frank@isp.example.com",)


def test_complaint_without_original_rcpt_to_names_the_to_of_the_attached_original():
    assert complaint_recipients(parse(ARF.replace("{rcpt}", ""))) == ("frank@isp.example.com",)


# --- auto-replies, lists and other automatic senders ----------------------------------------------


@pytest.mark.parametrize("extra, subject, kind, reason", [
    ("Auto-Submitted: auto-replied", PERSONAL_SUBJECT, "auto-reply", "Auto-Submitted: auto-replied (RFC 3834)"),
    # the other Auto-Submitted values are auto-generated
    ("Auto-Submitted: auto-generated", PERSONAL_SUBJECT, "auto-generated", "Auto-Submitted: auto-generated (RFC 3834)"),
    ("Auto-Submitted: auto-generated (failure)", PERSONAL_SUBJECT, "auto-generated",
     "Auto-Submitted: auto-generated (failure) (RFC 3834)"),
    ("Auto-Submitted: auto-notified", PERSONAL_SUBJECT, "auto-generated", "Auto-Submitted: auto-notified (RFC 3834)"),
    # Outlook's automatic reply without Auto-Submitted
    ("X-Auto-Response-Suppress: All\nX-MS-Exchange-Inbox-Rules-Loop: alice@example.net", AUTOMATIC_REPLY,
     "auto-reply", 'subject starts with "Automatic reply:"'),
    # Exchange's out-of-office reply marked auto-generated
    ("Auto-Submitted: auto-generated\nX-Auto-Response-Suppress: All", AUTOMATIC_REPLY, "auto-reply",
     'Auto-Submitted: auto-generated (RFC 3834), subject starts with "Automatic reply:"'),
    # an out-of-office subject with Outlook's headers
    ("X-Auto-Response-Suppress: All", "Out of Office: [INC-42] Printer on floor 3", "auto-reply",
     'subject starts with "Out of Office:" and Outlook headers mark it as generated'),
    # vendors' auto-reply headers
    ("X-Autoreply: yes", PERSONAL_SUBJECT, "auto-reply", "X-Autoreply: yes"),
    ("X-Autorespond: Away", PERSONAL_SUBJECT, "auto-reply", "X-Autorespond: Away"),
    ("X-Autogenerated: Reply", PERSONAL_SUBJECT, "auto-reply", "X-Autogenerated: Reply"),
    ("Precedence: auto_reply", PERSONAL_SUBJECT, "auto-reply", "Precedence: auto_reply"),
    # Precedence bulk and junk are bulk, list is list
    ("Precedence: bulk", PERSONAL_SUBJECT, "bulk", "Precedence: bulk"),
    ("Precedence: junk", PERSONAL_SUBJECT, "bulk", "Precedence: junk"),
    ("Precedence: list", PERSONAL_SUBJECT, "list", "Precedence: list"),
    ("Precedence: Bulk", PERSONAL_SUBJECT, "bulk", "Precedence: bulk"),
    ("Return-Path: <>", PERSONAL_SUBJECT, "null-sender", "Return-Path: <> (null envelope sender)"),
    ("X-Maildesk-Loop: helpdesk@example.test", PERSONAL_SUBJECT, "own", "X-Maildesk-Loop header (the desk's own mail)"),
])
def test_automatic_headers_and_subjects_give_their_verdict_and_reason(extra, subject, kind, reason):
    assert verdict_of(person(extra, subject=subject)) == Verdict(kind, reason)


def test_the_loop_header_the_desk_knows_its_own_mail_by_is_configurable():
    assert verdict_of(person("X-Other-Loop: 1"), own_loop_header="X-Other-Loop").kind == "own"


@pytest.mark.parametrize("header", [
    "List-Id: IT news <it-news.lists.example.net>",
    "List-Unsubscribe: <mailto:it-news-leave@lists.example.net>",
    "List-Post: <mailto:it-news@lists.example.net>",
    "Mailing-List: contact it-news-help@lists.example.net; run by ezmlm",
    "X-Mailman-Version: 2.1.29",
    "Sender: it-news-bounces@lists.example.net",
])
def test_mailing_list_headers_mark_list_mail(header):
    verdict = verdict_of(person(header))
    assert verdict.kind == "list"
    assert header.split(":")[0] in verdict.reason


@pytest.mark.parametrize("sender", ["postmaster@example.net", "MAILER-DAEMON",
                                    "Mail Delivery System <>", "noreply-dmarc-support@google.com"])
def test_mail_from_a_mail_system_that_is_no_bounce_is_mailer_daemon(sender):
    text = person(subject="Report domain: example.test").replace(
        "Alice Example <alice@example.net>", sender)
    assert verdict_of(text).kind == "mailer-daemon"


def test_mail_from_a_desk_address_is_the_desks_own_mail():
    text = person().replace("Alice Example <alice@example.net>",
                            "IT Service Desk <HelpDesk@Example.TEST>")
    assert verdict_of(text) == Verdict("own", "From is the desk address helpdesk@example.test")


def test_mail_with_the_desks_verp_envelope_sender_is_the_desks_own_mail():
    verdict = verdict_of(person("Return-Path: <helpdesk+bounce-42@desk.example.test>"),
                         own_domain="desk.example.test")
    assert verdict.kind == "own"
    assert verdict_of(person("Return-Path: <helpdesk+bounce-42@elsewhere.example>")) is None


def test_every_verdict_kind_is_one_of_the_documented_kinds():
    assert set(KINDS) == {"bounce", "delay", "mdn", "complaint", "auto-reply", "auto-generated",
                          "bulk", "list", "own", "mailer-daemon", "null-sender"}


# --- bounce_info ---------------------------------------------------------------------------------


def test_bounce_info_names_the_failed_recipient_the_original_message_and_the_diagnostic():
    info = bounce_info(parse(dsn()), verp=VERP)
    assert info == BounceInfo(action="failed", recipients=("bob@example.net",),
                              original_message_ids=("inc42.1@example.test",), verp_ids=(42,),
                              diagnostic="550 5.1.1 user unknown")


@pytest.mark.parametrize("envelope", [
    "Delivered-To: helpdesk+bounce-42@example.test",
    "X-Original-To: helpdesk+bounce-42@example.test",
    "Envelope-To: HelpDesk+Bounce-42@Example.Test",
    "Received: from mx.example.net by mail.example.test\n"
    "\tfor <helpdesk+bounce-42@example.test>; Mon, 2 Mar 2026 09:00:00 +0100",
])
def test_bounce_info_finds_the_verp_id_in_the_delivery_headers(envelope):
    original = ORIGINAL.replace("Return-Path: <helpdesk+bounce-42@example.test>\n", "")
    text = dsn(envelope=envelope, to="helpdesk@example.test", original=original)
    assert bounce_info(parse(text), verp=VERP).verp_ids == (42,)


def test_bounce_info_finds_the_verp_id_in_the_return_path_of_the_returned_original():
    text = dsn(envelope="Delivered-To: helpdesk@example.test", to="helpdesk@example.test")
    assert bounce_info(parse(text), verp=VERP).verp_ids == (42,)


def test_bounce_info_reads_in_reply_to_when_no_original_is_returned():
    text = EXIM_BOUNCE.replace("Auto-Submitted",
                               "In-Reply-To: <inc7.1@example.test>\n    Auto-Submitted")
    assert bounce_info(parse(text), verp=VERP).original_message_ids == ("inc7.1@example.test",)


def test_bounce_info_of_a_delay_says_delayed():
    info = bounce_info(parse(dsn("delayed", "4.4.1")), verp=VERP)
    assert (info.action, info.recipients, info.verp_ids) == ("delayed", ("bob@example.net",), (42,))


@pytest.mark.parametrize("text", [person(), person("Auto-Submitted: auto-replied"), MDN])
def test_bounce_info_is_none_for_mail_that_is_no_bounce(text):
    assert bounce_info(parse(text), verp=VERP) is None


def test_bounce_info_caps_the_diagnostic():
    text = dsn().replace("550 5.1.1 user unknown\n",
                         "550 5.1.1 " + "very long explanation " * 40 + "\n")
    assert len(bounce_info(parse(text), verp=VERP).diagnostic) <= 300


# --- VERP addresses ------------------------------------------------------------------------------


def test_verp_address_and_pattern_agree():
    address = verp_address(TEMPLATE, "helpdesk", "example.test", 1234)
    assert address == "helpdesk+bounce-1234@example.test"
    assert int(VERP.search(f"for <{address}>;").group("id")) == 1234


def test_verp_pattern_ignores_case_but_not_other_addresses():
    assert VERP.search("HELPDESK+BOUNCE-7@EXAMPLE.TEST").group("id") == "7"
    assert VERP.search("Delivered-To: helpdesk+bounce-7@example.test.").group("id") == "7"
    for other in ("xhelpdesk+bounce-7@example.test", "helpdesk+bounce-7@example.test.org",
                  "helpdesk+bounce-x@example.test", "helpdesk+bounce-7@example.testing"):
        assert VERP.search(other) is None, other


def test_verp_pattern_follows_other_templates():
    pattern = verp_pattern("bounces-{id}-{local}@{domain}", "it.desk", "mail.example.test")
    assert pattern.search("<bounces-5-it.desk@mail.example.test>").group("id") == "5"
    assert pattern.search("<bounces-5-itxdesk@mail.example.test>") is None


@pytest.mark.parametrize("template", ["{local}@{domain}", "{local}+{id}-{id}@{domain}",
                                      "{local}+{ticket}@{domain}", "{local}+{id@{domain}"])
def test_verp_template_without_exactly_one_id_or_with_unknown_fields_is_rejected(template):
    with pytest.raises(ValueError):
        verp_pattern(template, "helpdesk", "example.test")
    with pytest.raises(ValueError):
        verp_address(template, "helpdesk", "example.test", 1)


def test_verp_address_rejects_an_id_that_is_not_a_non_negative_integer():
    for outbox_id in (-1, "7", 1.5, True):
        with pytest.raises(ValueError):
            verp_address(TEMPLATE, "helpdesk", "example.test", outbox_id)


# --- out of office ------------------------------------------------------------------------------


@pytest.mark.parametrize("extra, subject", [
    ("X-Auto-Response-Suppress: All", "Automatic reply: [INC-42] Printer on floor 3"),
    ("", "Abwesenheitsnotiz: [INC-42] Drucker"),
    ("", "Réponse automatique : [INC-42] Imprimante"),
    ("Auto-Submitted: auto-replied", "Out of Office: back on Monday"),
    ("X-Autoreply: yes", "Away until May 5"),
    ("Auto-Submitted: auto-replied (vacation)", "Auto: [INC-42] Printer on floor 3"),
    ("X-Auto-Response-Suppress: All", "Out of office: [INC-42] Printer on floor 3"),
])
def test_auto_replies_that_say_the_person_is_away_are_out_of_office(extra, subject):
    assert is_out_of_office(parse(person(extra, subject=subject)))


@pytest.mark.parametrize("extra, subject", [
    ("Auto-Submitted: auto-replied", "[INC-7] We have received your request"),
    ("", "Vacation request for May"),
    ("X-Auto-Response-Suppress: All", "Out of office next week, who covers the printers?"),
    ("", "[support.example.net #33575] AutoReply: printer"),
    ("Return-Path: <>", "Undeliverable: Away day planning"),
])
def test_other_mail_is_not_out_of_office(extra, subject):
    assert not is_out_of_office(parse(person(extra, subject=subject)))


# --- cost and hostile input ----------------------------------------------------------------------


def test_large_bounce_is_classified_without_reading_its_attachment():
    # flufl.bounce reads every line of every part: seconds for this mail, were it given all of it.
    attachment = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo=\n" * 150_000  # 5.4 MB of base64
    msg = email.message_from_string(
        "From: Mail Delivery System <MAILER-DAEMON@mx.example.net>\n"
        "To: helpdesk+bounce-42@example.test\n"
        "Subject: Undelivered Mail Returned to Sender\n"
        'Content-Type: multipart/mixed; boundary="B"\n\n'
        "--B\nContent-Description: Notification\nContent-Type: text/plain\n\n"
        "<bob@example.net>: host mail.example.net said: 552 5.2.2 mailbox full\n\n"
        "--B\nContent-Type: message/rfc822\n\n"
        "From: helpdesk@example.test\nTo: bob@example.net\nMessage-ID: <inc42.2@example.test>\n"
        'Content-Type: multipart/mixed; boundary="O"\n\n'
        "--O\nContent-Type: application/pdf\nContent-Transfer-Encoding: base64\n\n"
        + attachment + "--O--\n--B--\n", policy=email.policy.compat32)
    started = time.perf_counter()
    assert classify(msg, desk_addresses=DESK).kind == "bounce"
    info = bounce_info(msg, verp=VERP)
    assert time.perf_counter() - started < 1.0
    assert info == BounceInfo(action="failed", recipients=("bob@example.net",),
                              original_message_ids=("inc42.2@example.test",), verp_ids=(42,),
                              diagnostic="<bob@example.net>: host mail.example.net said: "
                                         "552 5.2.2 mailbox full")


def test_deeply_nested_mail_is_classified():
    depth = 400
    opening = "".join(f'Content-Type: multipart/mixed; boundary="b{i}"\n\n--b{i}\n'
                      for i in range(depth))
    closing = "".join(f"--b{i}--\n" for i in reversed(range(depth)))
    body = opening + "Content-Type: text/plain\n\nhi\n" + closing
    msg = email.message_from_string("From: a@example.net\nSubject: nested\n" + body,
                                    policy=email.policy.compat32)
    assert classify(msg, desk_addresses=DESK) is None
    daemon = email.message_from_string("From: MAILER-DAEMON@example.net\nSubject: nested\n" + body,
                                       policy=email.policy.compat32)
    assert classify(daemon, desk_addresses=DESK).kind == "mailer-daemon"


# --- the shared corpus of real mail --------------------------------------------------------------

from tests.conftest import CORPUS  # noqa: E402


# Tags that say a mail must never be acknowledged (corpus README, "What the desk must do").
def must_not_answer(tags: list[str]) -> bool:
    return any(t in ("no-ack:list/bulk", "null-return-path", "from-mailer-daemon")
               or t.startswith(("auto-submitted:", "report:")) for t in tags)


# Tags of mail that some machine wrote; a row without any of them is ordinary mail.
def looks_automatic(tags: list[str]) -> bool:
    return must_not_answer(tags) or any(
        t in ("bounce-subject", "delivery-status-part", "x-failed-recipients", "arf", "mdn",
              "autoreply-subject", "list-headers") or t.startswith("precedence:") for t in tags)


BOUNCE_TAGS = ("delivery-status-part", "x-failed-recipients", "report:delivery-status",
               "bounce-subject")

# Rows of the bounces category with a bounce tag that are not honestly a bounce or a delay.
# Each still gets a verdict (the desk does not answer it), just not "bounce".
AMBIGUOUS_BOUNCES = {
    # multipart/report; report-type=delivery-status whose parts say "Yadda yadda": no Action.
    "cpython-test_email/files/Lib/test/test_email/data/msg_05.txt": "auto-generated",
    # Anonymised DSN: "Action: xxxxxx", "report-type=xxxxxxxxxxxxxxx".
    "mimekit/files/UnitTests/TestData/messages/delivery-status.anonymized.eml": "auto-generated",
    # InterScan "Mail could not be delivered" relayed by a Mailman list: from inetgw1@, no
    # daemon sender, no null return path, no recipient that flufl.bounce can find.
    "flufl-bounce/files/flufl/bounce/tests/data/dumbass_01.txt": "bulk",
    # "Non-Delivery: Your message to GPC-talk awaits moderator approval" from admin@, relayed
    # by a list: an Exchange notice about a moderation notice. The one address flufl.bounce
    # finds is the notice's own X-Original-To, so it is not taken for a failed recipient.
    "flufl-bounce/files/flufl/bounce/tests/data/microsoft_03.txt": "bulk",
}


def corpus_messages():
    with open(CORPUS / "manifest.csv", newline="", encoding="utf-8") as manifest:
        for row in csv.DictReader(manifest):
            if row["kind"] == "message":
                raw = (CORPUS / row["file"]).read_bytes()
                yield row, [t for t in row["tags"].split(";") if t], email.message_from_bytes(
                    raw, policy=email.policy.compat32)


@pytest.mark.slow
@pytest.mark.skipif(not (CORPUS / "manifest.csv").is_file(), reason="corpus folder is absent")
def test_corpus_automatic_mail_gets_a_verdict_and_ordinary_mail_is_no_bounce():
    table: Counter = Counter()
    timings: list[float] = []
    missing, wrong_bounces, ordinary_bounces, ordinary_verdicts = [], [], [], []
    ordinary: Counter = Counter()  # rows without an automatic tag, by category
    for row, tags, msg in corpus_messages():
        started = time.perf_counter()
        verdict = classify(msg, desk_addresses=DESK, own_domain="example.test")
        elapsed = time.perf_counter() - started
        kind = verdict.kind if verdict else "-"
        table[row["category"], kind] += 1
        is_report = kind in ("bounce", "delay", "mdn", "complaint") or (
            msg.get_content_type() == "multipart/report")
        if not is_report:
            timings.append(elapsed)
        # The other public functions must not raise on any of it either.
        info = bounce_info(msg, verp=VERP)
        assert (info is not None) == (kind in ("bounce", "delay")) or kind == "own", row["file"]
        if info is not None:
            assert info.action == {"bounce": "failed", "delay": "delayed"}[kind], row["file"]
        is_out_of_office(msg)
        complaint_recipients(msg)

        if must_not_answer(tags) and verdict is None:
            missing.append(row["file"])
        if row["category"] == "bounces" and any(t in BOUNCE_TAGS for t in tags):
            expected = AMBIGUOUS_BOUNCES.get(row["file"])
            if not (kind == expected if expected else kind in ("bounce", "delay")):
                wrong_bounces.append((row["file"], kind, verdict.reason if verdict else ""))
        if not looks_automatic(tags):
            ordinary[row["category"]] += 1
            if kind == "bounce":
                ordinary_bounces.append(row["file"])
            if verdict is not None:
                ordinary_verdicts.append((row["category"], row["file"], verdict))

    categories = sorted({c for c, _ in table})
    kinds = [k for k in (*KINDS, "-") if any(table[c, k] for c in categories)]
    print("\nkinds by category (- is no verdict: mail a person wrote)")
    print(f"{'category':<18}" + "".join(f"{k:>15}" for k in kinds))
    for category in categories:
        print(f"{category:<18}" + "".join(f"{table[category, k] or '':>15}" for k in kinds))
    print(f"\nordinary rows (no automatic tag) with a verdict: {len(ordinary_verdicts)} "
          f"of {sum(ordinary.values())}")
    for category, file, verdict in ordinary_verdicts:
        print(f"  {category}: {file}: {verdict.kind}: {verdict.reason}")
    timings.sort()
    median, p95 = statistics.median(timings), timings[int(len(timings) * 0.95)]
    print(f"\nclassify on non-report mail: n={len(timings)} median={median * 1e6:.0f} us "
          f"p95={p95 * 1e6:.0f} us max={timings[-1] * 1e6:.0f} us")

    assert not missing, f"automatic mail without a verdict: {missing}"
    assert not wrong_bounces, f"bounces classified otherwise: {wrong_bounces}"
    assert not ordinary_bounces, f"ordinary mail classified as bounce: {ordinary_bounces}"
    person_categories = ("normal", "replies-threading")
    answered = sum(1 for c, _, _ in ordinary_verdicts if c in person_categories)
    assert answered <= 0.05 * sum(ordinary[c] for c in person_categories)
    assert median < 0.001
