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
_partners: dict[str, int] = {}


def partner(pid: int | None, role: str = "") -> None:
    """The desk process names each mail process it starts (a restart replaces the one
    of its role), so that a crash takes them all; a mail process calls partner(None):
    its partner is the desk."""
    if pid is None:
        _partners.clear()
    else:
        _partners[role] = pid


def point(name: str) -> None:
    if _FAULT != name:
        return
    for pid in list(_partners.values()) or [os.getppid()]:
        if pid > 1:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    os.kill(os.getpid(), signal.SIGKILL)
