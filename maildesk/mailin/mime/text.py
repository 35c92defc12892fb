"""Text from bytes: control characters removed, charsets decoded (with the aliases
and fallbacks real mail needs), RFC 2047 encoded words.
"""

from __future__ import annotations

import binascii
import codecs
import functools
import re

# --- text clean-up --------------------------------------------------------------

# C0 controls other than whitespace, DEL, and the C1 controls: deleted. Whitespace
# controls (TAB, CR, LF, VT, FF, FS..US) become spaces and are collapsed below.
_CONTROLS: dict[int, str | None] = {c: None for c in (*range(0x00, 0x09), 0x0E, 0x0F, *range(0x10, 0x1C), 0x7F,
                               *range(0x80, 0x85), *range(0x86, 0xA0))}
_CONTROLS.update({c: " " for c in (0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x1C, 0x1D, 0x1E, 0x1F)})
_SURROGATE = re.compile("[\ud800-\udfff]")


def clean_header_text(s: str) -> str:
    """One line of text fit for a header the desk writes: control characters gone
    (CR, LF and TAB become spaces, NUL and the rest are removed), whitespace runs
    collapsed to one space, ends stripped. Stops header injection from mail-derived
    text (guarantee 4, docs/architecture.md)."""
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


def _latin1_for_undefined(err: UnicodeError) -> tuple[str, int]:
    # cp1252 leaves five bytes undefined; read them as Latin-1 (WHATWG does the same).
    if not isinstance(err, UnicodeDecodeError):  # registered for decoding only
        raise err
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
