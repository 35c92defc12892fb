"""Raw bytes of one inbound mail to what the desk needs: addresses, ids, subject,
readable text, sanitized HTML and attachments. Pure: no database, no network.

    mail = parse_mail(raw, cfg.limits)          # or MailRejected(reason): quarantine it
    mail.sender, mail.sender_problem            # one unambiguous From, or why not
    mail.message_id, mail.in_reply_to, mail.references
    mail.text                                   # text/plain preferred, HTML-only converted
    mail.reply_text                             # without quoted history and signature (lazy)
    mail.html                                   # sanitized (nh3), or None
    mail.attachments                            # AttachmentPart(filename, content_type, data, ...)
    mail.header("Auto-Submitted")               # decoded, CR/LF/NUL removed; "" if absent

Speed: the stdlib `email` package with `policy.compat32` and explicit decoding here
is about five times faster than `policy.default` (PERF-NOTES.md). HTML is converted to
text only when a mail has no usable text/plain body, and quote stripping runs only
when `reply_text` is first read.

Safety (DESIGN.md section 6, guarantee 4): `parse_mail` raises nothing but
`MailRejected`, whatever the bytes; every decoded string is valid Unicode without
surrogates or NUL characters; the limits in `config.Limits` bound header size,
part count, nesting and time.
"""

from __future__ import annotations

import binascii
import codecs
import email.message
import email.parser
import email.policy
import email.utils
import functools
import hashlib
import html as htmllib
import re
import signal
import struct
import threading
import time
import unicodedata
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone

import nh3

from .config import Limits
from .mimetree import parse_tree

__all__ = [
    "Address", "AttachmentPart", "MailRejected", "ParsedMail", "clean_header_text",
    "html_to_text", "parse_mail", "safe_filename", "sanitize_html", "strip_quoted",
]


class MailRejected(Exception):
    """The message breaks a limit or cannot be read at all; `reason` says which, in
    words fit for the quarantine log."""

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(reason)


@dataclass
class Address:
    name: str  # display name, decoded, CR/LF/NUL removed
    addr: str  # lower-cased addr-spec, "" when unparseable


@dataclass
class AttachmentPart:
    filename: str  # safe: see safe_filename
    content_type: str
    data: bytes | None  # None once the contents are stored (attachments.write_contents)
    size: int
    sha256: str  # hex of data


# Headers a summary keeps, for the stages that read headers beyond the usual ones
# (sender authentication, urgency); anything else is read from the MIME tree.
SUMMARY_HEADERS = ("authentication-results", "importance", "x-priority", "priority")


@dataclass
class ParsedMail:
    msg: email.message.Message | None  # the compat32 tree; None when made from a summary (see tree())
    message_id: str | None  # without <>, whitespace removed; None if absent or empty
    in_reply_to: list[str]  # ids without <>, in order
    references: list[str]  # ids without <>, in order
    subject: str  # decoded, one line
    from_: list[Address]  # every address of every From header
    sender: Address | None  # the single sender when unambiguous
    sender_problem: str | None  # why there is none: "2 From headers", ...
    reply_to: list[Address]
    to: list[Address]
    cc: list[Address]
    date: datetime | None  # aware; None if absent or garbage
    text: str  # text/plain preferred, HTML-only mail converted; LF line ends
    html: str | None  # the HTML body, sanitized; None without an HTML part
    attachments: list[AttachmentPart] = field(default_factory=list)
    defects: list[str] = field(default_factory=list)  # "CloseBoundaryNotFound", ...
    size: int = 0  # len(raw)
    raw: bytes = b""  # kept by from_summary, to build the tree when it is asked for
    kept_headers: dict | None = None  # SUMMARY_HEADERS, when made from a summary

    def tree(self) -> email.message.Message:
        """The compat32 MIME tree, parsed now if this mail was made from a summary."""
        if self.msg is None:
            self.msg = _PARSER.parsebytes(self.raw)
        return self.msg

    def header(self, name: str) -> str:
        """The first header of that name, RFC 2047 decoded, one line; "" if absent."""
        values = self.headers(name)
        return values[0] if values else ""

    def headers(self, name: str) -> list[str]:
        name = name.lower()
        if self.kept_headers is not None and name in SUMMARY_HEADERS:
            return list(self.kept_headers.get(name, []))
        return [
            clean_header_text(decode_header_value(str(value)))
            for key, value in self.tree().raw_items()
            if key.lower() == name
        ]

    def summary(self) -> dict:
        """What the desk process needs of this mail, as JSON-ready data: the mail
        process parses each message once and stores this beside its bytes."""
        pair = lambda a: [a.name, a.addr]  # noqa: E731
        return {
            "message_id": self.message_id, "in_reply_to": self.in_reply_to, "references": self.references,
            "subject": self.subject, "from": [pair(a) for a in self.from_],
            "sender": pair(self.sender) if self.sender else None, "sender_problem": self.sender_problem,
            "reply_to": [pair(a) for a in self.reply_to], "to": [pair(a) for a in self.to],
            "cc": [pair(a) for a in self.cc], "date": self.date.isoformat() if self.date else None,
            "text": self.text, "html": self.html, "defects": self.defects, "size": self.size,
            "attachments": [[p.filename, p.content_type, p.size, p.sha256] for p in self.attachments],
            "headers": {h: self.headers(h) for h in SUMMARY_HEADERS},
        }

    @classmethod
    def from_summary(cls, d: dict, raw: bytes) -> "ParsedMail":
        addrs = lambda items: [Address(n, a) for n, a in items]  # noqa: E731
        return cls(
            msg=None, message_id=d["message_id"], in_reply_to=d["in_reply_to"], references=d["references"],
            subject=d["subject"], from_=addrs(d["from"]), sender=Address(*d["sender"]) if d["sender"] else None,
            sender_problem=d["sender_problem"], reply_to=addrs(d["reply_to"]), to=addrs(d["to"]), cc=addrs(d["cc"]),
            date=datetime.fromisoformat(d["date"]) if d["date"] else None, text=d["text"], html=d["html"],
            attachments=[AttachmentPart(f, t, None, n, h) for f, t, n, h in d["attachments"]],
            defects=d["defects"], size=d["size"], raw=raw, kept_headers=d["headers"],
        )

    @functools.cached_property
    def reply_text(self) -> str:
        return strip_quoted(self.text)


# --- text clean-up --------------------------------------------------------------

# C0 controls other than whitespace, DEL, and the C1 controls: deleted. Whitespace
# controls (TAB, CR, LF, VT, FF, FS..US) become spaces and are collapsed below.
_CONTROLS = {c: None for c in (*range(0x00, 0x09), 0x0E, 0x0F, *range(0x10, 0x1C), 0x7F,
                               *range(0x80, 0x85), *range(0x86, 0xA0))}
_CONTROLS.update({c: " " for c in (0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x1C, 0x1D, 0x1E, 0x1F)})
_SURROGATE = re.compile("[\ud800-\udfff]")


def clean_header_text(s: str) -> str:
    """One line of text fit for a header the desk writes: control characters gone
    (CR, LF and TAB become spaces, NUL and the rest are removed), whitespace runs
    collapsed to one space, ends stripped. Stops header injection from mail-derived
    text (DESIGN.md section 6.4)."""
    if not s:
        return ""
    s = s.translate(_CONTROLS)
    if not s.isascii():
        s = _SURROGATE.sub("\ufffd", s)
    return " ".join(s.split())  # str.split also splits on U+2028, U+0085, NBSP...


_BODY_CONTROLS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_CONTROL_BYTES = bytes([*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F])


def _clean_body(s: str) -> str:
    """Body text: LF line ends, no control characters but TAB and LF (PostgreSQL
    text cannot hold NUL; the rest only garbles a terminal or a web page)."""
    if "\r" in s:
        s = s.replace("\r\n", "\n").replace("\r", "\n")
    # Looking in the UTF-8 bytes is 10x faster than the regex on text without them.
    utf8 = s.encode("utf-8", "surrogatepass")
    if len(utf8.translate(None, _CONTROL_BYTES)) == len(utf8):
        return s
    return _BODY_CONTROLS.sub("", s)


# --- charsets -------------------------------------------------------------------

