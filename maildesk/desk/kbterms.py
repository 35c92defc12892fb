"""The words of the knowledge base: how a text becomes the terms it is matched by, how
a resolution becomes an article's text, and how relevant an article is to an
incident. Pure: no database, no I/O, so every rule here is tested on its own.

    terms("Locked out after the password change")   -> ["lock", "password", "chang"]
    key_terms(title, text, category)                 -> the article's stems, title first
    relevance(key, query_terms, rank_share, headline) -> 0..1, compared with kb.min_score
    clean_resolution("Hi Jane,\\n\\nI unlocked it.\\n\\nBest regards,\\nCarol") -> "I unlocked it."

Stemming is Porter's original algorithm, the one SQLite's FTS5 `porter` tokenizer
runs, for English; other languages are matched by whole words here (PostgreSQL
stems them itself, see kbsearch.py).

Why not BM25 alone: its IDF is near zero or negative while the base holds one or two
articles (a desk starts with one), so a threshold on it offers nothing at first
(bench/kb.py measures it). `relevance` is the share of the article's key terms found in the
incident, which means the same with one article or ten thousand, weighed by the
article's rank among the candidates the full-text index found.
"""

from __future__ import annotations

import functools
import math
import re
import unicodedata

KEY_TERMS = 12  # the stems an article is measured by: its title's, its category's, its text's most frequent
FULL = 4  # key terms found in an incident that make an article fully relevant
QUERY_TERMS = 32  # distinct terms of an incident that are looked up
QUERY_CHARS = 1200  # of an incident's text: its first lines say what it is about
MAX_WORD = 64  # longer "words" (base64, hashes, an attacker's padding) say nothing

_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)?", re.UNICODE)
_ASCII_WORD = re.compile(r"[a-z0-9]+(?:'[a-z0-9]+)?")  # the same, in lower-case ASCII text, and faster

# English function words, and the words every incident mail has (greetings, "problem",
# "please"): they say nothing about which fix applies.
STOPWORDS = frozenset("""
a about above after again against all also am an and any are aren't as at be because been before being
below between both but by can can't cannot could couldn't did didn't do does doesn't doing don't down during
each few for from further had hadn't has hasn't have haven't having he he'd he'll he's her here here's hers
herself him himself his how how's i i'd i'll i'm i've if in into is isn't it it's its itself just let's
me more most mustn't my myself no nor not now of off on once only or other ought our ours ourselves out over
own same shan't she she'd she'll she's should shouldn't so some such than that that's the their theirs them
themselves then there there's these they they'd they'll they're they've this those through to too under until
up very was wasn't we we'd we'll we're we've were weren't what what's when when's where where's which while who
who's whom why why's will with won't would wouldn't you you'd you'll you're you've your yours yourself
yourselves
hello hi hey dear thanks thank thx please pls regards best kind cheers greetings morning afternoon evening
today yesterday tomorrow sorry sir madam team colleague colleagues anyone someone something anything
problem problems issue issues help get got still since now again already tried try trying work working
works worked need needs know let us see seem seems like want wanted one two every via gets ok okay yes
many much lot lots
re fw fwd aw wg sent
""".split())


# --- Porter's stemmer (M.F. Porter, "An algorithm for suffix stripping", 1980) ----------


def _is_consonant(w: str, i: int) -> bool:
    c = w[i]
    if c in "aeiou":
        return False
    if c == "y":
        return i == 0 or not _is_consonant(w, i - 1)
    return True


def _measure(stem: str) -> int:
    """m in [C](VC){m}[V]."""
    n, i, end = 0, 0, len(stem)
    while i < end and _is_consonant(stem, i):
        i += 1
    while i < end:
        while i < end and not _is_consonant(stem, i):
            i += 1
        if i >= end:
            break
        n += 1
        while i < end and _is_consonant(stem, i):
            i += 1
    return n


def _has_vowel(stem: str) -> bool:
    return any(not _is_consonant(stem, i) for i in range(len(stem)))


def _double_consonant(w: str) -> bool:
    return len(w) >= 2 and w[-1] == w[-2] and _is_consonant(w, len(w) - 1)


def _cvc(w: str) -> bool:
    """*o: the stem ends consonant-vowel-consonant, the last not w, x or y."""
    return (len(w) >= 3 and _is_consonant(w, len(w) - 3) and not _is_consonant(w, len(w) - 2)
            and _is_consonant(w, len(w) - 1) and w[-1] not in "wxy")


def _replace(w: str, rules, condition) -> str:
    """The longest suffix of `rules` that `w` ends with is replaced if the rest meets
    `condition`; a longest suffix whose condition fails stops the step."""
    for suffix, replacement in rules:
        if w.endswith(suffix):
            stem = w[: len(w) - len(suffix)]
            return stem + replacement if condition(stem, suffix) else w
    return w


