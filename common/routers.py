"""Which router of a placement group to talk to: the client's and the node's shared policy.

Routers form the placement group; only its leader answers placement calls, and a follower
answers with a NotLeader detail naming the leader's address (common.wire.errors). Whoever
calls the group keeps a list of router addresses (``--router A,B,C``) and a current one:

- a call that works keeps the current router;
- a NotLeader answer with a hint moves to the hinted router (added to the list if new);
- an unreachable router (UNAVAILABLE, DEADLINE_EXCEEDED) moves to the next one in the list;
- anything else is an answer, not a reason to move.

:meth:`RouterSet.failed` applies that rule and says whether another router is worth trying
now; callers bound their retries themselves (one pass over the list plus one hint hop is
enough to find a live leader when there is one).
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc

# Codes that say "this router did not answer", so another may.
_UNREACHABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


def parse_router_addresses(addresses: str | Sequence[str]) -> list[str]:
    """``"a:1,b:2"`` or ``["a:1", "b:2"]`` -> ``["a:1", "b:2"]``; ValueError when empty."""
    items = addresses.split(",") if isinstance(addresses, str) else list(addresses)
    out = [a.strip() for a in items if a and a.strip()]
    if not out:
        raise ValueError("no router address given")
    return out


class RouterSet:
    def __init__(self, addresses: str | Sequence[str]) -> None:
        self.addresses = parse_router_addresses(addresses)
        self._current = 0

    @property
    def current(self) -> str:
        return self.addresses[self._current]

    @property
    def tries(self) -> int:
        """How many calls find a live leader, if there is one: each router once, plus a hint hop."""
        return len(self.addresses) + 1

    def failed(self, code: grpc.StatusCode | None, leader_hint: str = "") -> bool:
        """A call to :attr:`current` failed with ``code`` (and maybe named the leader): move
        on as the rule says.  True if trying again, at the new :attr:`current`, makes sense."""
        if leader_hint:
            if leader_hint not in self.addresses:
                self.addresses.append(leader_hint)
            moved = self.addresses.index(leader_hint) != self._current
            self._current = self.addresses.index(leader_hint)
            return moved
        if code in _UNREACHABLE and len(self.addresses) > 1:
            self._current = (self._current + 1) % len(self.addresses)
            return True
        return False