# Names seen in real mail that Python's codec registry does not know, or knows as a
# narrower charset than mail clients really send under that name.
_CHARSET_ALIASES = {
    "unicode-1-1-utf-7": "utf-7", "utf7": "utf-7", "x-utf-7": "utf-7",
    "unicode-1-1-utf-8": "utf-8", "unicode": "utf-8", "x-unicode": "utf-8", "utf8mb4": "utf-8",
    "iso-8859-8-i": "iso8859-8", "iso-8859-8-e": "iso8859-8", "iso_8859-8-i": "iso8859-8",
    "iso-8859-6-i": "iso8859-6", "iso-8859-6-e": "iso8859-6", "logical": "iso8859-8",
    "visual": "iso8859-8",
    "windows-874": "cp874", "tis-620": "cp874", "iso-8859-11": "cp874", "x-windows-874": "cp874",
    # GB2312 and GBK mail routinely holds GB18030-only characters.
    "gb2312": "gb18030", "gbk": "gb18030", "x-gbk": "gb18030", "euc-cn": "gb18030",
    "gb_2312-80": "gb18030", "csgb2312": "gb18030", "chinese": "gb18030", "cp936": "gb18030",
    "x-euc-cn": "gb18030", "hz-gb-2312": "hz",
    "big5": "big5hkscs", "x-x-big5": "big5hkscs", "cn-big5": "big5hkscs", "csbig5": "big5hkscs",
    # Windows code pages are supersets of the ISO charsets they are labelled as.
    "ks_c_5601-1987": "cp949", "ks_c_5601": "cp949", "euc-kr": "cp949", "x-euc-kr": "cp949",
    "ksc5601": "cp949", "korean": "cp949", "csksc56011987": "cp949",
    "shift_jis": "cp932", "shift-jis": "cp932", "x-sjis": "cp932", "sjis": "cp932",
    "ms_kanji": "cp932", "windows-31j": "cp932", "x-ms-cp932": "cp932", "csshiftjis": "cp932",
    "euc-jp": "euc_jis_2004", "x-euc-jp": "euc_jis_2004",
    "x-mac-roman": "mac-roman", "mac": "mac-roman", "x-mac-ce": "mac-latin2",
    "x-mac-cyrillic": "mac-cyrillic", "x-mac-greek": "mac-greek", "x-mac-turkish": "mac-turkish",
    "x-mac-icelandic": "mac-iceland",
    "iso-8859-1": "cp1252", "latin1": "cp1252", "iso_8859-1": "cp1252", "l1": "cp1252",
    "iso8859-1": "cp1252", "iso-ir-100": "cp1252", "cp819": "cp1252", "ibm819": "cp1252",
    "8859-1": "cp1252", "x-cp1252": "cp1252", "ansi": "cp1252", "iso-8859-9": "cp1254",
    "iso-8859-7": "iso8859-7", "x-cp1250": "cp1250", "x-cp1251": "cp1251",
    "koi8": "koi8-r", "x-koi8-r": "koi8-r", "koi8r": "koi8-r",
    "iso-2022-jp-ms": "iso2022_jp_ext", "cp50220": "iso2022_jp_ext", "cp50221": "iso2022_jp_ext",
    "cp50222": "iso2022_jp_ext",
}
# Labels that say nothing: treat the text as undeclared.
_UNDECLARED = frozenset({
    "", "x-unknown", "unknown", "unknown-8bit", "x-unknown-8bit", "x-user-defined", "default",
    "none", "charset", "8bit", "binary", "_autodetect", "_autodetect_all", "auto", "us-ascii",
    "ascii", "ansi_x3.4-1968", "iso646-us", "us", "cp367", "ibm367", "csascii", "7bit",
})
# Text codecs that are not charsets: they can smuggle surrogates or cost quadratic time.
_UNSAFE_CODECS = frozenset({
    "unicode_escape", "raw_unicode_escape", "unicode-escape", "raw-unicode-escape",
    "punycode", "idna", "undefined", "mbcs", "oem",
})
_ISO2022_JP = ("iso2022_jp", "iso2022_jp_ext", "iso2022_jp_2", "iso2022_jp_2004", "iso2022_jp_3")
_WINDOWS_NUMBER = re.compile(r"(?:cp|windows|win|ms|x-cp|ibm|x-windows)[-_ ]?(\d{3,5})")


@functools.lru_cache(maxsize=512)
def _codec(charset: str) -> str | None:
    """Python's codec name for a declared charset; None when the label is empty,
    says nothing, or names no safe text codec."""
    name = charset.strip().strip("\"'").strip().lower()
    name = name.split("*", 1)[0]  # RFC 2231 language suffix: utf-8*en
    if name in _UNDECLARED:
        return None
    name = _CHARSET_ALIASES.get(name, name)
    m = _WINDOWS_NUMBER.fullmatch(name)
    if m:
        name = "cp" + m.group(1)
    for candidate in (name, name[2:] if name.startswith("x-") else None):
        if not candidate:
            continue
        try:
            info = codecs.lookup(candidate)
        except (LookupError, ValueError):
            continue
        if not getattr(info, "_is_text_encoding", True) or info.name in _UNSAFE_CODECS:
            return None
        return info.name
    return None


def _latin1_for_undefined(err: UnicodeDecodeError):
    # cp1252 leaves five bytes undefined; read them as Latin-1 (WHATWG does the same).
    return err.object[err.start:err.end].decode("latin-1"), err.end


codecs.register_error("maildesk-latin1", _latin1_for_undefined)


def _cp1252(data: bytes) -> str:
    return data.decode("cp1252", "maildesk-latin1")


