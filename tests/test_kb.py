"""Known fixes first: the knowledge base that answers by mail (issue 16; DESIGN section 8,
the commands #kb, #kb search, #kb retire and #status of section 4, `maildesk kb`).

The rules that need no I/O first (terms, relevance, cleaning, who may be offered
articles), then the desk at work through Dovecot and the SMTP sink."""

from __future__ import annotations

import datetime as dt
import json
import re
import urllib.parse

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from maildesk.config import parse_config
from maildesk.desk import kbterms
from maildesk.desk.kb import may_offer, parse_number
from tests.conftest import DESK, both_databases, mail, reply_to

# --- the rules, without I/O ---------------------------------------------------------------


@pytest.mark.parametrize("word,stem", [
    ("caresses", "caress"), ("ponies", "poni"), ("agreed", "agre"), ("motoring", "motor"), ("hopping", "hop"),
    ("relational", "relat"), ("generalization", "gener"), ("locked", "lock"), ("changed", "chang"),
    ("passwords", "password"), ("0x80070005", "0x80070005"), ("müller", "müller"),
])
def test_words_are_stemmed_as_porter_stems_them(word, stem):
    assert kbterms.stem(word) == stem


def test_terms_drop_greetings_and_function_words_and_keep_error_codes():
    assert kbterms.terms("Hello, since this morning I cannot log in: account locked (error 0x80070005). Thanks!") == [
        "log", "account", "lock", "error", "0x80070005"]


def test_an_articles_key_terms_are_its_title_first_then_its_most_frequent_words():
    key = kbterms.key_terms("Locked out after password change",
                            "Unlock the account; the phone keeps the old password. Remove it from the phone.", "Accounts")
    assert key[:4] == ["lock", "password", "chang", "account"]
    assert key.index("phone") < key.index("unlock")
    assert len(key) <= kbterms.KEY_TERMS


def test_relevance_means_the_same_with_one_article_as_with_many():
    key = ["lock", "password", "chang", "phone", "account", "unlock"]
    score, found = kbterms.relevance(key, {"log", "account", "lock"}, rank_share=1.0)
    assert found == ["lock", "account"] and score == 0.5
    assert kbterms.relevance(key, {"printer", "blank", "page"})[0] == 0.0
    assert kbterms.relevance(key, {"account"})[0] < 0.3  # one common word is not a match
    weaker, _ = kbterms.relevance(key, {"log", "account", "lock"}, rank_share=0.2)
    assert 0.25 <= weaker < score  # a lower rank weighs it down, never below half
    assert kbterms.relevance([], {"lock"})[0] == 0.0


def test_an_article_whose_headline_the_incident_never_mentions_counts_half():
    stored = kbterms.key_string("Reset MFA", "Install the authenticator app on the new phone, then scan the code.", None)
    key, headline = kbterms.parse_key(stored)
    assert stored.startswith("reset mfa | ") and headline == 2
    on_topic, _ = kbterms.relevance(key, {"mfa", "phone", "app"}, headline=headline)
    off_topic, found = kbterms.relevance(key, {"phone", "app", "scan"}, headline=headline)
    assert set(found) == {"app", "phone", "scan"}
    assert on_topic == 0.75 and off_topic == 0.375


def test_a_word_most_articles_hold_counts_half_and_only_in_a_large_base():
    assert kbterms.specificity(docs=2, total=2) == 1.0  # a desk starts with one or two articles
    assert kbterms.specificity(docs=40, total=10_000) == 1.0
    assert kbterms.specificity(docs=10_000, total=10_000) == 0.5
    assert 0.5 < kbterms.specificity(docs=1_000, total=10_000) < 1.0
    common = {"password": 0.5, "account": 0.5}
    assert kbterms.relevance(["password", "account", "reset", "portal"], common)[0] < 0.3


