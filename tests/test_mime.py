"""maildesk.mailin.mime: raw bytes of one mail to what the desk needs, on small inline mails,
hostile input, and every message of the shared corpus when it is present."""

from __future__ import annotations

import csv
import json
import signal
import struct
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from maildesk.config import Limits
from maildesk.config.record import replace
from maildesk.mailin.mime import (
    MailRejected,
    clean_header_text,
    html_to_text,
    parse_mail,
    safe_filename,
    sanitize_html,
    strip_quoted,
)
from maildesk.mailin.mime.headers import getaddresses  # noqa: E402
from maildesk.mailin.mime.mail import ParsedMail  # noqa: E402
from tests.conftest import CORPUS  # noqa: E402

LIMITS = Limits()


def parse(text: str | bytes, limits: Limits = LIMITS):
    raw = text if isinstance(text, bytes) else text.encode("utf-8")
    return parse_mail(raw.replace(b"\n", b"\r\n"), limits)


PLAIN = """\
Return-Path: <anna@example.com>
From: Anna Muster <Anna.Muster@Example.COM>
To: IT Helpdesk <helpdesk@example.org>, bob@example.org
Cc: "Doe, John" <john@example.org>
Subject: Printer on floor 2 is down
Date: Mon, 1 Jan 2024 10:00:00 +0100
Message-ID: <CAF123@mail.example.com>
MIME-Version: 1.0
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: 8bit

Hello, the printer shows error 49.4C02.
Grüße, Anna
"""


# --- headers, addresses, ids -----------------------------------------------------------


def test_plain_mail_gives_text_subject_ids_sender_and_recipients():
    mail = parse(PLAIN)
    assert mail.text == "Hello, the printer shows error 49.4C02.\nGrüße, Anna"
    assert mail.subject == "Printer on floor 2 is down"
    assert mail.message_id == "CAF123@mail.example.com"
    assert mail.sender.addr == "anna.muster@example.com"
    assert mail.sender.name == "Anna Muster"
    assert mail.sender_problem is None
    assert [a.addr for a in mail.to] == ["helpdesk@example.org", "bob@example.org"]
    assert mail.cc[0].name == "Doe, John"
    assert mail.date.isoformat() == "2024-01-01T10:00:00+01:00"
    assert mail.html is None and mail.attachments == []
    assert mail.size == len(PLAIN.encode().replace(b"\n", b"\r\n"))
    assert mail.header("return-path") == "<anna@example.com>"
    assert mail.header("X-Absent") == ""


def test_rfc2047_subject_is_decoded_joined_and_made_one_line():
    mail = parse(
        "From: a@example.com\n"
        "Subject: =?utf-8?q?Drucker_=E2=9C=93?=\n =?utf-8?b?IMOkw7bDvA==?=\n\tand\x00 more\n\nx\n"
    )
    assert mail.subject == "Drucker ✓ äöü and more"


def test_encoded_word_split_inside_a_character_is_joined_before_decoding():
    mail = parse("From: a@example.com\nSubject: =?utf-8?q?price_=E2=82?= =?utf-8?q?=AC_10?=\n\nx\n")
    assert mail.subject == "price € 10"


def test_encoded_words_with_unknown_or_broken_charsets_do_not_raise():
    mail = parse(
        "From: =?x-klingon?q?Kirk=E9?= <kirk@example.com>\n"
        "Subject: =?x-unknown?q?caf=E9?= =?bogus?b?!!!?= =?utf-8?b?w6k?=\n\nx\n"
    )
    assert mail.subject.startswith("café")
    assert mail.sender.name == "Kirké"


def test_header_injection_through_encoded_crlf_stays_on_one_line():
    mail = parse("From: a@example.com\nSubject: =?utf-8?q?hi=0D=0ABcc:_victim@example.org?=\n\nx\n")
    assert mail.subject == "hi Bcc: victim@example.org"
    assert "\n" not in mail.header("subject") and "\r" not in mail.header("subject")


def test_undeclared_8bit_headers_are_utf8_or_else_windows_1252():
    raw = (b"From: J\xc3\xb6rg <joerg@example.com>\nTo: M\xfcller <m@example.com>\n"
           b"Subject: caf\xe9 \x93quoted\x94\n\nx\n")
    mail = parse_mail(raw, LIMITS)
    assert mail.sender.name == "Jörg"
    assert mail.to[0].name == "Müller"
    assert mail.subject == "café “quoted”"


def test_undeclared_8bit_headers_follow_the_charset_the_body_declares():
    # sina.com's bounce: a raw GB2312 subject over a body labelled gb2312 (corpus
    # flufl-bounce sina_01.txt); Windows-1252 made it "ÓÊ¼þ´«ÊäÊ§°Ü£¡".
    raw = (b"From: mailer-daemon@sina.com\nSubject: \xd3\xca\xbc\xfe\xb4\xab\xca\xe4\xca\xa7\xb0\xdc\xa3\xa1\n"
           b"To: \xc0\xee\xcb\xc4 <li@example.cn>\nContent-Type: text/plain; charset=gb2312\n\n"
           b"\xc4\xfa\xba\xc3\n")
    mail = parse_mail(raw, LIMITS)
    assert mail.subject == "邮件传输失败！"
    assert mail.to[0].name == "李四"
    assert mail.text == "您好"
    # UTF-8 still comes first; bytes that are not valid in the body's charset are Windows-1252
    korean = parse_mail(b"Subject: Fr\xf6sche\nFrom: J\xc3\xb6rg <j@example.com>\n"
                        b"Content-Type: text/plain; charset=euc-kr\n\nx\n", LIMITS)
    assert korean.sender.name == "Jörg" and korean.subject == "Frösche"
    assert parse_mail(b"Subject: Fr\xf6sche\nContent-Type: text/plain; charset=utf-8\n\nx\n",
                      LIMITS).subject == "Frösche"


def test_undeclared_8bit_text_that_is_mostly_utf8_is_read_as_utf8():
    # flanker russian-attachment-yahoo.eml: Yahoo cut a long UTF-8 name inside a character;
    # a stray Latin-1 byte in UTF-8 text (flanker mailformed-headers.eml) likewise.
    mail = parse_mail(b"From: \xd0\xae\xd0\xbd\xd0\xb8\xd0\xba\xd0\xbe\xd0\xb4\xf1 <h@example.com>\n"
                      b"Subject: \xd0\x9a\xd0\xb0\xd1\x80\xd1\x82\xd0\n\nx\n", LIMITS)
    assert mail.sender.name == "Юникод\ufffd"
    assert mail.subject == "Карт\ufffd"


