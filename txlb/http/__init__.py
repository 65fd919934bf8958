"""
HTTP mode: the strict front end, the exchange of one request with a
backend, pooled backend connections, header rules and routing.
"""
