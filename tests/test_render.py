"""Outgoing mail as bytes (render.build_mail): what any mail program can read back."""

from __future__ import annotations

import datetime as dt
import email
import email.policy

import pytest

from maildesk.mailout.render import build_mail

WHEN = dt.datetime(2026, 11, 27, 9, 30, tzinfo=dt.UTC)


def _build(text: str, html: str | None = None) -> email.message.EmailMessage:
    raw = build_mail(from_addr="helpdesk@example.test", from_name="IT", to_addr="jane@example.org",
                     subject="[INC-1] Printer", message_id="x@example.test", date=WHEN, text=text, html=html)
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))
    return email.message_from_bytes(raw, policy=email.policy.default)


@pytest.mark.parametrize("text, cte", [
    ("Hello Jane,\n\nwe have logged it.\n", "7bit"),
    ("Grüße, Jürgen\n", "quoted-printable"),
    ("x" * 1200 + "\n", "quoted-printable"),  # longer than a line may be
])
def test_a_text_part_is_7bit_when_it_can_be_and_quoted_printable_otherwise(text, cte):
    msg = _build(text, "<p>" + text + "</p>")
    plain, html = msg.get_body(("plain",)), msg.get_body(("html",))
    assert plain["Content-Transfer-Encoding"] == cte == html["Content-Transfer-Encoding"]
    assert plain.get_content().replace("\r\n", "\n") == text
    assert html.get_content().replace("\r\n", "\n") == "<p>" + text + "</p>"


def test_a_line_that_is_a_lone_dot_survives_as_text():
    # SMTP's dot-stuffing is the client's business (aiosmtplib); the part keeps the line
    msg = _build("one\n.\ntwo\n")
    assert msg.get_content().replace("\r\n", "\n") == "one\n.\ntwo\n"


def test_the_text_body_alone_is_the_mails_text_without_compiling_its_html():
    # `tickets show` prints the text of each mail the desk sent: the HTML is no work of its
    from maildesk.config import parse_config
    from maildesk.mailout.render import Templates, _render_context_for, _sample
    from tests.builders import minimal_config

    context = _render_context_for(parse_config(minimal_config(), deep=False), _sample())
    alone, both = Templates(), Templates()
    assert alone.text("ack", **context) == both.render("ack", **context).text
    assert len(alone.html_env.cache) == 0 < len(both.html_env.cache)


def test_a_configuration_section_in_a_mail_context_is_kept_as_its_fields():
    from maildesk.config import SlaPolicy, parse_duration
    from maildesk.mailout.render import snapshot

    policy = SlaPolicy(priority="high", response=parse_duration("1h"), resolution=parse_duration("8h"))
    kept = snapshot({"policy": policy})["policy"]
    assert kept["priority"] == "high" and kept["calendar"] == "business" and kept["name"] is None
    assert kept["response"] == {"text": "1h", "days": 0, "seconds": 3600}