_STEP2 = sorted((
    ("ational", "ate"), ("tional", "tion"), ("enci", "ence"), ("anci", "ance"), ("izer", "ize"), ("abli", "able"),
    ("alli", "al"), ("entli", "ent"), ("eli", "e"), ("ousli", "ous"), ("ization", "ize"), ("ation", "ate"),
    ("ator", "ate"), ("alism", "al"), ("iveness", "ive"), ("fulness", "ful"), ("ousness", "ous"), ("aliti", "al"),
    ("iviti", "ive"), ("biliti", "ble"),
), key=lambda r: -len(r[0]))
_STEP3 = sorted((
    ("icate", "ic"), ("ative", ""), ("alize", "al"), ("iciti", "ic"), ("ical", "ic"), ("ful", ""), ("ness", ""),
), key=lambda r: -len(r[0]))
_STEP4 = sorted(((s, "") for s in (
    "al", "ance", "ence", "er", "ic", "able", "ible", "ant", "ement", "ment", "ent", "ion", "ou", "ism", "ate",
    "iti", "ous", "ive", "ize")), key=lambda r: -len(r[0]))


@functools.lru_cache(maxsize=50_000)
def stem(word: str) -> str:
    """Porter's stem of a lower-case English word; other words come back as they are."""
    w = word
    if len(w) <= 2 or not w.isascii() or not w.isalpha():
        return w
    # step 1a
    if w.endswith("sses"):
        w = w[:-2]
    elif w.endswith("ies"):
        w = w[:-2]
    elif w.endswith("s") and not w.endswith("ss"):
        w = w[:-1]
    # step 1b
    again = False
    if w.endswith("eed"):
        if _measure(w[:-3]) > 0:
            w = w[:-1]
    elif w.endswith("ed") and _has_vowel(w[:-2]):
        w, again = w[:-2], True
    elif w.endswith("ing") and _has_vowel(w[:-3]):
        w, again = w[:-3], True
    if again:
        if w.endswith(("at", "bl", "iz")):
            w += "e"
        elif _double_consonant(w) and w[-1] not in "lsz":
            w = w[:-1]
        elif _measure(w) == 1 and _cvc(w):
            w += "e"
    # step 1c
    if w.endswith("y") and _has_vowel(w[:-1]):
        w = w[:-1] + "i"
    w = _replace(w, _STEP2, lambda s, _: _measure(s) > 0)
    w = _replace(w, _STEP3, lambda s, _: _measure(s) > 0)
    w = _replace(w, _STEP4, lambda s, suffix: _measure(s) > 1 and (suffix != "ion" or s.endswith(("s", "t"))))
    # step 5
    if w.endswith("e"):
        m = _measure(w[:-1])
        if m > 1 or (m == 1 and not _cvc(w[:-1])):
            w = w[:-1]
    if _measure(w) > 1 and _double_consonant(w) and w.endswith("l"):
        w = w[:-1]
    return w


_STOP_STEMS = frozenset(stem(w) for w in STOPWORDS if "'" not in w) | STOPWORDS


# --- terms -----------------------------------------------------------------------------


def words(text: str) -> list[str]:
    """The words of a text, lower case, as the full-text index sees them: letters and
    digits (an error code such as 0x80070005 is a word), no one-character words and
    none longer than MAX_WORD."""
    text = text or ""
    pattern = _ASCII_WORD
    if not text.isascii():
        pattern, text = _WORD, unicodedata.normalize("NFKC", text).replace("’", "'")
    return [w for w in pattern.findall(text.lower()) if 1 < len(w) <= MAX_WORD]


def terms(text: str, language: str = "english") -> list[str]:
    """The stems of a text's words that say something, in order, repeats kept."""
    out = []
    for w in words(text):
        if w in STOPWORDS:
            continue
        s = stem(w.split("'")[0]) if language == "english" else w
        if s not in _STOP_STEMS and len(s) > 1:
            out.append(s)
    return out


def query(subject: str, text: str, language: str = "english") -> tuple[list[str], list[str]]:
    """What an incident is looked up by: its distinct words that say something, as
    written (for the full-text index, which stems them itself), and their distinct
    stems (for `relevance`); its subject's first, at most QUERY_TERMS of each."""
    seen_words: dict[str, None] = {}
    seen_terms: dict[str, None] = {}
    for w in words(subject or "") + words((text or "")[:QUERY_CHARS]):
        if w in STOPWORDS:
            continue
        s = stem(w.split("'")[0]) if language == "english" else w
        if s in _STOP_STEMS or len(s) < 2 or s in seen_terms:
            continue
        seen_terms[s] = None
        seen_words[w] = None
        if len(seen_terms) >= QUERY_TERMS:
            break
    return list(seen_words), list(seen_terms)


def _split_key(title: str, text: str, category: str | None, language: str) -> tuple[list[str], list[str]]:
    head = list(dict.fromkeys(terms(title, language) + terms((category or "").replace("/", " "), language)))
    counts: dict[str, int] = {}
    for t in terms(text, language):
        counts[t] = counts.get(t, 0) + 1
    body = sorted((t for t in counts if t not in head), key=lambda t: -counts[t])  # stable: first seen wins a tie
    return head[:KEY_TERMS], body[: max(0, KEY_TERMS - len(head))]


