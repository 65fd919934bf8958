"""
A fleet of balancers sharing their load and ejections through Redis
(``[fleet]``): each node publishes its per-backend in-flight counts and its
passive ejections every ``interval`` and reads its peers', so least
connections, least_time and ``max_connections`` judge the whole fleet's
load, and an ejection by one node is honoured by all.
"""
