"""The MIME tree of a mail, as the stdlib's compat32 parser builds it, but faster.

`email.parser` reads a mail line by line in Python: a 40 KB base64 attachment is 600
lines, and on real help-desk mail that is most of the parse. `parse_tree` splits
well-formed mail with `str.find` instead (the header block of each part still goes
through the stdlib's own header parser) and builds the very tree the stdlib would:
the same headers, payloads, preambles and epilogues, down to the line ending that
RFC 2046 gives to the boundary. Anything it is not sure of (a missing boundary, a
line that is neither header nor separator, message/* parts, bare CR line ends,
doubled delimiters) goes to the stdlib parser whole, defects and all.
tests/test_mime.py checks both parsers give the same tree on every mail of the
corpus and of the benchmark.
"""

from __future__ import annotations

import email.message
import email.parser
import email.policy
import itertools
import re

STDLIB_PARSER = email.parser.BytesParser(policy=email.policy.compat32)
_COMPAT32 = email.policy.compat32
_HEADER_LINE = re.compile(r"(From |[\041-\071\073-\176]*:|[\t ])")  # feedparser.headerRE
_MAX_DEPTH = 20


class _Unsure(Exception):
    """Leave this mail to the stdlib parser."""


def parse_tree(raw: bytes) -> email.message.Message:
    text = raw.decode("ascii", "surrogateescape")  # as BytesParser does
    if "\r" in text and text.count("\r") != text.count("\r\n"):
        return STDLIB_PARSER.parsebytes(raw)  # bare CR line ends: the stdlib splits on those too
    try:
        return _part(text, 0, len(text), nested=False, depth=0)
    except _Unsure:
        return STDLIB_PARSER.parsebytes(raw)


def _part(text: str, start: int, end: int, nested: bool, depth: int) -> email.message.Message:
    """The part in text[start:end]; `nested`: it ends where a delimiter line of its
    parent begins, and the line ending before that belongs to the delimiter."""
    if depth > _MAX_DEPTH:
        raise _Unsure
    head_end, body_start = _split_head(text, start, end)
    msg = _headers(text[start:head_end])
    maintype = msg.get_content_maintype()
    if maintype == "message" or msg.get_content_type() == "multipart/digest":
        raise _Unsure
    if maintype != "multipart":
        body = text[body_start:end]
        msg.set_payload(_strip_eol(body) if nested else body)  # stored as it is: no charset given
        return msg
    boundary = msg.get_boundary()
    if boundary is None or str(msg.get("content-transfer-encoding", "8bit")).lower() not in ("7bit", "8bit", "binary"):
        raise _Unsure
    delimiters = _delimiters(text, body_start, end, "--" + boundary)
    if len(delimiters) < 2 or delimiters[0][2] or not delimiters[-1][2]:
        raise _Unsure  # no start or no close delimiter
    first = delimiters[0][0]
    if first > body_start:
        msg.preamble = _strip_eol(text[body_start:first])
    parts: list[email.message.Message | str] = []  # the payload type of a multipart
    for (_, line_end, _), (next_start, _, _) in itertools.pairwise(delimiters):
        if next_start == line_end:
            raise _Unsure  # doubled delimiter lines: the stdlib skips them
        parts.append(_part(text, line_end, next_start, nested=True, depth=depth + 1))
    msg.set_payload(parts)
    epilogue = text[delimiters[-1][1]:end]
    if nested:
        msg.epilogue = None if epilogue == "" else _strip_eol(epilogue)
    else:
        msg.epilogue = epilogue
    return msg


def _headers(head: str) -> email.message.Message:
    """A Message with the header fields of `head`, as feedparser._parse_headers
    makes it; anything that would give it a defect or an envelope line is _Unsure."""
    msg = email.message.Message(policy=email.policy.compat32)
    lines = head.split("\n")
    last = lines.pop()  # "" when the block ends with a line end
    lines = [line + "\n" for line in lines] + ([last] if last else [])
    name, value = "", []
    if lines and lines[0].startswith("From "):  # an mbox envelope line
        msg.set_unixfrom(_strip_eol(lines.pop(0)))
    for line in lines:
        if not _HEADER_LINE.match(line) or line.startswith("From ") or line.startswith(":"):
            raise _Unsure  # the body would begin here, or a defect or a misplaced envelope line
        if line[0] in " \t":
            if not name:
                raise _Unsure  # a continuation before any field
            value.append(line)
            continue
        if name:
            msg.set_raw(*_COMPAT32.header_source_parse(value))
        name, value = line[:line.index(":")], [line]
    if name:
        msg.set_raw(*_COMPAT32.header_source_parse(value))
    return msg


def _split_head(text: str, start: int, end: int) -> tuple[int, int]:
    """(end of the header block, start of the body) of text[start:end]."""
    if text.startswith("\r\n", start, end):
        return start, start + 2
    if text.startswith("\n", start, end):
        return start, start + 1
    crlf, lf = text.find("\n\r\n", start, end), text.find("\n\n", start, end)
    if crlf < 0 and lf < 0:
        return end, end  # headers only
    if lf < 0 or 0 <= crlf < lf:
        return crlf + 1, crlf + 3
    return lf + 1, lf + 2


def _delimiters(text: str, start: int, end: int, sep: str) -> list[tuple[int, int, bool]]:
    """(line start, line end after its EOL, is the close delimiter) of each
    delimiter line of `sep` in text[start:end], up to and including the close one."""
    out: list[tuple[int, int, bool]] = []
    pos = start
    n = len(sep)
    while True:
        i = text.find(sep, pos, end)
        if i < 0:
            return out
        pos = i + n
        if i > start and text[i - 1] != "\n":
            continue
        j = i + n
        close = text.startswith("--", j, end)
        if close:
            j += 2
        while j < end and text[j] in " \t":
            j += 1
        if j == end:
            line_end = j
        elif text.startswith("\r\n", j, end):
            line_end = j + 2
        elif text[j] == "\n":
            line_end = j + 1
        else:
            continue  # "--boundary" followed by more: not a delimiter
        out.append((i, line_end, close))
        if close:
            return out
        pos = line_end


def _strip_eol(s: str) -> str:
    if s.endswith("\r\n"):
        return s[:-2]
    if s.endswith("\n"):
        return s[:-1]
    return s
