"""The mutations of the placement table, as small serializable commands.

Every change to the table goes through ``PlacementTable.apply(command)``. A command carries
everything its effect depends on, including the time (``now_ms``, stamped by whoever proposes
it), so applying the same sequence of commands to the same starting table always gives the
same table. Today the single router applies them directly; when the placement group becomes a
Raft group the leader proposes the encoded commands (codec.encode) and every member applies
them in log order.
"""

from __future__ import annotations

from dataclasses import dataclass

from common.descriptor import Descriptor, Epoch
from router.placement.model import Action, PartitionReport, PendingOperation, StoreState


@dataclass(frozen=True, slots=True)
class RegisterStore:
    """A node announces itself. ``store_id`` 0 asks for a new id; a non-zero id (persisted by
    the node in its data dir) keeps that id, and an id this table never issued is adopted."""

    address: str
    store_id: int = 0
    now_ms: int = 0
    zone: str = ""


@dataclass(frozen=True, slots=True)
class StoreHeartbeat:
    """A registered store's periodic report; applying it also decides which pending
    operations the response carries (and records that they were sent)."""

    store_id: int
    address: str
    now_ms: int
    reports: tuple[PartitionReport, ...] = ()
    capacity_bytes: int = 0
    used_bytes: int = 0
    # False: ``reports`` holds only what changed since the store's last heartbeat, and
    # ``gone`` the partitions it stopped hosting (see StoreHeartbeatRequest.delta).
    full: bool = True
    gone: tuple[int, ...] = ()
    # The node's zone as it says now (a node restarted with another --zone moves its store).
    zone: str = ""


@dataclass(frozen=True, slots=True)
class RecordLeader:
    """A leader hint: the higher term wins; at an equal term the first leader stays."""

    partition_id: int
    store_id: int
    term: int
    epoch: Epoch | None = None


@dataclass(frozen=True, slots=True)
class UpdateDescriptor:
    """A descriptor reported by a partition leader: the higher epoch wins."""

    descriptor: Descriptor


@dataclass(frozen=True, slots=True)
class Bootstrap:
    """Create the pre-split partitions of a brand-new cluster on the given stores, and queue
    CreateReplica(bootstrap=true) for every replica."""

    n_partitions: int
    replicas: int
    store_ids: tuple[int, ...]
    now_ms: int = 0


@dataclass(frozen=True, slots=True)
class SubmitOperation:
    """Queue an admin/scheduler operation. Zero ids and a zero epoch are filled in."""

    partition_id: int
    action: Action
    epoch: Epoch | None = None
    now_ms: int = 0
    # Asked by an operator (tessera admin, the Meta service), not by the scheduler: the
    # scheduler then leaves the partition's leader where the operator put it for a while.
    by_admin: bool = False


@dataclass(frozen=True, slots=True)
class SetStoreState:
    store_id: int
    state: StoreState


@dataclass(frozen=True, slots=True)
class CreateToken:
    """Add a bearer token (its sha256 only; router/placement/tokens.py). ``bootstrap``: the
    cluster's first admin token (cluster up --auth), added at most once per cluster."""

    token_hash: str
    role: str
    now_ms: int = 0
    name: str = ""
    bootstrap: bool = False


@dataclass(frozen=True, slots=True)
class RevokeToken:
    """Revoke a token by id; it stops working on routers at once and on nodes at their next
    token-table update (docs/auth.md)."""

    token_id: int
    now_ms: int = 0


Command = (
    RegisterStore
    | StoreHeartbeat
    | RecordLeader
    | UpdateDescriptor
    | Bootstrap
    | SubmitOperation
    | SetStoreState
    | CreateToken
    | RevokeToken
)


@dataclass(frozen=True, slots=True)
class Applied:
    """What one command changed.

    ``durable``: something that must be on disk before the caller acknowledges (new ids,
    descriptors, operations, store states). ``dirty``: something worth persisting eventually
    (leader hints, heartbeat times, progress), which the runtime flushes lazily.
    """

    durable: bool = False
    dirty: bool = False
    store_id: int = 0
    # Partitions created or whose descriptor or leader changed.
    partition_ids: tuple[int, ...] = ()
    # StoreHeartbeat: the operations for this store's heartbeat response.
    operations: tuple[PendingOperation, ...] = ()
    # SubmitOperation: the queued operation's id.
    operation_id: int = 0
    # CreateToken / RevokeToken: the token's id.
    token_id: int = 0


class PlacementError(ValueError):
    """A command was rejected; the table is unchanged. ``field`` names the offending request
    field (for INVALID_ARGUMENT)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
