"""Outgoing mail: jinja2 templates in, RFC 5322 bytes out.

A template is `templates/<kind>.txt.j2` (required) and `<kind>.html.j2` (optional
HTML alternative). The text template begins with a `Subject:` line and a blank line;
the rest is the body. `desk.templates_dir` overrides the shipped templates file by
file. Templates are compiled once per process (jinja2's cache).

Mail is built by hand rather than with `EmailMessage`: it is several times cheaper
(bench/ingest.py --profile) and the shape is fixed: multipart/alternative of UTF-8 quoted-printable
text and HTML, with headers encoded per RFC 2047 where they are not ASCII.
"""

from __future__ import annotations

import binascii
import dataclasses
import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from email.header import Header
from email.utils import format_datetime, formataddr
from pathlib import Path
from typing import TYPE_CHECKING

import jinja2
from peewee import Model

from ..errors import MaildeskError
from ..mailin.mime.text import clean_header_text
from ..vocab import LOOP_HEADER, auto_submitted

if TYPE_CHECKING:
    from ..service.runtime import Runtime


def shipped_templates() -> Path:
    """The templates in the wheel (maildesk/templates) or, in a checkout, templates/
    beside the package."""
    package = Path(__file__).resolve().parent.parent
    for candidate in (package / "templates", package.parent / "templates"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("maildesk's templates are missing from the installation")


@dataclass(frozen=True)
class Rendered:
    text: str
    html: str | None


class TemplateMissing(MaildeskError):
    pass


class Templates:
    def __init__(self, override_dir: Path | None = None):
        dirs = [str(override_dir)] if override_dir else []
        dirs.append(str(shipped_templates()))
        self.loader = loader = jinja2.FileSystemLoader(dirs)
        self.text_env = jinja2.Environment(
            loader=loader, autoescape=False, keep_trailing_newline=True, auto_reload=False,
            trim_blocks=True, lstrip_blocks=True, undefined=jinja2.ChainableUndefined,
        )
        self.html_env = jinja2.Environment(
            loader=loader, autoescape=True, trim_blocks=True, lstrip_blocks=True, auto_reload=False,
            undefined=jinja2.ChainableUndefined,
        )
        self.text_env.filters["localtime"] = self.html_env.filters["localtime"] = _localtime
        self._text: dict[str, tuple] = {}
        self._has_html: dict[str, bool] = {}

    def _text_parts(self, kind: str) -> tuple:
        """The Subject line and the body of `<kind>.txt.j2`, compiled apart, so that the
        subject can be rendered alone when the mail is queued."""
        if kind not in self._text:
            try:
                source, _, _ = self.loader.get_source(self.text_env, f"{kind}.txt.j2")
            except jinja2.TemplateNotFound:
                raise TemplateMissing(f"template {kind}.txt.j2 is missing") from None
            first, _, body = source.partition("\n")
            if not first.startswith("Subject:"):
                raise TemplateMissing(f"template {kind}.txt.j2 must begin with a Subject: line")
            self._text[kind] = (self.text_env.from_string(first[len("Subject:"):].strip()),
                                self.text_env.from_string(body.lstrip("\n")))
        return self._text[kind]

    def subject(self, kind: str, **context) -> str:
        return self._text_parts(kind)[0].render(**context).strip()

    def render(self, kind: str, **context) -> Rendered:
        """The text and HTML bodies (the subject was rendered when the mail was queued)."""
        body = self._text_parts(kind)[1]
        html = None
        if self._has_html.get(kind, True):
            try:
                html = self.html_env.get_template(f"{kind}.html.j2").render(**context)
                self._has_html[kind] = True
            except jinja2.TemplateNotFound:
                self._has_html[kind] = False
        return Rendered(body.render(**context), html)


def _localtime(value, tz, fmt="%a %d %b %Y %H:%M %Z"):
    """A stored UTC time shown in the desk's time zone."""
    if value is None:
        return "-"
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    return value.astimezone(tz).strftime(fmt)


_PLAIN = (type(None), str, int, float, bool)


def snapshot(value):
    """A template context as JSON-ready data: model rows become dicts of their fields,
    times ISO strings. The mail then shows the ticket as it was when the mail was
    queued, whenever it is rendered."""
    if type(value) in _PLAIN:
        return value
    if isinstance(value, (str, int, float)):  # subclasses: enums and the like
        return value
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if isinstance(value, Model):
        data = value.__data__
        names = getattr(value, "SNAPSHOT", None) or data.keys()  # what templates may use
        return {k: v if type(v) in _PLAIN else snapshot(v) for k in names for v in (data.get(k),)}
    if isinstance(value, dict):
        return {str(k): v if type(v) in _PLAIN else snapshot(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [snapshot(v) for v in value]
    if dataclasses.is_dataclass(value):
        return {f.name: snapshot(getattr(value, f.name)) for f in dataclasses.fields(value)
                if not callable(getattr(value, f.name))}
    return str(value)


def dumps(context: dict) -> str:
    return json.dumps(snapshot(context), ensure_ascii=False, separators=(",", ":"))


# --- building the bytes -------------------------------------------------------------


def _header(name: str, value: str) -> str:
    value = clean_header_text(value)
    if value.isascii() and len(value) + len(name) < 76:
        return f"{name}: {value}"
    charset = "us-ascii" if value.isascii() else "utf-8"
    return f"{name}: " + Header(value, charset, header_name=name).encode(linesep="\r\n")


def _address(name: str, addr: str) -> str:
    name = clean_header_text(name or "")
    return formataddr((name, clean_header_text(addr)), charset="utf-8")


def _ids(ids) -> str:
    return " ".join(f"<{i}>" for i in ids)


def _part(content_type: str, text: str) -> bytes:
    """A text part: 7bit when it is plain ASCII in lines of at most 998 octets (RFC
    5322 2.1.1), as most mail programs send it; else quoted-printable."""
    data = text.replace("\r\n", "\n").encode("utf-8")
    if data.isascii() and "\r" not in text and max(map(len, data.split(b"\n"))) <= 998:
        cte, body = b"7bit", data
    else:
        cte, body = b"quoted-printable", binascii.b2a_qp(data, quotetabs=False, istext=True, header=False)
    return (b"Content-Type: " + content_type.encode() + b"; charset=utf-8\r\nContent-Transfer-Encoding: " + cte
            + b"\r\n\r\n" + body.replace(b"\n", b"\r\n"))


def build_mail(
    *,
    from_addr: str,
    from_name: str,
    to_addr: str,
    to_name: str = "",
    subject: str,
    message_id: str,
    date: dt.datetime,
    text: str,
    html: str | None = None,
    in_reply_to: str | None = None,
    references: list[str] | tuple = (),
    reply_to: str | None = None,
    auto_submitted: str | None = None,
    extra: dict[str, str] | None = None,
) -> bytes:
    lines = [
        "From: " + _address(from_name, from_addr),
        "To: " + _address(to_name, to_addr),
        _header("Subject", subject),
        "Date: " + format_datetime(date.astimezone(dt.UTC)),
        f"Message-ID: <{message_id}>",
    ]
    if reply_to:
        lines.append("Reply-To: " + _address("", reply_to))
    if in_reply_to:
        lines.append(f"In-Reply-To: <{in_reply_to}>")
    if references:
        # RFC 5322 3.6.4: keep the first and the most recent ids when the list is long
        refs = list(references)
        if len(refs) > 12:
            refs = refs[:1] + refs[-11:]
        lines.append("References: " + _ids(refs))
    if auto_submitted:
        # RFC 3834; Exchange's own switch for its out-of-office and read receipts
        lines.append(f"Auto-Submitted: {auto_submitted}")
        lines.append("X-Auto-Response-Suppress: All")
    for name, value in (extra or {}).items():
        lines.append(_header(name, value))
    lines.append("MIME-Version: 1.0")
    text_part = _part("text/plain", text)
    if html is None:
        head = "\r\n".join(lines).encode("ascii", "replace") + b"\r\n"
        return head + text_part + (b"" if text_part.endswith(b"\r\n") else b"\r\n")
    # derived from the Message-ID: a mail rendered again after a crash is the same mail
    boundary = "=_md_" + hashlib.sha256(message_id.encode()).hexdigest()[:24]
    lines.append(f'Content-Type: multipart/alternative; boundary="{boundary}"')
    head = "\r\n".join(lines).encode("ascii", "replace") + b"\r\n\r\n"
    b = boundary.encode()
    html_part = _part("text/html", html)
    return (
        head + b"--" + b + b"\r\n" + text_part + b"\r\n--" + b + b"\r\n" + html_part
        + b"\r\n--" + b + b"--\r\n"
    )


def _render_context(rt: Runtime, frozen: dict) -> dict:
    cfg = rt.cfg
    return {**frozen, "desk": cfg.desk, "cfg": cfg, "tz": cfg.desk.timezone}


def row_sender(rt: Runtime, row) -> str:
    """The From of an outbox row: its ticket's mailbox, else `desk.address`."""
    if '"_from":' not in row.context:  # most rows: no need to read the JSON
        return rt.cfg.desk.address
    return json.loads(row.context).get("_from") or rt.cfg.desk.address


def row_text(rt: Runtime, row) -> str:
    """The plain-text body of an outbox row, as its recipient reads it."""
    frozen = json.loads(row.context)
    frozen.pop("_thread", None)
    frozen.pop("_from", None)
    return rt.templates.render(row.kind, **_render_context(rt, frozen)).text


def render_row(rt: Runtime, row) -> bytes:
    """The bytes of an outbox row: the same Message-ID, Date and MIME boundary every
    time, so that a mail sent again after a crash is the same mail (guarantee 3)."""
    cfg = rt.cfg
    frozen = json.loads(row.context)
    in_reply_to, references = frozen.pop("_thread", [None, []])
    sender = frozen.pop("_from", None) or cfg.desk.address  # the ticket's mailbox (queue.queue_mail)
    rendered = rt.templates.render(row.kind, **_render_context(rt, frozen))
    display = f"{row.from_name} via {cfg.desk.name}" if row.from_name else cfg.desk.name
    return build_mail(
        from_addr=sender, from_name=display, to_addr=row.rcpt, to_name=row.rcpt_name,
        subject=row.subject, message_id=row.message_id, date=row.created_at, text=rendered.text,
        html=rendered.html, in_reply_to=in_reply_to, references=references, reply_to=sender,
        auto_submitted=auto_submitted(row.kind), extra={LOOP_HEADER: cfg.desk.address},
    )

