"""maildesk.signing: a desk Message-ID proves which ticket and which recipient it was
sent for, and a one-click token which action, ticket and recipient (DESIGN section 4)."""

from __future__ import annotations

import re

import pytest

from maildesk import signing

KEY = b"k" * 32
DOMAIN = "example.test"


def test_a_message_id_names_its_ticket_and_verifies_for_its_recipient_in_any_case():
    mid = signing.new_message_id(KEY, 42, "Jane@Example.org", DOMAIN)
    assert re.fullmatch(r"md-42-[0-9a-f]{8}-[0-9a-f]{20}@example\.test", mid)
    assert signing.verify_message_id(KEY, mid, "jane@example.org", DOMAIN) == 42
    assert signing.verify_message_id(KEY, mid.upper().replace("EXAMPLE.TEST", "Example.Test"), "JANE@EXAMPLE.ORG",
                                     "EXAMPLE.test") == 42


def test_two_message_ids_for_the_same_mail_differ_by_their_nonce():
    assert signing.new_message_id(KEY, 1, "a@example.org", DOMAIN) != signing.new_message_id(KEY, 1, "a@example.org", DOMAIN)


def test_mail_about_no_ticket_gets_ticket_zero():
    mid = signing.new_message_id(KEY, None, "im@example.test", DOMAIN)
    assert mid.startswith("md-0-") and signing.verify_message_id(KEY, mid, "im@example.test", DOMAIN) == 0


@pytest.mark.parametrize("forge", [
    lambda mid: mid,  # checked for another recipient below
    lambda mid: re.sub(r"^md-42-", "md-43-", mid),  # another ticket
    lambda mid: re.sub(r"-([0-9a-f]{8})-", "-00000000-", mid),  # another nonce
    lambda mid: re.sub(r"-[0-9a-f]{20}@", "-" + "0" * 20 + "@", mid),  # a made-up signature
    lambda mid: re.sub(r"-([0-9a-f]{20})@", lambda m: "-" + m.group(1)[:-1] + "@", mid),  # a signature cut short
    lambda mid: mid.replace("@example.test", "@evil.example"),  # another domain
    lambda mid: f"<{mid}>",  # brackets are the caller's to take off
], ids=["other-recipient", "other-ticket", "other-nonce", "zero-signature", "cut", "other-domain", "bracketed"])
def test_a_message_id_altered_or_cited_by_someone_else_does_not_verify(forge):
    mid = signing.new_message_id(KEY, 42, "jane@example.org", DOMAIN)
    rcpt = "mallory@evil.example" if forge(mid) == mid else "jane@example.org"
    assert signing.verify_message_id(KEY, forge(mid), rcpt, DOMAIN) is None


def test_a_message_id_signed_with_another_key_does_not_verify():
    mid = signing.new_message_id(b"other" * 8, 42, "jane@example.org", DOMAIN)
    assert signing.verify_message_id(KEY, mid, "jane@example.org", DOMAIN) is None


def test_is_desk_id_looks_at_the_form_and_domain_only():
    forged = "md-7-00000000-" + "0" * 20 + "@example.test"
    assert signing.is_desk_id(forged, "EXAMPLE.TEST")
    assert not signing.is_desk_id(forged, "elsewhere.example")
    assert not signing.is_desk_id("CAF1234@mail.example.org", DOMAIN)


def test_the_signed_sender_is_the_candidate_the_id_was_sent_to():
    mid = signing.new_message_id(KEY, 5, "bob@example.test", DOMAIN)
    assert signing.signed_id_sender(KEY, mid, ["alice@example.test", "Bob@example.test"], DOMAIN) == "Bob@example.test"
    assert signing.signed_id_sender(KEY, mid, ["alice@example.test"], DOMAIN) is None
    assert signing.signed_id_sender(KEY, mid, [], DOMAIN) is None


# --- one-click tokens -----------------------------------------------------------------


@pytest.mark.parametrize("action", ["fixed", "notfixed", "rate1", "rate5"])
def test_a_token_is_found_in_a_subject_and_verifies_for_its_action_ticket_and_recipient(action):
    token = signing.make_token(KEY, action, 42, "Jane@example.org", about=3)
    found = signing.find_token(f"[INC-42] Yes, it is fixed ({token})")
    assert found is not None and (found.action, found.ticket_id, found.about) == (action, 42, "3")
    assert signing.verify_token(KEY, found, "jane@example.org")


@pytest.mark.parametrize("action,ticket,about,rcpt", [
    ("notfixed", 42, "0", "jane@example.org"),  # the confirm link turned into a reject
    ("fixed", 41, "0", "jane@example.org"),  # another ticket
    ("fixed", 42, "1", "jane@example.org"),  # another resolution of the same ticket
    ("fixed", 42, "0", "mallory@evil.example"),  # clicked by someone else
])
def test_a_token_does_not_verify_for_another_action_ticket_resolution_or_recipient(action, ticket, about, rcpt):
    mac = signing.find_token(signing.make_token(KEY, "fixed", 42, "jane@example.org")).mac
    assert not signing.verify_token(KEY, signing.Token(action, ticket, about, mac), rcpt)


@pytest.mark.parametrize("subject", [
    "", None, "Re: [INC-42] Printer", "fixed-42-0123456789abcde",  # one hex digit short
    "rate6-42-0123456789abcdef", "xfixed-42-0123456789abcdef", "fixed-42-0123456789abcdefa",
])
def test_text_that_only_looks_like_a_token_is_none(subject):
    assert signing.find_token(subject) is None


def test_a_token_is_read_whatever_the_case_of_the_subject():
    token = signing.make_token(KEY, "rate3", 9, "jane@example.org")
    found = signing.find_token(f"AW: {token.upper()}")
    assert (found.action, found.ticket_id) == ("rate3", 9) and signing.verify_token(KEY, found, "jane@example.org")
