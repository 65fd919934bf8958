"""
txlb: a least-connections load balancer for HTTP and TCP, built on Twisted.

Start it with ``twistd -n txlb --config lb.ini``.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
