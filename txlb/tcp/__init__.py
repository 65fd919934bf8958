"""
TCP mode: each client connection relayed to a backend, with optional
PROXY protocol headers.
"""
