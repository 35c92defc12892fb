"""The full-text indexes of the knowledge base, on the database's own engine: SQLite's
FTS5 (`porter unicode61`, ranked by `bm25`) or PostgreSQL's text search (`tsvector`
with a GIN index, ranked by `ts_rank_cd`, in the configuration `kb.language`). No
search server, nothing downloaded.

    kb_fts       the articles that are not retired: title, text, category
    ticket_fts   the tickets a technician resolved: subject, what the requester wrote
                 first, the resolution, category

    index_article(rt, article)                      # after a publish, a retirement
    index_ticket(rt, ticket)                        # after a technician's resolution
    search_articles(rt, subject, text, limit)       # -> [Match], best first
    search_tickets(rt, subject, text, limit, exclude=ticket_id)

A search ORs the incident's words (an incident rarely has all the words of its fix),
takes the best candidates by the engine's rank, and scores each with
`kbterms.relevance`: the share of its key terms found in the incident, weighed by its
rank over the best candidate's. The score means the same whether the base holds one
article or ten thousand, so `kb.min_score` holds from the first article on.

`kb.language` is recorded in the setting `kb_language` with the index it built;
`maildesk init` rebuilds both indexes when the configured language changed
(`reindex`). SQLite stems English only (Porter); in another language its index
matches whole words.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from .. import store
from ..store import KbArticle, Ticket
from ..vocab import CLOSURE_SELF_SERVICE
from . import kbterms

log = logging.getLogger(__name__)

CANDIDATES = 20  # the best of the engine's rank that are scored; the rest cannot beat them by much
ARTICLE_WEIGHTS = "bm25(4.0, 1.0, 2.0)"  # title, text, category
TICKET_WEIGHTS = "bm25(4.0, 2.0, 1.0, 1.0)"  # subject, problem, resolution, category
PROBLEM_CHARS = 2000  # of a ticket's first mail, in its index row


@dataclass(frozen=True)
class Match:
    """An article or a resolved ticket that answers an incident, and how well."""

    kind: str  # article | ticket
    id: int  # the article's number or the ticket's id
    title: str  # the article's title or the ticket's subject
    text: str  # the article's text or the ticket's resolution
    category: str | None
    score: float  # kbterms.relevance, 0..1
    found: tuple[str, ...]  # the key terms found in the incident
    key_count: int
    rank_share: float

    def why(self, name: str) -> str:
        """For `maildesk why`: what was found, and how much of it counts."""
        return (f"{name} \"{self.title[:60]}\" score {self.score:.2f} (key terms found: "
                f"{', '.join(self.found) or 'none'} of {self.key_count}; rank {self.rank_share:.2f} of the best)")


def language(rt) -> str:
    return rt.cfg.kb.language


def _is_english(lang: str) -> bool:
    return lang == "english"


def tokenizer(lang: str) -> str:
    """FTS5's tokenizer for a language: Porter's stemmer is English."""
    return "porter unicode61 remove_diacritics 2" if _is_english(lang) else "unicode61 remove_diacritics 2"


# --- writing the indexes -------------------------------------------------------------------

_PG_ARTICLE_VECTOR = ("setweight(to_tsvector(?::regconfig, ?), 'A') || setweight(to_tsvector(?::regconfig, ?), 'B') "
                      "|| setweight(to_tsvector(?::regconfig, ?), 'D')")
_PG_TICKET_VECTOR = ("setweight(to_tsvector(?::regconfig, ?), 'A') || setweight(to_tsvector(?::regconfig, ?), 'C') "
                     "|| setweight(to_tsvector(?::regconfig, ?), 'B') || setweight(to_tsvector(?::regconfig, ?), 'D')")


def index_article(rt, article: KbArticle) -> None:
    """The article as it is now: in the index while it is not retired, out of it after."""
    lang = language(rt)
    if store.is_sqlite():
        store.execute('DELETE FROM "kb_fts" WHERE "rowid" = ?', (article.id,))
        if not article.retired:
            store.execute('INSERT INTO "kb_fts" ("rowid", "title", "text", "category") VALUES (?, ?, ?, ?)',
                          (article.id, article.title, article.text, article.category or ""))
    elif article.retired:
        store.execute('DELETE FROM "kb_fts" WHERE "article_id" = ?', (article.id,))
    else:
        store.execute(
            f'INSERT INTO "kb_fts" ("article_id", "language", "vector") VALUES (?, ?, {_PG_ARTICLE_VECTOR}) '
            'ON CONFLICT ("article_id") DO UPDATE SET "language" = excluded."language", "vector" = excluded."vector"',
            (article.id, lang, lang, article.title, lang, (article.category or "").replace("/", " "), lang, article.text))
    rt.memo.pop("kb_live", None)


def first_words(ticket: Ticket) -> str:
    """What the requester wrote first: the problem a resolution answers."""
    return store.scalar('SELECT "body" FROM "message" WHERE "ticket_id" = ? AND "direction" = ? ORDER BY "id" LIMIT 1',
                        (ticket.id, "in")) or ""


def index_ticket(rt, ticket: Ticket) -> None:
    """A ticket a technician resolved, findable by its problem and its resolution.
    A self-service resolution is the article's text again: not indexed."""
    if not (ticket.resolution or "").strip() or ticket.closure_code == CLOSURE_SELF_SERVICE:
        return
    problem = first_words(ticket)[:PROBLEM_CHARS]
    category = (ticket.category or "").replace("/", " ")
    if store.is_sqlite():
        store.execute('DELETE FROM "ticket_fts" WHERE "rowid" = ?', (ticket.id,))
        store.execute('INSERT INTO "ticket_fts" ("rowid", "subject", "problem", "resolution", "category") '
                      'VALUES (?, ?, ?, ?, ?)', (ticket.id, ticket.subject, problem, ticket.resolution, category))
    else:
        lang = language(rt)
        store.execute(
            f'INSERT INTO "ticket_fts" ("ticket_id", "language", "vector") VALUES (?, ?, {_PG_TICKET_VECTOR}) '
            'ON CONFLICT ("ticket_id") DO UPDATE SET "language" = excluded."language", "vector" = excluded."vector"',
            (ticket.id, lang, lang, ticket.subject, lang, problem, lang, ticket.resolution, lang, category))


