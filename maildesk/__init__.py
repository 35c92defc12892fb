"""maildesk: an email-first IT incident desk."""

__version__ = "0.1.0"
