"""Outgoing mail: jinja2 templates in, RFC 5322 bytes out.

A template is `templates/<kind>.txt.j2` (required) and `<kind>.html.j2` (optional
HTML alternative). The text template begins with a `Subject:` line and a blank line;
the rest is the body. `desk.templates_dir` overrides the shipped templates file by
file. Templates are compiled once per process, and kept compiled for the next process
of the same user in the temp directory (`_Compiled`).

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
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
from peewee import Model

from ..config.record import Section
from ..errors import MaildeskError
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
        self.loader = loader = _Parts(dirs)
        text_options: dict[str, Any] = dict(autoescape=False, keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True)
        html_options: dict[str, Any] = dict(autoescape=True, trim_blocks=True, lstrip_blocks=True)
        self.text_env = jinja2.Environment(loader=loader, auto_reload=False, undefined=jinja2.ChainableUndefined,
                                           bytecode_cache=_compiled("text", text_options), **text_options)
        self.html_env = jinja2.Environment(loader=loader, auto_reload=False, undefined=jinja2.ChainableUndefined,
                                           bytecode_cache=_compiled("html", html_options), **html_options)
        self.text_env.filters["localtime"] = self.html_env.filters["localtime"] = _localtime
        self._has_html: dict[str, bool] = {}

    def _text_part(self, kind: str, part: str) -> jinja2.Template:
        """The Subject line (`subject`) or the body (`body`) of `<kind>.txt.j2`, each
        compiled when first asked for: the subject is rendered alone when the mail is
        queued, and `tickets show` only reads bodies."""
        try:
            return self.text_env.get_template(f"{kind}.txt.j2#{part}")
        except jinja2.TemplateNotFound:
            raise TemplateMissing(f"template {kind}.txt.j2 is missing") from None

    def subject(self, kind: str, **context) -> str:
        return self._text_part(kind, "subject").render(**context).strip()

    def text(self, kind: str, **context) -> str:
        """The text body alone, the HTML template left uncompiled (`tickets show`)."""
        return self._text_part(kind, "body").render(**context)

    def render(self, kind: str, **context) -> Rendered:
        """The text and HTML bodies (the subject was rendered when the mail was queued)."""
        body = self._text_part(kind, "body")
        html = None
        if self._has_html.get(kind, True):
            try:
                html = self.html_env.get_template(f"{kind}.html.j2").render(**context)
                self._has_html[kind] = True
            except jinja2.TemplateNotFound:
                self._has_html[kind] = False
        return Rendered(body.render(**context), html)


class _Parts(jinja2.BaseLoader):
    """The template files of `dirs` (the first that has a name wins), and by the names
    `<kind>.txt.j2#subject` and `<kind>.txt.j2#body` the two parts of a text template:
    its first line, which must be `Subject: ...`, and the rest."""

    def __init__(self, dirs: list[str]) -> None:
        self.files = jinja2.FileSystemLoader(dirs)

    def get_source(self, environment: jinja2.Environment, template: str):
        name, _, part = template.rpartition("#")
        if part not in ("subject", "body"):  # a file's own name, "#" or not
            name, part = template, ""
        source, filename, uptodate = self.files.get_source(environment, name)
        if not part:
            return source, filename, uptodate
        first, _, body = source.partition("\n")
        if not first.startswith("Subject:"):
            raise TemplateMissing(f"template {name} must begin with a Subject: line")
        return (first[len("Subject:"):].strip() if part == "subject" else body.lstrip("\n")), filename, uptodate

    def list_templates(self) -> list[str]:
        return self.files.list_templates()


class _Compiled(jinja2.FileSystemBytecodeCache):
    """jinja2's cache of compiled templates, in a folder of this user's own in the temp
    directory (made private, and refused when another user owns it: jinja2 checks): a
    command that shows mail (`tickets show`) then compiles no template a desk or an earlier
    command of the same user compiled, which was most of its time after the imports. An
    entry is found by the template's name and file and used only for the same source
    text; the file name names the environment's options and the jinja2 release, so that a
    change of either compiles anew. A cache that cannot be read or written is no cache."""

    def load_bytecode(self, bucket) -> None:
        try:
            super().load_bytecode(bucket)
        except Exception:  # noqa: BLE001 - a damaged entry: compiled again, and written over
            bucket.reset()

    def dump_bytecode(self, bucket) -> None:
        try:
            super().dump_bytecode(bucket)
        except OSError:  # a full or read-only temp directory
            pass


def _compiled(kind: str, options: dict) -> _Compiled | None:
    tag = hashlib.sha256(repr((jinja2.__version__, sorted(options.items()))).encode()).hexdigest()[:12]
    try:
        return _Compiled(pattern=f"maildesk-{kind}-{tag}-%s.cache")
    except (OSError, RuntimeError):  # no temp directory of our own to be had
        return None


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
    if dataclasses.is_dataclass(value) or isinstance(value, Section):  # a configuration section
        named = value.__fields__ if isinstance(value, Section) else dataclasses.fields(value)
        return {f.name: snapshot(getattr(value, f.name)) for f in named if not callable(getattr(value, f.name))}
    return str(value)


def dumps(context: dict) -> str:
    return json.dumps(snapshot(context), ensure_ascii=False, separators=(",", ":"))


# --- building the bytes -------------------------------------------------------------


MAX_LINE = 998  # RFC 5322 2.1.1: octets in a line of a header, without its CRLF
DISPLAY_NAME = 64  # characters of a display name the desk writes (a name, not a text)
_FOLD_AT = 78  # RFC 5322 2.1.1: lines SHOULD be no longer


def _header(name: str, value: str) -> str:
    """A header, folded under 998 octets a line whatever the value (RFC 5322 2.1.1): at
    spaces when it is ASCII in words that fit a line, else as RFC 2047 encoded words,
    which may be split anywhere."""
    # here, as the other imports of building the bytes: `tickets show` renders text, sends nothing
    from email.header import Header

    from ..mailin.mime.text import clean_header_text  # mailin.mime loads the MIME reader besides

    value = clean_header_text(value)
    if value.isascii() and len(value) + len(name) < 76:
        return f"{name}: {value}"
    fits = value.isascii() and all(len(word) < MAX_LINE - len(name) - 4 for word in value.split())
    charset = "us-ascii" if fits else "utf-8"
    return f"{name}: " + Header(value, charset, header_name=name).encode(linesep="\r\n")


def _address(name: str, addr: str) -> str:
    """`Name <addr>`, the name cut to DISPLAY_NAME characters: a display name taken from
    a mail is the sender's text, and no reason for a line too long to send."""
    from email.utils import formataddr

    from ..mailin.mime.text import clean_header_text  # as in _header

    name = clean_header_text(name or "")
    if len(name) > DISPLAY_NAME:
        name = name[: DISPLAY_NAME - 1].rstrip() + "…"
    return formataddr((name, clean_header_text(addr)), charset="utf-8")


