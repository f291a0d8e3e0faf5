"""The node's copy of the token table, learned from placement (docs/auth.md).

Nodes never see secrets or ask placement per call: each heartbeat says which table version
the node holds (``tokens_version``), and the answer carries the whole table of active tokens
(hash, id, role) only when placement's version differs. A revocation makes placement wake
every node's WatchOperations stream, so nodes heartbeat at once and the revoked token stops
working within one round trip; without the push, the next periodic heartbeat (1 s) brings it.
After each update :meth:`NodeTokens.update` calls ``on_change`` (the interceptor's refresh,
which ends the open streams of tokens no longer valid), and the node heartbeats again at once:
that heartbeat's ``tokens_version`` is how placement knows the node has the new table, which
CreateToken and RevokeToken wait for (router/meta_service.py).

Every node keeps the table, with or without --auth (it costs nothing while tokens do not
change), so placement's wait never hangs on a node that does not check tokens.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from common.auth import EMPTY, Grant, Role, TokenTable
from tesserapb import meta_pb2

if TYPE_CHECKING:
    from common.auth_server import AuthInterceptor

log = logging.getLogger("tessera.node.auth")


class NodeTokens:
    def __init__(self) -> None:
        self.table: TokenTable = EMPTY
        self.on_change: Callable[[], object] | None = None
        self.updates = 0

    @property
    def version(self) -> int:
        return self.table.version

    def lookup(self, token_hash: str) -> Grant | None:
        return self.table.grants.get(token_hash)

    def update(self, resp: meta_pb2.StoreHeartbeatResponse) -> bool:
        """Take the table a heartbeat answer carries (if it carries one); True when it did
        (the node then heartbeats again at once, which tells placement it has it)."""
        if not resp.tokens_changed:
            return False
        grants = {}
        for g in resp.tokens:
            try:
                grants[g.hash] = Grant(g.id, Role.parse(g.role))
            except ValueError:
                log.warning("token %d has an unknown role %r: ignored", g.id, g.role)
        self.table = TokenTable(grants, resp.tokens_version)
        self.updates += 1
        log.info("token table version %d: %d active token(s)", self.table.version, len(grants))
        if self.on_change is not None:
            self.on_change()
        return True


def interceptor(tokens: NodeTokens | None, where: str) -> AuthInterceptor | None:
    """The node's check of every call (gRPC and KV wire): none without --auth, else the check
    against ``tokens`` (whose updates end the streams of revoked tokens)."""
    if tokens is None:
        return None
    from common.auth_server import AuthInterceptor

    checker = AuthInterceptor(tokens.lookup, where=where)
    tokens.on_change = checker.refresh
    return checker