def test_two_from_headers_leave_the_sender_ambiguous():
    mail = parse("From: boss@example.com\nFrom: attacker@example.net\nSubject: x\n\nx\n")
    assert mail.sender is None
    assert mail.sender_problem == "2 From headers"
    assert [a.addr for a in mail.from_] == ["boss@example.com", "attacker@example.net"]


@pytest.mark.parametrize(
    "headers, problem",
    [
        ("From: a@example.com, b@example.com\n", "From holds 2 addresses"),
        ("From: alice@example.org)<bob@example.org>\n", "From holds 2 addresses"),
        ("From: <@relay.example.net:user@example.com>\n", "source-route address"),
        ("Subject: no from at all\n", "no From header"),
        ("From: undisclosed-recipients:;\n", "unparseable From"),
        ("From: just garbage\n", "unparseable From"),
    ],
)
def test_a_from_header_that_names_no_single_sender_says_why(headers, problem):
    mail = parse(headers + "\nbody\n")
    assert mail.sender is None
    assert mail.sender_problem == problem


def test_addresses_are_read_alike_on_every_python_patch_level():
    # Pythons with the CVE-2023-27043 fix (Debian 12's 3.11.2, 3.11.10+, 3.12.6+) parse
    # strictly by default and drop a whole header for a comma in a comment; others have
    # no such switch. The desk reads both the lenient way.
    cc = parse('From: a@example.com\nCc: "Smith, John" <john@example.com>, mary@example.com (Mary, IT)\n\nx\n')
    assert [a.addr for a in cc.cc] == ["john@example.com", "mary@example.com"]
    assert getaddresses(["alice@example.org)<bob@example.org>"]) == [
        ("", "alice@example.org"), ("", ""), ("", "bob@example.org")]


def test_display_names_and_addresses_are_cleaned_and_lower_cased():
    mail = parse('From: "=?utf-8?q?Doe=2C_J=0Aohn?=" <John.DOE@Example.com>\nTo: x\n\nb\n')
    assert mail.sender.name == "Doe, J ohn"
    assert mail.sender.addr == "john.doe@example.com"
    assert mail.to[0].addr == ""  # not an address, kept as a name


def test_message_ids_lose_brackets_and_tolerate_garbage_commas_and_folding():
    mail = parse(
        "From: a@example.com\nMessage-ID:  < abc@example.com >  (comment)\n"
        "In-Reply-To: Your message of Monday <p1@example.com>\n"
        "References: <p0@example.com>,<p1@\n example.com> garbage <p2@example.com>\n\nx\n"
    )
    assert mail.message_id == "abc@example.com"
    assert mail.in_reply_to == ["p1@example.com"]
    assert mail.references == ["p0@example.com", "p1@example.com", "p2@example.com"]


def test_ids_without_brackets_are_split_on_spaces_and_commas():
    mail = parse("From: a@example.com\nMessage-ID: bare@example.com\nReferences: a@x, b@y c@z\n\nx\n")
    assert mail.message_id == "bare@example.com"
    assert mail.references == ["a@x", "b@y", "c@z"]


@pytest.mark.parametrize("value", ["", "<>", "   "])
def test_an_empty_message_id_is_none(value):
    assert parse(f"From: a@example.com\nMessage-ID: {value}\n\nx\n").message_id is None


def test_date_is_aware_and_garbage_or_missing_dates_are_none():
    utc = parse("From: a@x.org\nDate: Mon, 1 Jan 2024 10:00:00 -0000\n\nx\n").date
    assert utc.utcoffset().total_seconds() == 0
    assert parse("From: a@x.org\nDate: yesterday-ish\n\nx\n").date is None
    assert parse("From: a@x.org\nDate: Mon, 45 Foo 99999 99:99:99 +9999\n\nx\n").date is None
    assert parse("From: a@x.org\n\nx\n").date is None


def test_header_and_headers_decode_and_keep_every_occurrence():
    mail = parse("From: a@x.org\nX-Tag: =?utf-8?q?eins?=\nX-Tag: zwei\n\tdrei\n\nx\n")
    assert mail.header("x-tag") == "eins"
    assert mail.headers("X-TAG") == ["eins", "zwei drei"]


def test_clean_header_text_removes_controls_and_collapses_whitespace():
    assert clean_header_text(" a\r\nb\x00c\td\u2028e\x1b  f ") == "a bc d e f"
    assert clean_header_text("") == ""


# --- bodies ---------------------------------------------------------------------------

ALTERNATIVE = """\
From: anna@example.com
Subject: alt
Content-Type: multipart/alternative; boundary="b1"

--b1
Content-Type: text/plain; charset=utf-8

{plain}
--b1
Content-Type: text/html; charset=utf-8

<html><head><style>p {{color: red}}</style></head><body>
<p onclick="steal()">Hello <b>HTML</b></p><script>alert(1)</script>
<a href="javascript:alert(1)">x</a><a href="https://example.org/kb">kb</a>
<img src="cid:img1@x"></body></html>
--b1--
"""


def test_alternative_prefers_the_plain_part_and_keeps_the_html_sanitized():
    mail = parse(ALTERNATIVE.format(plain="Hello plain"))
    assert mail.text == "Hello plain"
    assert "<b>HTML</b>" in mail.html
    for bad in ("script", "onclick", "javascript:", "style", "color: red"):
        assert bad not in mail.html
    assert 'href="https://example.org/kb"' in mail.html
    assert 'src="cid:img1@x"' in mail.html


def test_alternative_with_an_empty_plain_part_uses_the_html_as_text():
    mail = parse(ALTERNATIVE.format(plain="   "))
    assert "Hello HTML" in mail.text
    assert "alert" not in mail.text and "color" not in mail.text