def _ids(name: str, ids) -> str | None:
    """A header of Message-IDs, one per line when they do not fit on one; an id too
    long for any line (a hostile one) is left out. None when none is left."""
    ids = [f"<{i}>" for i in ids if len(i) + len(name) + 4 <= MAX_LINE]
    if not ids:
        return None
    lines = [f"{name}: {ids[0]}"]
    for i in ids[1:]:
        if len(lines[-1]) + 1 + len(i) <= _FOLD_AT:
            lines[-1] += " " + i
        else:
            lines.append(" " + i)
    return "\r\n".join(lines)


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
    from email.utils import format_datetime  # as in _header

    lines = [
        "From: " + _address(from_name, from_addr),
        "To: " + _address(to_name, to_addr),
        _header("Subject", subject),
        "Date: " + format_datetime(date.astimezone(dt.UTC)),
        f"Message-ID: <{message_id}>",
    ]
    if reply_to:
        lines.append("Reply-To: " + _address("", reply_to))
    if in_reply_to and (line := _ids("In-Reply-To", [in_reply_to])):
        lines.append(line)
    if references:
        # RFC 5322 3.6.4: keep the first and the most recent ids when the list is long
        refs = list(references)
        if len(refs) > 12:
            refs = refs[:1] + refs[-11:]
        if line := _ids("References", refs):
            lines.append(line)
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


def _render_context_for(cfg, frozen: dict) -> dict:
    return {**frozen, "desk": cfg.desk, "cfg": cfg, "tz": cfg.desk.timezone}


def _render_context(rt: Runtime, frozen: dict) -> dict:
    return _render_context_for(rt.cfg, frozen)


def row_text(rt: Runtime, row) -> str:
    """The plain-text body of an outbox row, as its recipient reads it."""
    frozen = json.loads(row.context)
    frozen.pop("_thread", None)
    frozen.pop("_from", None)
    return rt.templates.text(row.kind, **_render_context(rt, frozen))