def test_a_resolution_loses_its_greeting_closing_and_name():
    text = "Hi Tom,\n\nI unlocked your account.\nRemove the old password from your phone.\n\nBest regards,\nAlice\nIT"
    assert kbterms.clean_resolution(text) == "I unlocked your account.\nRemove the old password from your phone."
    assert kbterms.clean_resolution("Hello,\nReplaced the toner.\n\nCarol") == "Replaced the toner."
    assert kbterms.clean_resolution("Thanks,\nAlice") == "Thanks,\nAlice"  # nothing but a closing: kept
    assert kbterms.title_from_subject("Re: [INC-3] Fwd: Locked out") == "Locked out"


def test_an_attackers_words_become_plain_terms():
    nasty = 'x" OR title:* NEAR(a b) \'; DROP TABLE kb_article; -- ^ * " ( )'
    words, stems = kbterms.query(nasty, "a" * 10_000 + " " + "Δ" * 300)
    assert all(re.fullmatch(r"[^\W_]+(?:'[^\W_]+)?", w) for w in words)
    assert len(stems) <= kbterms.QUERY_TERMS


def test_article_numbers_are_read_with_or_without_their_prefix():
    assert [parse_number(s) for s in ("7", "KB-7", "kb7", "#7", "[KB-7]", "seven", "7; DROP")] == [7, 7, 7, 7, 7, None, None]


def _cfg(**security):
    return parse_config({"desk": {"address": DESK, "state_dir": "/tmp"}, "imap": {"host": "h", "username": "u", "password": "p"},
                         "smtp": {"host": "h"}, "security": security})


def test_articles_are_offered_only_where_outsiders_cannot_mine_them():
    open_desk, strict = _cfg(), _cfg(trusted_authserv_ids=["mx.example.test"])
    kw = {"sender": "jane@example.org", "automatic": False, "is_major": False}
    assert may_offer(open_desk, **kw, passed_authentication=False) is None
    assert "did not pass authentication" in may_offer(strict, **kw, passed_authentication=False)
    assert may_offer(strict, **kw, passed_authentication=True) is None
    assert "automatic" in may_offer(open_desk, **(kw | {"automatic": True}), passed_authentication=True)
    assert "major" in may_offer(open_desk, **(kw | {"is_major": True}), passed_authentication=True)
    assert may_offer(open_desk, **(kw | {"sender": ""}), passed_authentication=True)


# --- the desk at work ------------------------------------------------------------------------

MONDAY = "2026-11-30T{}:00+01:00"
TOM = "Tom Baker <tom@example.org>"
JANE = "Jane Doe <jane@example.org>"
RESOLUTION = ("Hi Tom,\n\nyour account was locked after too many sign-in attempts with the old password saved on\n"
              "your phone. I unlocked it in the directory; remove the old password from your phone's mail app,\n"
              "then sign in with the new one.\n\nBest regards,\nAlice")
AR_ORG = "mx.example.test; dkim=pass header.d=example.org; dmarc=pass header.from=example.org"
AR_STAFF = "mx.example.test; dkim=pass header.d=example.test; dmarc=pass header.from=example.test"


def at(hhmm: str) -> str:
    return MONDAY.format(hhmm)


def publish_locked_out(desk, headers=None) -> None:
    """Tom is locked out; Alice resolves it and publishes her fix in the same mail."""
    desk.deliver(mail(TOM, "Locked out after password change",
                      "Since I changed my password this morning every login says the account is locked.\n\nTom"))
    desk.run(now=at("09:00"))
    notice = desk.sent(to="alice@example.test")[-1]
    desk.deliver(reply_to(notice, "alice@example.test", "#resolve fixed\n#kb\n" + RESOLUTION, headers=headers))
    desk.run(now=at("09:10"))


def follow_link(captured, label: str = "This solved it") -> tuple[str, str]:
    """(to, subject) of the first mailto: link whose subject holds `label`."""
    for link in re.findall(r"mailto:[^\s<>\"]+", captured.text):
        address, _, query = link.removeprefix("mailto:").partition("?")
        subject = urllib.parse.parse_qs(query).get("subject", [""])[0]
        if label in subject:
            return urllib.parse.unquote(address), subject
    raise AssertionError(f"no {label!r} link in:\n{captured.text}")


