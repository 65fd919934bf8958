"""
Active health checks: the checker loop and its probes.
"""