def render_row(rt: Runtime, row) -> bytes:
    """The bytes of an outbox row: the same Message-ID, Date and MIME boundary every
    time, so that a mail sent again after a crash is the same mail (guarantee 3)."""
    from ..signing import loop_value  # as in _header

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
        auto_submitted=auto_submitted(row.kind), extra={LOOP_HEADER: loop_value(rt.key, cfg.desk.address)},
    )


# --- checking an admin's overrides (`maildesk check-config`) ---------------------------------


def check_overrides(cfg) -> list[str]:
    """Problems with the template overrides in `desk.templates_dir`, one sentence each:
    a file that does not compile, one that fails to render a sample mail which the
    shipped template renders (it would fail its mail at delivery), and a file that
    overrides no template the desk has."""
    folder = cfg.desk.templates_dir
    if folder is None or not folder.is_dir():
        return []
    shipped, ours = Templates(None), Templates(folder)
    names = sorted(p.name for p in folder.iterdir() if p.name.endswith(".j2") and p.is_file())
    problems = []
    for name in names:
        env = ours.html_env if name.endswith(".html.j2") else ours.text_env
        try:
            env.get_template(name)
        except jinja2.TemplateSyntaxError as e:
            problems.append(f"desk.templates_dir: {folder / name} line {e.lineno}: {e.message}")
        except (jinja2.TemplateError, UnicodeDecodeError) as e:
            problems.append(f"desk.templates_dir: {folder / name} cannot be read: {e}")
        else:
            if not name.startswith("_") and not (shipped_templates() / name).exists():
                problems.append(f"desk.templates_dir: {folder / name} overrides no template of the desk "
                                "(the names are those of templates/ in the package)")
    if problems:
        return problems
    kinds = sorted({p.name.split(".", 1)[0] for p in shipped_templates().glob("*.txt.j2") if not p.name.startswith("_")})
    context = _render_context_for(cfg, _sample())
    for kind in kinds:
        if _render_fails(shipped, kind, context) is None and (failure := _render_fails(ours, kind, context)):
            problems.append(f"desk.templates_dir: the {kind} mail fails to render with the overrides in {folder} "
                            f"({type(failure).__name__}: {failure}); it would fail at delivery")
    return problems


def _render_fails(templates: Templates, kind: str, context: dict) -> Exception | None:
    try:
        templates.subject(kind, **context)
        templates.render(kind, **context)
    except Exception as e:  # noqa: BLE001 - whatever an admin's template raises is the finding
        return e
    return None


def _sample() -> dict:
    """A mail's context as the queue freezes it, with what most templates ask for."""
    at = "2026-11-27T09:00:00+00:00"
    ticket = {
        "id": 42, "subject": "Printer on floor 3 is broken", "requester": "jane@example.org",
        "requester_name": "Jane Doe", "status": "open", "category": "Hardware", "impact": "medium",
        "urgency": "medium", "priority": "medium", "group": "service-desk", "assignee": "alice@example.org",
        "created_at": at, "sla_policy": "medium", "response_due": at, "resolution_due": at,
        "first_response_at": None, "resolved_at": None, "closed_at": None, "closure_code": None,
        "resolution": "The drum was replaced.", "is_major": False, "reopen_count": 0, "parent": None,
    }
    message = {"id": 1, "direction": "in", "from_addr": "jane@example.org", "from_name": "Jane Doe",
               "subject": ticket["subject"], "body": "It prints blank pages.", "internal": False, "kind": "mail",
               "created_at": at}
    return {
        "rcpt": "jane@example.org", "rcpt_name": "Jane Doe", "ticket": ticket, "now": at, "ref": "INC-42",
        "tag": "[INC-42]", "message": message, "source": message, "body": "It prints blank pages.", "by": "Alice",
        "count": 500, "lane": "unauth", "reason": "message is 30,000,000 bytes", "subject": ticket["subject"],
        "limit": 26214400, "why": "the requester replied", "target": "response", "due": at, "role": "new",
        "problems": [["#priority urgent", "unknown priority"]], "auth_reason": "no Authentication-Results",
        "priority_why": "priority medium", "category_why": "keyword printer", "since": at, "auto_close_at": at,
        "mailbox": "INBOX", "timeline": [["created", at]], "survey_count": 1, "survey_mean": 4.0,
    }