def test_html_only_mail_is_converted_to_readable_text():
    mail = parse(
        "From: a@x.org\nContent-Type: text/html; charset=iso-8859-1\n\n"
        "<html><body><p>Caf\xe9 is <b>closed</b>.</p><table><tr><td>A</td><td>B</td></tr></table>"
        "<ul><li>one</li><li>two</li></ul></body></html>\n".encode("latin-1")
    )
    assert "Café is closed." in mail.text
    assert "A" in mail.text and "B" in mail.text and "one" in mail.text
    assert "<" not in mail.text
    assert mail.html.startswith("<p>Café")


def test_mixed_mail_concatenates_inline_text_and_keeps_files_apart():
    mail = parse(
        'From: a@x.org\nContent-Type: multipart/mixed; boundary="m"\n\n'
        "--m\nContent-Type: text/plain\n\nfirst part\n"
        '--m\nContent-Type: image/png\nContent-Disposition: attachment; filename="shot.png"\n'
        "Content-Transfer-Encoding: base64\n\niVBORw0KGgo=\n"
        '--m\nContent-Type: text/plain; name="log.txt"\n\nlog line\n'
        "--m\nContent-Type: text/plain\nContent-Disposition: inline\n\nsecond part\n"
        "--m--\n"
    )
    assert mail.text == "first part\nsecond part"
    assert [(a.filename, a.content_type) for a in mail.attachments] == [
        ("shot.png", "image/png"), ("log.txt", "text/plain")]
    png = mail.attachments[0]
    assert png.data == b"\x89PNG\r\n\x1a\n" and png.size == 8
    assert png.sha256 == "4c4b6a3be1314ab86138bef4314dde022e600960d8689a2c8f8631802d20dab6"


def test_inline_images_of_a_related_html_body_are_attachments():
    mail = parse(
        'From: a@x.org\nContent-Type: multipart/related; boundary="r"\n\n'
        '--r\nContent-Type: text/html\n\n<p>see <img src="cid:a@b"></p>\n'
        "--r\nContent-Type: image/gif\nContent-ID: <a@b>\nContent-Transfer-Encoding: base64\n\n"
        "R0lGODlhAQABAAAAACw=\n--r--\n"
    )
    assert mail.text == "see"
    assert [a.filename for a in mail.attachments] == ["attachment.gif"]


def test_attached_message_is_one_attachment_named_after_its_subject():
    mail = parse(
        'From: a@x.org\nContent-Type: multipart/mixed; boundary="m"\n\n'
        "--m\nContent-Type: text/plain\n\nforwarding this\n"
        "--m\nContent-Type: message/rfc822\n\n"
        "From: b@y.org\nSubject: =?utf-8?q?VPN_kaputt?=\nContent-Type: multipart/alternative; boundary=i\n\n"
        "--i\nContent-Type: text/plain\n\ninner text\n--i--\n"
        "--m--\n"
    )
    assert mail.text == "forwarding this"
    [eml] = mail.attachments
    assert eml.filename == "VPN kaputt.eml"
    assert eml.content_type == "message/rfc822"
    assert b"Subject: =?utf-8?q?VPN_kaputt?=" in eml.data and b"inner text" in eml.data


def test_delivery_report_text_is_the_human_part_and_the_rest_are_attachments():
    mail = parse(
        "From: MAILER-DAEMON@x.org\n"
        "Content-Type: multipart/report; report-type=delivery-status; boundary=r\n\n"
        "--r\nContent-Type: text/plain\n\nYour message could not be delivered.\n"
        "--r\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; x.org\n\n"
        "Final-Recipient: rfc822; gone@y.org\nAction: failed\nStatus: 5.1.1\n"
        "--r\nContent-Type: text/rfc822-headers\n\nMessage-ID: <orig@desk>\n"
        "--r--\n"
    )
    assert mail.text == "Your message could not be delivered."
    assert [a.content_type for a in mail.attachments] == ["message/delivery-status", "text/rfc822-headers"]
    assert b"Status: 5.1.1" in mail.attachments[0].data
    assert mail.msg.get_content_type() == "multipart/report"


def test_body_with_broken_base64_still_yields_text():
    mail = parse("From: a@x.org\nContent-Transfer-Encoding:  Base64 \n\nSGVsbG8g!!d29y\nbGQ\n")
    assert mail.text.startswith("Hello wor")
    assert "InvalidBase64" in mail.defects


def test_base64_padding_ends_its_line_but_padded_blocks_on_new_lines_join():
    # stalwart thirdparty/002.eml: words after the padding were decoded as junk bytes
    mail = parse("From: a@x.org\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: base64\n\n"
                 "ecO2dMOkIHZhYW4uCg== ignored\n")
    assert mail.text == "yötä vaan."
    glued = parse("From: a@x.org\nContent-Transfer-Encoding: base64\n\nSGVsbG8g\nd29ybGQ=\nISBCeWUu\n")
    assert glued.text == "Hello world! Bye."


def test_body_with_broken_quoted_printable_still_yields_text():
    mail = parse("From: a@x.org\nContent-Transfer-Encoding: quoted-printable\n\n"
                 "bad =ZZ escape=\n and caf=E9\n")
    assert "bad =ZZ escape" in mail.text and mail.text.endswith("and café")


def test_multipart_without_boundary_is_read_as_text():
    mail = parse("From: a@x.org\nContent-Type: multipart/mixed\n\nhello world\n")
    assert mail.text == "hello world"
    assert "NoBoundaryInMultipart" in mail.defects


def test_missing_end_boundary_keeps_the_parts():
    mail = parse("From: a@x.org\nContent-Type: multipart/mixed; boundary=z\n\n"
                 "--z\nContent-Type: text/plain\n\nhello\n")
    assert mail.text == "hello"
    assert "CloseBoundaryNotFound" in mail.defects