def cli_json(desk, *args):
    code, out, err = desk.cli(*args, "--json")
    assert code == 0, err
    return json.loads(out)


@both_databases
def test_a_resolution_published_with_kb_is_an_article_of_its_ticket(desk):
    publish_locked_out(desk)
    [row] = cli_json(desk, "kb", "list")
    assert (row["ref"], row["ticket"], row["version"], row["retired"], row["use_count"]) == ("KB-1", "INC-1", 1, False, 0)
    assert row["title"] == "Locked out after password change"
    article = cli_json(desk, "kb", "show", "KB-1")
    assert article["text"].startswith("Your account was locked") and article["text"].endswith("with the new one.")
    assert "Hi Tom" not in article["text"] and "Alice" not in article["text"] and "> " not in article["text"]
    assert [v["version"] for v in article["versions"]] == [1]
    t = desk.ticket("INC-1")
    assert t["status"] == "resolved" and any(e["kind"] == "kb-published" for e in t["events"])
    resolution = desk.sent(to="tom@example.org", subject_has="Resolved")[-1]
    assert "your account was locked" in resolution.text  # the requester gets the resolution as always
    code, out, _ = desk.cli("kb", "show", "1")
    assert code == 0 and "KB-1  Locked out after password change" in out
    assert desk.cli("kb", "show", "KB-9")[0] == 1


@both_databases
def test_a_later_incident_in_other_words_is_offered_the_article_and_its_link_resolves_it(desk):
    publish_locked_out(desk)
    desk.smtp.reset()
    desk.deliver(mail(JANE, "Cannot log in", "Hello,\n\ncannot log in, account locked.\n\nJane", msgid="<jane-1@example.org>"))
    desk.run(now=at("10:00"))
    ack = desk.sent(to="jane@example.org")[-1]
    assert "Known fixes" in ack.text and "KB-1: Locked out after password change" in ack.text
    assert "remove the old password" in ack.text
    html = ack.message.get_body(preferencelist=("html",)).get_content()
    assert "This solved it" in html and "mailto:" in html
    code, why, _ = desk.cli("why", "<jane-1@example.org>")
    assert "kb-suggested: offered KB-1" in why and "key terms found: lock, account" in why
    # doing nothing keeps the ticket as it is
    desk.run(now=at("10:30"))
    assert desk.ticket("INC-2")["status"] == "open"
    to, subject = follow_link(ack)
    assert to == DESK and "[INC-2]" in subject
    desk.smtp.reset()
    desk.deliver(mail(JANE, subject, "Just send this mail."))
    desk.run(now=at("10:40"))
    t = desk.ticket("INC-2")
    assert (t["status"], t["closure_code"]) == ("resolved", "self-service")
    assert any(e["kind"] == "self-service" and "KB-1" in e["detail"] for e in t["events"])
    told = desk.sent(to=t["assignee"])
    assert told and "Solved by the requester with KB-1" in told[-1].subject
    assert desk.sent(to="jane@example.org", subject_has="Resolved")  # with the link to say it is not fixed
    assert cli_json(desk, "kb", "show", "1")["use_count"] == 1
    # the same click again changes nothing more
    desk.deliver(mail(JANE, subject, "Just send this mail."))
    desk.run(now=at("10:45"))
    assert cli_json(desk, "kb", "show", "1")["use_count"] == 1


