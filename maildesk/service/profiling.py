"""`MAILDESK_PROFILE=DIR maildesk run ...` writes a cProfile of each process to
DIR/desk.prof, DIR/fetch.prof and DIR/send.prof (read them with `python -m
pstats`); bench/ingest.py --profile DIR sets it. Unset, it costs nothing."""

import contextlib
import os


@contextlib.contextmanager
def profiled(role: str):
    where = os.environ.get("MAILDESK_PROFILE")
    if not where:
        yield
        return
    import cProfile

    profile = cProfile.Profile()
    profile.enable()
    try:
        yield
    finally:
        profile.disable()
        os.makedirs(where, exist_ok=True)
        profile.dump_stats(os.path.join(where, f"{role}.prof"))
