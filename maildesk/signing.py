"""Signed Message-IDs and one-click tokens.

Every mail the desk sends has a Message-ID that carries an HMAC over the ticket and
the recipient: a reply that cites it proves which mail it answers and to whom that
mail was sent (DESIGN section 4). One-click actions (confirm, reject, survey rating)
are `mailto:` links whose subject carries a token signed the same way, so that a
link-following mail scanner cannot trigger them and nobody can forge them.

The key is `security.secret_file`, or a random secret kept in the database.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

_MID = re.compile(r"^md-(\d+)-([0-9a-f]{8})-([0-9a-f]{20})@(.+)$", re.I)
# kbsolved7: "knowledge-base article 7 solved it" (desk/kb.py)
TOKEN = re.compile(r"\b(fixed|notfixed|rate[1-5]|kbsolved\d{1,9})-(\d+)-([0-9a-f]{16})\b", re.I)


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
    return bool(m) and m.group(4).lower() == domain.lower()


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


def make_token(key: bytes, action: str, ticket_id: int, rcpt: str) -> str:
    """`fixed-42-<mac>`: the text a one-click mailto link puts in its subject."""
    return f"{action}-{ticket_id}-{_mac(key, 'token', action, ticket_id, rcpt.lower())[:16]}"


def find_token(subject: str) -> tuple[str, int, str] | None:
    """(action, ticket id, mac) of the first token-looking text in a subject."""
    m = TOKEN.search(subject or "")
    if not m:
        return None
    return m.group(1).lower(), int(m.group(2)), m.group(3).lower()


def verify_token(key: bytes, action: str, ticket_id: int, mac: str, rcpt: str) -> bool:
    good = _mac(key, "token", action, ticket_id, rcpt.lower())[:16]
    return hmac.compare_digest(good, mac)