def _undeclared(data: bytes, fallback: str | None = None) -> str:
    """Undeclared 8-bit text: UTF-8 when it decodes; else the codec `fallback` (the
    charset the rest of the mail declares, see `header_fallback`) when the bytes are
    valid in it; else UTF-8 with U+FFFD for the few bad bytes when most of its 8-bit
    characters are good UTF-8 (a name that a mailer cut at a byte count inside a
    character, a stray Latin-1 byte in UTF-8 text); else Windows-1252."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    if fallback:
        try:
            return data.decode(fallback)
        except (UnicodeDecodeError, LookupError):
            pass
    text = data.decode("utf-8", "replace")
    bad = text.count("\ufffd")
    # Latin-1 or CJK bytes seldom form valid UTF-8 sequences: two good characters per
    # bad byte do not happen by chance.
    if sum(1 for c in text if c > "\x7f") - bad >= 2 * bad:
        return text
    return _cp1252(data)


# Codecs whose bytes cannot stand in an 8-bit header (ASCII is not a subset of them), or
# that are tried anyway: never a fallback for undeclared header bytes.
_NO_FALLBACK = frozenset({"utf-8", "utf-7", "utf-16", "utf-16-le", "utf-16-be", "utf-32",
                          "utf-32-le", "utf-32-be", "cp1252", "hz"})


def header_fallback(charsets) -> str | None:
    """The codec for raw 8-bit header bytes that are not UTF-8: the first charset the
    mail declares for its text that can hold them (a mailer that writes raw bytes in
    its headers writes them in the charset of its body, as with GB2312 subjects from
    Chinese webmail); None to keep Windows-1252."""
    for charset in charsets:
        codec = _codec(charset[:80]) if charset else None
        if codec and codec not in _NO_FALLBACK and not codec.startswith("iso2022"):
            return codec
    return None


def decode_bytes(data: bytes, charset: str | None) -> tuple[str, str | None]:
    """Text from bytes in a declared charset, and a defect name when the label was
    unknown ("UnknownCharset") or wrong ("CharsetMismatch"), else None.

    Order: the declared charset strictly (all ISO-2022-JP variants for that family);
    then UTF-8 strictly; then the declared charset with replacement characters. An
    unknown or empty label is read as undeclared: UTF-8, else Windows-1252. Text
    labelled Latin-1/Windows-1252 that is valid multi-byte UTF-8 is read as UTF-8 (a
    common mislabel; real Latin-1 text is almost never valid UTF-8), and text labelled
    UTF-8 without a single UTF-8 sequence in its 8-bit bytes is read as Windows-1252
    (the reverse mislabel); with some, its bad bytes become U+FFFD."""
    if not data:
        return "", None
    if data.isascii() and (not charset or not any(c in data for c in b"+\x1b~\x00")):
        return data.decode("ascii"), None  # but UTF-7, ISO-2022, HZ, UTF-16 look 7-bit
    codec = _codec(charset[:80]) if charset else None
    if codec is None:
        unknown = charset and charset.strip().strip("\"'").lower() not in _UNDECLARED
        return _undeclared(data), "UnknownCharset" if unknown else None
    if codec in ("cp1252", "iso8859-15", "utf-8"):
        try:
            text = data.decode("utf-8")
            return text, "CharsetMismatch" if codec != "utf-8" else None
        except UnicodeDecodeError:
            if codec == "cp1252":
                return _cp1252(data), None
            if codec == "utf-8":
                text = data.decode("utf-8", "replace")
                if any("\x7f" < c != "\ufffd" for c in text):  # UTF-8 indeed, with bad bytes
                    return text, "CharsetMismatch"
                return _cp1252(data), "CharsetMismatch"  # not one UTF-8 sequence: Latin-1
    try:
        return _no_surrogates(data.decode(codec), codec), None
    except UnicodeDecodeError:
        pass
    if codec.startswith("iso2022_jp"):
        for variant in _ISO2022_JP:
            try:
                return data.decode(variant), None
            except UnicodeDecodeError:
                continue
    try:
        return data.decode("utf-8"), "CharsetMismatch"
    except UnicodeDecodeError:
        pass
    try:
        return _no_surrogates(data.decode(codec, "replace"), codec), "CharsetMismatch"
    except (UnicodeError, LookupError, ValueError):  # a codec that cannot even replace
        return _cp1252(data), "CharsetMismatch"


def _no_surrogates(s: str, codec: str) -> str:
    # Only UTF-7 among the allowed codecs can produce lone surrogates.
    if codec == "utf-7":
        return _SURROGATE.sub("\ufffd", s)
    return s


def _text_of_raw(value: str, fallback: str | None = None) -> str:
    """A header value as BytesParser left it (ASCII, 8-bit bytes as surrogate escapes)
    to real text: RFC 6532 UTF-8 or, failing that, the codec `fallback`, else
    Windows-1252 (see _undeclared)."""
    if value.isascii():
        return value
    try:
        return _undeclared(value.encode("ascii", "surrogateescape"), fallback)
    except UnicodeEncodeError:  # already text (decoded before, or built in code)
        return _SURROGATE.sub("\ufffd", value)


# --- RFC 2047 encoded words -------------------------------------------------------

# The encoded text may not hold "?" (RFC 2047 section 4): keeping it out of the class
# keeps this regex linear on hostile input.
_ENCODED_WORD = re.compile(r"=\?([^?\s]{1,80}?)\?([bBqQ])\?([^?]*)\?=")
_B64_JUNK = re.compile(rb"[^A-Za-z0-9+/]")
_B64_TRAILER = re.compile(rb"(=+)[ \t]+[^\r\n]*")


def _b64decode(data: bytes) -> tuple[bytes, bool]:
    """Base64 that tolerates what mailers get wrong: missing padding, stray
    characters, padding in the middle. Returns the bytes and whether it was broken."""
    if b"=" not in data.rstrip(b"= \t\r\n"):  # padding inside: blocks glued together
        try:
            return binascii.a2b_base64(data), False
        except binascii.Error:
            pass
    out = []
    # RFC 2045 6.8: padding ends the data; words after it on its line are a trailer,
    # not more base64 ("...Cg== ignored"). Padded blocks on separate lines still join.
    data = _B64_TRAILER.sub(rb"\1", data)
    for chunk in re.split(rb"=+", data):
        chunk = _B64_JUNK.sub(b"", chunk)
        chunk = chunk[: len(chunk) - len(chunk) % 4] if len(chunk) % 4 == 1 else chunk
        chunk += b"=" * (-len(chunk) % 4)
        try:
            out.append(binascii.a2b_base64(chunk))
        except binascii.Error:
            continue
    return b"".join(out), True


def decode_header_value(value: str, fallback: str | None = None) -> str:
    """A raw header value to text: 8-bit bytes read as UTF-8 or else as `fallback`
    or Windows-1252, RFC 2047 encoded words decoded (unknown charsets included),
    whitespace between adjacent encoded words dropped. Not yet one line: see
    clean_header_text."""
    value = _text_of_raw(value, fallback)
    if "=?" not in value:
        return value
    out: list[str] = []
    pending: list[bytes] = []  # adjacent encoded words in one charset decode together,
    pending_charset = None  # so that a character split across two words survives
    pos = 0

    def flush():
        nonlocal pending, pending_charset
        if pending:
            out.append(decode_bytes(b"".join(pending), pending_charset)[0])
        pending, pending_charset = [], None

    for m in _ENCODED_WORD.finditer(value):
        gap = value[pos:m.start()]
        if gap and not (gap.isspace() and pending):  # RFC 2047 6.2: drop space between words
            flush()
            out.append(gap)
        charset = m.group(1).split("*", 1)[0]
        text = m.group(3)
        if m.group(2) in "bB":
            data, _ = _b64decode(text.encode("ascii", "replace"))
        else:
            data = binascii.a2b_qp(text.encode("utf-8", "replace"), header=True)
        if pending and charset.lower() != (pending_charset or "").lower():
            flush()
        pending.append(data)
        pending_charset = charset
        pos = m.end()
    flush()
    out.append(value[pos:])
    return "".join(out)


# --- addresses, ids, dates ------------------------------------------------------------

_SIMPLE_ADDR = r"[^\s<>()\[\]\\,;:\"@]+@[^\s<>()\[\]\\,;:\"@]+"
_SIMPLE_ONE = re.compile(
    rf"\s*(?:({_SIMPLE_ADDR})|([^<>()\\,;:\"@]*)<({_SIMPLE_ADDR})>|\"([^\"\\]*)\"\s*<({_SIMPLE_ADDR})>)\s*"
)
_VALID_ADDR = re.compile(r"[^\s<>@]+@[^\s<>@]+")
_SOURCE_ROUTE = re.compile(r"<\s*@")


def parse_addresses(raw_values: list[str], fallback: str | None = None) -> list[Address]:
    """Every address in these raw header values, in order. Simple forms take a fast
    path; anything with quotes, comments or groups goes to email.utils.getaddresses.
    Raw 8-bit bytes that are not UTF-8 are read with the codec `fallback`, if given."""
    result: list[Address] = []
    for raw in raw_values:
        value = _text_of_raw(raw, fallback)
        pairs = _simple_addresses(value)
        if pairs is None:
            pairs = email.utils.getaddresses([value])
        for name, addr in pairs:
            name = clean_header_text(decode_header_value(name)) if name else ""
            addr = clean_header_text(addr).lower()
            if not _VALID_ADDR.fullmatch(addr):
                name = name or addr
                addr = ""
            if name or addr:
                result.append(Address(name, addr))
    return result


def _simple_addresses(value: str) -> list[tuple[str, str]] | None:
    if "(" in value or ";" in value or "\\" in value or value.count('"') > 2:
        return None
    pieces = value.split(",") if '"' not in value else [value]
    pairs = []
    for piece in pieces:
        if not piece.strip():
            continue
        m = _SIMPLE_ONE.fullmatch(piece)
        if not m:
            return None
        if m.group(1):
            pairs.append(("", m.group(1)))
        elif m.group(3):
            pairs.append((m.group(2).strip(), m.group(3)))
        else:
            pairs.append((m.group(4), m.group(5)))
    return pairs


def _sender(from_values: list[str], from_: list[Address]) -> tuple[Address | None, str | None]:
    """The one sender, or why there is none that can be trusted to be unique."""
    if not from_values:
        return None, "no From header"
    if len(from_values) > 1:
        return None, f"{len(from_values)} From headers"
    if _SOURCE_ROUTE.search(from_values[0]):
        return None, "source-route address"
    if not from_:
        return None, "empty From" if not from_values[0].strip() else "unparseable From"
    if len(from_) > 1:
        return None, f"From holds {len(from_)} addresses"
    if not from_[0].addr:
        return None, "unparseable From"
    return from_[0], None


_BRACKETED_ID = re.compile(r"<([^<>]*)>")
_BARE_ID = re.compile(r"[^\s<>,;()\"]+")
_MAX_ID = 998  # RFC 5322 line length: longer ids are garbage, keep keys bounded


def _clean_id(s: str) -> str:
    return "".join(clean_header_text(s).split())[:_MAX_ID]


def parse_message_id(raw: str | None) -> str | None:
    if raw is None:
        return None
    value = _text_of_raw(raw)
    m = _BRACKETED_ID.search(value)
    if m and m.group(1).strip():
        return _clean_id(m.group(1)) or None
    m = _BARE_ID.search(value)
    return _clean_id(m.group(0)) or None if m else None


def parse_id_list(raw_values: list[str]) -> list[str]:
    """Message ids from In-Reply-To or References, in order, without brackets.
    Bracketed ids when there are any; otherwise bare tokens that look like ids."""
    value = " ".join(_text_of_raw(v) for v in raw_values)
    ids = [_clean_id(i) for i in _BRACKETED_ID.findall(value)]
    ids = [i for i in ids if i]
    if ids:
        return ids
    return [_clean_id(t) for t in _BARE_ID.findall(value) if "@" in t]


def parse_date(raw: str | None) -> datetime | None:
    if not raw:
        return None
    try:
        when = email.utils.parsedate_to_datetime(clean_header_text(_text_of_raw(raw)))
    except (TypeError, ValueError, OverflowError, IndexError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:  # "-0000": time in UTC, zone unknown (RFC 5322 3.3)
        when = when.replace(tzinfo=timezone.utc)
    return when


# --- filenames ----------------------------------------------------------------------

_FILENAME_DROP = re.compile(
    "[\x00-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff\ufff9-\ufffb]"
)
_FILENAME_BAD = re.compile(r'[<>:"|?*]')
_WINDOWS_DEVICES = re.compile(r"(?i)(con|prn|aux|nul|com\d|lpt\d)(\..*)?")
_MAX_FILENAME_CHARS = 150
_MAX_FILENAME_BYTES = 240
_EXTENSIONS = {
    "text/plain": ".txt", "text/html": ".html", "text/calendar": ".ics", "text/csv": ".csv",
    "text/xml": ".xml", "text/rfc822-headers": ".txt", "text/x-vcard": ".vcf",
    "text/vcard": ".vcf", "message/rfc822": ".eml", "message/delivery-status": ".txt",
    "message/disposition-notification": ".txt", "message/global": ".eml",
    "message/global-delivery-status": ".txt", "message/feedback-report": ".txt",
    "image/png": ".png", "image/jpeg": ".jpg", "image/gif": ".gif", "image/bmp": ".bmp",
    "image/webp": ".webp", "image/tiff": ".tif", "image/svg+xml": ".svg", "image/heic": ".heic",
    "application/pdf": ".pdf", "application/zip": ".zip", "application/json": ".json",
    "application/xml": ".xml", "application/ms-tnef": ".dat", "application/vnd.ms-tnef": ".dat",
    "application/pgp-signature": ".asc", "application/pgp-encrypted": ".asc",
    "application/pkcs7-signature": ".p7s", "application/x-pkcs7-signature": ".p7s",
    "application/pkcs7-mime": ".p7m", "application/x-pkcs7-mime": ".p7m",
    "application/msword": ".doc", "application/vnd.ms-excel": ".xls",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": ".docx",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": ".xlsx",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation": ".pptx",
    "application/gzip": ".gz", "application/x-gzip": ".gz", "application/x-tar": ".tar",
    "application/x-7z-compressed": ".7z", "application/vnd.ms-outlook": ".msg",
    "audio/mpeg": ".mp3", "audio/wav": ".wav", "video/mp4": ".mp4",
}


def safe_filename(name: str | None, content_type: str = "") -> str:
    """A filename fit to store and to offer for download: RFC 2047 words decoded, the
    last path component only, no control or bidi-override characters, none of
    <>:"|?*, no leading dots or trailing dots/spaces, no Windows device names, at most
    150 characters and 240 UTF-8 bytes (the extension kept). Never empty: without a
    usable name it is "attachment" plus an extension for the content type
    ("attachment.bin" for unknown types)."""
    s = name or ""
    if "=?" in s:
        s = decode_header_value(s)
    if s and not s.isascii():
        s = unicodedata.normalize("NFC", _SURROGATE.sub("", s))
    s = s.replace("\\", "/").rsplit("/", 1)[-1]
    s = _FILENAME_DROP.sub("", s)
    s = _FILENAME_BAD.sub("_", s)
    s = " ".join(s.split())
    s = s.lstrip(". ").rstrip(". ")
    if _WINDOWS_DEVICES.fullmatch(s):
        s = "_" + s
    if not s:
        ctype = content_type.strip().lower()
        if not ctype:
            return "attachment"
        return "attachment" + _EXTENSIONS.get(ctype, ".bin")
    return _cap_filename(s)


def _cap_filename(s: str) -> str:
    if len(s) <= _MAX_FILENAME_CHARS and len(s.encode("utf-8")) <= _MAX_FILENAME_BYTES:
        return s
    stem, dot, ext = s.rpartition(".")
    if not dot or not stem or len(ext) > 16:
        stem, ext = s, ""
    ext = "." + ext if ext else ""
    stem = stem[: _MAX_FILENAME_CHARS - len(ext)]
    while len((stem + ext).encode("utf-8")) > _MAX_FILENAME_BYTES:
        stem = stem[:-1]
    return (stem.rstrip(". ") or "attachment") + ext


# --- HTML ---------------------------------------------------------------------------

# The strict profile: the relaxed default pads every <div> with spaces.
@functools.lru_cache(maxsize=1)
def _inscriptis():
    """inscriptis and its configuration, imported when the first HTML-only mail needs
    them (they cost more at start-up than most mail ever uses them)."""
    import inscriptis
    from inscriptis.css_profiles import CSS_PROFILES
    from inscriptis.model.config import ParserConfig

    return inscriptis, ParserConfig(css=CSS_PROFILES["strict"].copy(), display_links=False, display_images=False)
# inscriptis costs 5-35 us per element (tables are the dear ones: 1,000 rows take
# 180 ms); beyond these sizes the linear tag-stripping fallback is used instead.
_HTML_MAX_FOR_INSCRIPTIS = 500_000  # characters
_HTML_MAX_TAGS = 3_000
_TAG = re.compile(r"<[^<>]*>")  # no "<" inside: linear on "<<<<<<"
_BLOCK_TAG = re.compile(r"(?i)<\s*(?:br|/p|/div|/tr|/li|/h[1-6]|/blockquote|/table|hr)\b[^<>]*>")
_CELL_TAG = re.compile(r"(?i)<\s*/t[dh]\b[^<>]*>")
_BLANK_RUNS = re.compile(r"\n[ \t]*(?:\n[ \t]*){2,}")


def html_to_text(html: str) -> str:
    """Readable text from HTML with inscriptis (tables and lists laid out); hostile or
    huge HTML falls back to stripping tags."""
    if not html or not html.strip():
        return ""
    html = _SURROGATE.sub("", html.replace("\x00", ""))
    text = None
    if len(html) <= _HTML_MAX_FOR_INSCRIPTIS and html.count("<") <= _HTML_MAX_TAGS:
        try:
            inscriptis, config = _inscriptis()
            text = inscriptis.get_text(html, config)
        # lxml and inscriptis raise many kinds of errors on hostile markup (ValueError,
        # ParserError, RecursionError, AssertionError...); the rule is: never fail.
        except Exception:
            text = None
    if not text or not text.strip():
        text = _strip_tags(html)  # also when lxml dropped everything (nesting > 255)
    text = "\n".join(line.rstrip() for line in _clean_body(text).split("\n"))
    return _BLANK_RUNS.sub("\n\n", text).strip("\n")


def _strip_tags(html: str) -> str:
    """The fallback: drop comments and script/style content, then every tag. Linear:
    each opener is searched for again only once the scan has passed it."""
    lower = html.lower()
    closers = {"<!--": "-->", "<script": "</script", "<style": "</style"}
    found = {opener: lower.find(opener) for opener in closers}
    pieces, pos = [], 0
    while True:
        for opener, at in found.items():
            if 0 <= at < pos:
                found[opener] = lower.find(opener, pos)
        live = [(at, opener) for opener, at in found.items() if at >= 0]
        if not live:
            pieces.append(html[pos:])
            break
        at, opener = min(live)
        pieces.append(html[pos:at])
        close = lower.find(closers[opener], at + len(opener))
        if close < 0:
            break
        gt = lower.find(">", close)
        pos = len(html) if gt < 0 else gt + 1
    text = _CELL_TAG.sub("  ", _BLOCK_TAG.sub("\n", "".join(pieces)))
    return htmllib.unescape(_TAG.sub("", text))


_NH3_TAGS = nh3.ALLOWED_TAGS | {"font"}
_NH3_ATTRIBUTES = {tag: set(attrs) for tag, attrs in nh3.ALLOWED_ATTRIBUTES.items()}
_NH3_ATTRIBUTES.setdefault("font", set()).update({"color", "face", "size"})
_NH3_ATTRIBUTES.setdefault("td", set()).update({"colspan", "rowspan", "align", "valign"})
_NH3_ATTRIBUTES.setdefault("th", set()).update({"colspan", "rowspan", "align", "valign"})
# cid: lets the desk map inline images to stored attachments; no data:, no javascript:.
_NH3_SCHEMES = {"http", "https", "mailto", "cid", "tel"}
_NH3 = nh3.Cleaner(  # built once: passing the sets on every call costs 3x the cleaning
    tags=_NH3_TAGS,
    attributes=_NH3_ATTRIBUTES,
    url_schemes=_NH3_SCHEMES,
    clean_content_tags={"script", "style", "title", "head"},
    strip_comments=True,
    link_rel="noopener noreferrer nofollow",
)


def sanitize_html(html: str) -> str:
    """HTML safe to show: an allow-list of tags and attributes (nh3/ammonia), no
    script or style content, no on* attributes, only http(s)/mailto/cid/tel URLs."""
    if not html:
        return ""
    return _NH3.clean(_SURROGATE.sub("", html.replace("\x00", "")))


# --- quoted history and signatures ------------------------------------------------------

# "On Mon, 1 Jan 2024 at 10:00, Ann <ann@example.com> wrote:" in the languages of
# mailparser_reply and then some; matched only on short lines that end with a colon.
_WROTE = re.compile(
    r"(?i)\b(?:wrote|writes|schrieb|a\s+écrit|escribió|escribio|ha\s+scritto|schreef|"
    r"escreveu|skrev|napsal(?:\(a\))?|napisał(?:\(a\))?|pisze|kirjoitti|írta|"
    r"написал(?:\(а\))?|пишет|yazdı|έγραψε)\b[^:：]{0,120}[:：]\s*$"
    r"|(?:写道|寫道|작성)[^:：]{0,40}[:：]\s*$"
)
_WROTE_LEAD = re.compile(
    r"(?i)^\s*(?:on|am|le|el|il|op|em|den|dne|dnia|w\s+dniu|på|d\.|o|в|el\s+día|"
    r"il\s+giorno|on\s+\w+,)\b"
)
_ORIGINAL_MESSAGE = re.compile(
    r"(?i)^\s*[-_=*]{2,}\s*(?:original\s+message|ursprüngliche\s+nachricht|originalnachricht|"
    r"message\s+d'origine|mensaje\s+original|messaggio\s+originale|oorspronkelijk\s+bericht|"
    r"mensagem\s+original|originalmeddelande|alkuperäinen\s+viesti|původní\s+zpráva|"
    r"wiadomość\s+oryginalna|oprindelig\s+meddelelse|opprinnelig\s+melding|"
    r"исходное\s+сообщение|原始邮件|原始郵件|元のメッセージ|reply\s+message)\s*[-_=*]{2,}\s*$"
)
_FORWARD = re.compile(
    r"(?i)^\s*(?:[-_=*>]{2,}\s*)?(?:forwarded\s+message|begin\s+forwarded\s+message|"
    r"weitergeleitete\s+nachricht|anfang\s+der\s+weitergeleiteten|message\s+transféré|"
    r"début\s+du\s+message\s+réexpédié|mensaje\s+reenviado|messaggio\s+inoltrato|"
    r"doorgestuurd\s+bericht|mensagem\s+encaminhada|vidarebefordrat\s+meddelande|"
    r"videresendt\s+meddelelse|välitetty\s+viesti|přeposlaná\s+zpráva|"
    r"пересылаемое\s+сообщение|转发的邮件|転送されたメッセージ)\b"
)
_FROM_FIELD = re.compile(
    r"(?i)^\s*(?:\*\s*)?(?:from|von|de|da|van|från|fra|od|lähettäjä|от|feladó|kimden|"
    r"发件人|寄件者|差出人|보낸\s*사람)(?:\s*\*)?\s*[:：]"
)
_OTHER_FIELD = re.compile(
    r"(?i)^\s*(?:\*\s*)?(sent|date|to|cc|subject|gesendet|datum|an|betreff|envoyé|à|objet|"
    r"enviado|fecha|para|asunto|inviato|data|a|oggetto|verzonden|aan|onderwerp|skickat|till|"
    r"ämne|sendt|til|emne|wysłano|do|temat|odesláno|komu|předmět|lähetetty|vastaanottaja|"
    r"aihe|отправлено|кому|тема|发送时间|收件人|主题|抄送|日付|件名|宛先|보낸\s*날짜|"
    r"받는\s*사람|제목)(?:\s*\*)?\s*[:：]"
)
_DATE_FIELDS = frozenset({
    "sent", "date", "gesendet", "datum", "envoyé", "enviado", "fecha", "inviato", "data",
    "verzonden", "skickat", "sendt", "wysłano", "odesláno", "lähetetty", "отправлено",
    "发送时间", "日付", "보낸 날짜", "보낸날짜",
})
_SEPARATOR = re.compile(r"^\s*(?:_{10,}|-{10,})\s*$")
_MOBILE_SIGNATURE = re.compile(
    r"(?i)^\s*(?:sent\s+from\s+my\s.{1,40}|sent\s+from\s+(?:mail|outlook|yahoo)\b.{0,40}|"
    r"get\s+outlook\s+for\s.{1,30}|von\s+meinem\s.{1,40}\s+gesendet|gesendet\s+von\s+meinem\s.{1,40}|"
    r"envoyé\s+de\s+mon\s.{1,40}|enviado\s+desde\s+mi\s.{1,40}|inviato\s+da\s.{1,40}|"
    r"verzonden\s+(?:vanaf|met)\s+mijn\s.{1,40}|skickat\s+från\s+min\s.{1,40})\s*$"
)
_MAX_SCAN_LINES = 10_000
_MAX_HEADER_LINE = 400
_MAX_SIGNATURE_LINES = 20


def strip_quoted(text: str) -> str:
    """The new part of a reply: text above the first quote header ("On ... wrote:"
    in many languages, "-----Original Message-----", an Outlook "From: / Sent: / To:"
    block), without a trailing run of ">" lines, a trailing "-- " signature or a
    "Sent from my phone" line. Lines are returned as they were, so "#commands" at the
    top survive unchanged; a text without quotes comes back whole. Forwarded mail is
    left whole, and so is a text that would otherwise come back empty: a reply is
    never reduced to nothing."""
    if not text:
        return ""
    lines = text.replace("\r\n", "\n").split("\n")
    cut = _quote_start(lines)
    if cut == -1:  # forwarded mail: the forwarded part is the content
        return "\n".join(lines).rstrip()
    if cut is not None:
        lines = lines[:cut]
    lines = _drop_trailing_quote(lines)
    lines = _drop_signature(lines)
    result = "\n".join(lines).rstrip()
    if not result.strip():
        return text.replace("\r\n", "\n").rstrip()
    return result


def _is_quoted(line: str) -> bool:
    return line.lstrip().startswith(">")


def _next_nonblank(lines: list[str], i: int) -> str | None:
    for line in lines[i:i + 4]:
        if line.strip():
            return line
    return None


def _quote_start(lines: list[str]) -> int | None:
    """Index of the first line of quoted history, None if there is none, -1 when the
    text is a forward."""
    n = min(len(lines), _MAX_SCAN_LINES)
    for i in range(n):
        line = lines[i]
        stripped = line.strip()
        if not stripped or len(stripped) > _MAX_HEADER_LINE or stripped[0] in "#>":
            continue
        if _FORWARD.match(stripped):
            return -1
        if _ORIGINAL_MESSAGE.match(stripped):
            return i
        if _FROM_FIELD.match(stripped) and _is_outlook_block(lines, i):
            j = i - 1
            while j >= 0 and not lines[j].strip():
                j -= 1
            return j if j >= 0 and _SEPARATOR.match(lines[j]) else i
        end = stripped[-1]
        if end in ":：":
            if _is_attribution(stripped, lines, i + 1):
                return _unless_bottom_post(lines, i, i + 1)
        elif i + 1 < n:
            # Gmail wraps long attributions: "On ..., Ann <\nann@example.com> wrote:"
            following = lines[i + 1].strip()
            if (following[-1:] in (":", "：") and not following.startswith(">")
                    and _WROTE_LEAD.match(stripped) and len(following) < _MAX_HEADER_LINE
                    and _is_attribution(stripped + " " + following, lines, i + 2)):
                return _unless_bottom_post(lines, i, i + 2)
    return None


def _is_attribution(line: str, lines: list[str], after: int) -> bool:
    nxt = _next_nonblank(lines, after)
    followed_by_quote = nxt is not None and _is_quoted(nxt)
    if _WROTE.search(line):
        # "On <date>, <who> wrote:" or a name and address; a bare "Ann wrote:" must
        # be followed by quoted lines, so that "The log wrote:" is not taken for one.
        return followed_by_quote or bool(_WROTE_LEAD.match(line)) or "@" in line or any(
            c.isdigit() for c in line)
    # Attributions without a verb (Gmail in Japanese, Russian): a date, an address
    # and quoted lines after it.
    return followed_by_quote and "@" in line and any(c.isdigit() for c in line)


def _is_outlook_block(lines: list[str], i: int) -> bool:
    """A "From:" line followed, within seven lines (values may wrap), by two more
    header fields, one of them the date ("Sent:", "Gesendet:", "Date:"...)."""
    seen = set()
    for line in lines[i + 1:i + 8]:
        m = _OTHER_FIELD.match(line[:_MAX_HEADER_LINE])
        if m:
            seen.add(m.group(1).lower())
    return len(seen) >= 2 and not seen.isdisjoint(_DATE_FIELDS)


def _unless_bottom_post(lines: list[str], i: int, j: int) -> int | None:
    """The attribution at line i (quote from line j): an attribution followed by ">"
    lines and then new unquoted text is a bottom post or an inline answer: keep it
    all (a trailing quote is still dropped)."""
    n = len(lines)
    while j < n and not lines[j].strip():
        j += 1
    if j >= n or not _is_quoted(lines[j]):
        return i  # unquoted history (Outlook, converted HTML): cut here
    while j < n and (_is_quoted(lines[j]) or not lines[j].strip()):
        j += 1
    rest = _drop_signature(lines[j:])
    if any(line.strip() for line in rest):
        return None
    return i


def _drop_trailing_quote(lines: list[str]) -> list[str]:
    end = len(lines)
    while end and not lines[end - 1].strip():
        end -= 1
    j = end
    while j and (_is_quoted(lines[j - 1]) or not lines[j - 1].strip()):
        j -= 1
    if j == end:
        return lines[:end]
    # the attribution just above the quote goes too ("Ann wrote:")
    k = j
    while k and not lines[k - 1].strip():
        k -= 1
    if k and lines[k - 1].rstrip().endswith((":", "：")) and len(lines[k - 1]) < _MAX_HEADER_LINE:
        if _is_attribution(lines[k - 1].strip(), lines, k):
            j = k - 1
    return lines[:j]


def _drop_signature(lines: list[str]) -> list[str]:
    end = len(lines)
    while end and not lines[end - 1].strip():
        end -= 1
    if end and len(lines[end - 1]) < 100 and _MOBILE_SIGNATURE.match(lines[end - 1]):
        end -= 1
        while end and not lines[end - 1].strip():
            end -= 1
    for j in range(end - 1, max(end - 1 - _MAX_SIGNATURE_LINES, -1), -1):
        if lines[j].rstrip() == "--":  # RFC 3676 4.3: "-- " (clients often drop the space)
            end = j
            break
    return lines[:end]


# --- limits -------------------------------------------------------------------------------


class _ParseTimeout(BaseException):
    """Raised by the SIGALRM handler. A BaseException, so that no `except Exception`
    inside a library swallows it."""


def _on_alarm(signum, frame):
    raise _ParseTimeout()


@contextmanager
def _time_limit(seconds: float):
    """SIGALRM after `seconds` when in the main thread; elsewhere nothing (signals only
    reach the main thread) and the walk below checks its deadline between parts."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old_handler = signal.signal(signal.SIGALRM, _on_alarm)
    old_delay, old_interval = signal.setitimer(signal.ITIMER_REAL, seconds)
    started = time.monotonic()
    try:
        yield
    finally:
        try:
            signal.setitimer(signal.ITIMER_REAL, 0)
        finally:  # the alarm fires at most once, so this block runs to its end
            signal.signal(signal.SIGALRM, old_handler if old_handler is not None else signal.SIG_DFL)
            if old_delay:
                left = old_delay - (time.monotonic() - started)
                signal.setitimer(signal.ITIMER_REAL, max(left, 0.001), old_interval)


