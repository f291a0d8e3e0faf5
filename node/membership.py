"""Membership as the node sees it: descriptors <-> the core's ConfState, and what a change does.

The consensus core knows members only by replica id.  The node also needs to
know which store hosts each member (to send it messages) and the partition's
epoch (to route requests), so every conf change carries the stores of the
replicas it adds in ``ConfChange.context``, and every replica derives the new
descriptor from the old one, the new ConfState and that context, in log order.
All replicas therefore agree on the descriptor at every log index, and the
descriptor is stored in the same LMDB transaction as the applied index (and
travels with snapshots), so a restart or a snapshot never mixes two of them.

See docs/decisions.md D11.
"""

from __future__ import annotations

import dataclasses
import struct
from dataclasses import dataclass

from common.descriptor import Descriptor, ReplicaDesc, Role
from node.raft import ConfChange, ConfChangeSingle, ConfChangeType, ConfState, Status

_PAIR = struct.Struct("<QQ")


_VOTING = frozenset({Role.VOTER, Role.INCOMING_VOTER})
_OUTGOING = frozenset({Role.VOTER, Role.DEMOTING_VOTER})
_JOINT = frozenset({Role.INCOMING_VOTER, Role.DEMOTING_VOTER})


def conf_state_of(desc: Descriptor) -> ConfState:
    """The core's membership for a descriptor (bootstrap and tests; the log is authoritative)."""
    roles = {r.replica_id: r.role for r in desc.replicas}
    joint = any(role in _JOINT for role in roles.values())
    return ConfState(
        voters=frozenset(rid for rid, role in roles.items() if role in _VOTING),
        voters_outgoing=frozenset(rid for rid, role in roles.items() if role in _OUTGOING) if joint else frozenset(),
        learners=frozenset(rid for rid, role in roles.items() if role == Role.LEARNER),
        learners_next=frozenset(rid for rid, role in roles.items() if role == Role.DEMOTING_VOTER),
    )


def encode_stores(stores: dict[int, int]) -> bytes:
    """``ConfChange.context``: replica id -> store id of the replicas a change adds."""
    return b"".join(_PAIR.pack(rid, sid) for rid, sid in sorted(stores.items()))


def decode_stores(context: bytes) -> dict[int, int]:
    if len(context) % _PAIR.size:
        raise ValueError(f"conf change context of {len(context)} bytes is not a list of (replica, store) pairs")
    return dict(_PAIR.iter_unpack(context))


def _role(rid: int, cs: ConfState) -> Role:
    if cs.joint:
        incoming, outgoing = rid in cs.voters, rid in cs.voters_outgoing
        if incoming and outgoing:
            return Role.VOTER
        if incoming:
            return Role.INCOMING_VOTER
        if outgoing:
            return Role.DEMOTING_VOTER
        return Role.LEARNER
    return Role.VOTER if rid in cs.voters else Role.LEARNER


def descriptor_after(desc: Descriptor, cs: ConfState, added: dict[int, int]) -> Descriptor:
    """The descriptor once a conf change produced ``cs``: members and roles from ``cs``, stores
    from the old descriptor or ``added``, configuration version + 1, range unchanged."""
    stores = {r.replica_id: r.store_id for r in desc.replicas}
    stores.update(added)
    return dataclasses.replace(
        desc,
        replicas=tuple(ReplicaDesc(stores.get(rid, 0), rid, _role(rid, cs)) for rid in sorted(cs.all_nodes())),
        epoch=dataclasses.replace(desc.epoch, conf_ver=desc.epoch.conf_ver + 1),
    )


def add_learner(replica_id: int, store_id: int) -> ConfChange:
    return ConfChange(
        (ConfChangeSingle(ConfChangeType.ADD_LEARNER, replica_id),), encode_stores({replica_id: store_id})
    )


def promote(replica_id: int) -> ConfChange:
    return ConfChange((ConfChangeSingle(ConfChangeType.ADD_VOTER, replica_id),))


def remove(replica_id: int) -> ConfChange:
    return ConfChange((ConfChangeSingle(ConfChangeType.REMOVE_NODE, replica_id),))


@dataclass(frozen=True, slots=True)
class HandOver:
    """The leader is asked to remove itself: transfer leadership to ``target`` first."""

    target: int


def next_step(st: Status, want_add: dict[int, int], want_remove: set[int]) -> ConfChange | HandOver | None:
    """The leader's next membership step (pure: decides, changes nothing), at most one in flight.

    ``st`` is the leader's :meth:`RawNode.status`.  In order: add wanted learners, promote
    any learner that has caught up (learners exist only to join; a caught-up one becomes a
    voter whoever asked for it, so a change of leader does not strand it), then remove wanted
    replicas.  Adding before removing keeps a move from ever shrinking the group.  A leader
    asked to remove itself hands its leadership to the most caught-up active voter instead;
    placement re-sends the removal to the new leader.
    """
    if st.lead_transferee or st.conf_change_pending:
        return None
    cs = st.conf_state
    if cs.joint:
        return None  # the core leaves it on its own first
    members = cs.all_nodes()
    adds = sorted((rid, store) for rid, store in want_add.items() if rid not in members)
    if adds:
        return add_learner(*adds[0])
    for rid in sorted(cs.learners):
        pr = st.progress.get(rid)
        if pr is not None and pr.match >= st.commit:
            return promote(rid)
    voters = cs.voters | cs.voters_outgoing
    for rid in sorted(want_remove & members):
        if rid != st.id:
            return remove(rid)
        others = [
            (pr.match, other)
            for other, pr in st.progress.items()
            if other != st.id and other in voters and pr.recent_active
        ]
        return HandOver(max(others)[1]) if others else None
    return None