def test_a_strangers_copy_of_the_link_does_nothing(desk):
    publish_locked_out(desk)
    desk.deliver(mail(JANE, "Cannot log in", "cannot log in, account locked"))
    desk.run(now=at("10:00"))
    _, subject = follow_link(desk.sent(to="jane@example.org")[-1])
    desk.smtp.reset()
    desk.deliver(mail("Mallory <mallory@evil.example>", subject, "Just send this mail."))
    forged = re.sub(r"kbsolved1-(\d+)-(\w+)-[0-9a-f]{16}", r"kbsolved1-\1-\2-" + "0" * 16, subject)
    assert forged != subject
    desk.deliver(mail(JANE, forged, "Just send this mail."))
    desk.run(now=at("10:10"))
    t = desk.ticket("INC-2")
    assert t["status"] == "open" and t["closure_code"] is None
    assert cli_json(desk, "kb", "show", "1")["use_count"] == 0
    assert not desk.sent(to="mallory@evil.example")
    # Mallory's copy is refused; a token with a bad signature is ordinary mail (a reply on INC-2)
    assert {i["from"]: i["outcome"] for i in desk.inbound()[:2]} == {"mallory@evil.example": "ignored",
                                                                     "jane@example.org": "reply"}


def test_an_unrelated_incident_is_offered_nothing(desk):
    publish_locked_out(desk)
    desk.deliver(mail(JANE, "Printer prints blank pages", "The printer on floor 3 prints blank pages.",
                      msgid="<jane-2@example.org>"))
    desk.run(now=at("10:00"))
    ack = desk.sent(to="jane@example.org")[-1]
    assert "Known fixes" not in ack.text and "mailto:" not in ack.text
    code, why, _ = desk.cli("why", "<jane-2@example.org>")
    assert "no article offered: none scores kb.min_score" in why


def test_the_assignment_notice_lists_the_known_fixes_and_a_relay_never_does(desk):
    publish_locked_out(desk)
    desk.deliver(mail(JANE, "Cannot log in", "cannot log in, account locked"))
    desk.run(now=at("10:00"))
    notice = desk.sent(to="bob@example.test")[-1]
    assert "Known fixes for incidents like this one" in notice.text
    assert "KB-1: Locked out after password change" in notice.text
    assert "INC-1: Locked out after password change" in notice.text and "Resolution: Your account was locked" in notice.text
    desk.smtp.reset()
    desk.deliver(reply_to(notice, "bob@example.test", "Hi Jane, I am unlocking your account now."))
    desk.run(now=at("10:05"))
    (relay,) = desk.sent(to="jane@example.org")
    assert "unlocking your account" in relay.text
    assert "Known fixes" not in relay.text and "KB-1" not in relay.text and "INC-1" not in relay.text


@both_databases
def test_kb_search_answers_the_technician_alone_with_the_best_matches(desk):
    publish_locked_out(desk)
    desk.deliver(mail(JANE, "Printer jam", "Tray 2 jams."))
    desk.run(now=at("10:00"))
    notice = desk.sent(to="bob@example.test")[-1]
    desk.smtp.reset()
    desk.deliver(reply_to(notice, "bob@example.test", "#kb search account locked after password change"))
    desk.run(now=at("10:05"))
    (answer,) = desk.sent()
    assert answer.rcpts == ["bob@example.test"]
    assert "Knowledge base: account locked" in answer.subject and "[INC-2]" in answer.subject
    assert "KB-1: Locked out after password change" in answer.text and "INC-1: Locked out" in answer.text
    assert "staff only" in answer.text
    # from a staff address, a new mail of just "#kb search" is answered too, and opens no ticket
    desk.smtp.reset()
    desk.deliver(mail("carol@example.test", "kb", "#kb search locked"))
    desk.run(now=at("10:10"))
    (answer,) = desk.sent()
    assert answer.rcpts == ["carol@example.test"] and "KB-1" in answer.text
    assert len(desk.tickets()) == 2


def test_a_requester_may_neither_publish_nor_search_nor_retire(desk):
    publish_locked_out(desk)
    ack = desk.sent(to="tom@example.org")[0]
    for line in ("#kb Stolen title", "#kb search password", "#kb retire 1"):
        desk.smtp.reset()
        desk.deliver(reply_to(ack, "tom@example.org", line))
        desk.run(now=at("10:00"))
        (refusal,) = desk.sent(to="tom@example.org")
        assert "only technicians" in refusal.text
    assert cli_json(desk, "kb", "show", "1")["retired"] is False