_BLANK_LINE = re.compile(rb"(?:\r\n|\r(?!\n)|\n)(?:\r\n|\r|\n)")
_LINE = re.compile(rb"[^\r\n]*(?:\r\n|\r|\n|$)")
_HEADER_LINE = re.compile(rb"From |[\x21-\x39\x3b-\x7e]*:|[\t ]")  # feedparser.headerRE


def header_block_size(raw: bytes, limit: int) -> int:
    """Bytes of the header block as the parser will see it, exact up to `limit`;
    beyond it, the distance to the first blank line (or the whole message)."""
    if raw[:1] in (b"\n", b"\r"):
        return 0
    ends = [i for i in (raw.find(b"\n\n", 0, limit + 2), raw.find(b"\n\r\n", 0, limit + 3)) if i >= 0]
    if ends and min(ends) < limit:
        return min(ends) + 1
    pos = 0  # no blank line early on: the block ends at the first non-header line too
    for m in _LINE.finditer(raw):
        line = m.group()
        if not line or line in (b"\n", b"\r\n", b"\r") or not _HEADER_LINE.match(line):
            return pos
        pos = m.end()
        if pos > limit:
            blank = _BLANK_LINE.search(raw, pos)
            return blank.start() + 1 if blank else len(raw)
    return pos