def key_terms(title: str, text: str, category: str | None, language: str = "english") -> list[str]:
    """An article's key terms: its title's and category's stems (its headline), then
    its text's most frequent ones (the earlier first on a tie), at most KEY_TERMS."""
    head, body = _split_key(title, text, category, language)
    return head + body


def key_string(title: str, text: str, category: str | None, language: str = "english") -> str:
    """The key terms as an article row keeps them: "lock password chang | phone account"."""
    head, body = _split_key(title, text, category, language)
    return " ".join(head) + " | " + " ".join(body)


def parse_key(stored: str) -> tuple[list[str], int]:
    """(key terms, how many of them are the headline's) of a `key_string`."""
    head, sep, body = stored.partition("|")
    if not sep:
        return stored.split(), 0
    head_terms = head.split()
    return head_terms + body.split(), len(head_terms)


def specificity(docs: int, total: int, floor: int = 50, share: float = 0.02) -> float:
    """How much finding a term says, 0.5..1: 1 for a term at most `floor` documents (or
    `share` of them) hold, less the more documents hold it (log N/df, as IDF), 0.5 for
    one they all hold (it is still the incident's word). In a base of `floor`
    documents or fewer every term counts 1: the measure holds from the first article on."""
    common = max(floor, share * total)
    if docs <= common or total <= common:
        return 1.0
    return 0.5 + 0.5 * max(0.0, math.log(total / docs) / math.log(total / common))


def relevance(key: list[str], query: set[str] | frozenset[str] | dict[str, float], rank_share: float = 1.0,
              headline: int = 0) -> tuple[float, list[str]]:
    """How well an article answers an incident, 0..1, and the key terms found.

    The share of the article's key terms found among the incident's terms, where
    FULL of them count as all (a long article is not penalized for saying more) and
    each counts its `specificity` when `query` maps terms to it (a word most
    articles hold says little about which one fits), halved when none of its
    `headline` terms (the first ones: its title's) is among them (what an article is
    about must be what the incident is about), weighed by `rank_share`, the article's
    full-text rank over the best candidate's (1.0 for the best): half of the score is
    the share alone."""
    if not key:
        return 0.0, []
    found = [k for k in key if k in query]
    weight = sum(query[k] for k in found) if isinstance(query, dict) else len(found)
    coverage = min(1.0, weight / min(len(key), FULL))
    if headline and not any(k in query for k in key[:headline]):
        coverage /= 2
    share = max(0.0, min(1.0, rank_share))
    return round(coverage * (0.5 + 0.5 * share), 3), found


# --- the text of an article ---------------------------------------------------------------

_GREETING = re.compile(
    r"(?i)^\s*(?:hi|hello|hey|dear|good\s+(?:morning|afternoon|evening)|hallo|guten\s+(?:morgen|tag)|bonjour|"
    r"hola|ciao|moin|servus)\b[^\n]{0,60}$")
_CLOSING = re.compile(
    r"(?i)^\s*(?:(?:best|kind|warm|many|with\s+best)\s+(?:regards|wishes|thanks)|regards|cheers|thanks(?:\s+again)?|"
    r"thank\s+you|many\s+thanks|all\s+the\s+best|best|br|kr|yours(?:\s+\w+)?|sincerely|"
    r"(?:mit\s+)?(?:freundlichen|besten|viele)\s+grüßen?|viele\s+grüße|gruß|lg|vg|cordialement|saludos|"
    r"let\s+(?:me|us)\s+know\s+if\s+[^\n]{0,60}|hope\s+(?:this|that)\s+helps[^\n]{0,20})[\s,.!:;-]*$")
_MAX_NAME_LINES = 4


def clean_resolution(text: str) -> str:
    """A resolution as an article's text: without the greeting above it and the
    closing, name and signature below it (the quoted mail is already gone, see
    mime.strip_quoted)."""
    lines = (text or "").replace("\r\n", "\n").strip().split("\n")
    while lines and (not lines[0].strip() or _GREETING.match(lines[0])):
        lines.pop(0)
    # a closing phrase in the last few lines: it and everything after it go
    for i in range(len(lines) - 1, max(-1, len(lines) - 2 - _MAX_NAME_LINES), -1):
        if _CLOSING.match(lines[i]):
            if any(line.strip() for line in lines[:i]):
                lines = lines[:i]
            break
    else:  # no closing: a lone short name line at the end ("Carol") goes
        if len(lines) > 2 and not lines[-2].strip() and re.fullmatch(r"\s*[^\W\d_][\w .'-]{0,30}", lines[-1]):
            lines = lines[:-1]
    text = "\n".join(lines).strip()
    return text[:1].upper() + text[1:]  # "your account ..." once "Hi Tom," is gone


_SUBJECT_PREFIX = re.compile(r"(?i)^\s*(?:(?:re|fw|fwd|aw|wg|sv|tr)\s*(?:\[\d+\])?\s*:\s*|\[[^\]]{1,40}\]\s*)+")


def title_from_subject(subject: str) -> str:
    """A ticket's subject as an article title: without Re:/Fwd: and [tags]."""
    return _SUBJECT_PREFIX.sub("", subject or "").strip() or "(no title)"