def reindex(lang: str) -> bool:
    """Both indexes built again in `lang` when they were built in another one (a
    changed `kb.language`); True if they were. Run by `maildesk init`."""
    if store.get_setting("kb_language") == lang:
        return False
    with store.write_transaction():
        if store.is_sqlite():
            store.execute('DROP TABLE IF EXISTS "kb_fts"')
            store.execute('DROP TABLE IF EXISTS "ticket_fts"')
            store.execute(f"CREATE VIRTUAL TABLE kb_fts USING fts5(title, text, category, tokenize='{tokenizer(lang)}')")
            store.execute("CREATE VIRTUAL TABLE ticket_fts USING fts5(subject, problem, resolution, category, "
                          f"tokenize='{tokenizer(lang)}')")
            store.execute('INSERT INTO "kb_fts" ("rowid", "title", "text", "category") SELECT "id", "title", "text", '
                          'coalesce("category", \'\') FROM "kb_article" WHERE "retired" = ?', (False,))
            store.execute(
                'INSERT INTO "ticket_fts" ("rowid", "subject", "problem", "resolution", "category") '
                f'SELECT t."id", t."subject", coalesce(({_FIRST_MAIL}), \'\'), t."resolution", coalesce(t."category", \'\') '
                f'FROM "ticket" t WHERE {_RESOLVED_BY_STAFF}', (PROBLEM_CHARS, "in", CLOSURE_SELF_SERVICE))
        else:
            store.execute('DELETE FROM "kb_fts"')
            store.execute('DELETE FROM "ticket_fts"')
            store.execute(
                'INSERT INTO "kb_fts" ("article_id", "language", "vector") '
                'SELECT "id", ?, setweight(to_tsvector(?::regconfig, "title"), \'A\') '
                '|| setweight(to_tsvector(?::regconfig, replace(coalesce("category", \'\'), \'/\', \' \')), \'B\') '
                '|| setweight(to_tsvector(?::regconfig, "text"), \'D\') FROM "kb_article" WHERE "retired" = ?',
                (lang, lang, lang, lang, False))
            store.execute(
                'INSERT INTO "ticket_fts" ("ticket_id", "language", "vector") '
                'SELECT t."id", ?, setweight(to_tsvector(?::regconfig, t."subject"), \'A\') '
                f'|| setweight(to_tsvector(?::regconfig, coalesce(({_FIRST_MAIL}), \'\')), \'C\') '
                '|| setweight(to_tsvector(?::regconfig, t."resolution"), \'B\') '
                '|| setweight(to_tsvector(?::regconfig, replace(coalesce(t."category", \'\'), \'/\', \' \')), \'D\') '
                f'FROM "ticket" t WHERE {_RESOLVED_BY_STAFF}',
                (lang, lang, lang, PROBLEM_CHARS, "in", lang, lang, CLOSURE_SELF_SERVICE))
        store.put_setting("kb_language", lang)
    log.info("knowledge-base indexes rebuilt for kb.language=%s", lang)
    return True


_FIRST_MAIL = ('SELECT substr(m."body", 1, ?) FROM "message" m WHERE m."ticket_id" = t."id" AND m."direction" = ? '
               'ORDER BY m."id" LIMIT 1')
_RESOLVED_BY_STAFF = 'coalesce(t."resolution", \'\') != \'\' AND coalesce(t."closure_code", \'\') != ?'


# --- searching ------------------------------------------------------------------------------


def has_articles(rt) -> bool:
    """Whether any article can be offered: asked once a cycle, so that a desk without a
    knowledge base pays nothing for it."""
    if "kb_live" not in rt.memo:
        rt.memo["kb_live"] = store.scalar('SELECT 1 FROM "kb_article" WHERE "retired" = ? LIMIT 1', (False,)) is not None
    return rt.memo["kb_live"]


