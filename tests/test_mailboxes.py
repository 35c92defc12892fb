"""Several mailboxes (`[[mailboxes]]`, issue 15; docs/configuration.md): each opens
tickets that answer from its own address, a message that reaches two mailboxes is one
message, replies thread across mailboxes, and no address of the desk is ever a
requester, participant or technician. Two Dovecot users are the two mailboxes."""

from __future__ import annotations

import uuid

import pytest

from maildesk.config import ConfigError, parse_config
from tests.conftest import DESK, mail, reply_to
from tests.test_hostile import dsn

IT, SEC = "it-help@example.test", "security@example.test"


def two_mailboxes(desk, **second) -> str:
    """Turn the test's desk into one of two mailboxes, "it" (the test's own user, the
    default group) and "security" (a second user, group network, category Security);
    returns the second user's name."""
    user = "sec" + uuid.uuid4().hex[:10]
    desk.dovecot.add_user(user, "secret")
    imap = desk.config["imap"]
    desk.write_config(imap=None, categories=[*desk.config["categories"], {"name": "Security", "keywords": ["phishing"]}])
    desk.write_config(mailboxes=[
        {"name": "it", "address": IT, "host": imap["host"], "port": imap["port"], "security": "none",
         "username": desk.user, "password": "secret", "poll_seconds": 1},
        {"name": "security", "address": SEC, "username": user, "password": "secret", "group": "network",
         "category": "Security", **second},
    ])
    return user


def test_each_mailbox_opens_tickets_that_answer_from_its_own_address(desk):
    sec_user = two_mailboxes(desk)
    desk.deliver(mail("jane@example.org", "Printer jam", "Tray 2 is stuck.", to=IT))
    desk.dovecot.append(sec_user, mail("joe@example.org", "Strange mail", "Is this mail a scam?", to=SEC))
    desk.run()
    by_requester = {t["requester"]: t for t in desk.tickets()}
    assert by_requester["jane@example.org"]["mailbox"] == "it"
    assert by_requester["jane@example.org"]["group"] == "service-desk"
    joe = by_requester["joe@example.org"]
    assert (joe["mailbox"], joe["category"], joe["group"]) == ("security", "Security", "network")
    (ack_it,) = desk.sent(to="jane@example.org")
    (ack_sec,) = desk.sent(to="joe@example.org")
    assert ack_it.message["From"].addresses[0].addr_spec == IT and ack_it.header("Reply-To") == IT
    assert ack_sec.message["From"].addresses[0].addr_spec == SEC and ack_sec.header("Reply-To") == SEC
    assert ack_sec.envelope_from.startswith("security+bounce-") and ack_sec.envelope_from.endswith("@example.test")
    notice = desk.sent(to="carol@example.test")[0]  # the network group's technician hears of it
    assert notice.message["From"].addresses[0].addr_spec == SEC
    events = [e["detail"] for e in desk.ticket(joe["ref"])["events"]]
    assert "category Security (mailbox security)" in events and "routed to network (mailbox security)" in events
    inbound = {i["mailbox"] for i in desk.inbound()}
    assert inbound == {"it", "security"} and all(i["worker"] for i in desk.inbound())


def test_a_message_that_reaches_two_mailboxes_is_one_ticket_of_the_first_listed(desk):
    sec_user = two_mailboxes(desk)
    raw = mail("jane@example.org", "VPN down", "Since this morning.", to=SEC, cc=IT, msgid="<both@client.example>")
    desk.dovecot.append(sec_user, b"Received: from mx1 by security\r\n" + raw)  # two copies, not byte-identical
    desk.deliver(b"Received: from mx1 by it-help\r\n" + raw)
    desk.run()
    (ticket,) = desk.tickets()
    assert ticket["mailbox"] == "it"  # first in [[mailboxes]] order among To/Cc, whichever copy came first
    assert len(desk.sent(to="jane@example.org")) == 1
    outcomes = sorted(i["outcome"] for i in desk.inbound())
    assert outcomes == ["duplicate", "new-ticket"]
    assert {p["email"] for p in desk.ticket("INC-1")["participants"]} == {"jane@example.org", "carol@example.test"}


def test_a_reply_threads_onto_its_ticket_whichever_mailbox_it_reaches(desk):
    sec_user = two_mailboxes(desk)
    desk.deliver(mail("jane@example.org", "Printer jam", "Tray 2.", to=IT))
    desk.run()
    (ack,) = desk.sent(to="jane@example.org")
    desk.smtp.reset()
    answer = reply_to(ack, "jane@example.org", "It also smokes now.")
    desk.dovecot.append(sec_user, answer.replace(f"To: {DESK}".encode(), f"To: {SEC}".encode()))
    desk.run()
    (ticket,) = desk.tickets()
    assert ticket["mailbox"] == "it" and ticket["message_count"] == 2
    relay = desk.sent(to="alice@example.test")[-1]
    assert relay.message["From"].addresses[0].addr_spec == IT  # the ticket's mailbox answers