_FOLDED_FIELD = re.compile(rb"[^\r\n]*(?:(?:\r\n|\r|\n)[ \t][^\r\n]*)*")
_MAX_MIME_FIELD = 64 * 1024
_MAX_MIME_PARAMS = 200
_BOUNDARY_PARAM = re.compile(rb'(?i)\bboundary\s*=\s*(?:"([^"\r\n]{1,200})"|([^";\s]{1,200}))')


def _check_structure(raw: bytes, limits: Limits) -> None:
    """Cheap checks on the raw bytes for what makes the stdlib parser slow before any
    limit can be checked on its result: a hundred thousand parts take seconds to
    build; every line is matched against the boundary of every enclosing multipart
    (400 levels over 1 MB: 9 s); and the compat32 parameter parser is quadratic in
    the parameters of a field (1.5 s for 256 KiB of ";a=b"). Mail with few
    delimiters, boundaries and semicolons skips them."""
    many_delimiters = raw.count(b"\n--") > limits.max_parts
    if many_delimiters or raw.count(b"oundary") + raw.count(b"OUNDARY") > limits.max_depth:
        boundaries = {a or b for a, b in _BOUNDARY_PARAM.findall(raw)}
        if len(boundaries) > limits.max_parts:
            raise MailRejected(f"more than {limits.max_parts} MIME parts")
        if boundaries and (many_delimiters or len(boundaries) > limits.max_depth):
            _check_delimiters(raw, boundaries, limits)
    if len(raw) > _MAX_MIME_FIELD or raw.count(b";") > _MAX_MIME_PARAMS:
        lower = raw.lower()  # bytes.find on a lower-cased copy: 20x faster than (?i)
        for name in (b"content-type", b"content-disposition"):
            at = lower.find(name)
            while at >= 0:
                if at == 0 or lower[at - 1] in b"\r\n":
                    field = _FOLDED_FIELD.match(raw, at).group()
                    label = name.decode().title()
                    if len(field) > _MAX_MIME_FIELD:
                        raise MailRejected(
                            f"a {label} field is {_kib(len(field))}, over {_kib(_MAX_MIME_FIELD)}")
                    if field.count(b";") > _MAX_MIME_PARAMS:
                        raise MailRejected(
                            f"a {label} field has more than {_MAX_MIME_PARAMS} parameters")
                at = lower.find(name, at + 1)


