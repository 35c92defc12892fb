"""VERP addresses: the envelope sender that makes a bounce name the mail it answers.

The `{id}` of the template (`desk.bounce_address`) becomes `ID-SIGNATURE`: the outbox
row's id and a signature over that row and its recipient (`signing.verp_signature`),
e.g. `helpdesk+bounce-42-0123456789abcdef@example.test`. A bounce that carries a valid
signature was made by someone who saw that envelope: the recipient's own mail system
(docs/security.md, Signed VERP). The pattern also finds addresses without a signature, so that a
forged report that lists them can be recorded as what it is.
"""

from __future__ import annotations

import re
import string

_VERP_FIELDS = ("local", "id", "domain")


def _verp_template(template: str) -> list[tuple[str, str | None]]:
    """The template as (literal text, field name or None) pairs; checks the fields."""
    try:
        pieces = [(literal, field) for literal, field, _, _ in string.Formatter().parse(template)]
    except ValueError as exc:
        raise ValueError(f"bounce address template {template!r}: {exc}") from None
    fields = [f for _, f in pieces if f is not None]
    unknown = [f for f in fields if f not in _VERP_FIELDS]
    if unknown:
        raise ValueError(
            f"bounce address template {template!r}: unknown placeholder {{{unknown[0]}}}")
    if fields.count("id") != 1:
        raise ValueError(f"bounce address template {template!r}: needs {{id}} exactly once")
    return pieces


def verp_pattern(template: str, local: str | tuple[str, ...], domain: str | tuple[str, ...]) -> re.Pattern[str]:
    """A pattern that finds VERP addresses made from template anywhere in a header value.

    It ignores case and captures the outbox id as the group "id" and the signature, when
    there is one, as the group "sig" (None without). `local` and `domain` may be several
    (a desk with several mailboxes: each answers from its own address).
    """
    values = {"local": _any(local), "domain": _any(domain),
              "id": r"(?P<id>\d{1,18})(?:-(?P<sig>[0-9a-f]{16}))?"}
    body = "".join(re.escape(literal) + (values[field] if field else "")
                   for literal, field in _verp_template(template))
    return re.compile(r"(?<![\w.+-])" + body + r"(?!\.?[\w-])", re.IGNORECASE)


def _any(values: str | tuple[str, ...]) -> str:
    if isinstance(values, str):
        return re.escape(values)
    return "(?:" + "|".join(map(re.escape, values)) + ")"


def verp_address(template: str, local: str, domain: str, outbox_id: int, signature: str = "") -> str:
    """The envelope sender for outbox row outbox_id, e.g. helpdesk+bounce-42-<signature>@example.test
    (helpdesk+bounce-42@example.test without a signature)."""
    if isinstance(outbox_id, bool) or not isinstance(outbox_id, int) or outbox_id < 0:
        raise ValueError(f"outbox id must be a non-negative integer, not {outbox_id!r}")
    if signature and not re.fullmatch(r"[0-9a-f]{16}", signature):
        raise ValueError(f"a VERP signature is 16 hex digits, not {signature!r}")
    values = {"local": local, "domain": domain, "id": f"{outbox_id}-{signature}" if signature else str(outbox_id)}
    return "".join(literal + (values[field] if field else "")
                   for literal, field in _verp_template(template))
