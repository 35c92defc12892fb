"""Attachment filenames made safe to show and to store.
"""

from __future__ import annotations

import re
import unicodedata

from .text import _SURROGATE, decode_header_value

# --- filenames ----------------------------------------------------------------------

_FILENAME_DROP = re.compile(
    "[\x00-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff\ufff9-\ufffb]"
)

_FILENAME_BAD = re.compile(r'[<>:"|?*]')
_WINDOWS_DEVICES = re.compile(r"(?i)(con|prn|aux|nul|com\d|lpt\d)(\..*)?")
_MAX_FILENAME_CHARS = 150
_MAX_FILENAME_BYTES = 240
_EXTENSIONS = {
    "text/plain": ".txt", "text/html": ".html", "text/calendar": ".ics", "text/csv": ".csv",
    "text/xml": ".xml", "text/rfc822-headers": ".txt", "text/x-vcard": ".vcf",
    "text/vcard": ".vcf", "message/rfc822": ".eml", "message/delivery-status": ".txt",
    "message/disposition-notification": ".txt", "message/global": ".eml",
    "message/global-delivery-status": ".txt", "message/feedback-report": ".txt",
    "image/png": ".png", "image/jpeg": ".jpg", "image/gif": ".gif", "image/bmp": ".bmp",
    "image/webp": ".webp", "image/tiff": ".tif", "image/svg+xml": ".svg", "image/heic": ".heic",
    "application/pdf": ".pdf", "application/zip": ".zip", "application/json": ".json",
    "application/xml": ".xml", "application/ms-tnef": ".dat", "application/vnd.ms-tnef": ".dat",
    "application/pgp-signature": ".asc", "application/pgp-encrypted": ".asc",
    "application/pkcs7-signature": ".p7s", "application/x-pkcs7-signature": ".p7s",
    "application/pkcs7-mime": ".p7m", "application/x-pkcs7-mime": ".p7m",
    "application/msword": ".doc", "application/vnd.ms-excel": ".xls",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": ".docx",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": ".xlsx",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation": ".pptx",
    "application/gzip": ".gz", "application/x-gzip": ".gz", "application/x-tar": ".tar",
    "application/x-7z-compressed": ".7z", "application/vnd.ms-outlook": ".msg",
    "audio/mpeg": ".mp3", "audio/wav": ".wav", "video/mp4": ".mp4",
}


def safe_filename(name: str | None, content_type: str = "") -> str:
    """A filename fit to store and to offer for download: RFC 2047 words decoded, the
    last path component only, no control or bidi-override characters, none of
    <>:"|?*, no leading dots or trailing dots/spaces, no Windows device names, at most
    150 characters and 240 UTF-8 bytes (the extension kept). Never empty: without a
    usable name it is "attachment" plus an extension for the content type
    ("attachment.bin" for unknown types)."""
    s = name or ""
    if "=?" in s:
        s = decode_header_value(s)
    if s and not s.isascii():
        s = unicodedata.normalize("NFC", _SURROGATE.sub("", s))
    s = s.replace("\\", "/").rsplit("/", 1)[-1]
    s = _FILENAME_DROP.sub("", s)
    s = _FILENAME_BAD.sub("_", s)
    s = " ".join(s.split())
    s = s.lstrip(". ").rstrip(". ")
    if _WINDOWS_DEVICES.fullmatch(s):
        s = "_" + s
    if not s:
        ctype = content_type.strip().lower()
        if not ctype:
            return "attachment"
        return "attachment" + _EXTENSIONS.get(ctype, ".bin")
    return _cap_filename(s)


def _cap_filename(s: str) -> str:
    if len(s) <= _MAX_FILENAME_CHARS and len(s.encode("utf-8")) <= _MAX_FILENAME_BYTES:
        return s
    stem, dot, ext = s.rpartition(".")
    if not dot or not stem or len(ext) > 16:
        stem, ext = s, ""
    ext = "." + ext if ext else ""
    stem = stem[: _MAX_FILENAME_CHARS - len(ext)]
    while len((stem + ext).encode("utf-8")) > _MAX_FILENAME_BYTES:
        stem = stem[:-1]
    return (stem.rstrip(". ") or "attachment") + ext