_DASH_LINE = re.compile(rb"(?m)^--([^\r\n]*)")


def _check_delimiters(raw: bytes, boundaries: set[bytes], limits: Limits) -> None:
    """Follow the delimiter lines of the declared boundaries as the parser will: a
    delimiter opens a part, and one of an enclosing boundary ends everything inside."""
    stack: list[bytes] = []
    parts = 0
    for m in _DASH_LINE.finditer(raw):
        line = m.group(1).rstrip(b" \t\r")
        closing = line not in boundaries and line.endswith(b"--") and line[:-2] in boundaries
        boundary = line[:-2] if closing else line
        if boundary not in boundaries:
            continue
        if boundary in stack:
            del stack[stack.index(boundary) + 1:]
            if closing:
                stack.pop()
                continue
        elif closing:
            continue
        else:
            stack.append(boundary)
            if len(stack) > limits.max_depth:
                raise MailRejected(f"MIME nesting deeper than {limits.max_depth}")
        parts += 1
        if parts > limits.max_parts:
            raise MailRejected(f"more than {limits.max_parts} MIME parts")


def _kib(n: int) -> str:
    return f"{n / 1024:,.0f} KiB" if n >= 10 * 1024 else f"{n / 1024:,.1f} KiB"


# --- parsing -----------------------------------------------------------------------------

_PARSER = email.parser.BytesParser(policy=email.policy.compat32)
_TNEF_TYPES = ("application/ms-tnef", "application/vnd.ms-tnef")


