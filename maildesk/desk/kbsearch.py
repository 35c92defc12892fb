"""The full-text indexes of the knowledge base, on the database's own engine: SQLite's
FTS5 (`porter unicode61`, ranked by `bm25`) or PostgreSQL's text search (`tsvector`
with a GIN index, ranked by `ts_rank_cd`, in the configuration `kb.language`). No
search server, nothing downloaded.

    kb_fts       the articles that are not retired: title, text, category
    ticket_fts   the tickets a technician resolved: subject, what the requester wrote
                 first, the resolution, category

    reindex(language)                               # maildesk init: built anew when needed
    index_article(rt, article)                      # after a publish, a retirement
    index_ticket(rt, ticket)                        # after a technician's resolution
    search_articles(rt, subject, text, limit)       # -> [Match], best first
    search_tickets(rt, subject, text, limit, exclude=ticket_id)

A search ORs the incident's words (an incident rarely has all the words of its fix),
takes the best candidates by the engine's rank, and scores each with
`kbterms.relevance`: the share of its key terms found in the incident, weighed by its
rank over the best candidate's. The score means the same whether the base holds one
article or ten thousand, so `kb.min_score` holds from the first article on.

Beside each index, the number of documents that hold each term (`kb_term`,
`ticket_term`): a look-up takes the incident's rarest words, as many as keep the
documents to rank within BUDGET, so that its cost stays bounded however large the
base grows (`pick_words`).

`reindex` builds the indexes and records how (`INDEX_FORMAT`, `kb.language`) in the
setting `kb_index`; `maildesk init` runs it, so a changed `kb.language` takes effect
there. SQLite stems English only (Porter); in another language its index matches
whole words.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from .. import store
from ..store import KbArticle, Ticket
from ..vocab import CLOSURE_SELF_SERVICE
from . import kbterms

log = logging.getLogger(__name__)

CANDIDATES = 12  # the best of the engine's rank that are scored; the rest cannot beat them by much
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

INDEX_FORMAT = "1"  # what `reindex` builds; a new format rebuilds at the next `maildesk init`

_PG_ARTICLE_VECTOR = ("setweight(to_tsvector(?::regconfig, ?), 'A') || setweight(to_tsvector(?::regconfig, ?), 'B') "
                      "|| setweight(to_tsvector(?::regconfig, ?), 'D')")
_PG_TICKET_VECTOR = ("setweight(to_tsvector(?::regconfig, ?), 'A') || setweight(to_tsvector(?::regconfig, ?), 'C') "
                     "|| setweight(to_tsvector(?::regconfig, ?), 'B') || setweight(to_tsvector(?::regconfig, ?), 'D')")


def count_terms(table: str, counts: dict[str, int]) -> None:
    """Add to the document counts of terms (`kb_term`, `ticket_term`); "" counts documents.
    Counts only grow between two `reindex`: they guide which words a look-up leaves out,
    and an article published again or a ticket resolved twice changes that by nothing."""
    merged: dict[str, int] = {}
    for term, n in counts.items():
        merged[term[:200]] = merged.get(term[:200], 0) + n  # one row a term: ON CONFLICT updates a row once
    # in one order: two desk processes that count the same terms wait for each other, never deadlock
    items = sorted(merged.items())
    for i in range(0, len(items), 400):
        chunk = items[i:i + 400]
        store.execute(f'INSERT INTO "{table}" ("term", "docs") VALUES ' + ", ".join(["(?, ?)"] * len(chunk))
                      + f' ON CONFLICT ("term") DO UPDATE SET "docs" = "{table}"."docs" + excluded."docs"',
                      [v for item in chunk for v in item])


def doc_terms(lang: str, *texts: str) -> dict[str, int]:
    """1 for each distinct term of a document, and 1 for the document."""
    found = dict.fromkeys(t for text in texts for t in kbterms.terms(text, lang))
    return {"": 1} | dict.fromkeys(found, 1)


def index_article(rt, article: KbArticle) -> None:
    """The article as it is now: in the index while it is not retired, out of it after."""
    lang = language(rt)
    category = (article.category or "").replace("/", " ")
    if store.is_sqlite():
        store.execute('DELETE FROM "kb_fts" WHERE "rowid" = ?', (article.id,))
        if not article.retired:
            store.execute('INSERT INTO "kb_fts" ("rowid", "title", "text", "category") VALUES (?, ?, ?, ?)',
                          (article.id, article.title, article.text, category))
    elif article.retired:
        store.execute('DELETE FROM "kb_fts" WHERE "article_id" = ?', (article.id,))
    else:
        store.execute(
            f'INSERT INTO "kb_fts" ("article_id", "language", "vector") VALUES (?, ?, {_PG_ARTICLE_VECTOR}) '
            'ON CONFLICT ("article_id") DO UPDATE SET "language" = excluded."language", "vector" = excluded."vector"',
            (article.id, lang, lang, article.title, lang, category, lang, article.text))
    if not article.retired:
        count_terms("kb_term", doc_terms(lang, article.title, article.text, category))
    rt.memo.pop("kb_live", None)
    rt.memo.pop("kb_candidates", None)
    rt.memo.pop("kb_keys", None)


def first_words(ticket: Ticket) -> str:
    """What the requester wrote first: the problem a resolution answers."""
    return store.scalar('SELECT "body" FROM "message" WHERE "ticket_id" = ? AND "direction" = ? ORDER BY "id" LIMIT 1',
                        (ticket.id, "in")) or ""


def index_ticket(rt, ticket: Ticket) -> None:
    """A ticket a technician resolved, findable by its problem and its resolution.
    A self-service resolution is the article's text again: not indexed."""
    if not (ticket.resolution or "").strip() or ticket.closure_code == CLOSURE_SELF_SERVICE:
        return
    _index_tickets(language(rt), [(ticket.id, ticket.subject, first_words(ticket)[:PROBLEM_CHARS], ticket.resolution,
                                   ticket.category)], replace=True)
    rt.memo.pop("kb_candidates", None)