# --- charsets -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "charset, body, text",
    [
        ("unicode-1-1-utf-7", b"Hi +AOQ-", "Hi ä"),
        ("x-unknown", b"caf\xc3\xa9", "café"),
        ("x-unknown", b"caf\xe9", "café"),
        ("cp-850", b"caf\x82", "café"),
        ("ks_c_5601-1987", "안녕하세요".encode("cp949"), "안녕하세요"),
        ("iso-8859-8-i", "שלום".encode("iso8859-8"), "שלום"),
        ("windows-874", "สวัสดี".encode("cp874"), "สวัสดี"),
        ("gb2312", "中文𠀀".encode("gb18030"), "中文𠀀"),
        ("iso-2022-jp", "日本語".encode("iso2022_jp"), "日本語"),
        ("ISO-2022-JP", "ｱｲｳ".encode("iso2022_jp_ext"), "ｱｲｳ"),
        ("shift_jis", "①".encode("cp932"), "①"),
        ("us-ascii", b"caf\xe9", "café"),
        ("us-ascii", b"caf\xc3\xa9", "café"),
        ("iso-8859-1", b"\x93quoted\x94", "“quoted”"),
        ("iso-8859-1", b"caf\xc3\xa9", "café"),  # mislabelled UTF-8
        ("utf-8", b"caf\xe9 ok", "café ok"),  # mislabelled Latin-1 (zbateson m1010.txt)
        ("utf-8", "größe ".encode() + b"\xff", "größe \ufffd"),  # UTF-8 with one bad byte
        ("no-such-charset", b"caf\xe9", "café"),
        ("unicode_escape", b"\\ud800x\xff", "\\ud800xÿ"),  # not a charset: undeclared
        ('"utf-8"', b"caf\xc3\xa9", "café"),
    ],
)
def test_declared_charsets_decode_with_aliases_and_fallbacks(charset, body, text):
    raw = b"From: a@x.org\nContent-Type: text/plain; charset=" + charset.encode() + b"\n\n" + body
    mail = parse_mail(raw, LIMITS)
    assert mail.text == text


def test_text_never_holds_surrogates_nul_or_control_characters():
    raw = b"From: a@x.org\nContent-Type: text/plain; charset=utf-7\n\n+2AA- a\x00b\x1bc\td"
    mail = parse_mail(raw, LIMITS)
    assert mail.text == "\ufffd abc\td"
    mail.text.encode("utf-8")


# --- attachments and filenames ------------------------------------------------------------


def test_rfc2231_filename_continuations_are_joined_and_decoded():
    mail = parse(
        'From: a@x.org\nContent-Type: multipart/mixed; boundary="m"\n\n--m\n\nbody\n'
        "--m\nContent-Type: application/pdf\nContent-Disposition: attachment;\n"
        " filename*0*=utf-8''%E2%82%AC%20Rechnung;\n filename*1*=%20f%C3%BCr%20Mai.pdf\n\n%PDF\n"
        "--m\nContent-Type: application/msword; name=\"=?iso-8859-1?q?R=E9sum=E9.doc?=\"\n\nD\n"
        "--m--\n"
    )
    assert [a.filename for a in mail.attachments] == ["€ Rechnung für Mai.pdf", "Résumé.doc"]


def test_raw_8bit_filenames_are_read_as_utf8_or_windows_1252_not_replaced():
    # zbateson m2011.txt (Latin-1), spamscope mail_test_1 (UTF-8): compat32's get_param
    # gave "HasenundFr\ufffdsche.txt" and "\ufffd\ufffd\ufffd_\ufffd\ufffd558.zip".
    mail = parse_mail(
        b'From: a@x.org\nContent-Type: multipart/mixed; boundary="m"\n\n--m\n\nbody\n'
        b'--m\nContent-Type: text/plain; name="HasenundFr\xf6sche.txt"\n\nquak\n'
        b'--m\nContent-Type: application/zip\nContent-Disposition: attachment;\n'
        b' filename="\xd0\xa4\xd0\x9d\xd0\xa1_\xd0\xa0\xd0\xa4558.zip"\n\nPK\n--m--\n', LIMITS)
    assert [a.filename for a in mail.attachments] == ["HasenundFrösche.txt", "ФНС_РФ558.zip"]


def test_attached_message_with_a_raw_utf8_subject_is_named_after_it():
    # sisimai lhost-kddi-01.eml: the returned message's subject is raw UTF-8
    mail = parse_mail(
        b'From: a@x.org\nContent-Type: multipart/mixed; boundary="m"\n\n--m\n\nbounced\n'
        b"--m\nContent-Type: message/rfc822\n\nFrom: b@y.org\n"
        b"Subject: \xe7\x8c\xab\xe3\x81\xa1\xe3\x82\x83\xe3\x82\x93\n\nnyan\n--m--\n", LIMITS)
    assert [a.filename for a in mail.attachments] == ["猫ちゃん.eml"]


@pytest.mark.parametrize(
    "name, content_type, safe",
    [
        ("../../etc/passwd", "", "passwd"),
        ("C:\\x\\evil.exe", "", "evil.exe"),
        ("=?utf-8?q?Gr=C3=BC=C3=9Fe.txt?=", "", "Grüße.txt"),
        ("a\x00b\r\nc\x1b.txt", "", "abc.txt"),
        ("invoice\u202etxt.exe", "", "invoicetxt.exe"),
        (".htaccess", "", "htaccess"),
        ("...", "image/png", "attachment.png"),
        ("con.txt", "", "_con.txt"),
        ('what?<>|*:".txt', "", "what_______.txt"),
        (None, "", "attachment"),
        ("", "application/x-unknown-thing", "attachment.bin"),
        ("  ", "text/plain", "attachment.txt"),
    ],
)
def test_attachment_filenames_are_made_safe(name, content_type, safe):
    assert safe_filename(name, content_type) == safe


def test_long_filenames_are_capped_and_keep_their_extension():
    name = safe_filename("x" * 300 + ".pdf")
    assert len(name) <= 150 and name.endswith("xx.pdf")
    wide = safe_filename("ü" * 300 + ".docx")
    assert len(wide.encode("utf-8")) <= 240 and wide.endswith(".docx")


def _tnef(files: list[tuple[str, bytes]]) -> bytes:
    """A minimal TNEF stream (MS-OXTNEF): signature, key, version, then per file the
    rendering attribute that starts it, its title and its data."""

    def attribute(level: int, name: int, kind: int, data: bytes) -> bytes:
        checksum = struct.pack("<H", sum(data) & 0xFFFF)
        return struct.pack("<BHHI", level, name, kind, len(data)) + data + checksum

    out = struct.pack("<IH", 0x223E9F78, 1) + attribute(1, 0x9006, 8, struct.pack("<I", 0x10000))
    for name, data in files:
        out += attribute(2, 0x9002, 6, b"\x01\x00\xff\xff\xff\xff" + bytes(8))
        out += attribute(2, 0x8010, 1, name.encode() + b"\x00")
        out += attribute(2, 0x800F, 6, data)
    return out


