"""Limits that bound what one mail may cost: header size, structure, time.
"""

from __future__ import annotations

import re
import signal
import threading
import time
from contextlib import contextmanager

from ...config import Limits
from .mail import MailRejected

# --- limits -------------------------------------------------------------------------------


class _ParseTimeout(BaseException):
    """Raised by the SIGALRM handler. A BaseException, so that no `except Exception`
    inside a library swallows it."""


def _on_alarm(signum, frame):
    raise _ParseTimeout()


@contextmanager
def _time_limit(seconds: float):
    """SIGALRM after `seconds` when in the main thread; elsewhere nothing (signals only
    reach the main thread) and the walk below checks its deadline between parts."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old_handler = signal.signal(signal.SIGALRM, _on_alarm)
    old_delay, old_interval = signal.setitimer(signal.ITIMER_REAL, seconds)
    started = time.monotonic()
    try:
        yield
    finally:
        try:
            signal.setitimer(signal.ITIMER_REAL, 0)
        finally:  # the alarm fires at most once, so this block runs to its end
            signal.signal(signal.SIGALRM, old_handler if old_handler is not None else signal.SIG_DFL)
            if old_delay:
                left = old_delay - (time.monotonic() - started)
                signal.setitimer(signal.ITIMER_REAL, max(left, 0.001), old_interval)


_BLANK_LINE = re.compile(rb"(?:\r\n|\r(?!\n)|\n)(?:\r\n|\r|\n)")
_LINE = re.compile(rb"[^\r\n]*(?:\r\n|\r|\n|$)")
_HEADER_LINE = re.compile(rb"From |[\x21-\x39\x3b-\x7e]*:|[\t ]")  # feedparser.headerRE


def header_block_size(raw: bytes, limit: int) -> int:
    """Bytes of the header block as the parser will see it, exact up to `limit`;
    beyond it, the distance to the first blank line (or the whole message)."""
    if raw[:1] in (b"\n", b"\r"):
        return 0
    ends = [i for i in (raw.find(b"\n\n", 0, limit + 2), raw.find(b"\n\r\n", 0, limit + 3)) if i >= 0]
    if ends and min(ends) < limit:
        return min(ends) + 1
    pos = 0  # no blank line early on: the block ends at the first non-header line too
    for m in _LINE.finditer(raw):
        line = m.group()
        if not line or line in (b"\n", b"\r\n", b"\r") or not _HEADER_LINE.match(line):
            return pos
        pos = m.end()
        if pos > limit:
            blank = _BLANK_LINE.search(raw, pos)
            return blank.start() + 1 if blank else len(raw)
    return pos


_FOLDED_FIELD = re.compile(rb"[^\r\n]*(?:(?:\r\n|\r|\n)[ \t][^\r\n]*)*")
_MAX_MIME_FIELD = 64 * 1024
_MAX_MIME_PARAMS = 200
_BOUNDARY_PARAM = re.compile(rb'(?i)\bboundary\s*=\s*(?:"([^"\r\n]{1,200})"|([^";\s]{1,200}))')


def _check_structure(raw: bytes, limits: Limits) -> None:
    """Cheap checks on the raw bytes for what makes the stdlib parser slow before any
    limit can be checked on its result: a hundred thousand parts take seconds to
    build; every line is matched against the boundary of every enclosing multipart
    (400 levels over 1 MB: 9 s); and the compat32 parameter parser is quadratic in
    the parameters of a field (1.5 s for 256 KiB of ";a=b"). Mail with few
    delimiters, boundaries and semicolons skips them."""
    many_delimiters = raw.count(b"\n--") > limits.max_parts
    if many_delimiters or raw.count(b"oundary") + raw.count(b"OUNDARY") > limits.max_depth:
        boundaries = {a or b for a, b in _BOUNDARY_PARAM.findall(raw)}
        if len(boundaries) > limits.max_parts:
            raise MailRejected(f"more than {limits.max_parts} MIME parts")
        if boundaries and (many_delimiters or len(boundaries) > limits.max_depth):
            _check_delimiters(raw, boundaries, limits)
    if len(raw) > _MAX_MIME_FIELD or raw.count(b";") > _MAX_MIME_PARAMS:
        lower = raw.lower()  # bytes.find on a lower-cased copy: 20x faster than (?i)
        for name in (b"content-type", b"content-disposition"):
            at = lower.find(name)
            while at >= 0:
                if at == 0 or lower[at - 1] in b"\r\n":
                    m = _FOLDED_FIELD.match(raw, at)
                    assert m is not None  # the pattern matches the empty string too
                    field = m.group()
                    label = name.decode().title()
                    if len(field) > _MAX_MIME_FIELD:
                        raise MailRejected(
                            f"a {label} field is {_kib(len(field))}, over {_kib(_MAX_MIME_FIELD)}")
                    if field.count(b";") > _MAX_MIME_PARAMS:
                        raise MailRejected(
                            f"a {label} field has more than {_MAX_MIME_PARAMS} parameters")
                at = lower.find(name, at + 1)


_DASH_LINE = re.compile(rb"(?m)^--([^\r\n]*)")


def _check_delimiters(raw: bytes, boundaries: set[bytes], limits: Limits) -> None:
    """Follow the delimiter lines of the declared boundaries as the parser will: a
    delimiter opens a part, and one of an enclosing boundary ends everything inside."""
    stack: list[bytes] = []
    parts = 0
    for m in _DASH_LINE.finditer(raw):
        line = m.group(1).rstrip(b" \t\r")
        closing = line not in boundaries and line.endswith(b"--") and line[:-2] in boundaries
        boundary = line[:-2] if closing else line
        if boundary not in boundaries:
            continue
        if boundary in stack:
            del stack[stack.index(boundary) + 1:]
            if closing:
                stack.pop()
                continue
        elif closing:
            continue
        else:
            stack.append(boundary)
            if len(stack) > limits.max_depth:
                raise MailRejected(f"MIME nesting deeper than {limits.max_depth}")
        parts += 1
        if parts > limits.max_parts:
            raise MailRejected(f"more than {limits.max_parts} MIME parts")


def _kib(n: int) -> str:
    return f"{n / 1024:,.0f} KiB" if n >= 10 * 1024 else f"{n / 1024:,.1f} KiB"