def test_kb_on_an_open_ticket_without_resolve_is_refused(desk):
    desk.deliver(mail(TOM, "Locked out", "Account locked."))
    desk.run(now=at("09:00"))
    notice = desk.sent(to="alice@example.test")[-1]
    desk.smtp.reset()
    desk.deliver(reply_to(notice, "alice@example.test", "#kb\nUnlock it in the directory."))
    desk.run(now=at("09:05"))
    (refusal,) = desk.sent(to="alice@example.test")
    assert "publish with #resolve in the same mail" in refusal.text
    assert cli_json(desk, "kb", "list") == [] and not desk.sent(to="tom@example.org")


def test_publishing_again_from_the_same_ticket_makes_a_new_version_and_tells_the_requester_nothing(desk):
    publish_locked_out(desk)
    notice = desk.sent(to="alice@example.test")[0]
    desk.smtp.reset()
    desk.deliver(reply_to(notice, "alice@example.test",
                          "#kb Account locked after a password change\nUnlock the account in the directory, then remove the "
                          "old password from every phone and tablet."))
    desk.run(now=at("11:00"))
    article = cli_json(desk, "kb", "show", "1")
    assert article["version"] == 2 and article["title"] == "Account locked after a password change"
    assert article["text"].startswith("Unlock the account") and [v["version"] for v in article["versions"]] == [1, 2]
    assert len(cli_json(desk, "kb", "list")) == 1
    assert not desk.sent(to="tom@example.org")  # the text was for the knowledge base


@both_databases
def test_a_retired_article_is_offered_no_more(desk):
    publish_locked_out(desk)
    notice = desk.sent(to="alice@example.test")[0]
    desk.deliver(reply_to(notice, "alice@example.test", "#kb retire KB-1"))
    desk.run(now=at("11:00"))
    assert cli_json(desk, "kb", "show", "1")["retired"] is True
    desk.smtp.reset()
    desk.deliver(mail(JANE, "Cannot log in", "cannot log in, account locked"))
    desk.run(now=at("11:10"))
    assert "KB-1" not in desk.sent(to="jane@example.org")[-1].text
    assert "KB-1" not in desk.sent(to="bob@example.test")[-1].text
    code, out, _ = desk.cli("kb", "list")
    assert "retired" in out


def test_status_in_a_reply_tells_that_tickets_state_to_the_sender_alone(desk):
    desk.deliver(mail(JANE, "Printer jam", "Tray 2 jams."))
    desk.run(now=at("09:00"))
    ack = desk.sent(to="jane@example.org")[-1]
    desk.smtp.reset()
    desk.deliver(reply_to(ack, "jane@example.org", "#status"))
    desk.run(now=at("09:30"))
    (answer,) = desk.sent()
    assert answer.rcpts == ["jane@example.org"] and "[INC-1]" in answer.subject
    text = answer.text
    assert "INC-1: Printer jam" in text and "Status:      open" in text and "Handled by:  Alice" in text
    assert "Response:    due by" in text and "Resolution:  due by" in text
    assert desk.ticket("INC-1")["status"] == "open"  # a question, not a change; nothing relayed to Alice


def test_a_stranger_who_cites_a_tickets_mail_gets_no_status(desk):
    desk.deliver(mail(JANE, "Printer jam", "Tray 2 jams."))
    desk.run(now=at("09:00"))
    ack = desk.sent(to="jane@example.org")[-1]
    desk.smtp.reset()
    desk.deliver(reply_to(ack, "mallory@evil.example", "#status"))
    desk.run(now=at("09:30"))
    assert not any("Printer jam" in m.text and "Handled by" in m.text for m in desk.sent(to="mallory@evil.example"))


