"""
The pure core: backends and their state, the registry that owns them and
announces changes, the balancing policies, the load index, the queue and the
decision log.  No I/O: time comes from an injected clock.
"""
