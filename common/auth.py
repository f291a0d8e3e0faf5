"""Who may do what: bearer tokens with roles, and which role each RPC needs (docs/auth.md).

Shared by the node, the router, the client and the CLI, so it imports no gRPC at module level
(tools/cli.py reads its names while parsing; `tessera --help` stays light).

- A token is ``tsk_`` followed by 32 to 128 URL-safe characters; the ones placement makes are
  ``tsk_`` + 43 characters of ``secrets.token_urlsafe(32)`` (256 random bits). Servers keep only
  ``sha256(token)``: with 256 random bits nobody can search the input space, so a slow KDF
  (bcrypt, scrypt) would buy nothing, and a plain hash keeps the per-call check a dict lookup.
- Roles are ordered: ``read`` (gets, scans, partition map) < ``write`` (plus puts, deletes,
  batches) < ``admin`` (plus placement operations and tokens).
- Cluster members (nodes, routers) are authorized by their mTLS certificate (role ``member``,
  common/tls.py), never by a token; member-only RPCs (Raft, heartbeats) refuse every client
  certificate whatever token it carries.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

TOKEN_ENV = "TESSERA_TOKEN"
TOKEN_PREFIX = "tsk_"
METADATA_KEY = "authorization"  # gRPC metadata keys are lower case
BEARER = "Bearer "
_TOKEN_RE = re.compile(r"tsk_[A-Za-z0-9_-]{32,128}")


class Role(IntEnum):
    """A token's role; a higher role may do everything a lower one may."""

    READ = 1
    WRITE = 2
    ADMIN = 3

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> Role:
        try:
            return cls[text.upper()]
        except KeyError:
            raise ValueError(f"unknown role {text!r}: one of read, write, admin") from None


ROLE_NAMES = tuple(r.label for r in Role)


class Need(IntEnum):
    """What an RPC requires: nothing, a token of at least a role, or a member's certificate."""

    OPEN = 0
    READ = 1
    WRITE = 2
    ADMIN = 3
    MEMBER = 4

    @property
    def label(self) -> str:
        return "a cluster member's certificate" if self is Need.MEMBER else f"role {self.name.lower()}"


_KV = "/tessera.v1.KV/"
_META = "/tessera.v1.Meta/"
_RAFT = "/tessera.v1.RaftTransport/"

# Every RPC a Tessera server answers, and what it needs. A method missing here needs a member
# certificate (fail closed: a service added later is not open by accident).
POLICY: Mapping[str, Need] = {
    **{_KV + m: Need.READ for m in ("Get", "Scan")},
    **{_KV + m: Need.WRITE for m in ("Put", "Delete", "CompareAndSet", "Batch")},
    # The multiplexed stream carries reads and writes: a read token may open it, and the stream
    # is ended (PERMISSION_DENIED) at the first write it carries (common/auth_server.py).
    _KV + "Stream": Need.READ,
    _KV + "WireEndpoint": Need.READ,  # where the KV wire listens: any caller that may read (D28)
    **{_META + m: Need.READ for m in ("GetPartition", "ScanPartitions", "GetStores", "ListOperations", "GetRouters")},
    **{_META + m: Need.ADMIN for m in ("SubmitOperation", "SetStoreState", "CreateToken", "RevokeToken", "ListTokens")},
    # The nodes' link to placement: only a node may report itself.
    **{_META + m: Need.MEMBER for m in ("StoreHeartbeat", "ReportLeader", "WatchOperations")},
    **{_RAFT + m: Need.MEMBER for m in ("Stream", "SendSnapshot", "PeerEndpoint")},
    # Liveness and the (public) schema stay open: load balancers and grpcurl need them, and
    # they reveal nothing a client could not read in the protos.
    "/grpc.health.v1.Health/Check": Need.OPEN,
    "/grpc.health.v1.Health/Watch": Need.OPEN,
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": Need.OPEN,
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo": Need.OPEN,
}

# KV.Stream items that need ``write`` (a read token's stream ends at the first one).
STREAM_WRITE_KINDS = frozenset({"put", "delete", "compare_and_set", "batch"})


def need_of(method: str) -> Need:
    return POLICY.get(method, Need.MEMBER)


def new_token() -> str:
    """A fresh random token (256 bits)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def well_formed(token: str) -> bool:
    return _TOKEN_RE.fullmatch(token) is not None


def token_hash(token: str) -> str:
    """What servers store and compare: the hex sha256 of the token (see the module docstring)."""
    return hashlib.sha256(token.encode()).hexdigest()


def valid_hash(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)


@dataclass(frozen=True, slots=True)
class Grant:
    """What a token in the table allows: its id (for messages and revocation) and role."""

    token_id: int
    role: Role


@dataclass(frozen=True, slots=True)
class TokenTable:
    """The active tokens as a server checks them: hash -> Grant, and the placement version it
    came from (nodes learn it from their heartbeats, see node/auth_link.py)."""

    grants: Mapping[str, Grant]
    version: int = 0


EMPTY = TokenTable({}, 0)


def bearer_from(metadata: Any) -> str | None:
    """The token of an ``authorization: Bearer TOKEN`` metadata entry; "" when the entry is
    there but is not a bearer token; None when there is none."""
    for key, value in metadata or ():
        if key == METADATA_KEY:
            text = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
            return text[len(BEARER):].strip() if text.startswith(BEARER) else ""
    return None


def call_metadata(token: str | None) -> tuple[tuple[str, str], ...]:
    """Metadata carrying ``token`` for one call: what the client library passes to every call
    (router/client/channels.py says why not gRPC's access-token call credentials)."""
    return ((METADATA_KEY, BEARER + token),) if token else ()


def token_from(option: str | None, env: Mapping[str, str]) -> str | None:
    """The CLI's rule: --token, else $TESSERA_TOKEN, else none."""
    return option or env.get(TOKEN_ENV) or None


class AuthConfigError(ValueError):
    """An --auth set-up that cannot work; the message names the flag."""


NEEDS_TLS = ("--auth needs mutual TLS (members are known by their certificates): give --ca, --cert "
             "and --key too")


def refusal_text(code_name: str, message: str, had_token: bool) -> str:
    """A CLI's line for a call the cluster refused (UNAUTHENTICATED or PERMISSION_DENIED)."""
    if code_name == "PERMISSION_DENIED":
        return f"permission denied: {message}"
    hint = "" if had_token else f" (give --token TOKEN or set ${TOKEN_ENV})"
    return f"not authenticated: {message}{hint}"