@both_databases
def test_status_in_a_new_mail_lists_the_senders_open_tickets_and_nobody_elses(desk):
    desk.deliver(mail(JANE, "Printer jam", "Tray 2 jams."))
    desk.deliver(mail(TOM, "Locked out", "Account locked."))
    desk.run(now=at("09:00"))
    desk.deliver(mail(JANE, "Monitor flickers", "The second monitor flickers."))
    desk.run(now=at("09:05"))
    desk.smtp.reset()
    desk.deliver(mail(JANE, "status?", "#status"))
    desk.deliver(mail("Mallory <mallory@evil.example>", "status", "#status"))
    desk.run(now=at("09:30"))
    (answer,) = desk.sent(to="jane@example.org")
    assert "Your open incidents" in answer.subject
    assert "INC-3: Monitor flickers" in answer.text and "INC-1: Printer jam" in answer.text
    assert answer.text.index("INC-3") < answer.text.index("INC-1") and "Locked out" not in answer.text
    (nothing,) = desk.sent(to="mallory@evil.example")
    assert "no open incidents" in nothing.text and "INC-" not in nothing.text.split("--")[0]
    assert len(desk.tickets()) == 3  # a #status mail opens no ticket


@both_databases
def test_the_report_counts_self_service_resolutions_the_deflection_rate_and_article_uses(desk):
    publish_locked_out(desk)
    desk.deliver(mail(JANE, "Cannot log in", "cannot log in, account locked"))
    desk.deliver(mail("Joe <joe@example.org>", "Printer jam", "Tray 2 jams."))
    desk.run(now=at("10:00"))
    _, subject = follow_link(desk.sent(to="jane@example.org")[-1])
    desk.deliver(mail(JANE, subject, "Just send this mail."))
    desk.run(now=at("10:10"))
    report = cli_json(desk, "report", "--now", at("11:00"))
    assert report["overall"]["self_service_resolutions"] == 1
    assert report["overall"]["deflection_rate"] == round(1 / 3, 3)
    assert report["knowledge_base"]["tickets_offered_articles"] == 1
    [a] = report["knowledge_base"]["articles"]
    assert (a["ref"], a["use_count"], a["offered_in_period"], a["used_in_period"]) == ("KB-1", 1, 1, 1)
    code, text, _ = desk.cli("report", "--now", at("11:00"))
    assert "Self-service: 1 resolved by a knowledge-base article, deflection rate 33%" in text
    assert re.search(r"KB-1 +uses +1", text)


def test_with_trusted_servers_only_authenticated_senders_are_offered_articles(desk):
    desk.write_config(security={"trust_sender_address": False, "trusted_authserv_ids": ["mx.example.test"]})
    publish_locked_out(desk, headers={"Authentication-Results": AR_STAFF})
    assert cli_json(desk, "kb", "list")
    desk.deliver(mail(JANE, "Cannot log in", "cannot log in, account locked", msgid="<forged@example.org>"))
    desk.run(now=at("10:00"))
    assert "Known fixes" not in desk.sent(to="jane@example.org")[-1].text
    code, why, _ = desk.cli("why", "<forged@example.org>")
    assert "outsiders cannot mine the knowledge base" in why
    desk.deliver(mail(JANE, "Cannot log in", "cannot log in, account locked", headers={"Authentication-Results": AR_ORG}))
    desk.run(now=at("10:05"))
    assert "KB-1: Locked out after password change" in desk.sent(to="jane@example.org")[-1].text


def test_hostile_words_in_an_incident_are_searched_as_words(desk):
    publish_locked_out(desk)
    nasty = ('account locked" OR title:* NEAR(a b) \'; DROP TABLE kb_article; -- ^ * " ( ) '
             "{ } | & ! :* <-> \\ %s %(x)s " + "ü" * 3000)
    desk.deliver(mail(JANE, 'Locked" OR *', nasty))
    desk.deliver(mail(JANE, "#kb search", "#kb retire 1"))
    desk.run(now=at("10:00"))
    assert not desk.inbound(failed=True)
    assert len(desk.tickets()) == 3 and cli_json(desk, "kb", "show", "1")["retired"] is False