def _index_tickets(lang: str, rows, replace: bool = False) -> None:
    """(id, subject, problem, resolution, category) rows into `ticket_fts` and `ticket_term`."""
    counts: dict[str, int] = {}
    params = []
    for tid, subject, problem, resolution, category in rows:
        category = (category or "").replace("/", " ")
        for term in doc_terms(lang, subject, problem, resolution, category):
            counts[term] = counts.get(term, 0) + 1
        params.append((tid, subject, problem or "", resolution, category))
    if not params:
        return
    if store.is_sqlite():
        if replace:
            store.execute(f'DELETE FROM "ticket_fts" WHERE "rowid" IN ({", ".join("?" * len(params))})',
                          [p[0] for p in params])
        store.db.obj.cursor().executemany(
            'INSERT INTO "ticket_fts" ("rowid", "subject", "problem", "resolution", "category") VALUES (?, ?, ?, ?, ?)',
            params)
    else:
        store.db.obj.cursor().executemany(
            "INSERT INTO ticket_fts (ticket_id, language, vector) VALUES (%s, %s, "
            "setweight(to_tsvector(%s::regconfig, %s), 'A') || setweight(to_tsvector(%s::regconfig, %s), 'C') "
            "|| setweight(to_tsvector(%s::regconfig, %s), 'B') || setweight(to_tsvector(%s::regconfig, %s), 'D')) "
            "ON CONFLICT (ticket_id) DO UPDATE SET language = excluded.language, vector = excluded.vector",
            [(tid, lang, lang, s, lang, p, lang, r, lang, c) for tid, s, p, r, c in params])
    count_terms("ticket_term", counts)


REINDEX_BATCH = 5000


def reindex(lang: str) -> bool:
    """Both indexes built anew, in `lang`, when they were built otherwise (a changed
    `kb.language`, a new INDEX_FORMAT, a fresh migration); True if they were. Run by
    `maildesk init` and by `maildesk run` after it migrated the database."""
    wanted = f"{INDEX_FORMAT}:{lang}"
    if store.get_setting("kb_index") == wanted:
        return False
    with store.write_transaction():
        store.execute('DELETE FROM "kb_term"')
        store.execute('DELETE FROM "ticket_term"')
        if store.is_sqlite():
            store.execute('DROP TABLE IF EXISTS "kb_fts"')
            store.execute('DROP TABLE IF EXISTS "ticket_fts"')
            store.execute(f"CREATE VIRTUAL TABLE kb_fts USING fts5(title, text, category, tokenize='{tokenizer(lang)}')")
            store.execute("CREATE VIRTUAL TABLE ticket_fts USING fts5(subject, problem, resolution, category, "
                          f"tokenize='{tokenizer(lang)}')")
        else:
            store.execute('DELETE FROM "kb_fts"')
            store.execute('DELETE FROM "ticket_fts"')
        counts: dict[str, int] = {}
        for a in KbArticle.select().where(KbArticle.retired == False):  # noqa: E712
            category = (a.category or "").replace("/", " ")
            if store.is_sqlite():
                store.execute('INSERT INTO "kb_fts" ("rowid", "title", "text", "category") VALUES (?, ?, ?, ?)',
                              (a.id, a.title, a.text, category))
            else:
                store.execute(f'INSERT INTO "kb_fts" ("article_id", "language", "vector") VALUES (?, ?, {_PG_ARTICLE_VECTOR})',
                              (a.id, lang, lang, a.title, lang, category, lang, a.text))
            for term in doc_terms(lang, a.title, a.text, category):
                counts[term] = counts.get(term, 0) + 1
        count_terms("kb_term", counts)
        last = 0
        while True:
            rows = store.execute(
                f'SELECT t."id", t."subject", coalesce(({_FIRST_MAIL}), \'\'), t."resolution", t."category" '
                f'FROM "ticket" t WHERE t."id" > ? AND {_RESOLVED_BY_STAFF} ORDER BY t."id" LIMIT ?',
                (PROBLEM_CHARS, "in", last, CLOSURE_SELF_SERVICE, REINDEX_BATCH)).fetchall()
            if not rows:
                break
            _index_tickets(lang, rows)
            last = rows[-1][0]
        store.put_setting("kb_index", wanted)
    log.info("knowledge-base indexes built for kb.language=%s", lang)
    return True


