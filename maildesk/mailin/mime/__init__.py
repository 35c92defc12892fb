"""readable text, sanitized HTML and attachments. Pure: no database, no network.

    mail = parse_mail(raw, cfg.limits)          # or MailRejected(reason): quarantine it
    mail.sender, mail.sender_problem            # one unambiguous From, or why not
    mail.message_id, mail.in_reply_to, mail.references
    mail.text                                   # text/plain preferred, HTML-only converted
    mail.reply_text                             # without quoted history and signature (lazy)
    mail.html                                   # sanitized (nh3), or None
    mail.attachments                            # AttachmentPart(filename, content_type, data, ...)
    mail.header("Auto-Submitted")               # decoded, CR/LF/NUL removed; "" if absent

Speed: the stdlib `email` package with `policy.compat32` and explicit decoding here
is several times faster than `policy.default`, which builds a header object for every field. HTML is converted to
text only when a mail has no usable text/plain body, and quote stripping runs only
when `reply_text` is first read (in the fetch process, which stores it in the summary
the desk reads: `ParsedMail.summary`).

Safety (guarantee 4, docs/architecture.md): `parse_mail` raises nothing but
`MailRejected`, whatever the bytes; every decoded string is valid Unicode without
surrogates or NUL characters; the limits in `config.Limits` bound header size,
part count, nesting and time.
"""

from .filenames import safe_filename
from .html import html_to_text, sanitize_html
from .mail import Address, AttachmentPart, MailRejected, ParsedMail
from .quotes import strip_quoted
from .reader import parse_mail
from .text import clean_header_text, decode_header_value

__all__ = [
    "Address", "AttachmentPart", "MailRejected", "ParsedMail", "clean_header_text", "decode_header_value",
    "html_to_text", "parse_mail", "safe_filename", "sanitize_html", "strip_quoted",
]