def parse_mail(raw: bytes, limits: Limits) -> ParsedMail:
    """Parse one mail. Raises MailRejected, and nothing else, when a limit of `limits`
    is exceeded or the bytes cannot be read as mail at all."""
    if not isinstance(raw, bytes):
        try:
            raw = bytes(raw)
        except TypeError:
            raise MailRejected(f"not bytes but {type(raw).__name__}") from None
    started = time.monotonic()
    try:
        size = header_block_size(raw, limits.max_header_bytes)
        if size > limits.max_header_bytes:
            raise MailRejected(
                f"header block is {_kib(size)}, over the limit of {_kib(limits.max_header_bytes)}"
            )
        _check_structure(raw, limits)
        with _time_limit(limits.parse_seconds):
            return _Reader(raw, limits, started + limits.parse_seconds).read()
    except _ParseTimeout:
        raise MailRejected(f"parsing took longer than {limits.parse_seconds} s") from None
    except RecursionError:
        raise MailRejected(f"MIME nesting deeper than {limits.max_depth}") from None
    except MailRejected:
        raise
    # The contract of this function is that bytes from the wire never escape as an
    # exception other than MailRejected: a parser bug becomes a quarantined message
    # with the error in its reason, not a stuck queue.
    except Exception as e:
        raise MailRejected(f"cannot parse: {type(e).__name__}: {e}"[:300]) from e


class _Reader:
    """One parse: walks the compat32 tree once, without recursion, choosing body
    parts and collecting attachments and defects."""

    def __init__(self, raw: bytes, limits: Limits, deadline: float):
        self.raw = raw
        self.limits = limits
        self.deadline = deadline
        self.texts: list[str] = []
        self.htmls: list[str] = []
        self.attachments: list[AttachmentPart] = []
        self.defects: list[str] = []
        self.tnef_parts: list[tuple[int, bytes]] = []
        self.infos: dict[int, _PartInfo] = {}
        self.messages: list[tuple[int, email.message.Message, str]] = []
        self.text_charsets: list[str] = []  # declared by the text parts read, in order

    def read(self) -> ParsedMail:
        msg = parse_tree(self.raw)  # what _PARSER.parsebytes would give, faster
        self.walk(msg)
        for index, part, ctype in self.messages:
            self.attachments[index] = self.message_attachment(part, ctype)
        headers: dict[str, list[str]] = {}
        for key, value in msg.raw_items():
            key = key.lower()
            if key in ("from", "sender", "reply-to", "to", "cc", "subject", "date",
                       "message-id", "in-reply-to", "references"):
                headers.setdefault(key, []).append(value)
        get = headers.get
        # raw 8-bit header bytes that are not UTF-8: in the charset of the mail's text
        fallback = header_fallback([self.info(msg).charset, *self.text_charsets]) if any(
            not v.isascii() for values in headers.values() for v in values) else None
        from_values = get("from", [])
        from_ = parse_addresses(from_values, fallback)
        sender, problem = _sender(from_values, from_)
        subject = get("subject")
        text = "\n".join(t.rstrip("\n") for t in self.texts if t.strip())
        if self.tnef_parts:
            text = self.unpack_tnef(text)
        html = None
        if self.htmls:
            html = sanitize_html("\n".join(self.htmls))
        return ParsedMail(
            msg=msg,
            message_id=parse_message_id((get("message-id") or [None])[0]),
            in_reply_to=parse_id_list(get("in-reply-to", [])),
            references=parse_id_list(get("references", [])),
            subject=clean_header_text(decode_header_value(subject[0], fallback)) if subject else "",
            from_=from_,
            sender=sender,
            sender_problem=problem,
            reply_to=parse_addresses(get("reply-to", []), fallback),
            to=parse_addresses(get("to", []), fallback),
            cc=parse_addresses(get("cc", []), fallback),
            date=parse_date((get("date") or [None])[0]),
            text=text,
            html=html,
            attachments=self.attachments,
            defects=self.defects,
            size=len(self.raw),
        )

    # -- the walk ----------------------------------------------------------------------

    def walk(self, root: email.message.Message) -> None:
        """Depth-first, in document order, with an explicit stack. Modes:
        body (text parts are the body, others attachments), alt (an unchosen
        alternative: its HTML feeds `html`, files are still attachments),
        attach (everything is an attachment), skip (inside an attached message:
        counted and checked, nothing taken)."""
        max_parts, max_depth = self.limits.max_parts, self.limits.max_depth
        stack = [(root, 0, "body")]
        count = 0
        while stack:
            part, depth, mode = stack.pop()
            count += 1
            if count > max_parts:
                raise MailRejected(f"more than {max_parts} MIME parts")
            if depth > max_depth:
                raise MailRejected(f"MIME nesting deeper than {max_depth}")
            if count % 64 == 0 and time.monotonic() > self.deadline:
                raise _ParseTimeout()
            for d in part.defects:
                name = type(d).__name__.removesuffix("Defect")
                if name not in self.defects:
                    self.defects.append(name)
            ctype = self.info(part).ctype
            payload = part._payload  # compat32: a list for multipart and message/*
            if isinstance(payload, list):
                if ctype.startswith("message/") or mode == "skip":
                    if mode != "skip":  # a placeholder, filled in by read()
                        self.messages.append((len(self.attachments), part, ctype))
                        self.attachments.append(None)
                    children = [(p, depth + 1, "skip") for p in payload]
                else:
                    children = self.children_modes(part, ctype, payload, depth + 1, mode)
                stack.extend(reversed(children))
                continue
            if mode == "skip":
                continue
            self.leaf(part, ctype, mode)

    def children_modes(self, part, ctype, payload, depth, mode):
        if mode != "body":
            return [(p, depth, mode) for p in payload]
        if ctype == "multipart/alternative":
            chosen = self.pick_alternative(payload)
            return [(p, depth, "body" if i == chosen else "alt") for i, p in enumerate(payload)]
        if ctype in ("multipart/related", "multipart/signed") and payload:
            # related: the first part is the body, the rest are its inline images;
            # signed: the first part is the content, the second the signature.
            return [(p, depth, "body" if i == 0 else "attach") for i, p in enumerate(payload)]
        if ctype == "multipart/encrypted":
            return [(p, depth, "attach") for p in payload]
        return [(p, depth, mode) for p in payload]

    def pick_alternative(self, payload) -> int:
        """text/plain unless it is empty; else the last HTML; else the last part
        that is itself a multipart (e.g. related HTML); else the first."""
        html = multi = None
        for i, p in enumerate(payload):
            info = self.info(p)
            ctype = info.ctype
            if info.is_attachment:
                continue
            if ctype == "text/plain":
                if self.decoded_text(p).strip():
                    return i
            elif ctype == "text/html":
                html = i
            elif ctype.startswith("multipart/"):
                multi = i
        if html is not None:
            return html
        if multi is not None:
            return multi
        return 0

    def leaf(self, part, ctype, mode) -> None:
        if ctype.startswith("multipart/"):
            ctype = "text/plain"  # no boundary (a defect is recorded): read it as text
        is_text = ctype in ("text/plain", "text/html") and not self.info(part).is_attachment
        if mode == "body" and is_text:
            text = self.decoded_text(part)
            if ctype == "text/html":
                self.htmls.append(text)
                text = html_to_text(text)
            self.texts.append(text)
            return
        if mode == "alt" and is_text:
            if ctype == "text/html":
                self.htmls.append(self.decoded_text(part))
            return
        self.add_attachment(part, ctype)

    # -- payloads ------------------------------------------------------------------------

    def payload_bytes(self, part) -> bytes:
        """The decoded payload. The transfer encoding is read leniently ("Base64 ",
        "base64; x"), and broken base64 or quoted-printable still yields bytes."""
        payload = part._payload
        if payload is None:
            return b""
        # BytesParser leaves 8-bit bytes as surrogate escapes: this gets them back.
        data = payload if isinstance(payload, bytes) else payload.encode("ascii", "surrogateescape")
        cte = self.info(part).cte
        if not cte:
            return data
        if "base64" in cte:
            decoded, broken = _b64decode(data)
            if broken:
                self.defect("InvalidBase64")
            return decoded
        if "quoted-printable" in cte:
            return binascii.a2b_qp(data)
        if "uu" in cte:
            decoded = part.get_payload(decode=True)
            return decoded if isinstance(decoded, bytes) else data
        return data

    def decoded_text(self, part) -> str:
        info = self.info(part)
        if info.text is None:
            if info.charset:
                self.text_charsets.append(info.charset)
            text, problem = decode_bytes(self.payload_bytes(part), info.charset)
            if problem:
                self.defect(problem)
            info.text = _clean_body(text[1:] if text.startswith("\ufeff") else text)
        return info.text

    def info(self, part) -> _PartInfo:
        """What the walk needs from a part's headers, read once."""
        info = self.infos.get(id(part))
        if info is None:
            info = self.infos[id(part)] = _part_info(part)
        return info

    def defect(self, name: str) -> None:
        if name not in self.defects:
            self.defects.append(name)

    # -- attachments ---------------------------------------------------------------------

    def add_attachment(self, part, ctype) -> None:
        data = self.payload_bytes(part)
        name = self.info(part).filename
        is_tnef = ctype in _TNEF_TYPES or (name or "").lower() == "winmail.dat"
        filename = safe_filename(name, ctype)
        if is_tnef and data[:4] == b"\x78\x9f\x3e\x22":
            self.tnef_parts.append((len(self.attachments), data))
        self.attachments.append(_attachment(filename, ctype, data))

    def message_attachment(self, part, ctype) -> AttachmentPart:
        """message/rfc822 and friends: the enclosed message, as bytes. Called after
        the walk, which has checked the depth of everything inside."""
        data = _message_bytes(part)
        name = self.info(part).filename
        if not name and ctype in ("message/rfc822", "message/global"):
            inner = part._payload[0] if part._payload else None
            subject = _raw_header(inner, "subject") if isinstance(inner, email.message.Message) else None
            subject = clean_header_text(decode_header_value(subject)) if subject else ""
            name = (subject[:100] or "message") + ".eml"
        return _attachment(safe_filename(name, ctype), ctype, data)

    def unpack_tnef(self, text: str) -> str:
        """Replace each winmail.dat by the files inside it. One that holds no files
        but only the message body (Outlook rich text) is dropped when the mail has
        text, else its body becomes the text; anything else is kept as it is."""
        replaced: dict[int, list[AttachmentPart]] = {}
        for index, data in self.tnef_parts:
            files, body, has_body = _read_tnef(data)
            if files is None:
                self.defect("UnreadableTNEF")
                continue
            if files:
                replaced[index] = files
            elif has_body and text.strip():
                replaced[index] = []
            elif body and not text.strip():
                text = body
        if replaced:
            kept = []
            for i, a in enumerate(self.attachments):
                kept.extend(replaced.get(i, [a]))
            self.attachments = kept
        return text


