"""Kept for the frozen migrations, which import their field type from here."""

from maildesk.store.connection import UtcDateTimeField

__all__ = ["UtcDateTimeField"]
