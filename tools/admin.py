"""``tessera admin``: see the cluster and steer it, through the placement service.

Every command talks to the router's Meta service (any router of the list: a follower's
not-leader answer is followed to the leader) and prints either aligned tables for people or,
with ``--json``, the shapes of docs/cli.md for scripts. Keys and ranges in JSON are strings
when they are printable UTF-8, else ``{"hex": "..."}``.

Commands that change something submit one placement operation and, unless ``--no-wait``,
wait until placement sees it done (the leader moved, the new replica votes, the old one is
gone), saying how long it took. A refused operation (an unknown partition or store, a
transfer to a store without a voter, removing the last voter) exits 1 naming why, and
changes nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from common import auth
from common import tls as tls_mod
from common.routers import parse_router_addresses
from common.wire.errors import leader_hint
from router.client.channels import ChannelPool
from router.client.errors import RpcFailure, failure_from_rpc_error
from router.client.meta import GrpcMeta
from tesserapb import meta_pb2, meta_pb2_grpc
from tools.admin_tokens import cmd_token

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2
POLL_S = 0.05
RPC_TIMEOUT_S = 5.0
ELECTION_WAIT_S = 5.0  # how long a call waits for the placement group to have a leader

_STATE = {
    meta_pb2.STORE_UP: "up",
    meta_pb2.STORE_DOWN: "down",
    meta_pb2.STORE_DRAINING: "draining",
    meta_pb2.STORE_REMOVED: "removed",
}
# The contract has two roles; a voter mid-way through a joint change still votes.
_ROLE = {
    meta_pb2.VOTER: "voter",
    meta_pb2.INCOMING_VOTER: "voter",
    meta_pb2.DEMOTING_VOTER: "voter",
    meta_pb2.LEARNER: "learner",
}


class Refused(Exception):
    """The placement service said no, or the thing asked about does not exist."""


def key_json(key: bytes) -> str | dict[str, str]:
    """A key for JSON: the text when it is printable UTF-8, else ``{"hex": ...}``."""
    try:
        text = key.decode("utf-8")
    except UnicodeDecodeError:
        return {"hex": key.hex()}
    return text if text.isprintable() else {"hex": key.hex()}


def key_text(key: bytes) -> str:
    """A key for a table: as it reads when printable UTF-8, else 0x-hex."""
    shown = key_json(key)
    return shown if isinstance(shown, str) else "0x" + shown["hex"]


def range_text(start: bytes, end: bytes) -> str:
    return f"[{key_text(start) if start else '-inf'}, {key_text(end) if end else '+inf'})"


# -- the JSON shapes (docs/cli.md) ---------------------------------------------------------------


def store_json(s: meta_pb2.Store) -> dict[str, Any]:
    return {
        "id": s.id,
        "address": s.address,
        "zone": s.zone or None,  # null: the node gave no --zone
        "state": _STATE.get(s.state, "unknown"),
        "replicas": s.replica_count,
        "leaders": s.leader_count,
    }


def partition_json(d: meta_pb2.PartitionDescriptor, status: meta_pb2.PartitionStatus | None) -> dict[str, Any]:
    progress = {r.replica_id: r for r in status.replicas} if status is not None else {}
    replicas = []
    for r in d.replicas:
        p = progress.get(r.replica_id)
        replicas.append({
            "store": r.store_id,
            "role": _ROLE.get(r.role, "learner"),
            "match": p.match if p else 0,
            "applied": p.applied if p else 0,
        })
    return {
        "id": d.id,
        "start": key_json(d.start),
        "end": key_json(d.end),
        "epoch": {"conf_ver": d.epoch.conf_ver, "version": d.epoch.version},
        "leader": d.leader_store_id or None,
        "term": d.term,
        "size_bytes": status.size_bytes if status is not None else 0,
        "replicas": replicas,
    }


# -- tables for people -------------------------------------------------------------------------


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Columns padded to their widest cell; the last column is not padded."""
    cells = [list(map(str, header))] + [list(map(str, r)) for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = []
    for row in cells:
        padded = [c.ljust(w) for c, w in zip(row[:-1], widths[:-1])] + [row[-1]]
        lines.append("  ".join(padded).rstrip())
    return "\n".join(lines)


def stores_table(stores: Sequence[dict[str, Any]], now_ms: int, heartbeats: dict[int, int]) -> str:
    rows = []
    for s in stores:
        seen = heartbeats.get(s["id"], 0)
        ago = f"{(now_ms - seen) / 1000:.1f}s ago" if seen else "never"
        rows.append((s["id"], s["address"], s["zone"] or "-", s["state"], s["replicas"], s["leaders"], ago))
    return table(("STORE", "ADDRESS", "ZONE", "STATE", "REPLICAS", "LEADERS", "HEARTBEAT"), rows)


def partitions_table(parts: Sequence[tuple[meta_pb2.PartitionDescriptor, dict[str, Any]]]) -> str:
    rows = []
    for d, p in parts:
        top = max((r["match"] for r in p["replicas"]), default=0)
        members = " ".join(
            f"{r['store']}:{r['role'][0]}{'*' if r['store'] == p['leader'] else ''}"
            f"({r['match']}/{r['applied']}, lag {top - r['match']})"
            for r in p["replicas"]
        )
        epoch = f"{p['epoch']['conf_ver']}.{p['epoch']['version']}"
        leader = p["leader"] or "-"
        rows.append((p["id"], range_text(d.start, d.end), epoch, leader, p["term"], p["size_bytes"], members))
    header = ("ID", "RANGE", "EPOCH", "LEADER", "TERM", "SIZE", "REPLICAS store:role(match/applied, lag)")
    return table(header, rows)


# -- talking to placement ------------------------------------------------------------------------


@dataclass
class Admin:
    meta: GrpcMeta
    pool: ChannelPool
    as_json: bool

    async def call(self, method: str, request: Any) -> Any:
        # The placement group may be between leaders (an election takes about a second): a
        # router that knows no leader yet is asked again, for a while, rather than reported.
        deadline = asyncio.get_running_loop().time() + ELECTION_WAIT_S
        while True:
            try:
                return await self.meta.call(method, request, RPC_TIMEOUT_S)
            except RpcFailure as f:
                error = f.error
                if error is not None and error.WhichOneof("kind") == "invalid_argument":
                    raise Refused(error.invalid_argument.message or f.message) from None
                electing = error is not None and error.WhichOneof("kind") == "not_leader" and not leader_hint(error)
                if not electing or asyncio.get_running_loop().time() >= deadline:
                    raise
            await asyncio.sleep(0.2)

    async def call_at(self, address: str, method: str, request: Any) -> Any:
        """One call to one router, wherever the leader is (``routers`` asks the leader itself)."""
        stub = meta_pb2_grpc.MetaStub(self.pool.get(address))
        try:
            return await getattr(stub, method)(request, timeout=RPC_TIMEOUT_S, metadata=self.pool.metadata)
        except grpc.RpcError as exc:
            raise failure_from_rpc_error(exc, address, source="router") from None

    async def stores(self) -> tuple[list[meta_pb2.Store], int]:
        resp = await self.call("GetStores", meta_pb2.GetStoresRequest())
        return list(resp.stores), int(time.time() * 1000)

    async def partitions(self) -> list[tuple[meta_pb2.PartitionDescriptor, dict[str, Any]]]:
        resp = await self.call("ScanPartitions", meta_pb2.ScanPartitionsRequest(with_status=True))
        return [(d, partition_json(d, s)) for d, s in zip(resp.partitions, resp.status)]

    async def partition(
        self, pid: int = 0, key: bytes | None = None
    ) -> tuple[meta_pb2.PartitionDescriptor, dict[str, Any]]:
        got = await self.call("GetPartition", meta_pb2.GetPartitionRequest(partition_id=pid, key=key or b""))
        d = got.partition
        # The status of just this partition: a scan that starts at its first key.
        request = meta_pb2.ScanPartitionsRequest(start=d.start, limit=1, with_status=True)
        scan = await self.call("ScanPartitions", request)
        status = next((s for s in scan.status if s.partition_id == d.id), None)
        return d, partition_json(d, status)

    async def submit(self, op: meta_pb2.Operation) -> int:
        resp = await self.call("SubmitOperation", meta_pb2.SubmitOperationRequest(operation=op))
        return int(resp.operation_id)

    async def wait_for(self, pid: int, done: Callable[[meta_pb2.PartitionDescriptor], bool], timeout: float) -> float:
        """Poll the partition until ``done`` says so; the seconds it took, or Refused on timeout."""
        started = time.monotonic()
        while True:
            got = await self.call("GetPartition", meta_pb2.GetPartitionRequest(partition_id=pid))
            if done(got.partition):
                return time.monotonic() - started
            if time.monotonic() - started > timeout:
                raise Refused(f"not done after {timeout:g}s (see `tessera admin operations`)")
            await asyncio.sleep(POLL_S)


# -- the commands --------------------------------------------------------------------------------


async def cmd_stores(admin: Admin, args: argparse.Namespace) -> int:
    stores, now_ms = await admin.stores()
    shown = [store_json(s) for s in stores]
    if admin.as_json:
        print(json.dumps(shown, indent=1))
    else:
        print(stores_table(shown, now_ms, {s.id: s.last_heartbeat_ms for s in stores}))
    return EXIT_OK


async def cmd_partitions(admin: Admin, args: argparse.Namespace) -> int:
    parts = await admin.partitions()
    if admin.as_json:
        print(json.dumps([p for _, p in parts], indent=1))
    else:
        print(partitions_table(parts))
    return EXIT_OK


async def cmd_partition(admin: Admin, args: argparse.Namespace) -> int:
    if (args.id is None) == (args.key is None):
        raise Refused("give a partition ID or --key KEY (one of them)")
    d, p = await admin.partition(args.id or 0, _arg_bytes(args.key) if args.key is not None else None)
    print(json.dumps(p, indent=1) if admin.as_json else partitions_table([(d, p)]))
    return EXIT_OK


async def _change(
    admin: Admin,
    args: argparse.Namespace,
    op: meta_pb2.Operation,
    done: Callable[[meta_pb2.PartitionDescriptor], bool],
    what: str,
) -> int:
    op_id = await admin.submit(op)
    result: dict[str, Any] = {"operation": op_id, "partition": op.partition_id, "done": False}
    if not args.no_wait:
        result["seconds"] = round(await admin.wait_for(op.partition_id, done, args.timeout), 3)
        result["done"] = True
    if admin.as_json:
        print(json.dumps(result))
    elif result["done"]:
        print(f"operation {op_id}: {what} (took {result['seconds']:.2f}s)")
    else:
        print(f"operation {op_id} queued: {what} (not waiting; see `tessera admin operations`)")
    return EXIT_OK


async def cmd_transfer_leader(admin: Admin, args: argparse.Namespace) -> int:
    op = meta_pb2.Operation(partition_id=args.id, transfer_leader=meta_pb2.TransferLeader(to_store_id=args.store))
    return await _change(admin, args, op, lambda d: d.leader_store_id == args.store,
                         f"partition {args.id} is led by store {args.store}")


def _role_on(d: meta_pb2.PartitionDescriptor, store: int) -> int | None:
    return next((r.role for r in d.replicas if r.store_id == store), None)


async def cmd_add_replica(admin: Admin, args: argparse.Namespace) -> int:
    op = meta_pb2.Operation(
        partition_id=args.id, add_replica=meta_pb2.AddReplica(replica=meta_pb2.Replica(store_id=args.store))
    )
    return await _change(admin, args, op, lambda d: _role_on(d, args.store) == meta_pb2.VOTER,
                         f"partition {args.id} has a voter on store {args.store}")


async def cmd_remove_replica(admin: Admin, args: argparse.Namespace) -> int:
    op = meta_pb2.Operation(
        partition_id=args.id, remove_replica=meta_pb2.RemoveReplica(replica=meta_pb2.Replica(store_id=args.store))
    )
    return await _change(admin, args, op, lambda d: _role_on(d, args.store) is None,
                         f"partition {args.id} has no replica on store {args.store}")


async def cmd_split(admin: Admin, args: argparse.Namespace) -> int:
    """Split partition ID at KEY (or its middle by size) and wait until both halves serve:
    the parent's range shrank and the new partition's own leader has reported (D21)."""
    before, shown = await admin.partition(args.id)
    key = _arg_bytes(args.key) if args.key is not None else b""
    where = range_text(before.start, before.end)
    if args.key is not None:
        if key == before.start:
            raise Refused(f"{key_text(key)!s} is the first key of partition {args.id} {where}: "
                          "a split there would leave the left half empty")
        if not (key > before.start and (not before.end or key < before.end)):
            raise Refused(f"{key_text(key)!s} is outside partition {args.id} {where}")
    elif not shown["size_bytes"]:
        raise Refused(f"partition {args.id} {where} reports no data (its leader reports its size every "
                      "heartbeat; just after a split it is not known yet), so it has no middle key; "
                      "give the KEY to split it at")
    op = meta_pb2.Operation(partition_id=args.id, split=meta_pb2.Split(split_key=key))
    op_id = await admin.submit(op)
    result: dict[str, Any] = {"operation": op_id, "partition": args.id, "done": False}
    if not args.no_wait:
        started = time.monotonic()
        left = None

        def shrunk(d: meta_pb2.PartitionDescriptor) -> bool:
            nonlocal left
            left = d
            return d.epoch.version > before.epoch.version

        await admin.wait_for(args.id, shrunk, args.timeout)
        assert left is not None
        if left.end == before.end:
            raise Refused(f"partition {args.id} changed its range otherwise (now {range_text(left.start, left.end)})")
        while True:  # the new half serves once its own leader reports to placement
            got = await admin.call("GetPartition", meta_pb2.GetPartitionRequest(key=left.end))
            right = got.partition
            if right.id != args.id and right.start == left.end and right.leader_store_id and right.term:
                break
            if time.monotonic() - started > args.timeout:
                raise Refused(f"partition {args.id} split at {key_text(left.end)}, but the new half has "
                              f"no leader after {args.timeout:g}s")
            await asyncio.sleep(POLL_S)
        result.update(
            done=True,
            seconds=round(time.monotonic() - started, 3),
            split_key=key_json(left.end),
            new_partition=right.id,
            left={"start": key_json(left.start), "end": key_json(left.end)},
            right={"start": key_json(right.start), "end": key_json(right.end)},
        )
    if admin.as_json:
        print(json.dumps(result))
    elif result["done"]:
        print(f"operation {op_id}: partition {args.id} split at {key_text(left.end)}: "  # type: ignore[union-attr]
              f"it keeps {range_text(left.start, left.end)}, partition {right.id} "  # type: ignore[union-attr]
              f"holds {range_text(right.start, right.end)} (took {result['seconds']:.2f}s)")
    else:
        print(f"operation {op_id} queued: split partition {args.id} "
              f"{'at ' + key_text(key) if key else 'at its middle'} (not waiting; see `tessera admin operations`)")
    return EXIT_OK


def _describe(op: meta_pb2.Operation) -> tuple[str, str]:
    kind = op.WhichOneof("kind") or "?"
    body = getattr(op, kind) if kind != "?" else None
    if isinstance(body, meta_pb2.TransferLeader):
        return kind, f"to store {body.to_store_id}"
    if isinstance(body, (meta_pb2.AddReplica, meta_pb2.RemoveReplica)):
        return kind, f"replica {body.replica.replica_id} on store {body.replica.store_id}"
    if isinstance(body, meta_pb2.Split):
        return kind, f"at {key_text(body.split_key) if body.split_key else 'the middle'}"
    if isinstance(body, (meta_pb2.CreateReplica, meta_pb2.DestroyReplica)):
        where = next((r.store_id for r in body.partition.replicas if r.replica_id == body.replica_id), 0)
        return kind, f"replica {body.replica_id} on store {where}"
    return kind, ""


async def cmd_operations(admin: Admin, args: argparse.Namespace) -> int:
    resp = await admin.call("ListOperations", meta_pb2.ListOperationsRequest())
    now = resp.now_ms
    shown = []
    for p in resp.operations:
        kind, detail = _describe(p.operation)
        shown.append({
            "id": p.operation.id,
            "partition": p.operation.partition_id,
            "kind": kind,
            "detail": detail,
            "age_s": round((now - p.created_ms) / 1000, 3),
            # queued: not yet handed to its store; sent: handed out, not yet seen done.
            "state": "sent" if p.last_sent_ms else "queued",
            "sent_to": p.last_sent_to or None,
            "sent_ago_s": round((now - p.last_sent_ms) / 1000, 3) if p.last_sent_ms else None,
        })
    if admin.as_json:
        print(json.dumps(shown, indent=1))
    else:
        rows = [
            (o["id"], o["partition"], o["kind"], o["detail"], f"{o['age_s']:.1f}s", o["state"],
             f"store {o['sent_to']}, {o['sent_ago_s']:.1f}s ago" if o["sent_to"] else "not yet")
            for o in shown
        ]
        header = ("OP", "PARTITION", "KIND", "WHAT", "AGE", "STATE", "HANDED OUT")
        print(table(header, rows) if rows else "no operations in flight")
    return EXIT_OK


def routers_json(resp: meta_pb2.GetRoutersResponse) -> dict[str, Any]:
    return {
        "leader": resp.leader or None,
        "term": resp.term,
        "served_by": resp.served_by,
        "members": [
            {"id": m.id, "address": m.address, "role": m.role, "applied": m.applied if m.HasField("applied") else None}
            for m in resp.members
        ],
    }


async def cmd_routers(admin: Admin, args: argparse.Namespace) -> int:
    """Any router answers with its own view; the leader's knows every member's progress."""
    resp = await admin.call("GetRouters", meta_pb2.GetRoutersRequest())
    leader = next((m for m in resp.members if m.id == resp.leader), None)
    if leader is not None and resp.served_by != resp.leader and leader.address:
        try:
            resp = await admin.call_at(leader.address, "GetRouters", meta_pb2.GetRoutersRequest())
        except RpcFailure:
            pass  # the leader did not answer: show what the first router knows
    shown = routers_json(resp)
    if admin.as_json:
        print(json.dumps(shown, indent=1))
    else:
        rows = [
            (m["id"], m["address"], m["role"], "?" if m["applied"] is None else m["applied"])
            for m in shown["members"]
        ]
        print(table(("ROUTER", "ADDRESS", "ROLE", "APPLIED"), rows))
        leader = shown["leader"] or "none known"
        print(f"leader: {leader}, term {shown['term']} (as router {shown['served_by']} sees it)")
    return EXIT_OK


async def _set_state(admin: Admin, store: int, state: meta_pb2.StoreState) -> meta_pb2.Store:
    resp = await admin.call("SetStoreState", meta_pb2.SetStoreStateRequest(store_id=store, state=state))
    return resp.store


async def _holding(admin: Admin, store: int) -> tuple[int, int]:
    """Partitions with a replica on ``store``, and those it leads."""
    resp = await admin.call("ScanPartitions", meta_pb2.ScanPartitionsRequest())
    held = [d for d in resp.partitions if any(r.store_id == store for r in d.replicas)]
    return len(held), sum(1 for d in held if d.leader_store_id == store)


async def cmd_drain(admin: Admin, args: argparse.Namespace) -> int:
    """Mark the store draining (the scheduler moves its leaders and replicas away) and wait
    until no partition has a replica on it; then it can be removed (remove-store)."""
    started = time.monotonic()
    await _set_state(admin, args.store, meta_pb2.STORE_DRAINING)
    result: dict[str, Any] = {"store": args.store, "state": "draining", "done": False}
    if not args.no_wait:
        while (left := await _holding(admin, args.store))[0]:
            if time.monotonic() - started > args.timeout:
                raise Refused(f"store {args.store} still holds {left[0]} replica(s) ({left[1]} leader(s)) after "
                              f"{args.timeout:g}s; it stays draining (see `tessera admin operations`)")
            await asyncio.sleep(POLL_S * 4)
        result["done"] = True
        result["seconds"] = round(time.monotonic() - started, 3)
    if admin.as_json:
        print(json.dumps(result))
    elif result["done"]:
        print(f"store {args.store} drained: no replicas left (took {result['seconds']:.2f}s); "
              f"`tessera admin remove-store {args.store}` removes it")
    else:
        print(f"store {args.store} is draining (not waiting; see `tessera admin stores`)")
    return EXIT_OK


async def cmd_remove_store(admin: Admin, args: argparse.Namespace) -> int:
    """Mark a store removed for good: refused while a partition still has a replica on it."""
    shown = store_json(await _set_state(admin, args.store, meta_pb2.STORE_REMOVED))
    if admin.as_json:
        print(json.dumps(shown))
    else:
        print(f"store {args.store} removed (it gets no replicas or operations again)")
    return EXIT_OK


COMMANDS: dict[str, Callable[[Admin, argparse.Namespace], Awaitable[int]]] = {
    "stores": cmd_stores,
    "partitions": cmd_partitions,
    "partition": cmd_partition,
    "transfer-leader": cmd_transfer_leader,
    "add-replica": cmd_add_replica,
    "remove-replica": cmd_remove_replica,
    "split": cmd_split,
    "operations": cmd_operations,
    "routers": cmd_routers,
    "drain": cmd_drain,
    "remove-store": cmd_remove_store,
    "token": cmd_token,
}


def _arg_bytes(text: str) -> bytes:
    return os.fsencode(text)  # undoes argv's surrogateescape: non-UTF-8 bytes survive


async def _main(args: argparse.Namespace) -> int:
    name = f"tessera {args.command_name}"
    try:
        addresses = parse_router_addresses(args.router)
    except ValueError as exc:
        print(f"{name}: bad --router {args.router!r}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        tls = tls_mod.from_args(args, os.environ)
    except tls_mod.TlsConfigError as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    token = auth.token_from(getattr(args, "token", None), os.environ)
    if token and tls is None:
        print(f"{name}: --token needs TLS: give --ca, --cert and --key (or $TESSERA_CA, $TESSERA_CERT, "
              "$TESSERA_KEY) too", file=sys.stderr)
        return EXIT_USAGE
    pool = ChannelPool(tls, token)
    try:
        admin = Admin(GrpcMeta(addresses, pool), pool, args.json)
        return await COMMANDS[args.admin_command](admin, args)
    except Refused as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except RpcFailure as f:
        if f.code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
            print(f"{name}: {auth.refusal_text(f.code.name, f.message, token is not None)}", file=sys.stderr)
            return EXIT_REFUSED
        print(f"{name}: cannot reach the placement service at {args.router}: {f.describe()}"
              f"{tls_mod.mismatch_hint(f.describe(), tls is not None)}", file=sys.stderr)
        return EXIT_REFUSED
    finally:
        await pool.close()


def run(args: argparse.Namespace) -> int:
    """The ``tessera admin`` commands this version has (tools/cli.py routes the others)."""
    from common import aio

    return aio.run(_main(args))
