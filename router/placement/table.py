"""The placement table: a pure state machine over the commands of commands.py.

No I/O, no clock, no randomness: ``apply(command)`` is a deterministic function of the table
and the command, so a later issue can replicate the placement group by running the same
commands through the Raft core. Rejected commands raise ``PlacementError`` and change nothing
(validation happens before the first mutation).
"""

from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Iterable

from common import keyspace
from common.descriptor import Descriptor, Epoch, ReplicaDesc, Role
from router.placement.commands import (
    Applied,
    Bootstrap,
    Command,
    CreateToken,
    PlacementError,
    RecordLeader,
    RegisterStore,
    RevokeToken,
    SetStoreState,
    StoreHeartbeat,
    SubmitOperation,
    UpdateDescriptor,
)
from router.placement.model import (
    Action,
    AddReplica,
    CreateReplica,
    DestroyReplica,
    PartitionInfo,
    PartitionReport,
    PendingOperation,
    RemoveReplica,
    ReplicaProgress,
    Split,
    StoreInfo,
    StoreState,
    TransferLeader,
)
from router.placement.tokens import TokenBook

BOOTSTRAP_EPOCH = Epoch(conf_ver=1, version=1)
# A leader-addressed operation is handed out again after this long without completing (the
# heartbeat response may have been lost); CreateReplica goes out on every heartbeat.
DEFAULT_REDELIVER_MS = 10_000
# A leader-addressed operation still pending after this long is dropped; the scheduler (or
# the admin) decides again from fresh state.
DEFAULT_OPERATION_TTL_MS = 120_000


