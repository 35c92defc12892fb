"""The new text of a reply: quoted history, forwarded blocks and signatures cut off.
"""

from __future__ import annotations

import re

# --- quoted history and signatures ------------------------------------------------------

# "On Mon, 1 Jan 2024 at 10:00, Ann <ann@example.com> wrote:" in the languages of
# mailparser_reply and then some; matched only on short lines that end with a colon.
_WROTE = re.compile(
    r"(?i)\b(?:wrote|writes|schrieb|a\s+écrit|escribió|escribio|ha\s+scritto|schreef|"
    r"escreveu|skrev|napsal(?:\(a\))?|napisał(?:\(a\))?|pisze|kirjoitti|írta|"
    r"написал(?:\(а\))?|пишет|yazdı|έγραψε)\b[^:：]{0,120}[:：]\s*$"
    r"|(?:写道|寫道|작성)[^:：]{0,40}[:：]\s*$"
)
_WROTE_LEAD = re.compile(
    r"(?i)^\s*(?:on|am|le|el|il|op|em|den|dne|dnia|w\s+dniu|på|d\.|o|в|el\s+día|"
    r"il\s+giorno|on\s+\w+,)\b"
)
_ORIGINAL_MESSAGE = re.compile(
    r"(?i)^\s*[-_=*]{2,}\s*(?:original\s+message|ursprüngliche\s+nachricht|originalnachricht|"
    r"message\s+d'origine|mensaje\s+original|messaggio\s+originale|oorspronkelijk\s+bericht|"
    r"mensagem\s+original|originalmeddelande|alkuperäinen\s+viesti|původní\s+zpráva|"
    r"wiadomość\s+oryginalna|oprindelig\s+meddelelse|opprinnelig\s+melding|"
    r"исходное\s+сообщение|原始邮件|原始郵件|元のメッセージ|reply\s+message)\s*[-_=*]{2,}\s*$"
)
_FORWARD = re.compile(
    r"(?i)^\s*(?:[-_=*>]{2,}\s*)?(?:forwarded\s+message|begin\s+forwarded\s+message|"
    r"weitergeleitete\s+nachricht|anfang\s+der\s+weitergeleiteten|message\s+transféré|"
    r"début\s+du\s+message\s+réexpédié|mensaje\s+reenviado|messaggio\s+inoltrato|"
    r"doorgestuurd\s+bericht|mensagem\s+encaminhada|vidarebefordrat\s+meddelande|"
    r"videresendt\s+meddelelse|välitetty\s+viesti|přeposlaná\s+zpráva|"
    r"пересылаемое\s+сообщение|转发的邮件|転送されたメッセージ)\b"
)
_FROM_FIELD = re.compile(
    r"(?i)^\s*(?:\*\s*)?(?:from|von|de|da|van|från|fra|od|lähettäjä|от|feladó|kimden|"
    r"发件人|寄件者|差出人|보낸\s*사람)(?:\s*\*)?\s*[:：]"
)
_OTHER_FIELD = re.compile(
    r"(?i)^\s*(?:\*\s*)?(sent|date|to|cc|subject|gesendet|datum|an|betreff|envoyé|à|objet|"
    r"enviado|fecha|para|asunto|inviato|data|a|oggetto|verzonden|aan|onderwerp|skickat|till|"
    r"ämne|sendt|til|emne|wysłano|do|temat|odesláno|komu|předmět|lähetetty|vastaanottaja|"
    r"aihe|отправлено|кому|тема|发送时间|收件人|主题|抄送|日付|件名|宛先|보낸\s*날짜|"
    r"받는\s*사람|제목)(?:\s*\*)?\s*[:：]"
)
_DATE_FIELDS = frozenset({
    "sent", "date", "gesendet", "datum", "envoyé", "enviado", "fecha", "inviato", "data",
    "verzonden", "skickat", "sendt", "wysłano", "odesláno", "lähetetty", "отправлено",
    "发送时间", "日付", "보낸 날짜", "보낸날짜",
})
_SEPARATOR = re.compile(r"^\s*(?:_{10,}|-{10,})\s*$")
_MOBILE_SIGNATURE = re.compile(
    r"(?i)^\s*(?:sent\s+from\s+my\s.{1,40}|sent\s+from\s+(?:mail|outlook|yahoo)\b.{0,40}|"
    r"get\s+outlook\s+for\s.{1,30}|von\s+meinem\s.{1,40}\s+gesendet|gesendet\s+von\s+meinem\s.{1,40}|"
    r"envoyé\s+de\s+mon\s.{1,40}|enviado\s+desde\s+mi\s.{1,40}|inviato\s+da\s.{1,40}|"
    r"verzonden\s+(?:vanaf|met)\s+mijn\s.{1,40}|skickat\s+från\s+min\s.{1,40})\s*$"
)
_MAX_SCAN_LINES = 10_000
_MAX_HEADER_LINE = 400
_MAX_SIGNATURE_LINES = 20