def _fts5_query(words: list[str]) -> str:
    # each word a quoted FTS5 string (words hold letters, digits and an apostrophe
    # only, never a quote), ORed: nothing in an incident is FTS5 syntax
    return " OR ".join(f'"{w}"' for w in words)


def _ranked(rows, query: frozenset[str], keys, limit: int) -> list[tuple[float, tuple, list[str], float, int]]:
    """(score, row, found, rank share, key count) of the candidates, best first."""
    rows = list(rows)
    if not rows:
        return []
    best = max(r[-1] for r in rows) or 1.0
    scored = []
    for row in rows:
        key = keys(row)
        share = (row[-1] / best) if best > 0 else 1.0
        score, found = kbterms.relevance(key, query, share)
        scored.append((score, row, found, share, len(key)))
    scored.sort(key=lambda s: (-s[0], -s[3], s[1][0]))
    return scored[:limit]


def search_articles(rt, subject: str, text: str, limit: int, min_score: float = 0.0) -> list[Match]:
    """The articles that best answer an incident (or a `#kb search`), best first, at
    most `limit`, each scoring at least `min_score` (and above 0)."""
    if limit <= 0 or not has_articles(rt):
        return []
    lang = language(rt)
    words, stems = kbterms.query(subject, text, lang)
    if not words:
        return []
    if store.is_sqlite():
        rows = store.execute(
            'SELECT a."id", a."title", a."text", a."category", a."key_terms", -f."rank" FROM '
            f'(SELECT "rowid", "rank" FROM "kb_fts" WHERE "kb_fts" MATCH ? AND "rank" MATCH \'{ARTICLE_WEIGHTS}\' '
            'ORDER BY "rank" LIMIT ?) f JOIN "kb_article" a ON a."id" = f."rowid" WHERE a."retired" = ?',
            (_fts5_query(words), CANDIDATES, False)).fetchall()
    else:
        rows = store.execute(
            'SELECT a."id", a."title", a."text", a."category", a."key_terms", ts_rank_cd(f."vector", q.query) AS r '
            'FROM "kb_fts" f JOIN "kb_article" a ON a."id" = f."article_id", '
            '(SELECT websearch_to_tsquery(?::regconfig, ?) AS query) q '
            'WHERE f."vector" @@ q.query AND a."retired" = ? ORDER BY r DESC, a."id" LIMIT ?',
            (lang, " or ".join(words), False, CANDIDATES)).fetchall()
    query = frozenset(stems)
    keys = lambda row: row[4].split() if row[4] else kbterms.key_terms(row[1], row[2], row[3], lang)  # noqa: E731
    return [Match("article", row[0], row[1], row[2], row[3], score, tuple(found), n, round(share, 3))
            for score, row, found, share, n in _ranked(rows, query, keys, limit) if score > 0 and score >= min_score]


def search_tickets(rt, subject: str, text: str, limit: int, exclude: int | None = None,
                   min_score: float = 0.0) -> list[Match]:
    """The resolved (or closed) tickets most like an incident, best first."""
    if limit <= 0:
        return []
    lang = language(rt)
    words, stems = kbterms.query(subject, text, lang)
    if not words:
        return []
    if store.is_sqlite():
        rows = store.execute(
            'SELECT t."id", t."subject", t."resolution", t."category", -f."rank" FROM '
            f'(SELECT "rowid", "rank" FROM "ticket_fts" WHERE "ticket_fts" MATCH ? AND "rank" MATCH \'{TICKET_WEIGHTS}\' '
            'ORDER BY "rank" LIMIT ?) f JOIN "ticket" t ON t."id" = f."rowid" '
            'WHERE t."status" IN (?, ?) AND t."id" != ?',
            (_fts5_query(words), CANDIDATES, "resolved", "closed", exclude or 0)).fetchall()
    else:
        rows = store.execute(
            'SELECT t."id", t."subject", t."resolution", t."category", ts_rank_cd(f."vector", q.query) AS r '
            'FROM "ticket_fts" f JOIN "ticket" t ON t."id" = f."ticket_id", '
            '(SELECT websearch_to_tsquery(?::regconfig, ?) AS query) q '
            'WHERE f."vector" @@ q.query AND t."status" IN (?, ?) AND t."id" != ? ORDER BY r DESC, t."id" DESC LIMIT ?',
            (lang, " or ".join(words), "resolved", "closed", exclude or 0, CANDIDATES)).fetchall()
    query = frozenset(stems)
    keys = lambda row: kbterms.key_terms(row[1], row[2] or "", row[3], lang)  # noqa: E731
    return [Match("ticket", row[0], row[1], kbterms.clean_resolution(row[2] or ""), row[3], score, tuple(found), n,
                  round(share, 3))
            for score, row, found, share, n in _ranked(rows, query, keys, limit) if score > 0 and score >= min_score]
