"""The knowledge base (docs/mail.md, Knowledge base): known fixes first.

- `publish`: `#kb` makes a technician's resolution an article (KB-7), linked to its
  ticket and category; publishing again from the same ticket makes a new version of
  the same article (and brings a retired one back). `retire`: `#kb retire N`.
- `look_up`: the articles and resolved tickets most like a new incident, found once
  for both of its first mails: `offers` picks what its acknowledgement offers (up to
  `kb.suggest_in_ack`, above `kb.min_score`, each with a signed one-click "this solved
  it" link), `may_offer` says when nothing may be offered (automatic mail, a major
  incident, a sender whose mail did not pass authentication when the desk has trusted
  servers: outsiders cannot mine the base by writing in).
- `take`: the "this solved it" link, from the requester it was made for, within 30
  days: the ticket is resolved with closure code `self-service`, the article's use
  count goes up, the assignee is told. Doing nothing keeps the ticket as it is.

These functions change rows and queue mail; the pipeline stages decide when.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from dataclasses import dataclass, field

from ..mailout.queue import queue_mail
from ..store import KbArticle, KbOffer, KbVersion, Ticket, add_event, execute, heldback
from ..vocab import ACTIVE, CLOSURE_SELF_SERVICE
from . import kbsearch, kbterms, resolution, routing
from .kbsearch import Match
from .links import mailto

log = logging.getLogger(__name__)

PREFIX = "KB"
CLICK_VALID = dt.timedelta(days=30)  # as the survey's rating links (docs/mail.md, One-click links)
EXCERPT = 700  # characters of an article in an acknowledgement or a notice
ACTION = "kbsolved"  # the one-click token's action: kbsolved7 is "article 7 solved it"


def ref(number: int) -> str:
    return f"{PREFIX}-{number}"


_NUMBER = re.compile(rf"^\[?\s*(?:{PREFIX}-?|#)?(\d{{1,9}})\s*\]?$", re.I)


def parse_number(text: str) -> int | None:
    """An article's number from "7", "KB-7" or "#7"; None if it is none of them."""
    m = _NUMBER.match((text or "").strip())
    return int(m.group(1)) if m else None


def excerpt(text: str, limit: int = EXCERPT) -> str:
    text = (text or "").strip()
    if len(text) <= limit:
        return text
    cut = text[:limit].rsplit(" ", 1)[0]
    return cut.rstrip(",;:") + " …"


# --- publishing --------------------------------------------------------------------------------


def published_from(ticket: Ticket) -> KbArticle | None:
    """The article a ticket's resolution was published as, if any."""
    return KbArticle.select().where(KbArticle.ticket == ticket).order_by(KbArticle.id).first()


def publish(rt, ticket: Ticket, title: str, text: str, now: dt.datetime, actor: str, inbound=None) -> KbArticle:
    """The text as an article of the ticket: a new one, or the next version of the one
    already published from it."""
    lang = kbsearch.language(rt)
    key = kbterms.key_string(title, text, ticket.category, lang)
    article = published_from(ticket)
    if article is None:
        article = KbArticle.create(title=title, text=text, category=ticket.category, ticket=ticket, version=1,
                                   key_terms=key, created_at=now, updated_at=now, created_by=actor, updated_by=actor)
        what = "published"
    else:
        revived = article.retired
        article.title, article.text, article.category, article.key_terms = title, text, ticket.category, key
        article.version += 1
        article.retired, article.retired_at = False, None
        article.updated_at, article.updated_by = now, actor
        article.save()
        what = f"version {article.version} published" + (" (it was retired: offered again)" if revived else "")
    KbVersion.create(article=article, version=article.version, title=title, text=text, category=ticket.category,
                     created_at=now, created_by=actor)
    kbsearch.index_article(rt, article)
    add_event(ticket, now, actor, "kb-published", f"{ref(article.id)} \"{title[:80]}\" {what}", inbound)
    log.info("kb article=%s version=%s published from ticket=%s", ref(article.id), article.version, rt.ref(ticket))
    return article


def retire(rt, article: KbArticle, now: dt.datetime, actor: str, ticket: Ticket | None = None, inbound=None) -> None:
    """The article is offered and listed no more; it stays readable (`maildesk kb show`)."""
    article.retired, article.retired_at = True, now
    article.updated_at, article.updated_by = now, actor
    article.save()
    kbsearch.index_article(rt, article)
    if ticket is not None:
        add_event(ticket, now, actor, "kb-retired", f"{ref(article.id)} \"{article.title[:80]}\" retired", inbound)
    log.info("kb article=%s retired by %s", ref(article.id), actor)


# --- looking up a new incident ------------------------------------------------------------------


@dataclass
class Lookup:
    """What the knowledge base knows about one new incident."""

    articles: list[Match] = field(default_factory=list)  # above kb.min_score, best first
    tickets: list[Match] = field(default_factory=list)