def test_no_address_of_the_desk_is_ever_a_requester_participant_or_caller(desk):
    two_mailboxes(desk)
    # a forged mail "from" another mailbox of the desk, and Cc's of every desk address
    desk.deliver(mail(SEC, "Loop?", "I am the desk.", to=IT))
    desk.deliver(mail("jane@example.org", "Printer jam", "Tray 2.", to=IT,
                      cc=f"{SEC}, security+bounce-7@example.test, {DESK}, it-help+x@example.test, bob.user@example.org"))
    desk.run()
    (ticket,) = desk.tickets()
    assert ticket["requester"] == "jane@example.org"
    people = {p["email"] for p in desk.ticket(ticket["ref"])["participants"]}
    assert people == {"jane@example.org", "bob.user@example.org", "alice@example.test"}
    assert sorted(i["outcome"] for i in desk.inbound()) == ["new-ticket", "own"]
    assert not [r for m in desk.smtp.messages for r in m.rcpts if r in (IT, SEC, DESK) or "+" in r]
    notice = desk.sent(to="alice@example.test")[-1]
    desk.deliver(reply_to(notice, "alice@example.test", f"#cc {SEC}\n\nAdding security."))
    desk.run()
    people = {p["email"] for p in desk.ticket(ticket["ref"])["participants"]}
    assert SEC not in people
    (refusal,) = desk.sent(to="alice@example.test")[1:]
    assert "an address of the desk itself" in refusal.text


def test_a_bounce_to_the_second_mailboxs_address_marks_the_recipient_undeliverable(desk):
    sec_user = two_mailboxes(desk)
    desk.dovecot.append(sec_user, mail("ghost@example.org", "Phishing?", "Look at this.", to=SEC))
    desk.run()
    (ack,) = desk.sent(to="ghost@example.org")
    assert ack.envelope_from.startswith("security+bounce-")
    desk.dovecot.append(sec_user, dsn(ack.envelope_from, "ghost@example.org", ack.header("Message-ID").strip("<>")))
    desk.run()
    (row,) = [o for o in desk.outbox() if o["to"] == "ghost@example.org"]
    assert row["status"] == "bounced"


def test_mail_that_belongs_to_no_ticket_comes_from_the_desk_address(desk):
    two_mailboxes(desk)
    desk.write_config(roles={"incident_managers": ["im@example.test"], "process_owners": ["owner@example.test"]})
    desk.run(now="2026-11-23T09:00:00+01:00")  # a Monday: the first report comes the week after
    desk.run(now="2026-11-30T09:00:00+01:00")
    (report,) = desk.sent(to="owner@example.test")
    assert report.message["From"].addresses[0].addr_spec == DESK


# --- the configuration ------------------------------------------------------------------------


BASE = {"desk": {"address": DESK}, "smtp": {"host": "smtp.example.test"}}
BOX = {"name": "it", "address": IT, "host": "imap.example.test", "username": "it", "password": "p"}


def test_imap_and_mailboxes_are_exclusive_and_the_error_names_the_key():
    with pytest.raises(ConfigError) as e:
        parse_config({**BASE, "imap": {"host": "i", "username": "u", "password": "p"}, "mailboxes": [BOX]}, deep=False)
    assert any(p.startswith("imap: ") and "[[mailboxes]]" in p for p in e.value.problems)
    with pytest.raises(ConfigError) as e:
        parse_config(dict(BASE), deep=False)
    assert any(p.startswith("imap: required section is missing") for p in e.value.problems)


def test_a_later_mailbox_takes_the_server_of_the_first_but_not_its_account():
    cfg = parse_config({**BASE, "mailboxes": [{**BOX, "port": 10143, "security": "starttls", "mailbox": "Help"},
                                              {"name": "sec", "address": SEC, "username": "sec", "password": "own"}]},
                       deep=False)
    first, second = cfg.mailboxes
    assert (second.host, second.port, second.security) == ("imap.example.test", 10143, "starttls")
    assert (second.username, second.password, second.mailbox) == ("sec", "own", "INBOX")
    assert first.password != "own"
    assert cfg.imap is first and cfg.desk_addresses == (DESK, IT, SEC)
    cfg = parse_config({**BASE, "imap": {"host": "i", "username": "u", "password": "p", "mailbox": "Desk"}}, deep=False)
    (only,) = cfg.mailboxes
    assert (only.name, only.address) == ("Desk", DESK)  # [imap]: named after its folder, answering from desk.address


@pytest.mark.parametrize("mailboxes,problem", [
    ([BOX, {**BOX, "address": SEC}], 'mailboxes[1].name: mailbox "it" is defined twice'),
    ([BOX, {**BOX, "name": "sec"}], "mailboxes[1].address: it-help@example.test is the address of another mailbox"),
    ([BOX, {**BOX, "name": "sec", "address": SEC}], "mailboxes[1].mailbox: the folder 'INBOX' of it on imap.example.test"),
    ([{**BOX, "group": "nowhere"}], 'mailboxes[0].group: unknown group "nowhere"'),
    ([{**BOX, "category": "Nothing"}], 'mailboxes[0].category: unknown category "Nothing"'),
    ([{k: v for k, v in BOX.items() if k != "password"}], "mailboxes[0].password_file: required key is missing"),
    ([{k: v for k, v in BOX.items() if k != "address"}], "mailboxes[0].address: required key is missing"),
    ([], "mailboxes: expected one or more tables"),
])
def test_a_bad_mailbox_is_an_error_that_names_its_key(mailboxes, problem):
    with pytest.raises(ConfigError) as e:
        parse_config({**BASE, "mailboxes": mailboxes})
    assert any(p.startswith(problem) for p in e.value.problems), e.value.problems


def test_a_technician_at_a_mailbox_address_is_refused():
    with pytest.raises(ConfigError) as e:
        parse_config({**BASE, "mailboxes": [BOX], "groups": [{"name": "g"}],
                      "technicians": [{"email": IT, "groups": ["g"]}]}, deep=False)
    assert "technicians[0].email: it-help@example.test is an address of the desk itself" in e.value.problems
