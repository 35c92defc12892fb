"""Whether a mail passed authentication: does its From domain stand behind it, by the
word of the server that received it (docs/security.md, Authentication results).

Only the receiving server's own word counts, and only as it stands at the top of the
header: that server adds one `Authentication-Results` field to every message and
removes forged ones that bear its id (RFC 8601 section 5), so the topmost field is
its verdict and anything below it, ARC sets and the headers of attached messages are
whatever the sender wrote. The fields are read raw, never decoded from RFC 2047: an
encoded word is not a header the server wrote. Pure: no database, no network, no clock.

    from maildesk.mailin import authentication

    policy = authentication.Policy.of(cfg.security)
    result = authentication.check(
        "alice@example.test",
        mail.raw_headers("authentication-results"),           # top first
        mail.raw_headers("x-ms-exchange-organization-authas"),
        policy)
    if result.passed: ...
    log.info("authenticated=%s: %s", result.passed, result.reason)

A mail passes when `security.trust_sender_address` is on (an internal relay vouches
for From); or when the topmost field is from one of `security.trusted_authserv_ids`
and says `dmarc=pass` with a `header.from` equal to the From domain, or `dkim=pass`
with a `header.d` (or `header.i`) in the From domain's organizational domain (the
public suffix list that `publicsuffixlist` ships; nothing is downloaded); or, with
`security.microsoft365`, when the topmost field is Exchange Online's (it writes none
of the authserv-id) and says so, or the topmost `X-MS-Exchange-Organization-AuthAs`
is `Internal` (Exchange marks its tenant's signed-in users so, and removes the
header from mail that enters from outside). Domains compare as lower-case IDNA
A-labels.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass

import authres

# Exchange Online writes its Authentication-Results without an authserv-id; this
# stands in for one when `security.microsoft365` lets such a field count.
MICROSOFT365 = "Microsoft 365"

_LABEL = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$")
_COMMENT = re.compile(r"\([^()]*\)")


@dataclass(frozen=True)
class Policy:
    """Whose word counts: `Policy.of(cfg.security)`."""

    trusted_authserv_ids: frozenset[str] = frozenset()
    trust_sender_address: bool = False
    microsoft365: bool = False

    @classmethod
    def of(cls, security) -> Policy:
        return cls(frozenset(a.strip().lower() for a in security.trusted_authserv_ids),
                   security.trust_sender_address, security.microsoft365)

    @property
    def has_trusted_servers(self) -> bool:
        """Whether any server's word can count (docs/security.md: "when the desk has trusted servers")."""
        return bool(self.trusted_authserv_ids) or self.microsoft365


@dataclass(frozen=True)
class Result:
    passed: bool
    reason: str  # a sentence for the decision log and for the sender's refusal


def check(sender: str, results: Sequence[str], authas: Sequence[str], policy: Policy) -> Result:
    """Whether mail from `sender` passed authentication. `results` are the raw values of
    its `Authentication-Results` fields and `authas` those of its
    `X-MS-Exchange-Organization-AuthAs` fields, topmost first; only the first of each
    is read."""
    if not sender or "@" not in sender:
        return Result(False, "the mail has no single sender address")
    if policy.trust_sender_address:
        return Result(True, "security.trust_sender_address is on")
    from_domain = a_label(sender.rsplit("@", 1)[1])
    if from_domain is None:
        return Result(False, f"the From domain of {sender} is not a valid domain name")
    if policy.microsoft365 and authas and authas[0].strip().lower() == "internal":
        return Result(True, "X-MS-Exchange-Organization-AuthAs: Internal (a signed-in user of the "
                            "Microsoft 365 tenant; security.microsoft365)")
    if not policy.has_trusted_servers:
        return Result(False, "no Authentication-Results can count: security.trusted_authserv_ids is empty")
    if not results:
        return Result(False, "no Authentication-Results header from a trusted server: the mail has none")
    top = results[0]
    if top.lstrip().startswith("=?"):
        return Result(False, "the topmost Authentication-Results is an RFC 2047 encoded word, which no receiving "
                             "server writes: it is read as it stands and counts for nothing")
    server = authserv_id(top)
    if server is None:
        if not policy.microsoft365:
            return Result(False, "no Authentication-Results header from a trusted server: the topmost has no "
                                 "authserv-id (only Microsoft 365 writes such, and security.microsoft365 is off)")
        server, text = MICROSOFT365, f"{MICROSOFT365.replace(' ', '')}; {top}"
    elif server.lower() not in policy.trusted_authserv_ids:
        return Result(False, f"no Authentication-Results header from a trusted server: the topmost is from "
                             f"{_show(server)}, not one of security.trusted_authserv_ids")
    else:
        text = top
    try:
        parsed = authres.AuthenticationResultsHeader.parse("Authentication-Results: " + text)
    except Exception:  # noqa: BLE001 - authres raises several parse errors; an unreadable verdict is no pass
        return Result(False, f"the topmost Authentication-Results from {_show(server)} cannot be read")
    return _verdict(server, from_domain, parsed.results)


