"""Crash points for the fault-injection tests: `MAILDESK_FAULT=after-store` makes
maildesk kill itself with SIGKILL at that point, both its processes at once, as a
power cut would. Unset (always, in production) a point costs one comparison.

Points: after-store (inbound committed, not yet flagged on the server),
after-process (tickets and outbox rows committed, mail not yet sent), after-send
(the SMTP server accepted a mail, the outbox does not know yet).
"""

import os
import signal

_FAULT = os.environ.get("MAILDESK_FAULT")
_partner: int | None = None


def partner(pid: int | None) -> None:
    """The desk process names its mail process, so that a crash takes both."""
    global _partner
    _partner = pid


def point(name: str) -> None:
    if _FAULT != name:
        return
    for pid in (_partner, os.getppid() if _partner is None else None):
        if pid and pid > 1:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    os.kill(os.getpid(), signal.SIGKILL)