def _mail_with(data: bytes, filename: str = "winmail.dat", ctype: str = "application/ms-tnef") -> bytes:
    import base64

    return (
        b'From: a@x.org\nContent-Type: multipart/mixed; boundary="m"\n\n'
        b"--m\nContent-Type: text/plain\n\nsee files\n"
        + f'--m\nContent-Type: {ctype}; name="{filename}"\nContent-Transfer-Encoding: base64\n\n'.encode()
        + base64.encodebytes(data) + b"--m--\n"
    )


def test_tnef_winmail_dat_is_replaced_by_the_files_inside_it():
    mail = parse_mail(_mail_with(_tnef([("report.txt", b"hello"), ("../log.csv", b"a,b\n")])), LIMITS)
    files = [(a.filename, a.data) for a in mail.attachments]
    assert files == [("report.txt", b"hello"), ("log.csv", b"a,b\n")]
    assert mail.text == "see files"


def test_unreadable_winmail_dat_is_kept_as_it_is():
    broken = _tnef([("report.txt", b"hello")])[:30] + b"\xff" * 7
    mail = parse_mail(_mail_with(broken), LIMITS)
    assert [a.filename for a in mail.attachments] == ["winmail.dat"]
    assert mail.attachments[0].data == broken


@pytest.mark.skipif(not (CORPUS / "tnefparse").is_dir(), reason="shared corpus not present")
@pytest.mark.parametrize("sample, names", [
    ("two-files.tnef", ["AUTHORS", "README"]),
    ("umlaut.tnef", ["TBZ PARIV GmbH.jpg", "image003.jpg", "UmlautAnhang-äüö.txt"]),
])
def test_corpus_winmail_dat_samples_unpack(sample, names):
    data = (CORPUS / "tnefparse/files/tests/examples" / sample).read_bytes()
    mail = parse_mail(_mail_with(data), LIMITS)
    assert [a.filename for a in mail.attachments] == names


# --- quoted history and signatures ---------------------------------------------------------

GMAIL = """\
#assign me
#status in-progress

Thanks, looking into it.

On Mon, Jan 1, 2024 at 10:00 AM Anna Muster <anna@example.com> wrote:

> The printer is broken.
> Please help.
"""

OUTLOOK = """\
It works again, thanks!

Best regards
Anna

________________________________
From: IT Helpdesk <helpdesk@example.org>
Sent: Monday, January 1, 2024 10:00 AM
To: Anna Muster <anna@example.com>
Subject: [INC-42] Printer

Dear Anna,
we restarted the spooler.
"""


@pytest.mark.parametrize(
    "reply, expected",
    [
        (GMAIL, "#assign me\n#status in-progress\n\nThanks, looking into it."),
        ("Fixed.\n\nOn Mon, Jan 1, 2024 at 10:00 AM Anna Muster Long Name <\n"
         "anna.muster.longname@example.com> wrote:\n\n> broken\n", "Fixed."),
        (OUTLOOK, "It works again, thanks!\n\nBest regards\nAnna"),
        ("Ok.\n\n-----Original Message-----\nFrom: IT\nSent: Monday\nTo: Anna\nSubject: RE: x\n\nold\n",
         "Ok."),
        ("Danke!\n\nVon: IT Helpdesk <it@example.org>\nGesendet: Montag, 1. Januar 2024 10:00\n"
         "An: Anna <anna@example.com>\nBetreff: [INC-42] Drucker\n\nHallo Anna,\n", "Danke!"),
        ("Still broken.\n\nSent from my iPhone\n\n> On 1 Jan 2024, at 10:00, IT <it@example.org> wrote:\n"
         "> \n> Please restart it.\n", "Still broken."),
        ("Works.\n\nOn 01/01/2024 10:00, IT Helpdesk wrote:\n> Please restart it.\n>\n> -- \n> IT\n",
         "Works."),
        ("Geht wieder.\n\n-- \nAnna Muster\nBuchhaltung\n\nAm 01.01.24 um 10:00 schrieb IT Helpdesk:\n"
         "> Bitte neu starten.\n", "Geht wieder."),
        ("Merci.\n\nLe lun. 1 janv. 2024 à 10:00, IT <it@example.org> a écrit :\n> Redémarrez.\n", "Merci."),
        ("了解です。\n\n2024年1月1日(月) 10:00 IT Helpdesk <it@example.org>:\n> 再起動してください。\n", "了解です。"),
    ],
    ids=["gmail", "gmail-wrapped", "outlook", "outlook-original-message", "outlook-german", "apple-mail",
         "thunderbird", "thunderbird-german-with-signature", "french", "gmail-japanese"],
)
def test_quoted_history_and_signature_are_stripped(reply, expected):
    assert strip_quoted(reply) == expected


def test_commands_at_the_top_survive_stripping_unchanged():
    reply = "#resolve fixed\n#note   keep  spacing\nDone.\n\n-- \nBob\n\nOn Mon, IT <it@x.org> wrote:\n> x\n"
    assert strip_quoted(reply).splitlines()[:2] == ["#resolve fixed", "#note   keep  spacing"]


def test_a_reply_without_quotes_comes_back_as_it_was():
    text = "Hi,\n\n  the VPN drops every 5 minutes:\n- step one\n- step two\nThanks,\nAnna\n\n"
    assert strip_quoted(text) == text.rstrip()


@pytest.mark.parametrize(
    "text",
    [
        "On Mon, Jan 1, 2024 at 10:00 AM IT <it@x.org> wrote:\n> Did you restart?\n\nYes, no change.",
        "Hi,\n\nIT wrote:\n> Did you restart?\nYes.\n> Which model?\nHP 4050.",
        "Look at this.\n\n---------- Forwarded message ---------\nFrom: Boss <boss@x.org>\n"
        "Date: Mon, Jan 1, 2024\nSubject: VPN\nTo: Anna <anna@x.org>\n\nVPN is down.",
        "The error says:\nPrinter offline\nThe log wrote:\nfoo",
        "On Mon, Jan 1, 2024 at 10:00 AM IT <it@x.org> wrote:\n> only a quote, nothing new",
    ],
    ids=["bottom-post", "inline-answers", "forward", "colons-in-text", "nothing-but-quote"],
)
def test_bottom_posts_forwards_and_plain_colons_are_kept_whole(text):
    assert strip_quoted(text) == text