_FIRST_MAIL = ('SELECT substr(m."body", 1, ?) FROM "message" m WHERE m."ticket_id" = t."id" AND m."direction" = ? '
               'ORDER BY m."id" LIMIT 1')
_RESOLVED_BY_STAFF = 'coalesce(t."resolution", \'\') != \'\' AND coalesce(t."closure_code", \'\') != ?'


# --- searching ------------------------------------------------------------------------------

BUDGET = 200  # documents the engine ranks for one look-up, at most: a millisecond or two, whatever the size of the base
MIN_DOCS = 50  # in a base this small every term says as much as any other (kbterms.specificity)
QUERY_WORDS = 12  # the rarest words of an incident that are looked up, ORed
COMMON_WORDS = 5  # an incident of common words only: its rarest ones, ANDed, at most this many


def has_articles(rt) -> bool:
    """Whether any article can be offered: asked once a cycle, so that a desk without a
    knowledge base pays nothing for it."""
    if "kb_live" not in rt.memo:
        rt.memo["kb_live"] = store.scalar('SELECT 1 FROM "kb_article" WHERE "retired" = ? LIMIT 1', (False,)) is not None
    return rt.memo["kb_live"]


def pick_words(rt, table: str, words: list[str], stems: list[str]) -> tuple[list[str], str]:
    """The words to look up and how to join them (OR, AND).

    The engine ranks every document that holds a word looked up, and ranking costs
    microseconds a document: ORing the words most documents hold would rank most of
    the base for nothing (bm25 gives such a word next to no weight anyway). So the
    rarest words are ORed while the documents they can reach stay within BUDGET (in a
    base of BUDGET documents or fewer, every word is). An incident whose every word is
    common ANDs its rarest ones instead, as many as it takes to narrow them down:
    "password reset" still finds the article "Password reset"."""
    known = rt.memo.setdefault(("kb_docs", table), {})
    missing = [t for t in dict.fromkeys(["", *stems]) if t not in known]
    if missing:
        marks = ", ".join("?" * len(missing))
        known.update(store.execute(f'SELECT "term", "docs" FROM "{table}" WHERE "term" IN ({marks})', missing).fetchall())
        for t in missing:
            known.setdefault(t, 0)
    n = known[""]
    ranked = sorted(zip(words, stems, strict=True), key=lambda ws: known[ws[1]])  # stable: the earlier word first on a tie
    return _choose(ranked, known, n)


def specificities(rt, table: str, stems: list[str]) -> dict[str, float]:
    """Each term's `kbterms.specificity` in this index (its counts as `pick_words` read them)."""
    known = rt.memo.get(("kb_docs", table), {})
    n = known.get("", 0)
    return {t: kbterms.specificity(known.get(t, 0), n, MIN_DOCS) for t in stems}


def _choose(ranked: list[tuple[str, str]], known: dict[str, int], n: int) -> tuple[list[str], str]:
    chosen: list[str] = []
    reach = 0
    for word, term in ranked[:QUERY_WORDS]:
        if min(n, reach + known[term]) > BUDGET:
            break
        chosen.append(word)
        reach += known[term]
    if chosen:
        return chosen, "OR"
    estimate = float(max(n, 1))
    for word, term in ranked[:COMMON_WORDS]:
        chosen.append(word)
        estimate *= known[term] / max(n, 1)
        if estimate <= BUDGET:
            break
    return chosen, "AND"


def _fts5_query(words: list[str], join: str) -> str:
    # each word a quoted FTS5 string (words hold letters, digits and an apostrophe
    # only, never a quote): nothing in an incident is FTS5 syntax
    return f" {join} ".join(f'"{w}"' for w in words)


