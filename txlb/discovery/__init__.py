"""
Discovery: backends found in DNS or EC2 (C{[discovery:NAME]} sections),
each answer handed to the registry's one road (C{Registry.apply}).
"""