@both_databases
def test_an_attackers_problem_text_cannot_break_the_resolution_that_indexes_it(desk):
    padding = "x" * 250
    desk.deliver(mail(JANE, "Locked " + "y" * 300, f"{padding}a {padding}b " + "z" * 5000 + " account locked"))
    desk.run(now=at("09:00"))
    notice = desk.sent(to="alice@example.test")[-1]
    desk.deliver(reply_to(notice, "alice@example.test", "#resolve fixed\nUnlocked the account."))
    desk.run(now=at("09:10"))
    assert not desk.inbound(failed=True)
    assert desk.ticket("INC-1")["status"] == "resolved"


@both_databases
def test_changing_kb_language_rebuilds_the_indexes_at_init(desk):
    publish_locked_out(desk)
    desk.write_config(kb={"language": "german"})
    code, out, err = desk.cli("init")
    assert code == 0, err
    assert "indexes built for kb.language = 'german'" in out
    assert "indexes built" not in desk.cli("init")[1]  # safe to run again
    desk.deliver(mail(JANE, "Account locked after password change", "account locked"))
    desk.run(now=at("10:00"))
    assert "KB-1" in desk.sent(to="jane@example.org")[-1].text
    desk.write_config(kb={"language": "Robert'); DROP TABLE ticket;--"})
    code, _, err = desk.cli("check-config")
    assert code == 2 and "kb.language" in err


def test_the_click_is_valid_for_thirty_days(desk):
    publish_locked_out(desk)
    desk.deliver(mail(JANE, "Cannot log in", "cannot log in, account locked"))
    desk.run(now=at("10:00"))
    _, subject = follow_link(desk.sent(to="jane@example.org")[-1])
    desk.deliver(mail(JANE, subject, "Just send this mail."))
    later = (dt.datetime.fromisoformat(at("10:00")) + dt.timedelta(days=31)).isoformat()
    desk.run(now=later)
    t = desk.ticket("INC-2")
    assert t["closure_code"] != "self-service"


# --- the look-up on a large base: bounded, and still right ------------------------------------


@pytest.fixture
def kb_base(desk):
    """A runtime on the desk's database with 600 articles that all say "password" and
    "reset", each about one product of its own, and one about the VPN."""
    from maildesk import store
    from maildesk.desk import kbsearch
    from maildesk.service.runtime import Runtime

    store.open_database(desk.db_url)
    rt = Runtime.start(parse_config(desk.config))
    now = dt.datetime(2026, 11, 30, 9, 0, tzinfo=dt.UTC)
    with store.write_transaction():
        for i in range(600):
            title, text = (f"Password reset for app{i}", f"Reset the password of app{i} in its settings; the password "
                           f"reset mail of app{i} comes within minutes.")
            if i == 599:
                title, text = "Password reset", "Reset your password at the self-service portal."
            a = store.KbArticle.create(title=title, text=text, key_terms=kbterms.key_string(title, text, None),
                                       created_at=now, updated_at=now)
            kbsearch.index_article(rt, a)
    return rt, kbsearch


@both_databases
def test_a_look_up_leaves_out_the_words_most_articles_hold_and_still_finds_the_fix(kb_base):
    rt, kbsearch = kb_base
    words, how = kbsearch.pick_words(rt, "kb_term", ["password", "reset", "app123"], ["password", "reset", "app123"])
    assert (words, how) == (["app123"], "OR")  # 600 articles hold the other two: ranking them all would buy nothing
    [best, *_] = kbsearch.search_articles(rt, "Password reset of app123", "the reset mail of app123 never comes", 3)
    assert best.title == "Password reset for app123" and best.score >= 0.5
    words, how = kbsearch.pick_words(rt, "kb_term", ["password", "reset"], ["password", "reset"])
    assert how == "AND" and set(words) == {"password", "reset"}
    found = kbsearch.search_articles(rt, "password reset", "", 3)
    assert found and all("Password reset" in m.title for m in found)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(max_codepoint=127), max_size=80))
def test_words_of_ascii_text_are_those_the_unicode_pattern_finds(text):
    expected = [w for w in kbterms._WORD.findall(text.lower()) if 1 < len(w) <= kbterms.MAX_WORD]
    assert kbterms.words(text) == expected
