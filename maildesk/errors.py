"""The root of the project's errors. Each error says what the user must fix.

`Discard` and `Reject` (pipeline/context.py) are control flow, not errors: they stop
one message on purpose and are not under this root.
"""


class MaildeskError(Exception):
    """A problem maildesk reports to its admin or user, in words they can act on."""
