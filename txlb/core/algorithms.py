"""
Every balancing algorithm by its name in lb.ini (C{[txlb] algorithm}), and
the policy object of each (L{txlb.core.policies}, L{txlb.core.p2c},
L{txlb.core.hashring}): a new algorithm is one policy object, named here.
"""

from __future__ import annotations

from collections.abc import Callable

from txlb.core.hashring import ConsistentHash
from txlb.core.p2c import PowerOfTwoChoices
from txlb.core.policies import LeastConn, LeastTime, Policy, RoundRobin

__all__ = ["POLICIES", "policy_for"]

POLICIES: dict[str, type[Policy]] = {
    policy.name: policy
    for policy in (LeastConn, RoundRobin, LeastTime, PowerOfTwoChoices, ConsistentHash)
}
"""Every policy by its name in lb.ini."""


def policy_for(
    algorithm: str,
    ewma_decay: float,
    random: Callable[[], float] | None = None,
    balance_factor: float = 1.25,
    key_name: str = "client_ip",
) -> Policy:
    """
    The policy C{[txlb] algorithm} names, with its settings.

    @param random: p2c's source of floats in [0, 1).
    @param balance_factor: hash's C{hash_balance_factor}.
    @param key_name: hash's C{hash_key}, in words.
    """
    if algorithm == "least_time":
        return LeastTime(ewma_decay)
    if algorithm == "p2c":
        return PowerOfTwoChoices(random)
    if algorithm == "hash":
        return ConsistentHash(balance_factor, key_name)
    return POLICIES[algorithm]()
