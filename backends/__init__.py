"""
Demo HTTP backends for showing and testing the txlb load balancer.

Each backend answers its main route after a configurable service time,
behind a FIFO queue of limited capacity, and can inject errors and fail its
health check on demand.  Start some with ``python -m backends --port 9001``
(or ``txlb-demo-backend``); see C{backends.app} for the routes.
"""

__all__: list[str] = []