def _websearch_query(words: list[str], join: str) -> str:
    return (" or " if join == "OR" else " ").join(words)


def _ranked(rows, query: dict[str, float], keys, limit: int) -> list[tuple[float, tuple, list[str], float, int]]:
    """(score, row, found, rank share, key count) of the candidates, best first;
    `keys(row)` is (key terms, how many are the headline's)."""
    rows = list(rows)
    if not rows:
        return []
    best = max(r[-1] for r in rows) or 1.0
    scored = []
    for row in rows:
        key, headline = keys(row)
        share = (row[-1] / best) if best > 0 else 1.0
        score, found = kbterms.relevance(key, query, share, headline)
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
    look_up, join = pick_words(rt, "kb_term", words, stems)
    cache = rt.memo.setdefault("kb_candidates", {})
    key = ("kb_fts", join, tuple(look_up))
    if key in cache:  # incidents about one thing come in bursts: a cycle asks the engine once
        rows = cache[key]
    elif store.is_sqlite():
        rows = cache[key] = store.execute(
            'SELECT a."id", a."title", a."text", a."category", a."key_terms", -f."rank" FROM '
            f'(SELECT "rowid", "rank" FROM "kb_fts" WHERE "kb_fts" MATCH ? AND "rank" MATCH \'{ARTICLE_WEIGHTS}\' '
            'ORDER BY "rank" LIMIT ?) f JOIN "kb_article" a ON a."id" = f."rowid" WHERE a."retired" = ?',
            (_fts5_query(look_up, join), CANDIDATES, False)).fetchall()
    else:
        q = _websearch_query(look_up, join)
        rows = cache[key] = store.execute(
            'SELECT a."id", a."title", a."text", a."category", a."key_terms", f."r" FROM '
            '(SELECT "article_id", ts_rank_cd("vector", websearch_to_tsquery(?::regconfig, ?)) AS "r" FROM "kb_fts" '
            'WHERE "vector" @@ websearch_to_tsquery(?::regconfig, ?) ORDER BY "r" DESC, "article_id" LIMIT ?) f '
            'JOIN "kb_article" a ON a."id" = f."article_id" WHERE a."retired" = ?',
            (lang, q, lang, q, CANDIDATES, False)).fetchall()
    query = specificities(rt, "kb_term", stems)
    parsed = rt.memo.setdefault("kb_keys", {})  # an article's key terms, parsed once a cycle

    def keys(row):
        if row[0] not in parsed:
            parsed[row[0]] = kbterms.parse_key(row[4] or kbterms.key_string(row[1], row[2], row[3], lang))
        return parsed[row[0]]

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
    look_up, join = pick_words(rt, "ticket_term", words, stems)
    cache = rt.memo.setdefault("kb_candidates", {})
    key = ("ticket_fts", join, tuple(look_up))
    if key in cache:
        rows = cache[key]
    elif store.is_sqlite():
        rows = cache[key] = store.execute(
            'SELECT t."id", t."subject", t."resolution", t."category", -f."rank" FROM '
            f'(SELECT "rowid", "rank" FROM "ticket_fts" WHERE "ticket_fts" MATCH ? AND "rank" MATCH \'{TICKET_WEIGHTS}\' '
            'ORDER BY "rank" LIMIT ?) f JOIN "ticket" t ON t."id" = f."rowid" WHERE t."status" IN (?, ?)',
            (_fts5_query(look_up, join), CANDIDATES, "resolved", "closed")).fetchall()
    else:
        q = _websearch_query(look_up, join)
        rows = cache[key] = store.execute(
            'SELECT t."id", t."subject", t."resolution", t."category", f."r" FROM '
            '(SELECT "ticket_id", ts_rank_cd("vector", websearch_to_tsquery(?::regconfig, ?)) AS "r" FROM "ticket_fts" '
            'WHERE "vector" @@ websearch_to_tsquery(?::regconfig, ?) ORDER BY "r" DESC, "ticket_id" DESC LIMIT ?) f '
            'JOIN "ticket" t ON t."id" = f."ticket_id" WHERE t."status" IN (?, ?)',
            (lang, q, lang, q, CANDIDATES, "resolved", "closed")).fetchall()
    rows = [row for row in rows if row[0] != exclude]
    query = specificities(rt, "ticket_term", stems)
    keys = lambda row: kbterms.parse_key(kbterms.key_string(row[1], row[2] or "", row[3], lang))  # noqa: E731
    return [Match("ticket", row[0], row[1], kbterms.clean_resolution(row[2] or ""), row[3], score, tuple(found), n,
                  round(share, 3))
            for score, row, found, share, n in _ranked(rows, query, keys, limit) if score > 0 and score >= min_score]
