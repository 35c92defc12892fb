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
    from maildesk.mailout.render import Templates

    context = _context()
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


# --- compiled templates kept between processes (render._Compiled) ----------------------


@pytest.fixture
def temp_dir(tmp_path, monkeypatch):
    """A temp directory of the test's own, where jinja2 makes this user's cache folder."""
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    return tmp_path / "tmp"


@pytest.fixture
def compiles(monkeypatch):
    """The names of the templates compiled from their source from now on."""
    import jinja2

    names: list[str] = []
    compile_ = jinja2.Environment.compile

    def spy(self, source, name=None, filename=None, raw=False, defer_init=False):
        names.append(name)
        return compile_(self, source, name, filename, raw, defer_init)

    monkeypatch.setattr(jinja2.Environment, "compile", spy)
    return names


def _context() -> dict:
    from maildesk.config import parse_config
    from maildesk.mailout.render import _render_context_for, _sample
    from tests.builders import minimal_config

    return _render_context_for(parse_config(minimal_config(), deep=False), _sample())


def test_a_template_compiled_by_one_process_is_not_compiled_by_the_next_until_its_text_changes(temp_dir, tmp_path,
                                                                                              compiles):
    from maildesk.mailout.render import Templates

    override = tmp_path / "templates"
    override.mkdir()
    (override / "ack.txt.j2").write_text("Subject: Got it\n\nWe have {{ ref }}.\n")
    first = Templates(override).text("ack", **_context())
    assert compiles == ["ack.txt.j2#body"] and first.startswith("We have INC-")
    compiles.clear()
    assert Templates(override).text("ack", **_context()) == first  # a new process, as `tickets show` is
    assert compiles == []
    (override / "ack.txt.j2").write_text("Subject: Got it\n\nWe took {{ ref }}.\n")
    assert Templates(override).text("ack", **_context()).startswith("We took INC-")
    assert compiles == ["ack.txt.j2#body"]


def test_a_damaged_cache_entry_is_compiled_again_and_written_over(temp_dir, compiles):
    import jinja2.bccache

    from maildesk.mailout.render import Templates

    expected = Templates().render("ack", **_context())
    entries = [p for p in temp_dir.rglob("*.cache")]
    assert {p.name.split("-")[1] for p in entries} == {"text", "html"}  # one environment's code is not the other's
    for path in entries:
        path.write_bytes(jinja2.bccache.bc_magic + b"\x80\x05 not a pickle")
    compiles.clear()
    assert Templates().render("ack", **_context()) == expected
    assert "ack.txt.j2#body" in compiles and "ack.html.j2" in compiles
    compiles.clear()
    assert Templates().render("ack", **_context()) == expected and compiles == []


def test_without_a_usable_temp_directory_templates_are_compiled_in_each_process(temp_dir, monkeypatch, compiles):
    import shutil
    import tempfile

    from maildesk.mailout.render import Templates

    expected = Templates().text("ack", **_context())
    running = Templates()
    shutil.rmtree(temp_dir)  # the cache folder gone under a running process: nothing written, nothing fails
    compiles.clear()
    assert running.text("ack", **_context()) == expected and "ack.txt.j2#body" in compiles
    not_a_folder = temp_dir.parent / "a-file"
    not_a_folder.write_text("")
    monkeypatch.setattr(tempfile, "tempdir", str(not_a_folder))
    templates = Templates()
    assert templates.text_env.bytecode_cache is None and templates.text("ack", **_context()) == expected


def test_a_text_template_without_its_subject_line_is_refused_by_name(temp_dir, tmp_path):
    from maildesk.mailout.render import TemplateMissing, Templates

    override = tmp_path / "templates"
    override.mkdir()
    (override / "ack.txt.j2").write_text("Got it\n\nWe have {{ ref }}.\n")
    for part in ("subject", "text"):
        with pytest.raises(TemplateMissing, match=r"template ack.txt.j2 must begin with a Subject: line"):
            getattr(Templates(override), part)("ack", **_context())
    with pytest.raises(TemplateMissing, match=r"template nonesuch.txt.j2 is missing"):
        Templates(override).text("nonesuch")


def test_a_template_file_whose_name_has_a_hash_sign_is_that_file(temp_dir, tmp_path):
    from maildesk.mailout.render import Templates

    override = tmp_path / "templates"
    override.mkdir()
    (override / "ack.txt.j2").write_text('Subject: Got it\n\n{% include "notes#body.txt.j2" %}')
    (override / "notes#body.txt.j2").write_text("Subject: not a subject line\nthe whole file\n")
    assert Templates(override).text("ack", **_context()) == "Subject: not a subject line\nthe whole file\n"