def _attachment(filename: str, ctype: str, data: bytes) -> AttachmentPart:
    return AttachmentPart(filename, ctype, data, len(data), hashlib.sha256(data).hexdigest())


@dataclass
class _PartInfo:
    ctype: str
    cte: str  # lower-cased, stripped; "" when absent
    charset: str | None
    filename: str | None  # as sent, decoded; None if absent
    is_attachment: bool  # Content-Disposition attachment, or a filename
    text: str | None = None  # decoded text, once asked for


_CHARSET_PARAM = re.compile(r'(?i)(?:^|;)\s*charset\s*=\s*"?([^";\s]*)')


def _part_info(part) -> _PartInfo:
    # The compat32 parameter parser re-reads the whole header on every get_param()
    # call: ask it only when the parameter is there at all.
    ct = cd = cte = None
    for key, value in part._headers:
        key = key.lower()
        if key == "content-type":
            ct = value if ct is None else ct
        elif key == "content-disposition":
            cd = value if cd is None else cd
        elif key == "content-transfer-encoding":
            cte = value if cte is None else cte
    ct_lower = ct.lower() if ct else ""
    charset = None
    if "charset*" in ct_lower:
        value = part.get_param("charset")
        charset = value[2] if isinstance(value, tuple) else value
    elif "charset" in ct_lower:
        m = _CHARSET_PARAM.search(ct)
        charset = m.group(1) if m else None
    filename = _filename(part, cd, ct)
    disposition = (cd or "").strip().lower()
    return _PartInfo(
        ctype=part.get_content_type(),
        cte=str(cte).strip().lower() if cte else "",
        charset=charset if isinstance(charset, str) else None,
        filename=filename,
        is_attachment=filename is not None or disposition.startswith("attachment"),
    )


def _filename(part, cd: str | None, ct: str | None) -> str | None:
    """The filename as sent: Content-Disposition filename (RFC 2231 continuations and
    charset included) or Content-Type name; RFC 2047 words decoded; raw 8-bit bytes
    read like those of any header (UTF-8, else Windows-1252); None if absent."""
    value = None
    if cd and "filename" in cd.lower():
        value = _param(part, "filename", "content-disposition", cd)
    if value is None and ct and "name" in ct.lower():
        value = _param(part, "name", "content-type", ct)
    if value is None:
        return None
    if isinstance(value, tuple):  # RFC 2231: (charset, language, %-decoded as Latin-1)
        charset, _, text = value
        try:
            data = text.encode("latin-1", "surrogateescape")
        except UnicodeEncodeError:
            data = text.encode("utf-8", "surrogateescape")
        name = decode_bytes(data, charset or None)[0]
    else:
        name = decode_header_value(str(value))
    return name if name.strip() else None


def _param(part, name: str, header: str, raw: str):
    """A parameter of a header whose raw value is `raw`. compat32 hands a header with
    8-bit bytes out as an unknown-8bit Header whose str() has U+FFFD for every such
    byte (a raw UTF-8 or Latin-1 filename would lose its letters): such a value is
    read as text first, and its parameters are parsed from that."""
    if raw.isascii():
        return part.get_param(name, header=header)
    holder = email.message.Message()
    holder[header] = _text_of_raw(raw)
    return holder.get_param(name, header=header)


def _raw_header(msg, name: str) -> str | None:
    """The first `name` header as BytesParser left it (8-bit bytes as surrogate
    escapes, which decode_header_value reads), not through compat32's lossy get()."""
    name = name.lower()
    for key, value in msg._headers:
        if key.lower() == name:
            return value if isinstance(value, str) else str(value)
    return None


def _message_bytes(part) -> bytes:
    """The body of a message/* part: the enclosed message (or report blocks) as bytes.

    Written here rather than with email.generator, which refolds every header through
    email.header.Header (20 ms for a bounce with a few report blocks); raw header
    values keep their original folding. Recursion is bounded by limits.max_depth,
    which the walk has checked before this runs."""
    out: list[str] = []
    _flatten_body(part, out)
    return "".join(out).encode("utf-8", "surrogateescape")


def _flatten(msg, out: list[str]) -> None:
    for name, value in msg._headers:
        out.append(f"{name}: {value}\n")
    out.append("\n")
    _flatten_body(msg, out)


def _flatten_body(msg, out: list[str]) -> None:
    payload = msg._payload
    if not isinstance(payload, list):
        out.append(payload if isinstance(payload, str) else "")
        return
    ctype = msg.get_content_type()
    if ctype.startswith("multipart/"):
        boundary = msg.get_boundary() or ""
        if msg.preamble is not None:
            out.append(msg.preamble + "\n")
        for i, sub in enumerate(payload):
            out.append(("\n--" if i else "--") + boundary + "\n")
            _flatten(sub, out)
        out.append("\n--" + boundary + "--")
        if msg.epilogue is not None:
            out.append("\n" + msg.epilogue)
    else:  # message/rfc822; message/delivery-status: blocks of fields, a blank line apart
        for sub in payload:
            _flatten(sub, out)


_TNEF_MAX_OBJECTS = 5000


def _read_tnef(data: bytes) -> tuple[list[AttachmentPart] | None, str, bool]:
    """The files in a TNEF blob, its body as text, and whether it has a body at all
    (plain, HTML or RTF); None for the files when it cannot be read."""
    if not _tnef_is_sane(data):
        return None, "", False
    try:
        import tnefparse  # only winmail.dat needs it

        tnef = tnefparse.TNEF(data, do_checksum=False)
        files = []
        for a in tnef.attachments:
            payload = a.data if isinstance(a.data, bytes) else b""
            name = a.long_filename() or a.name
            if not payload and not name:
                continue
            files.append(_attachment(safe_filename(name, "application/octet-stream"),
                                     "application/octet-stream", payload))
        body = tnef.body or ""
        if isinstance(body, bytes):
            body = _undeclared(body)
        if not body and tnef.htmlbody:
            html = tnef.htmlbody
            body = html_to_text(html if isinstance(html, str) else _undeclared(html))
        has_body = bool(tnef.body or tnef.htmlbody or tnef._rtfbody)
        return files, _clean_body(body), has_body
    # tnefparse is a pure-Python reader of an undocumented binary format; on hostile
    # input it fails with struct.error, IndexError, UnboundLocalError, ValueError and
    # more. The rule for all of them: keep winmail.dat as it is.
    except Exception:
        return None, "", False


def _tnef_is_sane(data: bytes) -> bool:
    """tnefparse copies the rest of the blob for every object (quadratic) and recurses
    into embedded messages: refuse blobs with absurd object counts before it starts."""
    offset, count = 6, 0
    while offset + 12 < len(data):
        (length,) = struct.unpack_from("<I", data, offset + 5)
        offset += length + 11
        count += 1
        if count > _TNEF_MAX_OBJECTS:
            return False
    return True
