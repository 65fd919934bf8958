"""The garbage collector tuned for a proxy, once a process has started."""

from __future__ import annotations

import gc

__all__ = ["tune_gc"]


def tune_gc() -> None:
    """
    Make the garbage collector cheap for a proxy (once started).

    Each request allocates a few dozen short-lived objects, so the default
    collector runs a young-generation pass every few requests and, now and
    then, a full pass over every object the process holds (Twisted, Klein,
    the config, the registry).  Freezing what start-up built takes it out
    of those passes for good, and a larger young generation makes them
    rarer; reference counting frees the rest at once.  With wrk -c64
    through three nginx backends: about a quarter less CPU per request.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