def test_reply_text_is_computed_once_from_text():
    mail = parse("From: a@x.org\n\n" + GMAIL)
    assert mail.reply_text == "#assign me\n#status in-progress\n\nThanks, looking into it."
    assert mail.reply_text is mail.reply_text
    assert "reply_text" in vars(mail)


def test_a_summary_carries_the_reply_text_and_the_bytes_are_read_only_for_the_mime_tree():
    raw = ("From: a@x.org\n\n" + GMAIL).replace("\n", "\r\n").encode()
    mail = parse_mail(raw, LIMITS)
    summary = json.loads(json.dumps(mail.summary()))
    assert summary["reply"] == len(mail.reply_text)  # a prefix of the text: its length
    back = ParsedMail.from_summary(summary, raw)
    assert vars(back)["reply_text"] == mail.reply_text
    del summary["reply"]  # stored before summaries kept it: stripped when first read
    assert ParsedMail.from_summary(summary, raw).reply_text == mail.reply_text
    asked = []
    lazy = ParsedMail.from_summary(summary, lambda: asked.append(1) or raw)
    assert lazy.reply_text == mail.reply_text and lazy.header("Importance") == "" and not asked  # the summary's
    assert lazy.header("From") == "a@x.org" and asked == [1]  # the tree's: the bytes read once, then
    assert lazy.tree() is lazy.tree() and asked == [1]
    mail.__dict__["reply_text"] = "not the text's beginning"
    summary = json.loads(json.dumps(mail.summary()))
    assert ParsedMail.from_summary(summary, raw).reply_text == "not the text's beginning"


# --- HTML -----------------------------------------------------------------------------------


def test_sanitize_html_keeps_an_allow_list_only():
    html = sanitize_html(
        '<div style="x" onmouseover="evil()"><a href="javascript:alert(1)">a</a>'
        '<a href="mailto:x@y.org">m</a><iframe src="https://x"></iframe><form><input></form>'
        "<svg onload=alert(1)></svg><p>ok</p></div>"
    )
    assert html == '<div><a rel="noopener noreferrer nofollow">a</a>' \
        '<a href="mailto:x@y.org" rel="noopener noreferrer nofollow">m</a><p>ok</p></div>'


def test_hostile_html_falls_back_to_stripped_text_quickly():
    deep = "<div>" * 50_000 + "deep text" + "</div>" * 50_000
    table = "<table>" + "<tr><td>cell</td><td>x</td></tr>" * 20_000 + "</table>"
    started = time.monotonic()
    assert html_to_text(deep) == "deep text"
    assert html_to_text(table).startswith("cell  x\ncell  x")
    assert html_to_text("<" * 500_000).count("<") == 500_000
    assert html_to_text("<p>a<script>alert(1)</script>b<!-- c --></p>\x00") == "ab"
    assert time.monotonic() - started < 2


# --- limits and hostile input ----------------------------------------------------------------


def _nested_multipart(levels: int) -> bytes:
    head = b"From: a@x.org\nContent-Type: multipart/mixed; boundary=b0\n\n"
    body = b"".join(
        b"--b%d\nContent-Type: multipart/mixed; boundary=b%d\n\n" % (i, i + 1) for i in range(levels))
    body += b"--b%d\nContent-Type: text/plain\n\ndeep\n" % levels
    return head + body + b"".join(b"--b%d--\n" % i for i in range(levels, -1, -1))


def _many_parts(n: int) -> bytes:
    parts = b"".join(b"--x\nContent-Type: text/plain\n\npart %d\n" % i for i in range(n))
    return b"From: a@x.org\nContent-Type: multipart/mixed; boundary=x\n\n" + parts + b"--x--\n"


def test_a_header_block_over_the_limit_is_rejected_before_parsing():
    raw = b"".join(b"X-Filler-%d: %s\n" % (i, b"v" * 70) for i in range(4000)) + b"\nbody"
    with pytest.raises(MailRejected, match=r"^header block is 33\d KiB, over the limit of 256 KiB$"):
        parse_mail(raw, LIMITS)
    with pytest.raises(MailRejected, match="header block is"):
        parse_mail(b"Subject: " + b"x" * 10_000_000, LIMITS)


def test_more_parts_than_the_limit_are_rejected():
    assert len(parse_mail(_many_parts(400), LIMITS).text.splitlines()) == 400
    with pytest.raises(MailRejected, match=r"^more than 500 MIME parts$"):
        parse_mail(_many_parts(600), LIMITS)
    started = time.monotonic()
    with pytest.raises(MailRejected, match="more than 500 MIME parts"):
        parse_mail(_many_parts(100_000), LIMITS)
    assert time.monotonic() - started < 2


def test_nesting_deeper_than_the_limit_is_rejected():
    assert parse_mail(_nested_multipart(19), LIMITS).text == "deep"
    for raw in (_nested_multipart(21), _nested_multipart(400),
                b"From: a@x.org\n" + b"Content-Type: message/rfc822\n\n" * 5_000 + b"\nhi\n"):
        with pytest.raises(MailRejected, match=r"^MIME nesting deeper than 20$"):
            parse_mail(raw, LIMITS)


def test_a_huge_parameter_list_is_rejected_before_the_quadratic_stdlib_parser_sees_it():
    params = b';a="b' * 40_000
    raw = b"From: a@x.org\nContent-Type: multipart/mixed; boundary=q" + params + b"\n\n--q\n\nhi\n--q--\n"
    with pytest.raises(MailRejected, match=r"^a Content-Type field is 195 KiB, over 64 KiB$"):
        parse_mail(raw, LIMITS)


def test_parsing_longer_than_the_time_limit_is_rejected_and_the_alarm_restored():
    def previous(signum, frame):
        pass

    old = signal.signal(signal.SIGALRM, previous)
    try:
        raw = b"From: a@x.org\n\n" + b"a line of text\n" * 400_000
        with pytest.raises(MailRejected, match=r"^parsing took longer than 0.001 s$"):
            parse_mail(raw, replace(LIMITS, parse_seconds=0.001))
        assert signal.getsignal(signal.SIGALRM) is previous
        assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    finally:
        signal.signal(signal.SIGALRM, old)