def strip_quoted(text: str) -> str:
    """The new part of a reply: text above the first quote header ("On ... wrote:"
    in many languages, "-----Original Message-----", an Outlook "From: / Sent: / To:"
    block), without a trailing run of ">" lines, a trailing "-- " signature or a
    "Sent from my phone" line. Lines are returned as they were, so "#commands" at the
    top survive unchanged; a text without quotes comes back whole. Forwarded mail is
    left whole, and so is a text that would otherwise come back empty: a reply is
    never reduced to nothing."""
    if not text:
        return ""
    lines = text.replace("\r\n", "\n").split("\n")
    cut = _quote_start(lines)
    if cut == -1:  # forwarded mail: the forwarded part is the content
        return "\n".join(lines).rstrip()
    if cut is not None:
        lines = lines[:cut]
    lines = _drop_trailing_quote(lines)
    lines = _drop_signature(lines)
    result = "\n".join(lines).rstrip()
    if not result.strip():
        return text.replace("\r\n", "\n").rstrip()
    return result


def _is_quoted(line: str) -> bool:
    return line.lstrip().startswith(">")


def _next_nonblank(lines: list[str], i: int) -> str | None:
    for line in lines[i:i + 4]:
        if line.strip():
            return line
    return None


def _quote_start(lines: list[str]) -> int | None:
    """Index of the first line of quoted history, None if there is none, -1 when the
    text is a forward."""
    n = min(len(lines), _MAX_SCAN_LINES)
    for i in range(n):
        line = lines[i]
        stripped = line.strip()
        if not stripped or len(stripped) > _MAX_HEADER_LINE or stripped[0] in "#>":
            continue
        if _FORWARD.match(stripped):
            return -1
        if _ORIGINAL_MESSAGE.match(stripped):
            return i
        if _FROM_FIELD.match(stripped) and _is_outlook_block(lines, i):
            j = i - 1
            while j >= 0 and not lines[j].strip():
                j -= 1
            return j if j >= 0 and _SEPARATOR.match(lines[j]) else i
        end = stripped[-1]
        if end in ":：":
            if _is_attribution(stripped, lines, i + 1):
                return _unless_bottom_post(lines, i, i + 1)
        elif i + 1 < n:
            # Gmail wraps long attributions: "On ..., Ann <\nann@example.com> wrote:"
            following = lines[i + 1].strip()
            if (following[-1:] in (":", "：") and not following.startswith(">")
                    and _WROTE_LEAD.match(stripped) and len(following) < _MAX_HEADER_LINE
                    and _is_attribution(stripped + " " + following, lines, i + 2)):
                return _unless_bottom_post(lines, i, i + 2)
    return None


def _is_attribution(line: str, lines: list[str], after: int) -> bool:
    nxt = _next_nonblank(lines, after)
    followed_by_quote = nxt is not None and _is_quoted(nxt)
    if _WROTE.search(line):
        # "On <date>, <who> wrote:" or a name and address; a bare "Ann wrote:" must
        # be followed by quoted lines, so that "The log wrote:" is not taken for one.
        return followed_by_quote or bool(_WROTE_LEAD.match(line)) or "@" in line or any(
            c.isdigit() for c in line)
    # Attributions without a verb (Gmail in Japanese, Russian): a date, an address
    # and quoted lines after it.
    return followed_by_quote and "@" in line and any(c.isdigit() for c in line)


def _is_outlook_block(lines: list[str], i: int) -> bool:
    """A "From:" line followed, within seven lines (values may wrap), by two more
    header fields, one of them the date ("Sent:", "Gesendet:", "Date:"...)."""
    seen = set()
    for line in lines[i + 1:i + 8]:
        m = _OTHER_FIELD.match(line[:_MAX_HEADER_LINE])
        if m:
            seen.add(m.group(1).lower())
    return len(seen) >= 2 and not seen.isdisjoint(_DATE_FIELDS)


def _unless_bottom_post(lines: list[str], i: int, j: int) -> int | None:
    """The attribution at line i (quote from line j): an attribution followed by ">"
    lines and then new unquoted text is a bottom post or an inline answer: keep it
    all (a trailing quote is still dropped)."""
    n = len(lines)
    while j < n and not lines[j].strip():
        j += 1
    if j >= n or not _is_quoted(lines[j]):
        return i  # unquoted history (Outlook, converted HTML): cut here
    while j < n and (_is_quoted(lines[j]) or not lines[j].strip()):
        j += 1
    rest = _drop_signature(lines[j:])
    if any(line.strip() for line in rest):
        return None
    return i


def _drop_trailing_quote(lines: list[str]) -> list[str]:
    end = len(lines)
    while end and not lines[end - 1].strip():
        end -= 1
    j = end
    while j and (_is_quoted(lines[j - 1]) or not lines[j - 1].strip()):
        j -= 1
    if j == end:
        return lines[:end]
    # the attribution just above the quote goes too ("Ann wrote:")
    k = j
    while k and not lines[k - 1].strip():
        k -= 1
    if k and lines[k - 1].rstrip().endswith((":", "：")) and len(lines[k - 1]) < _MAX_HEADER_LINE:
        if _is_attribution(lines[k - 1].strip(), lines, k):
            j = k - 1
    return lines[:j]


def _drop_signature(lines: list[str]) -> list[str]:
    end = len(lines)
    while end and not lines[end - 1].strip():
        end -= 1
    if end and len(lines[end - 1]) < 100 and _MOBILE_SIGNATURE.match(lines[end - 1]):
        end -= 1
        while end and not lines[end - 1].strip():
            end -= 1
    for j in range(end - 1, max(end - 1 - _MAX_SIGNATURE_LINES, -1), -1):
        if lines[j].rstrip() == "--":  # RFC 3676 4.3: "-- " (clients often drop the space)
            end = j
            break
    return lines[:end]
