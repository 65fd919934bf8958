"""
Socket-level pieces both proxy modes share: the byte relay, fast writes,
connect attempts and the client connection limit.
"""
