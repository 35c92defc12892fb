"""HTML mail: converted to readable text, and sanitized when shown back.
"""

from __future__ import annotations

import functools
import html as htmllib
import re

import nh3

from .text import _SURROGATE, _clean_body

# --- HTML ---------------------------------------------------------------------------

# The strict profile: the relaxed default pads every <div> with spaces.
@functools.lru_cache(maxsize=1)
def _inscriptis():
    """inscriptis and its configuration, imported when the first HTML-only mail needs
    them (they cost more at start-up than most mail ever uses them)."""
    import inscriptis
    from inscriptis.css_profiles import CSS_PROFILES
    from inscriptis.model.config import ParserConfig

    return inscriptis, ParserConfig(css=CSS_PROFILES["strict"].copy(), display_links=False, display_images=False)
# inscriptis costs 5-35 us per element (tables are the dear ones: 1,000 rows take
# 180 ms); beyond these sizes the linear tag-stripping fallback is used instead.
_HTML_MAX_FOR_INSCRIPTIS = 500_000  # characters
_HTML_MAX_TAGS = 3_000
_TAG = re.compile(r"<[^<>]*>")  # no "<" inside: linear on "<<<<<<"
_BLOCK_TAG = re.compile(r"(?i)<\s*(?:br|/p|/div|/tr|/li|/h[1-6]|/blockquote|/table|hr)\b[^<>]*>")
_CELL_TAG = re.compile(r"(?i)<\s*/t[dh]\b[^<>]*>")
_BLANK_RUNS = re.compile(r"\n[ \t]*(?:\n[ \t]*){2,}")


def html_to_text(html: str) -> str:
    """Readable text from HTML with inscriptis (tables and lists laid out); hostile or
    huge HTML falls back to stripping tags."""
    if not html or not html.strip():
        return ""
    html = _SURROGATE.sub("", html.replace("\x00", ""))
    text = None
    if len(html) <= _HTML_MAX_FOR_INSCRIPTIS and html.count("<") <= _HTML_MAX_TAGS:
        try:
            inscriptis, config = _inscriptis()
            text = inscriptis.get_text(html, config)
        # lxml and inscriptis raise many kinds of errors on hostile markup (ValueError,
        # ParserError, RecursionError, AssertionError...); the rule is: never fail.
        except Exception:  # noqa: BLE001
            text = None
    if not text or not text.strip():
        text = _strip_tags(html)  # also when lxml dropped everything (nesting > 255)
    text = "\n".join(line.rstrip() for line in _clean_body(text).split("\n"))
    return _BLANK_RUNS.sub("\n\n", text).strip("\n")


def _strip_tags(html: str) -> str:
    """The fallback: drop comments and script/style content, then every tag. Linear:
    each opener is searched for again only once the scan has passed it."""
    lower = html.lower()
    closers = {"<!--": "-->", "<script": "</script", "<style": "</style"}
    found = {opener: lower.find(opener) for opener in closers}
    pieces, pos = [], 0
    while True:
        for opener, at in found.items():
            if 0 <= at < pos:
                found[opener] = lower.find(opener, pos)
        live = [(at, opener) for opener, at in found.items() if at >= 0]
        if not live:
            pieces.append(html[pos:])
            break
        at, opener = min(live)
        pieces.append(html[pos:at])
        close = lower.find(closers[opener], at + len(opener))
        if close < 0:
            break
        gt = lower.find(">", close)
        pos = len(html) if gt < 0 else gt + 1
    text = _CELL_TAG.sub("  ", _BLOCK_TAG.sub("\n", "".join(pieces)))
    return htmllib.unescape(_TAG.sub("", text))


_NH3_TAGS = nh3.ALLOWED_TAGS | {"font"}
_NH3_ATTRIBUTES = {tag: set(attrs) for tag, attrs in nh3.ALLOWED_ATTRIBUTES.items()}
_NH3_ATTRIBUTES.setdefault("font", set()).update({"color", "face", "size"})
_NH3_ATTRIBUTES.setdefault("td", set()).update({"colspan", "rowspan", "align", "valign"})
_NH3_ATTRIBUTES.setdefault("th", set()).update({"colspan", "rowspan", "align", "valign"})
# cid: lets the desk map inline images to stored attachments; no data:, no javascript:.
_NH3_SCHEMES = {"http", "https", "mailto", "cid", "tel"}
_NH3 = nh3.Cleaner(  # built once: passing the sets on every call costs 3x the cleaning
    tags=_NH3_TAGS,
    attributes=_NH3_ATTRIBUTES,
    url_schemes=_NH3_SCHEMES,
    clean_content_tags={"script", "style", "title", "head"},
    strip_comments=True,
    link_rel="noopener noreferrer nofollow",
)


def sanitize_html(html: str) -> str:
    """HTML safe to show: an allow-list of tags and attributes (nh3/ammonia), no
    script or style content, no on* attributes, only http(s)/mailto/cid/tel URLs."""
    if not html:
        return ""
    return _NH3.clean(_SURROGATE.sub("", html.replace("\x00", "")))
