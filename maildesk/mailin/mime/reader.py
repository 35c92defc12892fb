"""parse_mail: the MIME tree of one mail read into a `ParsedMail`.
"""

from __future__ import annotations

import binascii
import email.message
import email.parser
import email.policy
import email.utils
import hashlib
import re
import struct
import time
from dataclasses import dataclass

from ...config import Limits
from .filenames import safe_filename
from .headers import _sender, parse_addresses, parse_date, parse_id_list, parse_message_id
from .html import html_to_text, sanitize_html
from .limits import _check_structure, _kib, _ParseTimeout, _time_limit, header_block_size
from .mail import AttachmentPart, MailRejected, ParsedMail
from .text import (
    _b64decode,
    _clean_body,
    _text_of_raw,
    _undeclared,
    clean_header_text,
    decode_bytes,
    decode_header_value,
    header_fallback,
)
from .tree import parse_tree

# --- parsing -----------------------------------------------------------------------------

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
            message_id=parse_message_id((get("message-id") or (None,))[0]),
            in_reply_to=parse_id_list(get("in-reply-to", [])),
            references=parse_id_list(get("references", [])),
            subject=clean_header_text(decode_header_value(subject[0], fallback)) if subject else "",
            from_=from_,
            sender=sender,
            sender_problem=problem,
            reply_to=parse_addresses(get("reply-to", []), fallback),
            to=parse_addresses(get("to", []), fallback),
            cc=parse_addresses(get("cc", []), fallback),
            date=parse_date((get("date") or (None,))[0]),
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
            payload = part._payload  # type: ignore[attr-defined]  # compat32: a list for multipart and message/*
            if isinstance(payload, list):
                if ctype.startswith("message/") or mode == "skip":
                    if mode != "skip":  # a placeholder, filled in by read()
                        self.messages.append((len(self.attachments), part, ctype))
                        self.attachments.append(None)  # type: ignore[arg-type]
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
    elif ct and "charset" in ct_lower:
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
    except Exception:  # noqa: BLE001
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