class PlacementTable:
    def __init__(
        self,
        *,
        redeliver_ms: int = DEFAULT_REDELIVER_MS,
        operation_ttl_ms: int = DEFAULT_OPERATION_TTL_MS,
    ) -> None:
        self.redeliver_ms = redeliver_ms
        self.operation_ttl_ms = operation_ttl_ms
        self.stores: dict[int, StoreInfo] = {}
        self.partitions: dict[int, PartitionInfo] = {}
        self.operations: dict[int, PendingOperation] = {}
        # Deliveries recorded before this instant are not trusted: the placement leader sets it
        # when it takes over, since the old leader may have died before its heartbeat response
        # (or its push) reached the node. Leader-local, like the delivery marks themselves
        # (never checkpointed, see codec.py): it only decides when an operation is handed out
        # again, never what the table holds.
        self.deliveries_valid_from_ms = 0
        # Id allocators: the next id to hand out. Every id ever used is below them, so ids are
        # never reused, even for stores, partitions or replicas that are gone.
        self.next_store_id = 1
        self.next_partition_id = 1
        self.next_replica_id = 1
        self.next_operation_id = 1
        self.bootstrapped = False
        # Bearer tokens (docs/auth.md): changed only by CreateToken and RevokeToken.
        self.tokens = TokenBook()
        # Lookup index by range start (rebuilt when a range changes, which is rare).
        self._starts: list[bytes] = []
        self._start_ids: list[int] = []

    # -- convenience mutators (each is one command) ---------------------------------------

    def register_store(self, address: str, store_id: int = 0, now_ms: int = 0) -> int:
        return self.apply(RegisterStore(address=address, store_id=store_id, now_ms=now_ms)).store_id

    def heartbeat(
        self,
        store_id: int,
        address: str,
        reports: Iterable[PartitionReport] = (),
        now_ms: int = 0,
        capacity_bytes: int = 0,
        used_bytes: int = 0,
    ) -> Applied:
        return self.apply(
            StoreHeartbeat(
                store_id=store_id,
                address=address,
                now_ms=now_ms,
                reports=tuple(reports),
                capacity_bytes=capacity_bytes,
                used_bytes=used_bytes,
            )
        )

    def record_leader(self, partition_id: int, store_id: int, term: int, epoch: Epoch | None = None) -> bool:
        return bool(self.apply(RecordLeader(partition_id, store_id, term, epoch)).partition_ids)

    def update_descriptor(self, descriptor: Descriptor) -> bool:
        return bool(self.apply(UpdateDescriptor(descriptor)).partition_ids)

    def bootstrap(self, n_partitions: int, replicas: int, store_ids: Iterable[int], now_ms: int = 0) -> list[int]:
        cmd = Bootstrap(n_partitions=n_partitions, replicas=replicas, store_ids=tuple(store_ids), now_ms=now_ms)
        return list(self.apply(cmd).partition_ids)

    def submit(self, partition_id: int, action: Action, epoch: Epoch | None = None, now_ms: int = 0) -> int:
        return self.apply(SubmitOperation(partition_id, action, epoch, now_ms)).operation_id

    def set_store_state(self, store_id: int, state: StoreState) -> StoreInfo:
        self.apply(SetStoreState(store_id, state))
        return self.stores[store_id]

    # -- the state machine ----------------------------------------------------------------

    def apply(self, cmd: Command) -> Applied:
        match cmd:
            case RegisterStore():
                return self._apply_register(cmd)
            case StoreHeartbeat():
                return self._apply_heartbeat(cmd)
            case RecordLeader():
                return self._apply_record_leader(cmd)
            case UpdateDescriptor():
                changed = self._update_descriptor(cmd.descriptor)
                return Applied(durable=changed, dirty=changed, partition_ids=(cmd.descriptor.id,) if changed else ())
            case Bootstrap():
                return self._apply_bootstrap(cmd)
            case SubmitOperation():
                return self._apply_submit(cmd)
            case SetStoreState():
                return self._apply_set_store_state(cmd)
            case CreateToken() | RevokeToken():
                return self.tokens.apply(cmd)
        raise TypeError(f"not a placement command: {cmd!r}")

    def _apply_register(self, cmd: RegisterStore) -> Applied:
        if not cmd.address:
            raise PlacementError("address", "a store must say where it listens (host:port)")
        if cmd.store_id < 0:
            raise PlacementError("store_id", f"must be >= 0, got {cmd.store_id}")
        existing = self.stores.get(cmd.store_id) if cmd.store_id else None
        if existing is not None:
            moved = existing.address != cmd.address or existing.zone != cmd.zone
            existing.address = cmd.address
            existing.zone = cmd.zone
            existing.last_heartbeat_ms = max(existing.last_heartbeat_ms, cmd.now_ms)
            return Applied(durable=moved, dirty=True, store_id=existing.id)
        if cmd.store_id:
            # A store that persisted an id this table never issued (e.g. the router's data dir
            # was replaced): adopt it rather than split the store's identity.
            store_id = cmd.store_id
            self.next_store_id = max(self.next_store_id, store_id + 1)
        else:
            store_id = self.next_store_id
            self.next_store_id += 1
        self.stores[store_id] = StoreInfo(id=store_id, address=cmd.address, last_heartbeat_ms=cmd.now_ms,
                                          zone=cmd.zone)
        return Applied(durable=True, dirty=True, store_id=store_id)

    def _apply_heartbeat(self, cmd: StoreHeartbeat) -> Applied:
        store = self.stores.get(cmd.store_id)
        if store is None:
            raise PlacementError("store_id", f"unknown store {cmd.store_id}; register first")
        durable = False
        if cmd.address and cmd.address != store.address:
            store.address = cmd.address
            durable = True
        if cmd.zone != store.zone:
            store.zone = cmd.zone
            durable = True
        store.last_heartbeat_ms = max(store.last_heartbeat_ms, cmd.now_ms)
        store.capacity_bytes = cmd.capacity_bytes
        store.used_bytes = cmd.used_bytes
        if cmd.full or cmd.reports or cmd.gone:
            self._record_hosted(store, cmd)

        changed: list[int] = []
        for report in cmd.reports:
            known = self.partitions.get(report.partition_id)
            range_before = (known.descriptor.start, known.descriptor.end) if known is not None else None
            if (
                report.leader
                and report.descriptor is not None
                and report.descriptor.id == report.partition_id
                and self._update_descriptor(report.descriptor)
            ):
                durable = True
                changed.append(report.partition_id)
            info = self.partitions.get(report.partition_id)
            if info is None:
                continue
            if report.leader and report.term and self._record_leader(info, store.id, report.term):
                changed.append(info.id)
            mine = info.descriptor.replica_on(store.id)
            if mine is not None:
                info.progress.setdefault(mine.replica_id, ReplicaProgress()).applied = report.applied
            if report.leader:
                # A report that brings a split may have measured before the split applied:
                # the size is unknown until the next one.
                resized = range_before not in (None, (info.descriptor.start, info.descriptor.end))
                info.size_bytes = 0 if resized else report.size_bytes
                info.load = report.load
                for member in report.progress:
                    if info.descriptor.replica_by_id(member.replica_id) is not None:
                        info.progress.setdefault(member.replica_id, ReplicaProgress()).match = member.match

        if self._settle_operations(cmd.now_ms):
            durable = True
        if self._create_skipped_split_halves(store, cmd.reports, cmd.now_ms):
            durable = True
        return Applied(
            durable=durable,
            dirty=True,
            store_id=store.id,
            partition_ids=tuple(dict.fromkeys(changed)),
            operations=self._deliver(store, cmd.now_ms) + self._garbage(store),
        )

    @staticmethod
    def _record_hosted(store: StoreInfo, cmd: StoreHeartbeat) -> None:
        """What the store hosts and leads: replaced by a full report, patched by a delta."""
        if cmd.full:
            replicas: dict[int, int] = {}
            conf_vers: dict[int, int] = {}
            leading: set[int] = set()
        else:
            replicas, conf_vers, leading = dict(store.hosted_replicas), dict(store.hosted_conf_vers), set(store.leading)
            for pid in cmd.gone:
                replicas.pop(pid, None)
                conf_vers.pop(pid, None)
                leading.discard(pid)
        for r in cmd.reports:
            replicas[r.partition_id] = r.replica_id
            if r.epoch is not None:
                conf_vers[r.partition_id] = r.epoch.conf_ver
            else:
                conf_vers.pop(r.partition_id, None)
            if r.leader:
                leading.add(r.partition_id)
            else:
                leading.discard(r.partition_id)
        store.hosted_replicas, store.hosted_conf_vers = replicas, conf_vers
        store.hosted, store.leading = frozenset(replicas), frozenset(leading)
        store.replica_count, store.leader_count = len(replicas), len(leading)

    def _garbage(self, store: StoreInfo) -> tuple[PendingOperation, ...]:
        """DestroyReplica for every replica the store hosts that the group has since removed.

        A replica cut off while the group removed it never applies its own removal; it
        would campaign forever (harmlessly, PreVote stops it) and block a new replica of
        the partition on that store.  The store checks the same conditions before deleting.
        Every hosted replica is looked at, not only the ones this heartbeat reports: a
        stale replica does not change, so a heartbeat of changes would never mention it.
        """
        out = []
        for pid, replica_id in store.hosted_replicas.items():
            info = self.partitions.get(pid)
            conf_ver = store.hosted_conf_vers.get(pid)
            if info is None or not replica_id or conf_ver is None:
                continue
            desc = info.descriptor
            if conf_ver < desc.epoch.conf_ver and desc.replica_by_id(replica_id) is None:
                action = DestroyReplica(store.id, replica_id, desc)
                out.append(PendingOperation(0, desc.id, desc.epoch, action, created_ms=0))
        return tuple(out)

    def _apply_record_leader(self, cmd: RecordLeader) -> Applied:
        info = self.partitions.get(cmd.partition_id)
        if info is None:
            raise PlacementError("partition_id", f"unknown partition {cmd.partition_id}")
        if cmd.store_id not in self.stores:
            raise PlacementError("leader_store_id", f"unknown store {cmd.store_id}")
        if cmd.term <= 0:
            raise PlacementError("term", "a leader is always elected in a term >= 1")
        if not self._record_leader(info, cmd.store_id, cmd.term):
            return Applied()
        self._settle_operations_for(info)
        return Applied(dirty=True, partition_ids=(info.id,))

    def _apply_bootstrap(self, cmd: Bootstrap) -> Applied:
        if self.bootstrapped or self.partitions:
            raise PlacementError("partitions", "the cluster is already bootstrapped")
        if cmd.replicas < 1:
            raise PlacementError("replicas", f"must be >= 1, got {cmd.replicas}")
        if not 1 <= cmd.n_partitions <= keyspace.MAX_PRESPLIT:
            raise PlacementError("partitions", f"must be in [1, {keyspace.MAX_PRESPLIT}], got {cmd.n_partitions}")
        stores = list(dict.fromkeys(cmd.store_ids))
        if len(stores) < cmd.replicas:
            raise PlacementError("store_ids", f"{cmd.replicas} replicas need {cmd.replicas} stores, got {len(stores)}")
        for sid in stores:
            s = self.stores.get(sid)
            if s is None or s.state != StoreState.UP:
                raise PlacementError("store_ids", f"store {sid} is unknown or not up")
        created = []
        load = dict.fromkeys(stores, 0)
        for i, (start, end) in enumerate(keyspace.even_ranges(cmd.n_partitions)):
            pid = self._alloc_partition_id()
            chosen = self._spread(stores[i % len(stores):] + stores[:i % len(stores)], cmd.replicas, load)
            for sid in chosen:
                load[sid] += 1
            replicas = tuple(ReplicaDesc(sid, self._alloc_replica_id(), Role.VOTER) for sid in chosen)
            desc = Descriptor(id=pid, start=start, end=end, epoch=BOOTSTRAP_EPOCH, replicas=replicas)
            self.partitions[pid] = PartitionInfo(descriptor=desc)
            for rep in replicas:
                self._queue(pid, BOOTSTRAP_EPOCH, CreateReplica(rep.store_id, rep.replica_id, True, desc), cmd.now_ms)
            created.append(pid)
        self.bootstrapped = True
        self._reindex()
        return Applied(durable=True, dirty=True, partition_ids=tuple(created))

    def _spread(self, ordered: list[int], n: int, load: dict[int, int]) -> list[int]:
        """``n`` stores of ``ordered``, each failure domain once before any twice, the least
        loaded first (ties in ``ordered``'s order: round-robin over the stores when none has a
        zone, as before zones existed; docs/decisions.md D20)."""
        chosen: list[int] = []
        seen: set[str] = set()
        rank = {sid: k for k, sid in enumerate(ordered)}
        while len(chosen) < n:
            left = [sid for sid in ordered if sid not in chosen]
            fresh = [sid for sid in left if self.stores[sid].zone_key not in seen] or left
            pick = min(fresh, key=lambda sid: (load[sid], rank[sid]))
            chosen.append(pick)
            seen.add(self.stores[pick].zone_key)
        return chosen

    def _apply_submit(self, cmd: SubmitOperation) -> Applied:
        info = self.partitions.get(cmd.partition_id)
        if info is None:
            raise PlacementError("operation.partition_id", f"unknown partition {cmd.partition_id}")
        desc = info.descriptor
        if cmd.epoch is not None and not cmd.epoch.is_zero and cmd.epoch != desc.epoch:
            raise PlacementError(
                "operation.epoch",
                f"partition {desc.id} is at epoch ({desc.epoch.conf_ver}, {desc.epoch.version}), "
                f"not ({cmd.epoch.conf_ver}, {cmd.epoch.version})",
            )
        action = cmd.action
        extra: list[Action] = []
        match action:
            case TransferLeader(to_store_id=to):
                self._require_store(to, "operation.transfer_leader.to_store_id", accepting=False)
                rep = desc.replica_on(to)
                if rep is None or rep.role != Role.VOTER:
                    raise PlacementError(
                        "operation.transfer_leader.to_store_id",
                        f"store {to} holds no voter of partition {desc.id}",
                    )
            case AddReplica(replica=rep):
                self._require_store(rep.store_id, "operation.add_replica.replica.store_id", accepting=True)
                if desc.replica_on(rep.store_id) is not None:
                    raise PlacementError(
                        "operation.add_replica.replica.store_id",
                        f"store {rep.store_id} already holds a replica of partition {desc.id}",
                    )
                self._check_fresh_id(rep.replica_id, self.next_replica_id, "operation.add_replica.replica.replica_id")
                # New replicas join as learners; placement promotes them once caught up.
                rid = rep.replica_id or self.next_replica_id
                action = AddReplica(ReplicaDesc(rep.store_id, rid, Role.LEARNER))
                grown = dataclasses.replace(desc, replicas=(*desc.replicas, action.replica))
                extra.append(CreateReplica(rep.store_id, rid, False, grown))
            case RemoveReplica(replica=rep):
                current = desc.replica_on(rep.store_id)
                if current is None:
                    raise PlacementError(
                        "operation.remove_replica.replica.store_id",
                        f"store {rep.store_id} holds no replica of partition {desc.id}",
                    )
                if rep.replica_id and rep.replica_id != current.replica_id:
                    raise PlacementError(
                        "operation.remove_replica.replica.replica_id",
                        f"the replica on store {rep.store_id} is {current.replica_id}, not {rep.replica_id}",
                    )
                voters = [r for r in desc.replicas if r.role == Role.VOTER]
                if current.role == Role.VOTER and len(voters) <= 1:
                    raise PlacementError(
                        "operation.remove_replica.replica.store_id",
                        f"store {rep.store_id} holds the last voter of partition {desc.id}",
                    )
                action = RemoveReplica(current)
            case Split(split_key=key, new_partition_id=new_pid, new_replica_ids=new_rids):
                if key and not keyspace.strictly_inside(desc.start, desc.end, key):
                    raise PlacementError(
                        "operation.split.split_key",
                        f"{key!r} is not strictly inside partition {desc.id}'s range "
                        f"[{desc.start!r}, {desc.end!r})",
                    )
                if len(key) > keyspace.MAX_SPLIT_KEY_BYTES:
                    raise PlacementError(
                        "operation.split.split_key",
                        f"a split key is at most {keyspace.MAX_SPLIT_KEY_BYTES} bytes, got {len(key)}",
                    )
                same = self._split_in_flight(desc.id, key)
                if same is not None:
                    # The same split asked again (a retry after a placement failover): it is
                    # already queued, and queuing it twice could not split twice anyway.
                    return Applied(operation_id=same)
                self._check_fresh_id(new_pid, self.next_partition_id, "operation.split.new_partition_id")
                if new_rids and len(new_rids) != len(desc.replicas):
                    raise PlacementError(
                        "operation.split.new_replica_ids",
                        f"need one id per replica ({len(desc.replicas)}), got {len(new_rids)}",
                    )
                floor = self.next_replica_id
                for rid in new_rids:
                    self._check_fresh_id(rid, floor, "operation.split.new_replica_ids")
                if len(set(new_rids)) != len(new_rids):
                    raise PlacementError("operation.split.new_replica_ids", "ids must be distinct")
            case CreateReplica():
                raise PlacementError("operation.create_replica", "issued by placement itself, not submittable")
            case _:
                raise PlacementError("operation.kind", "no operation kind set")

        busy = self._leader_operation(desc.id)
        if busy is not None and (isinstance(action, Split) or isinstance(busy.action, Split)):
            raise PlacementError(
                "operation.partition_id",
                f"partition {desc.id} has an operation in flight (operation {busy.id}: "
                f"{type(busy.action).__name__}); try again once it is done",
            )

        # Validation done: mutate.
        match action:
            case AddReplica(replica=rep):
                self.next_replica_id = max(self.next_replica_id, rep.replica_id + 1)
            case Split(split_key=key, new_partition_id=new_pid, new_replica_ids=new_rids):
                new_pid = new_pid or self._alloc_partition_id()
                self.next_partition_id = max(self.next_partition_id, new_pid + 1)
                if new_rids:
                    self.next_replica_id = max(self.next_replica_id, max(new_rids) + 1)
                else:
                    new_rids = tuple(self._alloc_replica_id() for _ in desc.replicas)
                action = Split(key, new_pid, tuple(new_rids))
        op_id = self._queue(desc.id, desc.epoch, action, cmd.now_ms)
        for more in extra:
            self._queue(desc.id, desc.epoch, more, cmd.now_ms)
        if cmd.by_admin:
            info.steered_ms = cmd.now_ms
        return Applied(durable=True, dirty=True, operation_id=op_id)

    def _apply_set_store_state(self, cmd: SetStoreState) -> Applied:
        store = self.stores.get(cmd.store_id)
        if store is None:
            raise PlacementError("store_id", f"unknown store {cmd.store_id}")
        if cmd.state not in (StoreState.UP, StoreState.DRAINING, StoreState.REMOVED):
            raise PlacementError("state", "only UP, DRAINING or REMOVED can be set (DOWN follows from heartbeats)")
        if store.state == StoreState.REMOVED and cmd.state != StoreState.REMOVED:
            raise PlacementError("state", f"store {store.id} is removed; a removed store never comes back")
        if store.state == cmd.state:
            return Applied(store_id=store.id)
        if cmd.state == StoreState.REMOVED:
            held = sorted(p.id for p in self.partitions.values() if p.descriptor.replica_on(store.id) is not None)
            if held:
                shown = ", ".join(map(str, held[:10])) + (", ..." if len(held) > 10 else "")
                raise PlacementError(
                    "store_id",
                    f"store {store.id} still holds {len(held)} replica(s) (partitions {shown}); "
                    "drain it first (tessera admin drain)",
                )
        store.state = cmd.state
        if cmd.state == StoreState.REMOVED:
            for op_id, op in list(self.operations.items()):
                if isinstance(op.action, CreateReplica) and op.action.store_id == store.id:
                    del self.operations[op_id]
        return Applied(durable=True, dirty=True, store_id=store.id)

    # -- splits (docs/decisions.md D21) ------------------------------------------------------

    def _leader_operation(self, partition_id: int) -> PendingOperation | None:
        """The leader-addressed operation in flight on a partition, if any."""
        for op in self.operations.values():
            if op.partition_id == partition_id and not isinstance(op.action, (CreateReplica, DestroyReplica)):
                return op
        return None

    def _split_in_flight(self, partition_id: int, key: bytes) -> int | None:
        """The id of a queued split of the partition at ``key`` (any key, for an empty one)."""
        op = self._leader_operation(partition_id)
        if op is None or not isinstance(op.action, Split):
            return None
        return op.id if not key or op.action.split_key == key else None

    def _record_split(self, old: Descriptor, left: Descriptor) -> None:
        """The parent's leader reported its shrunk descriptor: the queued split was applied.

        Add the new right half at once, as every replica created it (the split's ids, the
        parent's stores, the parent's new epoch), so the map never has a gap while the new
        partition elects its leader; that leader's own reports take over from here.
        """
        if not (left.id == old.id and left.start == old.start and keyspace.end_after(old.end, left.end)):
            return
        for op in self.operations.values():
            action = op.action
            if op.partition_id != old.id or not isinstance(action, Split) or op.epoch != old.epoch:
                continue
            if action.new_partition_id in self.partitions or len(action.new_replica_ids) != len(old.replicas):
                return
            child = Descriptor(
                id=action.new_partition_id,
                start=left.end,
                end=old.end,
                epoch=left.epoch,
                replicas=tuple(
                    ReplicaDesc(r.store_id, rid, Role.VOTER) for r, rid in zip(old.replicas, action.new_replica_ids)
                ),
            )
            if any(
                p.id != old.id and keyspace.overlaps(p.descriptor.start, p.descriptor.end, child.start, child.end)
                for p in self.partitions.values()
            ):
                return
            parent = self.partitions[old.id]
            # The new partition's replica on the parent leader's store campaigns first.
            self.partitions[child.id] = PartitionInfo(descriptor=child, leader_store_id=parent.leader_store_id)
            self.next_partition_id = max(self.next_partition_id, child.id + 1)
            for r in child.replicas:
                self.next_replica_id = max(self.next_replica_id, r.replica_id + 1)
            return

    def _create_skipped_split_halves(
        self, store: StoreInfo, reports: tuple[PartitionReport, ...], now_ms: int
    ) -> bool:
        """A replica that was behind when its partition split, and caught up from a snapshot
        taken after the split, never applied it: its store hosts the left half but not the
        right one, which lacks a member.  Seen when the store reports its left half at the
        right half's range version or later (so it no longer writes into the right half's
        range) and does not host the right half: queue a CreateReplica (filled by the right
        half's leader with a snapshot).  A store that did apply the split reports its left
        half a moment before it opens the right half; the CreateReplica it may get then is
        ignored (node.replica_set) and done at its next heartbeat."""
        queued = False
        for report in reports:  # only the left halves this heartbeat reports (changed ones)
            left = self.partitions.get(report.partition_id)
            if report.epoch is None or left is None or not left.descriptor.end:
                continue
            right = self.locate(left.descriptor.end)
            if right is None or right.id == left.id or right.descriptor.epoch.version <= BOOTSTRAP_EPOCH.version:
                continue  # (a pre-split partition was never created by a split)
            desc = right.descriptor
            mine = desc.replica_on(store.id)
            if mine is None or desc.id in store.hosted or report.epoch.version < desc.epoch.version:
                continue  # hosted, or not past the split yet: it will create the right half itself
            if any(
                op.partition_id == desc.id and isinstance(op.action, CreateReplica) and op.action.store_id == store.id
                for op in self.operations.values()
            ):
                continue
            self._queue(desc.id, desc.epoch, CreateReplica(store.id, mine.replica_id, False, desc), now_ms)
            queued = True
        return queued

    # -- internals --------------------------------------------------------------------------

    def _record_leader(self, info: PartitionInfo, store_id: int, term: int) -> bool:
        """Higher term wins; at an equal term a known leader stays (one leader per term)."""
        if term > info.term or (term == info.term and info.leader_store_id == 0):
            changed = (info.leader_store_id, info.term) != (store_id, term)
            info.leader_store_id = store_id
            info.term = term
            return changed
        return False

    def _update_descriptor(self, desc: Descriptor) -> bool:
        """Accept a descriptor if its epoch is newer than ours and it only overlaps partitions
        with an older range version (which it then trims or replaces: a split child reported
        before its shrunk parent, or a merge)."""
        if desc.end and desc.start >= desc.end:
            return False
        current = self.partitions.get(desc.id)
        if current is not None and not desc.epoch.is_newer_than(current.descriptor.epoch):
            return False
        others = [
            p
            for p in self.partitions.values()
            if p.id != desc.id and keyspace.overlaps(p.descriptor.start, p.descriptor.end, desc.start, desc.end)
        ]
        if any(p.descriptor.epoch.version >= desc.epoch.version for p in others):
            return False
        for p in others:
            self._trim(p, desc)
        if current is None:
            current = self.partitions[desc.id] = PartitionInfo(descriptor=desc)
        else:
            self._record_split(current.descriptor, desc)
            current.descriptor = desc
            members = {r.replica_id for r in desc.replicas}
            current.progress = {rid: pr for rid, pr in current.progress.items() if rid in members}
            if current.leader_store_id and desc.replica_on(current.leader_store_id) is None:
                current.leader_store_id = 0
        self.next_partition_id = max(self.next_partition_id, desc.id + 1)
        for r in desc.replicas:
            self.next_replica_id = max(self.next_replica_id, r.replica_id + 1)
        self._reindex()
        self._settle_operations_for(current)
        return True

    def _trim(self, stale: PartitionInfo, newer: Descriptor) -> None:
        """Cut ``newer``'s range out of a stale partition's range (placement's view only; the
        stale partition's own report will bring its real descriptor)."""
        d = stale.descriptor
        covers_left = newer.start <= d.start
        covers_right = not keyspace.end_after(d.end, newer.end)
        if covers_left and covers_right:
            del self.partitions[d.id]
            for op_id, op in list(self.operations.items()):
                if op.partition_id == d.id:
                    del self.operations[op_id]
        elif covers_left:
            stale.descriptor = dataclasses.replace(d, start=newer.end)
        else:
            # Covers the right part, or sits strictly inside (keep the left piece; the right
            # piece's owner will report it).
            stale.descriptor = dataclasses.replace(d, end=newer.start)

    def _settle_operations(self, now_ms: int) -> bool:
        """Drop operations that are done, superseded or expired; True if any went."""
        gone = []
        for op in self.operations.values():
            info = self.partitions.get(op.partition_id)
            if info is None or self._operation_done(op, info):
                gone.append(op.id)
                continue
            bootstrap = isinstance(op.action, CreateReplica) and op.action.bootstrap
            if not bootstrap and now_ms - op.created_ms > self.operation_ttl_ms:
                gone.append(op.id)
        for op_id in gone:
            del self.operations[op_id]
        return bool(gone)

    def _settle_operations_for(self, info: PartitionInfo) -> None:
        for op_id, op in list(self.operations.items()):
            if op.partition_id == info.id and self._operation_done(op, info):
                del self.operations[op_id]

    def _operation_done(self, op: PendingOperation, info: PartitionInfo) -> bool:
        action = op.action
        if isinstance(action, CreateReplica):
            store = self.stores.get(action.store_id)
            if store is None or store.state == StoreState.REMOVED:
                return True
            # Hosting an older replica of the partition (removed, awaiting collection) is not done.
            return info.id in store.hosted and store.hosted_replicas.get(info.id, 0) in (0, action.replica_id)
        if info.descriptor.epoch != op.epoch:
            return True  # applied (the epoch moved because of it) or superseded
        if isinstance(action, TransferLeader):
            return info.leader_store_id == action.to_store_id
        return False

    def _deliver(self, store: StoreInfo, now_ms: int) -> tuple[PendingOperation, ...]:
        if store.state == StoreState.REMOVED:
            return ()
        out = []
        for op in self.operations.values():
            if self._due(op, now_ms) == store.id:
                op.last_sent_ms = now_ms
                op.last_sent_to = store.id
                out.append(dataclasses.replace(op))
        return tuple(out)

    def _due(self, op: PendingOperation, now_ms: int) -> int:
        """The store whose next heartbeat response should carry ``op`` now (0: none)."""
        info = self.partitions.get(op.partition_id)
        target = op.target_store(info.leader_store_id if info else 0)
        if not target:
            return 0
        if (
            isinstance(op.action, CreateReplica)
            or op.last_sent_ms == 0
            or op.last_sent_ms < self.deliveries_valid_from_ms
            or op.last_sent_to != target
            or now_ms - op.last_sent_ms >= self.redeliver_ms
        ):
            return target
        return 0

    def stores_with_operations_due(self, now_ms: int) -> set[int]:
        """The stores a heartbeat now would hand operations to (who should heartbeat at once)."""
        due = {self._due(op, now_ms) for op in self.operations.values()}
        due.discard(0)
        return {s for s in due if s in self.stores and self.stores[s].state != StoreState.REMOVED}

    def _queue(self, partition_id: int, epoch: Epoch, action: Action, now_ms: int) -> int:
        op_id = self.next_operation_id
        self.next_operation_id += 1
        self.operations[op_id] = PendingOperation(op_id, partition_id, epoch, action, created_ms=now_ms)
        return op_id

    def _require_store(self, store_id: int, field: str, *, accepting: bool) -> StoreInfo:
        store = self.stores.get(store_id)
        if store is None:
            raise PlacementError(field, f"unknown store {store_id}")
        if store.state == StoreState.REMOVED or (accepting and store.state == StoreState.DRAINING):
            raise PlacementError(field, f"store {store_id} is {store.state.name.lower()} and takes no new replicas")
        return store

    @staticmethod
    def _check_fresh_id(given: int, floor: int, field: str) -> None:
        """A caller-chosen id must be one the allocator never handed out (0 = allocate)."""
        if given and given < floor:
            raise PlacementError(field, f"id {given} may already be in use; leave it 0 or use >= {floor}")

    def _alloc_partition_id(self) -> int:
        pid = self.next_partition_id
        self.next_partition_id += 1
        return pid

    def _alloc_replica_id(self) -> int:
        rid = self.next_replica_id
        self.next_replica_id += 1
        return rid

    def _reindex(self) -> None:
        ordered = sorted(self.partitions.values(), key=lambda p: p.descriptor.start)
        self._starts = [p.descriptor.start for p in ordered]
        self._start_ids = [p.id for p in ordered]

    # -- queries ----------------------------------------------------------------------------

    def locate(self, key: bytes) -> PartitionInfo | None:
        """The partition whose range holds ``key``; None in a gap (mid-split) or before
        bootstrap."""
        i = bisect.bisect_right(self._starts, key) - 1
        if i < 0:
            return None
        info = self.partitions[self._start_ids[i]]
        return info if info.descriptor.contains(key) else None

    def scan(self, start: bytes = b"", end: bytes = b"", limit: int = 0) -> list[PartitionInfo]:
        """Partitions overlapping [start, end), in key order."""
        i = max(0, bisect.bisect_right(self._starts, start) - 1)
        out = []
        for pid in self._start_ids[i:]:
            d = self.partitions[pid].descriptor
            if end and d.start >= end:
                break
            if keyspace.overlaps(d.start, d.end, start, end):
                out.append(self.partitions[pid])
                if limit and len(out) >= limit:
                    break
        return out

    def effective_state(self, store: StoreInfo, now_ms: int, down_after_ms: int) -> StoreState:
        """REMOVED sticks; otherwise a store silent for longer than ``down_after_ms`` is DOWN;
        otherwise its administrative state (UP or DRAINING)."""
        if store.state == StoreState.REMOVED:
            return StoreState.REMOVED
        if now_ms - store.last_heartbeat_ms > down_after_ms:
            return StoreState.DOWN
        return store.state

    def up_stores(self, now_ms: int, down_after_ms: int) -> list[int]:
        return sorted(
            s.id for s in self.stores.values() if self.effective_state(s, now_ms, down_after_ms) == StoreState.UP
        )

    def split_candidates(self, split_size: int) -> list[int]:
        """Partitions whose leader reported more than ``split_size`` bytes and that have no
        operation in flight: the size-based splits to queue (docs/decisions.md D21)."""
        busy = {op.partition_id for op in self.operations.values() if not isinstance(op.action, DestroyReplica)}
        return sorted(
            p.id for p in self.partitions.values() if split_size > 0 and p.size_bytes > split_size and p.id not in busy
        )

    def pending_operations(self, partition_id: int | None = None) -> list[PendingOperation]:
        return [op for op in self.operations.values() if partition_id is None or op.partition_id == partition_id]

    def rebuild_index(self) -> None:
        """For codec.py after loading partitions."""
        self._reindex()
