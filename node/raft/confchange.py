"""Pure functions that turn a :class:`ConfState` plus a :class:`ConfChange` into the next one.

Rules (as in etcd's ``confchange`` package):

* a change that alters at most one voter is applied directly;
* anything else enters a joint configuration: the old voters become the
  outgoing half, the change is applied to the incoming half, and the leader
  leaves the joint configuration on its own once the entry is applied;
* a voter demoted to learner while joint stays a voter of the outgoing half
  (``learners_next``) until the joint configuration is left;
* a configuration without voters is refused.
"""

from __future__ import annotations

from .types import ConfChange, ConfChangeType, ConfState


class ConfChangeError(ValueError):
    """The change cannot be applied to the current configuration."""


def apply_conf_change(cs: ConfState, cc: ConfChange) -> ConfState:
    if cc.is_leave_joint:
        return leave_joint(cs)
    if cs.joint:
        raise ConfChangeError("configuration is joint; leave it before changing it again")
    incoming, learners, learners_next = _apply_changes(
        set(cs.voters), set(cs.learners), set(), frozenset(), cc
    )
    changed_voters = len(set(cs.voters) ^ incoming)
    if changed_voters <= 1:
        if not incoming:
            raise ConfChangeError("removing every voter is not allowed")
        return ConfState(voters=frozenset(incoming), learners=frozenset(learners))
    # Joint: decide with both the old and the new voters until left.
    incoming, learners, learners_next = _apply_changes(
        set(cs.voters), set(cs.learners), set(), cs.voters, cc
    )
    if not incoming:
        raise ConfChangeError("removing every voter is not allowed")
    return ConfState(
        voters=frozenset(incoming),
        voters_outgoing=cs.voters,
        learners=frozenset(learners),
        learners_next=frozenset(learners_next),
        auto_leave=True,
    )


def leave_joint(cs: ConfState) -> ConfState:
    if not cs.joint:
        raise ConfChangeError("configuration is not joint")
    return ConfState(voters=cs.voters, learners=cs.learners | cs.learners_next)


def _apply_changes(
    incoming: set[int],
    learners: set[int],
    learners_next: set[int],
    outgoing: frozenset[int],
    cc: ConfChange,
) -> tuple[set[int], set[int], set[int]]:
    for c in cc.changes:
        if c.node_id <= 0:
            raise ConfChangeError(f"invalid node id {c.node_id}")
        if c.type == ConfChangeType.ADD_VOTER:
            incoming.add(c.node_id)
            learners.discard(c.node_id)
            learners_next.discard(c.node_id)
        elif c.type == ConfChangeType.ADD_LEARNER:
            incoming.discard(c.node_id)
            if c.node_id in outgoing:
                learners_next.add(c.node_id)
            else:
                learners.add(c.node_id)
        elif c.type == ConfChangeType.REMOVE_NODE:
            incoming.discard(c.node_id)
            learners.discard(c.node_id)
            learners_next.discard(c.node_id)
        else:  # pragma: no cover - enum is closed
            raise ConfChangeError(f"unknown change type {c.type}")
    return incoming, learners, learners_next
