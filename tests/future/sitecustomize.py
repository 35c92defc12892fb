"""Loaded by every Python process of `make test-future` (it is first on PYTHONPATH there):
makes `time.sleep` work under Debian's libfaketime 0.9.10 with the monotonic clock left real.

The suite runs a year ahead with `FAKETIME_DONT_FAKE_MONOTONIC=1 faketime -f +365d`. The
monotonic clock must stay real: Python 3.11 waits on a lock with a timeout (Event.wait,
Condition.wait, threading.Timer, queue.get) by sem_clockwait(CLOCK_MONOTONIC, deadline),
which libfaketime 0.9.10 does not intercept, so a faked monotonic deadline lies a year past
the real one and the wait hangs. But with the monotonic clock real, 0.9.10's clock_nanosleep
still moves a TIMER_ABSTIME deadline by the fake offset whatever the clock (fixed upstream in
0.9.11, libfaketime issue #426), and `time.sleep`, which sleeps to an absolute
CLOCK_MONOTONIC deadline since Python 3.11, fails with `OSError: [Errno 22] Invalid argument`.

A sleep by select() takes a relative timeout, which libfaketime leaves alone. Nothing else
is changed: the processes see the wall clock a year ahead, the monotonic clock as it is.
"""

import os
import select
import time


def _sleep(seconds: float) -> None:
    if seconds < 0:
        raise ValueError("sleep length must be non-negative")
    select.select([], [], [], seconds)  # PEP 475: retried with the time left after a signal


if "libfaketime" in os.environ.get("LD_PRELOAD", ""):
    time.sleep = _sleep