def test_parsing_in_a_worker_thread_works_without_the_alarm():
    result = {}
    thread = threading.Thread(target=lambda: result.update(mail=parse(PLAIN)))
    thread.start()
    thread.join()
    assert result["mail"].sender.addr == "anna.muster@example.com"


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\n\n\n",
        b"no headers at all, just text\n",
        bytes(range(256)) * 40,
        b"From: a\x00@x.org\nSubject: \x00\n\n\x00\x00",
        b"x" * 10_000_000,
        b"From: a@x.org\n\n" + b"y" * 10_000_000,
        b"From: a@x.org\nContent-Type: multipart/mixed; boundary=\"\"\n\n--\nhello\n----\n",
        b"From: a@x.org\nContent-Type: multipart/alternative; boundary=a\n\n--b\nnope\n--a",
        b"From: a@x.org\nSubject: x\nSubject: y\nTo: a\nTo: b\nMessage-ID: <a>\nMessage-ID: <b>\n\nz",
        b"From: a@x.org\nContent-Type: text/plain; charset=\"\xff\xfe\"\n"
        b"Content-Transfer-Encoding: x-uue\n\nbegin 644\n",
        b"From: a@x.org\nContent-Type: message/rfc822\nContent-Transfer-Encoding: base64\n\n!!!",
        b"Subject: " + b"=?a?q?" * 30_000 + b"\n\nx",
        b"From: a" + b" " * 200_000 + b"b <x@y.org>\n\nx",
        b"\xef\xbb\xbfFrom: bom@x.org\n\nx",
        b"From: a@x.org\r\rSubject: cr only\r\rbody\r",
    ],
    ids=["empty", "blank-lines", "no-headers", "binary", "nul", "10mb-line", "10mb-body", "empty-boundary",
         "wrong-boundary", "duplicates", "bad-charset-uue", "base64-rfc822", "encoded-word-bomb",
         "whitespace-bomb", "utf8-bom", "cr-only"],
)
def test_hostile_input_parses_or_is_rejected_and_never_raises_anything_else(raw):
    started = time.monotonic()
    try:
        mail = parse_mail(raw, LIMITS)
    except MailRejected as e:
        assert e.reason
        return
    assert isinstance(mail.text, str)
    mail.text.encode("utf-8")
    mail.reply_text.encode("utf-8")
    assert "\x00" not in mail.text and "\n" not in mail.subject
    assert time.monotonic() - started < LIMITS.parse_seconds


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=3000) | st.lists(st.sampled_from([
    b"From: a@x.org\n", b"Content-Type: multipart/mixed; boundary=b\n", b"\n", b"--b\n", b"--b--\n",
    b"Content-Transfer-Encoding: base64\n", b"Content-Type: text/html; charset=utf-7\n", b"=?utf-8?b?", b"?=",
    b"Content-Disposition: attachment; filename*0*=x''%FF\n", b"<p>", b"\xff", b"\x00", b"> quoted\n",
    b"Content-Type: message/rfc822\n", b"Subject: =?iso-2022-jp?b?GyRC?=\n", b"\r", b";", b'"',
]), max_size=40).map(b"".join))
def test_any_bytes_parse_or_are_rejected(raw):
    try:
        mail = parse_mail(raw, LIMITS)
    except MailRejected:
        return
    for text in (mail.text, mail.reply_text, mail.subject, mail.html or ""):
        text.encode("utf-8")
    assert all(a.filename and "/" not in a.filename for a in mail.attachments)


