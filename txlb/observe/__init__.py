"""
What txlb shows of itself: rolling stats, Prometheus metrics, the stats
API and dashboard app, the access log.
"""
