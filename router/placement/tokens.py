"""The token table inside placement: hashed bearer tokens with roles (docs/auth.md).

Kept beside the placement table and changed only by its commands (CreateToken, RevokeToken),
so tokens are replicated by the placement group, persisted in its checkpoints, and identical
on every router. Only ``sha256(token)`` is ever stored: the secret is made by the router that
answers CreateToken and handed to the caller once (common/auth.py says why no slow KDF).

``version`` grows by one with every change; nodes heartbeat the version they hold and get the
active tokens back whenever it differs (router/meta_service.py, node/router_link.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from common import auth
from common.auth import Grant, Role, TokenTable
from router.placement.commands import Applied, CreateToken, PlacementError, RevokeToken


@dataclass(slots=True)
class TokenInfo:
    id: int
    token_hash: str  # hex sha256 of the secret
    role: str  # "read", "write", "admin"
    created_ms: int
    name: str = ""
    revoked: bool = False
    revoked_ms: int = 0


class TokenBook:
    """Every token ever made (revoked ones stay, for the record), by id and by hash."""

    def __init__(self) -> None:
        self.tokens: dict[int, TokenInfo] = {}
        self.next_id = 1
        self.version = 1
        # A bootstrap admin token (cluster up --auth) is added once per cluster: revoking it
        # must not make the next leader add it again.
        self.bootstrapped = False
        self._active: dict[str, Grant] = {}
        self._table = TokenTable({}, self.version)

    # -- commands -----------------------------------------------------------------------------

    def apply(self, cmd: CreateToken | RevokeToken) -> Applied:
        if isinstance(cmd, CreateToken):
            return self._create(cmd)
        return self._revoke(cmd)

    def _create(self, cmd: CreateToken) -> Applied:
        if not auth.valid_hash(cmd.token_hash):
            raise PlacementError("token_hash", "not a hex sha256")
        try:
            Role.parse(cmd.role)
        except ValueError as exc:
            raise PlacementError("role", str(exc)) from None
        if cmd.bootstrap and self.bootstrapped:
            raise PlacementError("bootstrap", "the bootstrap admin token was added already")
        if any(t.token_hash == cmd.token_hash for t in self.tokens.values()):
            raise PlacementError("token_hash", "a token with this hash exists (a secret is never reused)")
        info = TokenInfo(self.next_id, cmd.token_hash, cmd.role, cmd.now_ms, cmd.name)
        self.tokens[info.id] = info
        self.next_id += 1
        if cmd.bootstrap:
            self.bootstrapped = True
        self._changed()
        return Applied(durable=True, dirty=True, token_id=info.id)

    def _revoke(self, cmd: RevokeToken) -> Applied:
        info = self.tokens.get(cmd.token_id)
        if info is None:
            raise PlacementError("id", f"no token with id {cmd.token_id}")
        if info.revoked:
            return Applied(token_id=info.id)  # asking again is fine
        info.revoked = True
        info.revoked_ms = cmd.now_ms
        self._changed()
        return Applied(durable=True, dirty=True, token_id=info.id)

    def _changed(self) -> None:
        self.version += 1
        self.rebuild()

    def rebuild(self) -> None:
        self._active = {
            t.token_hash: Grant(t.id, Role.parse(t.role)) for t in self.tokens.values() if not t.revoked
        }
        self._table = TokenTable(self._active, self.version)

    # -- reads ----------------------------------------------------------------------------------

    def lookup(self, token_hash: str) -> Grant | None:
        """The active grant of a token hash (the router's per-call check)."""
        return self._active.get(token_hash)

    @property
    def table(self) -> TokenTable:
        """The active tokens at the current version (what nodes get)."""
        return self._table

    # -- persistence (router/placement/codec.py) ----------------------------------------------

    def is_default(self) -> bool:
        return not self.tokens and not self.bootstrapped

    def to_doc(self, encode: Any) -> dict[str, Any]:
        return {
            "next_id": self.next_id,
            "version": self.version,
            "bootstrapped": self.bootstrapped,
            "tokens": [encode(t) for t in self.tokens.values()],
        }

    def load_doc(self, doc: Any, decode: Any) -> None:
        self.next_id = int(doc["next_id"])
        self.version = int(doc["version"])
        self.bootstrapped = bool(doc["bootstrapped"])
        for raw in doc["tokens"]:
            info = decode(raw)
            if not isinstance(info, TokenInfo):
                raise TypeError(f"expected TokenInfo, got {type(info).__name__}")
            self.tokens[info.id] = info
        self.rebuild()
