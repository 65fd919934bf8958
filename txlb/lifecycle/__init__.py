"""
The balancer's life: graceful shutdown (SIGTERM) and reload (SIGHUP).
"""