def look_up(rt, ticket: Ticket, subject: str, text: str, *, articles: int, tickets: int) -> Lookup:
    """The articles and resolved tickets above `kb.min_score` most like an incident."""
    kb = rt.cfg.kb
    if not kb.enabled:
        return Lookup()
    return Lookup(
        articles=kbsearch.search_articles(rt, subject, text, articles, kb.min_score),
        tickets=kbsearch.search_tickets(rt, subject, text, tickets, exclude=ticket.id, min_score=kb.min_score),
    )


def may_offer(cfg, *, sender: str, automatic: bool, is_major: bool, passed_authentication: bool) -> str | None:
    """Why an acknowledgement may offer no article, or None when it may (a pure rule)."""
    if not cfg.kb.enabled:
        return "kb.enabled is false"
    if cfg.kb.suggest_in_ack <= 0:
        return "kb.suggest_in_ack is 0"
    if automatic:
        return "automatic mail gets no suggestions"
    if is_major:
        return "a major incident gets no suggestions"
    if not sender:
        return "no single sender to offer them to"
    if cfg.security.trusted_authserv_ids and not passed_authentication:
        return ("the sender's mail did not pass authentication (security.trusted_authserv_ids): "
                "outsiders cannot mine the knowledge base by writing in")
    return None


def offers(rt, ticket: Ticket, matches: list[Match], rcpt: str, now: dt.datetime) -> list[dict]:
    """Offer `matches` to `rcpt` on `ticket`: each recorded (the click checks it) and
    given its one-click link; the entries the acknowledgement lists."""
    chosen = matches[: rt.cfg.kb.suggest_in_ack]
    if chosen:
        at = KbOffer.offered_at.db_value(now)
        heldback.offers([(ticket.id, m.id, rcpt, m.score, at) for m in chosen])  # with the batch's others
    out = []
    for m in chosen:
        out.append({
            "ref": ref(m.id), "number": m.id, "title": m.title, "text": excerpt(m.text), "score": m.score,
            "link": mailto(rt, f"{ACTION}{m.id}", ticket, rcpt, f"This solved it: {ref(m.id)}"),
        })
    return out


def known_fixes(rt, lookup: Lookup) -> dict:
    """The assignment notice's list: similar resolved tickets and articles, with their
    resolution."""
    n = rt.cfg.kb.similar_in_notice
    return {
        "known_articles": [{"ref": ref(m.id), "title": m.title, "text": excerpt(m.text), "score": m.score}
                           for m in lookup.articles[:n]],
        "known_tickets": [{"ref": rt.ref(m.id), "subject": m.title, "resolution": excerpt(m.text), "score": m.score}
                          for m in lookup.tickets[:n]],
    }


# --- "this solved it" ----------------------------------------------------------------------------


class NotTaken(Exception):
    """A "this solved it" click that changes nothing; the message says why. (Not an
    error: the mail is processed, and `maildesk why` shows the reason.)"""


def take(rt, ticket: Ticket, number: int, who: str, now: dt.datetime, inbound=None) -> KbArticle:
    """The requester says article `number` solved their incident: resolve it as
    self-service and tell whoever holds it. Raises NotTaken when the click is stale."""
    heldback.flush()  # an offer of this very batch is read too
    offer = KbOffer.get_or_none((KbOffer.ticket == ticket) & (KbOffer.article == number))
    if offer is None:
        raise NotTaken(f"{ref(number)} was not offered on {rt.ref(ticket)}")
    if now - offer.offered_at > CLICK_VALID:
        raise NotTaken(f"the link to {ref(number)} is older than {CLICK_VALID.days} days")
    if ticket.status not in ACTIVE:
        raise NotTaken(f"{rt.ref(ticket)} is already {ticket.status}")
    article = KbArticle.get_by_id(number)
    text = f"You told us that knowledge-base article {ref(number)} \"{article.title}\" solved it.\n\n{article.text}"
    resolution.resolve_ticket(rt, ticket, CLOSURE_SELF_SERVICE, text, now, who, inbound)
    offer.taken_at = now
    offer.save()
    execute('UPDATE "kb_article" SET "use_count" = "use_count" + 1 WHERE "id" = ?', (number,))
    add_event(ticket, now, who, "self-service", f"the requester says {ref(number)} \"{article.title[:80]}\" solved it "
                                                f"(one-click link); resolved as {CLOSURE_SELF_SERVICE}", inbound)
    for rcpt in routing.staff_recipients(rt, ticket):
        queue_mail(rt, now, "self_service", rcpt=rcpt, ticket=ticket, inbound=inbound,
                   context={"article": {"ref": ref(number), "title": article.title}, "by": who})
    log.info("self-service ticket=%s article=%s", rt.ref(ticket), ref(number))
    return article
