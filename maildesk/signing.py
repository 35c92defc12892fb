"""Signed Message-IDs and one-click tokens.

Every mail the desk sends has a Message-ID that carries an HMAC over the ticket and
the recipient: a reply that cites it proves which mail it answers and to whom that
mail was sent (docs/security.md). One-click actions (confirm, reject, survey rating)
are `mailto:` links whose subject carries a token signed the same way, so that a
link-following mail scanner cannot trigger them and nobody can forge them. The
envelope sender of each mail (VERP) carries a signature over the outgoing row and its
recipient, so that only that recipient's mail system can bounce it.

A token is `<action>-<ticket>-<about>-<mac>`: `about` names what the link belongs to
(the resolution it confirms or rejects: the ticket's `reopen_count` when it was
resolved), and the MAC covers the action, the ticket, `about` and the recipient.
Tokens of the earlier form `<action>-<ticket>-<mac>` (before links were bound to a
resolution) are recognised by `find_token` with `old=True`, so that the desk can
refuse them politely; they never act.

The key is `security.secret_file`, or a random secret kept in the database.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from typing import NamedTuple

_MID = re.compile(r"^md-(\d+)-([0-9a-f]{8})-([0-9a-f]{20})@(.+)$", re.I)
# kbsolved7: "knowledge-base article 7 solved it" (desk/kb.py)
ACTIONS = r"fixed|notfixed|rate[1-5]|kbsolved\d{1,9}"
TOKEN = re.compile(rf"\b({ACTIONS})-(\d{{1,12}})-([0-9a-z]{{1,12}})-([0-9a-f]{{16}})\b", re.I)
OLD_TOKEN = re.compile(rf"\b({ACTIONS})-(\d{{1,12}})-([0-9a-f]{{16}})\b", re.I)


class Token(NamedTuple):
    """A token as found in a subject: not yet verified."""

    action: str
    ticket_id: int
    about: str  # what it belongs to ("" in an old token)
    mac: str
    old: bool = False  # the earlier form, bound to no resolution: never acts


def _mac(key: bytes, *parts: object) -> str:
    msg = "|".join(str(p) for p in parts).encode()
    return hmac.new(key, msg, hashlib.sha256).hexdigest()


def new_message_id(key: bytes, ticket_id: int | None, rcpt: str, domain: str) -> str:
    """`md-<ticket>-<nonce>-<mac>@<domain>`, without angle brackets."""
    nonce = secrets.token_hex(4)
    tid = ticket_id or 0
    return f"md-{tid}-{nonce}-{_mac(key, 'mid', tid, nonce, rcpt.lower())[:20]}@{domain}"


def is_desk_id(message_id: str, domain: str) -> bool:
    """A Message-ID that claims to be the desk's own (whatever its signature)."""
    m = _MID.match(message_id)
    return m is not None and m.group(4).lower() == domain.lower()


def verify_message_id(key: bytes, message_id: str, rcpt: str, domain: str) -> int | None:
    """The ticket id if `message_id` is a valid desk id of a mail sent to `rcpt`."""
    m = _MID.match(message_id)
    if not m or m.group(4).lower() != domain.lower():
        return None
    tid, nonce, mac = m.group(1), m.group(2).lower(), m.group(3).lower()
    good = _mac(key, "mid", int(tid), nonce, rcpt.lower())[:20]
    return int(tid) if hmac.compare_digest(good, mac) else None


def signed_id_sender(key: bytes, message_id: str, candidates, domain: str) -> str | None:
    """Which of `candidates` the desk id was sent to, if any."""
    for rcpt in candidates:
        if verify_message_id(key, message_id, rcpt, domain) is not None:
            return rcpt
    return None


def loop_value(key: bytes, address: str) -> str:
    """The value of the desk's loop header (`vocab.LOOP_HEADER`): its address and an
    HMAC of it. The desk knows its own mail by it; another maildesk (another address
    or key) writes another value, and nobody without the key can make one up for a
    desk they have not had mail from."""
    address = address.strip().lower()
    return f"{address} {_mac(key, 'loop', address)[:32]}"


def is_loop_value(value: str, key: bytes, address: str) -> bool:
    return hmac.compare_digest(" ".join(value.split()).lower().encode(), loop_value(key, address).encode())


def verp_signature(key: bytes, outbox_id: int, rcpt: str) -> str:
    """The signature in the envelope sender of outbox row `outbox_id`, sent to `rcpt`
    (16 hex digits: 64 bits, short enough for a local part, too long to guess)."""
    return _mac(key, "verp", int(outbox_id), rcpt.lower())[:16]


def verify_verp(key: bytes, outbox_id: int, rcpt: str, signature: str) -> bool:
    """Whether `signature` is the VERP signature of row `outbox_id` sent to `rcpt`."""
    return hmac.compare_digest(verp_signature(key, outbox_id, rcpt), (signature or "").lower())


def make_token(key: bytes, action: str, ticket_id: int, rcpt: str, about: str | int = "0") -> str:
    """`fixed-42-0-<mac>`: the text a one-click mailto link puts in its subject, for
    `rcpt` alone, bound to `about` (the resolution it answers)."""
    about = str(about).lower()
    if not re.fullmatch(r"[0-9a-z]{1,12}", about):
        raise ValueError(f"a token's 'about' is 1-12 letters or digits, not {about!r}")
    return f"{action}-{ticket_id}-{about}-{_mac(key, 'click', action, ticket_id, about, rcpt.lower())[:16]}"


def find_token(subject: str) -> Token | None:
    """The first token-looking text in a subject (current form first, then the old one)."""
    m = TOKEN.search(subject or "")
    if m:
        return Token(m.group(1).lower(), int(m.group(2)), m.group(3).lower(), m.group(4).lower())
    m = OLD_TOKEN.search(subject or "")
    if m:
        return Token(m.group(1).lower(), int(m.group(2)), "", m.group(3).lower(), old=True)
    return None


def verify_token(key: bytes, token: Token, rcpt: str) -> bool:
    """Whether `token` was made for `rcpt` (an old token: by the old scheme)."""
    if token.old:
        good = _mac(key, "token", token.action, token.ticket_id, rcpt.lower())[:16]
    else:
        good = _mac(key, "click", token.action, token.ticket_id, token.about, rcpt.lower())[:16]
    return hmac.compare_digest(good, token.mac)