# --- the shared corpus ---------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(not (CORPUS / "manifest.csv").is_file(), reason="shared corpus not present")
def test_every_corpus_message_parses_or_is_rejected_within_the_time_limit():
    with open(CORPUS / "manifest.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["kind"] == "message"]
    parsed, rejected, slowest = 0, {}, (0.0, "")
    for row in rows:
        raw = (CORPUS / row["file"]).read_bytes()
        started = time.perf_counter()
        try:
            mail = parse_mail(raw, LIMITS)
            assert isinstance(mail.text, str)
            mail.text.encode("utf-8")
            parsed += 1
        except MailRejected as e:
            rejected[row["file"]] = e.reason
        took = time.perf_counter() - started
        assert took < LIMITS.parse_seconds, row["file"]
        slowest = max(slowest, (took, row["file"]))
    print(f"\ncorpus: {len(rows)} messages, {parsed} parsed, {len(rejected)} rejected "
          f"{sorted(set(rejected.values()))}, slowest {slowest[0] * 1e3:.1f} ms ({slowest[1]})")
    assert parsed + len(rejected) == len(rows)


# --- the fast MIME splitter (mimetree) builds the stdlib's tree -----------------------------------


def _shape(msg):
    """Everything of a compat32 tree the stdlib parser decides."""
    payload = msg._payload
    return (
        msg.get_unixfrom(), list(msg._headers), msg.get_default_type(), msg.preamble, msg.epilogue,
        [type(d).__name__ for d in msg.defects],
        [_shape(p) for p in payload] if isinstance(payload, list) else payload,
    )


def _same_tree_as_the_stdlib(raw: bytes) -> bool:
    """Asserts mimetree and email.parser agree; True if mimetree did the work itself."""
    import email.parser
    import email.policy

    from maildesk.mailin.mime import tree

    ours = tree.parse_tree(raw)
    theirs = email.parser.BytesParser(policy=email.policy.compat32).parsebytes(raw)
    assert _shape(ours) == _shape(theirs)
    text = raw.decode("ascii", "surrogateescape")
    try:
        tree._part(text, 0, len(text), nested=False, depth=0)
        return True
    except tree._Unsure:
        return False


SPLITTER_CASES = {
    "plain": b"From: a@b.c\r\nSubject: hi\r\n\r\nbody\r\nmore\r\n",
    "lf only": b"From: a@b.c\nSubject: hi\n\nbody\n",
    "headers only": b"From: a@b.c\r\nSubject: hi\r\n",
    "no headers": b"\r\nbody\r\n",
    "multipart": b"From: a@b.c\r\nContent-Type: multipart/mixed; boundary=xx\r\n\r\npreamble\r\n--xx\r\n"
                 b"Content-Type: text/plain\r\n\r\nhello\r\n\r\n--xx\r\nContent-Type: application/pdf\r\n"
                 b"Content-Transfer-Encoding: base64\r\n\r\nAAAA\r\nBBBB\r\n--xx--\r\nepilogue\r\n",
    "no preamble, close at eof": b"Content-Type: multipart/mixed; boundary=\"q q\"\r\n\r\n--q q\r\n\r\nbare part\r\n--q q--",
    "nested": b"Content-Type: multipart/mixed; boundary=o\r\n\r\n--o\r\nContent-Type: multipart/alternative; boundary=i\r\n"
              b"\r\n--i\r\nContent-Type: text/plain\r\n\r\nt\r\n--i\r\nContent-Type: text/html\r\n\r\n<p>h</p>\r\n--i--\r\n"
              b"\r\n--o\r\nContent-Type: text/plain\r\n\r\n--o-- is not mine\r\n--o--\r\n",
    "empty parts": b"Content-Type: multipart/mixed; boundary=b\n\n--b\n\n--b\nX: y\n\n--b\nX: y\n--b--\n",
    "delimiter with spaces": b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b  \r\nA: b\r\n\r\nc\r\n--b--  \r\n",
    # the stdlib's own way with what the splitter leaves to it
    "no close delimiter": b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\ntext\r\n",
    "no start delimiter": b"Content-Type: multipart/mixed; boundary=b\r\n\r\njust text\r\n",
    "no boundary": b"Content-Type: multipart/mixed\r\n\r\n--b\r\n\r\ntext\r\n--b--\r\n",
    "bare CR": b"Subject: x\r\rbody\r",
    "not a header line": b"From: a@b.c\r\nthis is body already\r\n\r\nmore\r\n",
    "doubled delimiters": b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n--b\r\n\r\nx\r\n--b--\r\n",
    "message/rfc822": b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: message/rfc822\r\n\r\n"
                      b"Subject: inner\r\n\r\ninner body\r\n--b--\r\n",
    "8-bit bytes": "Subject: caf\u00e9\r\nContent-Type: text/plain; charset=latin-1\r\n\r\ncaf\u00e9\r\n".encode("latin-1"),
}


@pytest.mark.parametrize("name", SPLITTER_CASES)
def test_the_fast_splitter_builds_the_same_tree_as_the_stdlib(name):
    _same_tree_as_the_stdlib(SPLITTER_CASES[name])


def test_the_fast_splitter_builds_the_same_tree_as_the_stdlib_on_the_benchmark_mail():
    from bench.ingest import generate

    mails, _ = generate(300)
    assert all(_same_tree_as_the_stdlib(raw) for raw in mails)


@pytest.mark.skipif(not (CORPUS / "manifest.csv").is_file(), reason="shared corpus not present")
def test_the_fast_splitter_builds_the_same_tree_as_the_stdlib_on_every_corpus_file():
    files = [p for p in CORPUS.rglob("*") if p.is_file() and p.name not in ("manifest.csv", "README.md")]
    fast = sum(_same_tree_as_the_stdlib(p.read_bytes()) for p in files)
    print(f"\n{len(files)} corpus files, {fast} split by mimetree, the rest by the stdlib")


_PIECES = st.sampled_from([
    "Content-Type: multipart/mixed; boundary=b", "Content-Type: multipart/alternative; boundary=c",
    "Content-Type: text/plain", "Content-Type: message/rfc822", "Content-Transfer-Encoding: base64",
    "Subject: x", " folded", "--b", "--b--", "--c", "--c--", "--b  ", "--bb", "---b", "", "", "text", "From x",
    "no colon here", "QUJD", "--b--tail",
])


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lines=st.lists(_PIECES, max_size=30), eol=st.sampled_from(["\r\n", "\n"]), last_eol=st.booleans())
def test_the_fast_splitter_agrees_with_the_stdlib_on_any_arrangement_of_mime_lines(lines, eol, last_eol):
    raw = (eol.join(["Content-Type: multipart/mixed; boundary=b"] + lines) + (eol if last_eol else "")).encode()
    _same_tree_as_the_stdlib(raw)


def _random_part(r, depth: int) -> list[str]:
    """The lines of a random MIME part: nested multiparts, odd delimiters, missing
    separators and closes, preambles and epilogues, with the odd mistake."""
    heads = r.choice([["Content-Type: text/plain"], ["Content-Type: application/pdf", "Content-Transfer-Encoding: base64"],
                      [], ["X-A: 1", " folded"], ["From x"]])
    if depth < 3 and r.random() < 0.4:
        b = r.choice(["b", "c d", "=_x", "b" * depth]) + str(depth)
        heads = [f'Content-Type: multipart/{r.choice(["mixed", "alternative"])}; boundary="{b}"'] + r.choice(
            [[], ["Content-Transfer-Encoding: 7bit"], ["Content-Transfer-Encoding: base64"]])
        body = r.choice([[], [], [""], ["preamble"], ["preamble", ""], ["--" + b + "x"]])
        for _ in range(r.randint(0, 3)):
            body.append("--" + b + r.choice(["", "", " ", "\t ", "--" if r.random() < 0.1 else ""]))
            body += _random_part(r, depth + 1)
        if r.random() < 0.9:
            body.append("--" + b + "--" + r.choice(["", " "]))
        body += r.choice([[], [], [""], ["epilogue"], ["", ""], ["epilogue", ""]])
    else:
        body = r.choice([[], [""], ["text"], ["line", "", "line"], ["QUJD", "QUJD", ""], ["--not"], ["From me"]])
    return heads + ([] if r.random() < 0.1 else [""]) + body


@settings(max_examples=500, deadline=None)
@given(seed=st.integers(0, 2**32), eol=st.sampled_from(["\r\n", "\n"]), last_eol=st.booleans())
def test_the_fast_splitter_agrees_with_the_stdlib_on_random_mime_trees(seed, eol, last_eol):
    import random

    lines = ["From: a@b.c"] + _random_part(random.Random(seed), 0)
    _same_tree_as_the_stdlib((eol.join(lines) + (eol if last_eol else "")).encode())