def _verdict(server: str, from_domain: str, results) -> Result:
    notes = []
    for r in results:
        if (r.method or "").lower() != "dmarc" or (r.result or "").lower() != "pass":
            continue
        header_from = _property(r, "header", "from")
        if header_from and a_label(header_from.rsplit("@", 1)[-1]) == from_domain:
            return Result(True, f"dmarc=pass header.from={from_domain} from {server}")
        notes.append(f"dmarc=pass is for header.from={_show(header_from or '(none)')}, not {from_domain}")
    org = organizational_domain(from_domain)
    for r in results:
        if (r.method or "").lower() != "dkim" or (r.result or "").lower() != "pass":
            continue
        # RFC 6376 3.5: the verifier holds i= within d=, so its domain stands for d= when d= is not given
        d = _property(r, "header", "d") or _property(r, "header", "i").rsplit("@", 1)[-1]
        signer = a_label(d)
        if org is not None and signer is not None and organizational_domain(signer) == org:
            return Result(True, f"dkim=pass header.d={signer} (aligned with {from_domain}) from {server}")
        notes.append(f"dkim=pass header.d={_show(d or '(none)')} is not aligned with {from_domain}")
    summary = ", ".join(f"{r.method}={r.result}" for r in results) or "no results"
    return Result(False, f"Authentication-Results from {server} do not pass for {from_domain} ({summary})"
                  + (f": {'; '.join(notes)}" if notes else ""))


def _property(result, ptype: str, name: str) -> str:
    for p in result.properties:
        if (p.type or "").lower() == ptype and (p.name or "").lower() == name:
            return (p.value or "").strip().strip('"')
    return ""


def authserv_id(value: str) -> str | None:
    """The authserv-id that begins an Authentication-Results value, or None when the
    value begins with a result instead (as Exchange Online writes it)."""
    head = _COMMENT.sub(" ", value.split(";", 1)[0]).split()
    if not head or "=" in head[0]:
        return None
    return head[0].strip('"')


def a_label(domain: str) -> str | None:
    """A domain as its lower-case IDNA A-label form (RFC 5890), or None when it is none."""
    domain = (domain or "").strip().rstrip(".").lower()
    if not domain.isascii():
        try:
            domain = domain.encode("idna").decode("ascii").lower()
        except UnicodeError:
            return None
    labels = domain.split(".")
    if len(domain) > 253 or not all(_LABEL.match(label) for label in labels):
        return None
    return domain


@functools.lru_cache(maxsize=1)
def _suffixes():
    from publicsuffixlist import PublicSuffixList

    return PublicSuffixList()  # the list the package ships: nothing is fetched


@functools.lru_cache(maxsize=4096)
def organizational_domain(domain: str) -> str | None:
    """The registrable domain (RFC 7489 3.2): one label below the public suffix;
    None for a public suffix itself ("test", "co.uk")."""
    return _suffixes().privatesuffix(domain)


def _show(text: str) -> str:
    """Attacker-written text in a log line: bounded, one line."""
    text = " ".join(text.split())
    return text if len(text) <= 80 else text[:79] + "…"
